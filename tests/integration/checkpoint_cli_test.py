"""Checkpoints through the CLI (docs/checkpoint-format.md): a tiny run saves one; `inspect`,
`inspect --verify` and `inspect --json` describe it, and the JSON agrees with an independent
numpy safetensors reader (tests/bk_safetensors.py) and an independent CRC32C; `eval` reports a
finite loss on the whole shard and on --tokens; a sharded copy written by Python loads to the
same values and the same loss; corrupt copies and bad paths are clear errors with exit code 1."""
import json
import math
import os
import re
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bk_safetensors import read_safetensors, write_safetensors  # noqa: E402
from bk_testlib import parse_args, read_metrics, read_shard, run  # noqa: E402

a = parse_args()
B = a.birkhoff
run_dir = os.path.join(a.work, "run")
cfg = os.path.join(a.source, "configs/tiny-cpu-baseline.yaml")
overrides = ["training.steps=4", "optimizer.schedule.warmup_steps=1", "model.dim=32", "model.n_layers=1",
             "model.ffn_dim=64", "training.eval_interval=0", f"run.dir={run_dir}",
             f"data.train={a.data}/train.bin", f"data.val={a.data}/val.bin"]
cmd = [B, "train", cfg, "--overwrite"]
for o in overrides:
    cmd += ["--set", o]
run(cmd)
ckpt = os.path.join(run_dir, "checkpoints", "step_00000004")

failures = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what + (f"\n{detail}" if detail else ""))
    return cond


def clean(r):
    """No crash: an error is one readable line, never an uncaught exception or a signal."""
    out = r.stdout + r.stderr
    return r.returncode >= 0 and "terminate called" not in out and "Segmentation" not in out


_CRC_TABLE = []
for _b in range(256):
    _c = _b
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _CRC_TABLE.append(_c)


def crc32c(data):
    """CRC32C (Castagnoli), bitwise-table, from the definition (independent of src/core/crc32c.cpp)."""
    c = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = (c >> 8) ^ t[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def close(x, y, rtol=1e-6, atol=1e-12):
    return abs(x - y) <= rtol * max(abs(x), abs(y)) + atol


def compare_tensors(kind, listed, tensors):
    """inspect --json's tensors of one kind against the numpy reader's."""
    check(sorted(t["name"] for t in listed) == sorted(tensors),
          f"{kind}: inspect --json lists the tensors the numpy reader finds ({len(tensors)})",
          f"{sorted(t['name'] for t in listed)} vs {sorted(tensors)}")
    bad = []
    for t in listed:
        if t["name"] not in tensors:
            continue
        dtype, arr = tensors[t["name"]]
        x = arr.astype(np.float64).ravel()
        want = {"l2": float(np.sqrt(np.sum(x * x))), "mean": float(x.mean()), "min": float(x.min()),
                "max": float(x.max())}
        if t["dtype"] != dtype or t["shape"] != list(arr.shape) or t["numel"] != arr.size:
            bad.append(f"{t['name']}: {t['dtype']} {t['shape']} vs {dtype} {list(arr.shape)}")
        for k, v in want.items():
            if t[k] is None or not close(t[k], v):
                bad.append(f"{t['name']}.{k}: inspect {t[k]!r}, numpy {v!r}")
    check(not bad, f"{kind}: names, dtypes, shapes and l2/mean/min/max agree to 1e-6", "\n".join(bad))


# ---- inspect ------------------------------------------------------------------------------
r = run([B, "inspect", run_dir], check=False)
check(r.returncode == 0 and "embed.weight" in r.stdout and "not verified" in r.stdout,
      "inspect RUN_DIR lists embed.weight (checksums not verified)", r.stdout + r.stderr)
check("step_00000004" in r.stdout and "residual baseline" in r.stdout and "parameters" in r.stdout,
      "inspect shows the checkpoint, the config summary and the parameter count", r.stdout)
r = run([B, "inspect", ckpt, "--verify"], check=False)
check(r.returncode == 0 and "verified" in r.stdout and "not verified" not in r.stdout,
      "inspect --verify passes on an intact checkpoint", r.stdout + r.stderr)

r = run([B, "inspect", ckpt, "--json"], check=False)
check(r.returncode == 0, "inspect --json exits 0", r.stderr)
info = json.loads(r.stdout)
model, _ = read_safetensors(os.path.join(ckpt, "model.safetensors"))
optim, _ = read_safetensors(os.path.join(ckpt, "optimizer.safetensors"))
compare_tensors("model", info["model"], model)
compare_tensors("optimizer", info["optimizer"], optim)
check(info["step"] == 4 and info["parameters"] == sum(arr.size for _, arr in model.values()),
      "inspect --json: step 4 and the parameter count", json.dumps({k: info[k] for k in ("step", "parameters")}))
expected = {"embed.weight", "head.weight", "final_norm.weight"} | {
    f"layers.0.{s}.weight" for s in ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "attn.norm",
                                     "ffn.w1", "ffn.w2", "ffn.w3", "ffn.norm")}
check(set(model) == expected, "the model file holds the global parameter names", str(sorted(model)))
check(set(optim) == {f"{n}.{s}" for n in model for s in ("exp_avg", "exp_avg_sq")},
      "the optimizer file holds <param>.exp_avg and <param>.exp_avg_sq of every parameter", str(sorted(optim)))
check(model["embed.weight"][1].shape == (2048, 32), "embed.weight is [vocab, dim]")

state = json.load(open(os.path.join(ckpt, "state.json")))
for key in ("format_version", "step", "tokens", "cursor", "rng", "lr", "config", "config_hash",
            "birkhoff_version", "files"):
    check(key in state, f"state.json has {key}")
for name, e in state.get("files", {}).items():
    data = open(os.path.join(ckpt, name), "rb").read()
    check(len(data) == e["bytes"] and crc32c(data) == int(e["crc32c"], 16),
          f"state.json's size and CRC32C of {name} match an independent CRC32C",
          f"{len(data)} bytes crc {crc32c(data):08x} vs {e}")

# ---- eval ---------------------------------------------------------------------------------
loss_1000 = None
LOSS = re.compile(r"val loss (\S+) \| ppl (\S+) \| tokens (\d+) \| checkpoint step (\d+)")
r = run([B, "eval", "--checkpoint", ckpt], check=False)
m = LOSS.search(r.stdout)
_, val = read_shard(os.path.join(a.data, "val.bin"))
windows = (len(val) - 1) // 128
whole = windows // 8 * 8 * 128  # micro_batch_size 8, seq_len 128
if check(r.returncode == 0 and m is not None, "eval exits 0 and prints the result line", r.stdout + r.stderr):
    loss = float(m.group(1))
    check(math.isfinite(loss) and 0 < loss < 10 and close(float(m.group(2)), math.exp(loss), 1e-2),
          f"eval: finite loss {loss} and ppl = exp(loss)", r.stdout)
    check(int(m.group(3)) == whole and m.group(4) == "4", f"eval covers the whole shard ({whole} tokens), step 4",
          r.stdout)
r = run([B, "eval", "--checkpoint", run_dir, "--tokens", "1000"], check=False)
m = LOSS.search(r.stdout)
if check(r.returncode == 0 and m is not None, "eval --tokens 1000 exits 0", r.stdout + r.stderr):
    check(int(m.group(3)) <= 1000 and "--tokens 1000" in r.stdout and math.isfinite(float(m.group(1))),
          "eval --tokens 1000 evaluates at most 1000 tokens and says so", r.stdout)
    loss_1000 = m.group(0)
# The trainer's final validation reads the first training.eval_batches (8) micro-batches of 8 x 128
# tokens: eval of the same 8192 tokens must agree (to the 4 decimals it prints).
trainer_val = read_metrics(run_dir)[-1]["val_loss"]
r = run([B, "eval", "--checkpoint", ckpt, "--tokens", "8192"], check=False)
m = LOSS.search(r.stdout)
check(r.returncode == 0 and m is not None and abs(float(m.group(1)) - trainer_val) <= 5.1e-5,
      f"eval --tokens 8192 matches the trainer's final val loss {trainer_val:.6f}", r.stdout + r.stderr)

# ---- a sharded copy, written by Python --------------------------------------------------------
# What several ranks would write: model in 3 shards + index (the HF convention), optimizer in 2.
srun = os.path.join(a.work, "sharded")
sdir = os.path.join(srun, "checkpoints", "step_00000004")
os.makedirs(sdir)
files = {}


def list_file(name):
    data = open(os.path.join(sdir, name), "rb").read()
    files[name] = {"bytes": len(data), "crc32c": f"{crc32c(data):08x}"}


for kind, tensors, n in (("model", model, 3), ("optimizer", optim, 2)):
    names = sorted(tensors)
    weight_map = {}
    for r_ in range(n):
        shard = f"{kind}-{r_ + 1:05d}-of-{n:05d}.safetensors"
        part = {nm: tensors[nm][1] for nm in names[r_::n]}
        write_safetensors(os.path.join(sdir, shard), part, {"format": "pt"})
        weight_map.update({nm: shard for nm in part})
        list_file(shard)
    index = f"{kind}.safetensors.index.json"
    with open(os.path.join(sdir, index), "w") as f:
        json.dump({"metadata": {"total_size": sum(tensors[nm][1].nbytes for nm in names)},
                   "weight_map": weight_map}, f)
    list_file(index)
with open(os.path.join(sdir, "state.json"), "w") as f:
    json.dump(dict(state, files=files), f)
with open(os.path.join(srun, "checkpoints", "latest"), "w") as f:
    f.write("step_00000004\n")
r = run([B, "inspect", srun, "--verify", "--json"], check=False)
if check(r.returncode == 0, "inspect --verify --json reads the sharded copy", r.stdout + r.stderr):
    sinfo = json.loads(r.stdout)
    strip = lambda ts: sorted([{k: v for k, v in t.items() if k != "file"} for t in ts], key=lambda t: t["name"])  # noqa
    check(strip(sinfo["model"]) == strip(info["model"]) and strip(sinfo["optimizer"]) == strip(info["optimizer"]),
          "the sharded copy has the same tensors and statistics")
    check(any(t["file"].endswith("model-00002-of-00003.safetensors") for t in sinfo["model"]),
          "its tensors are read from the shards")
r = run([B, "eval", "--checkpoint", srun, "--tokens", "1000"], check=False)
m = LOSS.search(r.stdout)
check(r.returncode == 0 and m is not None and m.group(0) == loss_1000,
      "eval of the sharded copy gives the same loss", r.stdout + r.stderr)


# ---- corruption through the CLI ------------------------------------------------------------
def corrupt_copy(tag, edit):
    d = os.path.join(a.work, "corrupt", tag, "step_00000004")
    shutil.copytree(ckpt, d)
    edit(d)
    return d


def truncate(d):
    p = os.path.join(d, "model.safetensors")
    data = open(p, "rb").read()
    open(p, "wb").write(data[:len(data) // 2])


def flip(d):
    p = os.path.join(d, "model.safetensors")
    data = bytearray(open(p, "rb").read())
    data[-5] ^= 0x40
    open(p, "wb").write(bytes(data))


def bad_json(d):
    open(os.path.join(d, "state.json"), "w").write('{"step": 4, ')


def newer(d):
    s = json.load(open(os.path.join(d, "state.json")))
    s["format_version"] += 1
    json.dump(s, open(os.path.join(d, "state.json"), "w"))


def drop_tensor(d):
    p = os.path.join(d, "model.safetensors")
    tensors, meta = read_safetensors(p)
    write_safetensors(p, {n: arr for n, (dt, arr) in tensors.items() if n != "layers.0.ffn.w2.weight"}, meta)
    s = json.load(open(os.path.join(d, "state.json")))
    data = open(p, "rb").read()
    s["files"]["model.safetensors"] = {"bytes": len(data), "crc32c": f"{crc32c(data):08x}"}
    json.dump(s, open(os.path.join(d, "state.json"), "w"))


cases = [
    # (name, edit, command after the path, substrings the error must contain beyond the file)
    ("truncated", truncate, ["inspect", "--verify"], "model.safetensors", ["truncated"]),
    ("truncated_eval", truncate, ["eval"], "model.safetensors", ["truncated"]),
    ("flipped", flip, ["inspect", "--verify"], "model.safetensors", ["checksum mismatch"]),
    ("flipped_eval", flip, ["eval"], "model.safetensors", ["checksum mismatch"]),
    ("bad_json", bad_json, ["inspect"], "state.json", ["not valid JSON"]),
    ("newer", newer, ["inspect"], "state.json", ["newer Birkhoff"]),
    ("missing_tensor", drop_tensor, ["eval"], "model.safetensors", ["layers.0.ffn.w2.weight"]),
]
for tag, edit, command, file, needles in cases:
    d = corrupt_copy(tag, edit)
    args = [B, command[0]] + (["--checkpoint", d] if command[0] == "eval" else [d]) + command[1:]
    r = run(args, check=False)
    err = r.stderr
    check(r.returncode == 1 and clean(r) and os.path.join(d, file) in err and all(n in err for n in needles),
          f"{tag}: `{' '.join(command)}` exits 1 naming {file}", f"exit {r.returncode}\n{r.stdout}\n{err}")
# Documented: a flipped data byte passes a plain `inspect` (sizes and headers only).
r = run([B, "inspect", os.path.join(a.work, "corrupt", "flipped", "step_00000004")], check=False)
check(r.returncode == 0 and "not verified" in r.stdout, "plain inspect skips the CRC pass (documented)",
      r.stdout + r.stderr)

missing = os.path.join(a.work, "no", "such", "checkpoint")
r = run([B, "eval", "--checkpoint", missing], check=False)
check(r.returncode == 1 and clean(r) and missing in r.stderr and "does not exist" in r.stderr,
      "eval of a nonexistent path: a clear error, exit 1", r.stdout + r.stderr)
r = run([B, "eval"], check=False)
check(r.returncode == 1 and "--checkpoint" in r.stderr, "eval without --checkpoint: usage, exit 1", r.stderr)
r = run([B, "eval", "--checkpoint", ckpt, "--tokens", "many"], check=False)
check(r.returncode == 1 and "--tokens" in r.stderr, "eval --tokens many: a clear error, exit 1", r.stderr)
r = run([B, "inspect", a.work], check=False)
check(r.returncode == 1 and clean(r) and "neither a checkpoint directory" in r.stderr,
      "inspect of a directory that is no checkpoint: a clear error", r.stderr)

for f in failures:
    print(f"\nFAILED: {f}")
print(f"{len(failures)} failed")
raise SystemExit(1 if failures else 0)
