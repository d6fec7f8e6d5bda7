"""An independent safetensors reader and writer, written from the format specification
(https://github.com/huggingface/safetensors, docs/checkpoint-format.md) with numpy only, so the
tests can check Birkhoff's files without Birkhoff's code: the torch oracle reads its dumps with
it, the checkpoint tests its checkpoints.

Format: 8-byte little-endian u64 N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets:
[begin, end]}, "__metadata__": {str: str}}, then the byte buffer; offsets are relative to the
buffer start.
"""
import json
import math

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


class SafetensorsError(ValueError):
    pass


def read_safetensors(path):
    """Returns ({name: (dtype string, numpy array)}, metadata dict). BF16 arrives as float32."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise SafetensorsError(f"{path}: truncated ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise SafetensorsError(f"{path}: header length {n} exceeds the file size {len(data)}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except ValueError as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {e}")
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    base, size = 8 + n, len(data) - 8 - n
    tensors, spans = {}, []
    for name, e in header.items():
        dt = DTYPES.get(e.get("dtype"))
        if dt is None:
            raise SafetensorsError(f"{path}: tensor {name}: unknown dtype {e.get('dtype')!r}")
        shape = [int(s) for s in e["shape"]]
        begin, end = (int(o) for o in e["data_offsets"])
        count = math.prod(shape)
        if not (0 <= begin <= end <= size) or end - begin != count * np.dtype(dt).itemsize:
            raise SafetensorsError(f"{path}: tensor {name}: offsets [{begin}, {end}) do not hold "
                                   f"{e['dtype']} {shape} within a {size}-byte buffer")
        arr = np.frombuffer(data, dtype=dt, count=count, offset=base + begin).reshape(shape)
        if e["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = (e["dtype"], arr)
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError(f"{path}: tensors {n0} and {n1} overlap")
    return tensors, meta


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: numpy array} (float32/float64/int32/int64), written in the given order."""
    names = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i4"): "I32",
             np.dtype("<i8"): "I64"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in blobs:
            f.write(raw)
