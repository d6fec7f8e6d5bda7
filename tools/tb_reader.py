"""Reader of TensorBoard event files, written from the format, independent of the C++ writer
(src/io/tensorboard.cpp) and of TensorFlow/TensorBoard. Python 3 standard library only.

File: a sequence of TFRecords, little endian:

    uint64 length | uint32 masked_crc32c(the 8 length bytes) | data[length] | uint32 masked_crc32c(data)

    masked_crc32c(x) = (((c >> 15) | (c << 17)) + 0xa282ead8) mod 2^32, c = CRC-32C (Castagnoli)

Record data: a protobuf tensorflow.Event, decoded here by hand (varints, wire types 0/1/2/5):

    Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
                 Summary summary = 5; SessionLog session_log = 7; }  (6 is the old LogMessage)
    Summary    { repeated Value value = 1; }
    Value      { string tag = 1; float simple_value = 2; }
    SessionLog { Status status = 1; }  START = 1

Any damage (a flipped byte, a truncated file) raises TBError naming the file and the byte offset.
Used by tools/tb_dump.py and tests/integration/tensorboard_test.py.
"""
import os
import struct

SESSION_START = 1


class TBError(Exception):
    """A damaged or unreadable event file: path, byte offset in the file, what is wrong."""

    def __init__(self, path, offset, message):
        super().__init__(f"{path}: offset {offset}: {message}")
        self.path, self.offset, self.message = path, offset, message


# --------------------------------------------------------------------------------------------
# CRC-32C, reflected polynomial 0x82F63B78 (crc32c(b"123456789") == 0xE3069283)

def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    t = _TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# --------------------------------------------------------------------------------------------
# TFRecord framing

def read_records(path):
    """[(offset of the record in the file, data bytes)], every CRC checked."""
    with open(path, "rb") as f:
        buf = f.read()
    out, pos = [], 0
    while pos < len(buf):
        if len(buf) - pos < 12:
            raise TBError(path, pos, f"truncated record header: the file ends {len(buf) - pos} byte(s) into "
                                     "the 12-byte length + length-CRC header")
        head = buf[pos:pos + 8]
        (n,) = struct.unpack("<Q", head)
        (crc_n,) = struct.unpack("<I", buf[pos + 8:pos + 12])
        if crc_n != masked_crc32c(head):
            raise TBError(path, pos, f"length CRC mismatch (stored {crc_n:#010x}, computed "
                                     f"{masked_crc32c(head):#010x}): the record header is damaged")
        start, end = pos + 12, pos + 12 + n
        if end + 4 > len(buf):
            raise TBError(path, pos, f"truncated record: {n} data bytes + 4 CRC bytes announced, the file "
                                     f"ends after {len(buf) - start}")
        data = buf[start:end]
        (crc_d,) = struct.unpack("<I", buf[end:end + 4])
        if crc_d != masked_crc32c(data):
            raise TBError(path, pos, f"data CRC mismatch (stored {crc_d:#010x}, computed "
                                     f"{masked_crc32c(data):#010x}): the record's {n} bytes are damaged")
        out.append((pos, data))
        pos = end + 4
    return out


# --------------------------------------------------------------------------------------------
# Protobuf wire format

class _WireError(Exception):
    pass


def _varint(b, i):
    v, shift = 0, 0
    while True:
        if i >= len(b):
            raise _WireError("varint runs past the end of the message")
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        if not x & 0x80:
            return v, i
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes")


def fields(b):
    """[(field number, wire type, value)]: int for varints, bytes for the rest."""
    out, i = [], 0
    while i < len(b):
        key, i = _varint(b, i)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _WireError("field number 0")
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 1:
            if i + 8 > len(b):
                raise _WireError(f"field {field}: 64-bit value runs past the end")
            v, i = b[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise _WireError(f"field {field}: {n}-byte value runs past the end")
            v, i = b[i:i + n], i + n
        elif wire == 5:
            if i + 4 > len(b):
                raise _WireError(f"field {field}: 32-bit value runs past the end")
            v, i = b[i:i + 4], i + 4
        else:
            raise _WireError(f"field {field}: unsupported wire type {wire}")
        out.append((field, wire, v))
    return out


def _int64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_event(data):
    """dict: wall_time, step, file_version (or None), scalars [(tag, float)], session_status (or None)."""
    ev = {"wall_time": 0.0, "step": 0, "file_version": None, "scalars": [], "session_status": None}
    for field, wire, v in fields(data):
        if field == 1 and wire == 1:
            ev["wall_time"] = struct.unpack("<d", v)[0]
        elif field == 2 and wire == 0:
            ev["step"] = _int64(v)
        elif field == 3 and wire == 2:
            ev["file_version"] = v.decode("utf-8")
        elif field == 5 and wire == 2:
            for f2, w2, value in fields(v):
                if f2 != 1 or w2 != 2:
                    continue
                tag, simple = None, None
                for f3, w3, x in fields(value):
                    if f3 == 1 and w3 == 2:
                        tag = x.decode("utf-8")
                    elif f3 == 2 and w3 == 5:
                        simple = struct.unpack("<f", x)[0]
                if tag is not None and simple is not None:
                    ev["scalars"].append((tag, simple))
        elif field == 7 and wire == 2:
            for f2, w2, x in fields(v):
                if f2 == 1 and w2 == 0:
                    ev["session_status"] = x
    return ev


def read_events(path):
    """Every event of one file, in order, each with its record's byte offset ("offset")."""
    events = []
    for offset, data in read_records(path):
        try:
            ev = parse_event(data)
        except (_WireError, UnicodeDecodeError) as e:
            raise TBError(path, offset, f"record is not a valid Event protobuf: {e}") from None
        ev["offset"] = offset
        events.append(ev)
    if events and events[0]["file_version"] is None:
        raise TBError(path, 0, "the first record has no file_version (not a TensorBoard event file?)")
    return events


# --------------------------------------------------------------------------------------------
# A run's scalars

def event_files(path):
    """The event files of a run directory (its tensorboard/), an event directory, or one file,
    in name order (= the order they were written)."""
    if os.path.isfile(path):
        return [path]
    d = os.path.join(path, "tensorboard") if os.path.isdir(os.path.join(path, "tensorboard")) else path
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{path}: no such file or directory")
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if "tfevents" in f]


def read_scalars(path):
    """{tag: {step: value}} over the event files of `path` in order. A SessionLog START at step s
    (a resumed run) discards what earlier records said about steps >= s, as TensorBoard does; a
    repeated (tag, step) keeps the later value."""
    out = {}
    for f in event_files(path):
        for ev in read_events(f):
            if ev["session_status"] == SESSION_START:
                for series in out.values():
                    for s in [s for s in series if s >= ev["step"]]:
                        del series[s]
            for tag, value in ev["scalars"]:
                out.setdefault(tag, {})[ev["step"]] = value
    return out
