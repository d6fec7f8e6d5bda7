"""TensorBoard event files written by the trainer (docs/metrics.md) agree with metrics.jsonl.

A short real run of the MLA + DeepSeekMoE + mhc model with MTP (so every kind of metric is
there: training, validation, connector and MoE diagnostics, memory), stopped and resumed from an
earlier checkpoint so that steps are re-run and a second event file is appended. Then:

- tools/tb_reader.py (written from the format, not from the writer) reads the files, checking
  both masked CRC32Cs of every record, and every scalar equals the matching number of
  metrics.jsonl (as float32; the tag of each number derived here from docs/metrics.md), with
  the same set of tags and steps;
- the same with TensorBoard's own EventAccumulator, when the tensorboard package is importable;
- a flipped byte anywhere in a file and a truncated file are reported with the file and offset,
  by the reader and by tools/tb_dump.py (exit code 1), not a crash;
- logging.tensorboard: false writes no events; --overwrite starts the event directory over.
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys

from bk_testlib import parse_args, run

a = parse_args()
sys.path.insert(0, os.path.join(a.source, "tools"))
import tb_reader  # noqa: E402

PY = "/usr/bin/python3"
TB_DUMP = os.path.join(a.source, "tools", "tb_dump.py")
SMALL = ["--set", "model.dim=32", "--set", "model.n_layers=3", "--set", "model.n_heads=2",
         "--set", "model.ffn_dim=64", "--set", "model.seq_len=32", "--set", "model.mtp.depth=1",
         "--set", "training.micro_batch_size=4", "--set", "training.global_batch_size=8",
         "--set", "training.log_interval=2", "--set", "training.eval_interval=3",
         "--set", "training.eval_batches=2", "--set", "training.steps=9",
         "--set", "optimizer.schedule.warmup_steps=2", "--set", "checkpoint.interval=3",
         "--set", "checkpoint.keep_last=0", "--set", "run.threads=2",
         "--set", f"data.train={a.data}/train.bin", "--set", f"data.val={a.data}/val.bin"]
CONFIG = os.path.join(a.source, "configs/tiny-cpu-moe-mhc.yaml")


def train(run_dir, *extra, check=True):
    return run([a.birkhoff, "train", CONFIG, *SMALL, "--set", f"run.dir={run_dir}", *extra], check=check)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected_scalars(run_dir):
    """{tag: {step: value}} from metrics.jsonl: the later record of a re-run step wins. Tags as
    documented in docs/metrics.md."""
    conn_vectors = ["h_res_diag", "row_err", "col_err", "h_pre", "h_post", "fwd_gain", "bwd_gain",
                    "comp_fwd_gain", "comp_bwd_gain"]
    plain = {"loss": "train/loss", "grad_norm": "train/grad_norm", "clip_scale": "train/clip_scale",
             "lr": "train/lr", "tokens": "train/tokens", "skipped_updates": "train/skipped_updates",
             "mtp_loss": "train/mtp_loss", "tokens_per_s": "perf/tokens_per_s", "ms_per_step": "perf/ms_per_step",
             "mfu": "perf/mfu", "elapsed_s": "perf/elapsed_s", "mem_gb": "perf/mem_gb", "act_gb": "perf/act_gb",
             "val_loss": "val/loss", "val_ppl": "val/ppl"}
    by_step = {}
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        r = json.loads(line)
        by_step[r["step"]] = r
    out = {}
    for step, r in by_step.items():
        def put(tag, v):
            out.setdefault(tag, {})[step] = math.nan if v is None else float(v)
        for key, v in r.items():
            if key in ("step", "skipped"):
                continue
            if key in plain:
                put(plain[key], v)
            elif key == "conn":
                put("connector/amax_fwd_max", v["amax_fwd_max"])
                put("connector/amax_bwd_max", v["amax_bwd_max"])
                for name in conn_vectors:
                    for l, x in enumerate(v[name]):
                        put(f"connector/layers.{l // 2}.{'attn' if l % 2 == 0 else 'ffn'}/{name}", x)
            elif key == "moe":
                for layer in v:
                    for name in ("load_max", "load_min", "load_cv", "bias_min", "bias_max", "balance_loss"):
                        put(f"moe/{layer['layer']}/{name}", layer[name])
            else:
                raise AssertionError(f"metrics.jsonl key {key!r} has no TensorBoard tag in this test")
    return out


def same(x, y):
    return (math.isnan(x) and math.isnan(y)) or x == y


def compare(expected, got, what):
    assert sorted(expected) == sorted(got), (
        f"{what}: tags differ: only in metrics.jsonl {sorted(set(expected) - set(got))}, "
        f"only in the events {sorted(set(got) - set(expected))}")
    n = 0
    for tag, series in expected.items():
        assert sorted(series) == sorted(got[tag]), f"{what}: {tag}: steps {sorted(got[tag])} != {sorted(series)}"
        for step, v in series.items():
            assert same(f32(v), got[tag][step]), f"{what}: {tag} step {step}: {got[tag][step]!r} != float32({v!r})"
            n += 1
    print(f"{what}: {len(expected)} tags, {n} scalars equal metrics.jsonl")
    return n


# ---- a run, stopped at step 6, resumed from its step-3 checkpoint (steps 4-6 run twice) -----
rd = os.path.join(a.work, "run")
train(rd, "--set", "training.stop_at_step=6")
events = tb_reader.event_files(rd)
assert len(events) == 1 and os.path.basename(events[0]).startswith("events.out.tfevents."), events
shutil.rmtree(os.path.join(rd, "checkpoints", "step_00000006"))
with open(os.path.join(rd, "checkpoints", "latest"), "w") as f:
    f.write("step_00000003\n")
train(rd, "--resume", "auto")
events = tb_reader.event_files(rd)
assert len(events) == 2, f"a resume appends a new event file: {events}"
steps_logged = [json.loads(line)["step"] for line in open(os.path.join(rd, "metrics.jsonl"))]
assert steps_logged == [1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9], steps_logged

first = tb_reader.read_events(events[0])
second = tb_reader.read_events(events[1])
for evs, start in ((first, 1), (second, 4)):
    assert evs[0]["file_version"] == "brain.Event:2", evs[0]
    assert evs[1]["session_status"] == tb_reader.SESSION_START and evs[1]["step"] == start, evs[1]
    assert all(e["wall_time"] > 1.5e9 for e in evs), "wall_time is not a Unix time"
assert [e["step"] for e in first[2:]] == [1, 2, 3, 4, 5, 6], [e["step"] for e in first]
assert [e["step"] for e in second[2:]] == [4, 5, 6, 7, 8, 9], [e["step"] for e in second]

expected = expected_scalars(rd)
for prefix in ("train/", "perf/mem_gb", "val/", "connector/layers.2.ffn/", "moe/layers.1.ffn/", "train/mtp_loss"):
    assert any(t.startswith(prefix) for t in expected), f"no {prefix} metrics: the test run lacks them"
got = tb_reader.read_scalars(rd)
compare(expected, got, "tools/tb_reader.py")
# The re-run steps really differ between the two files' records only where the later wins:
assert got["train/tokens"][9] == 9 * 8 * 32, got["train/tokens"]

# tools/tb_dump.py prints the same numbers.
r = run([PY, TB_DUMP, rd, "--tag", "train/loss"])
lines = r.stdout.split()
dump = {int(lines[i]): f32(float(lines[i + 2])) for i in range(0, len(lines), 3)}  # %.9g: float32 exact
assert all(lines[i + 1] == "train/loss" for i in range(0, len(lines), 3)), r.stdout
assert dump == {s: got["train/loss"][s] for s in got["train/loss"]}, (dump, got["train/loss"])
r = run([PY, TB_DUMP, rd, "--check"])
assert r.stdout.count(": ok,") == 2, r.stdout

# ---- TensorBoard's own reader, when installed --------------------------------------------
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:
    EventAccumulator = None
    print("NOTE: the tensorboard package is not importable here; skipping the check with "
          "TensorBoard's EventAccumulator (pip install tensorboard to run it)")
if EventAccumulator is not None:
    acc = EventAccumulator(os.path.join(rd, "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tb = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    for tag in tb:  # one value per step after TensorBoard's purge at the resume
        assert len(acc.Scalars(tag)) == len(tb[tag]), f"{tag}: duplicate steps {[e.step for e in acc.Scalars(tag)]}"
    compare(expected, tb, "tensorboard EventAccumulator")

# ---- damage: flipped bytes and truncation are reported with file and offset ---------------
damaged = os.path.join(a.work, "damaged")
os.makedirs(damaged)
good = open(events[0], "rb").read()
records = tb_reader.read_records(events[0])
rng = random.Random(7)
positions = sorted(set([0, 8, 11, 12, len(good) - 1, len(good) // 2] + [rng.randrange(len(good)) for _ in range(40)]))
for pos in positions:
    bad = bytearray(good)
    bad[pos] ^= 1 << rng.randrange(8)
    path = os.path.join(damaged, "events.out.tfevents.1.flip")
    open(path, "wb").write(bad)
    rec = max(off for off, _ in records if off <= pos)  # the record holding the flipped byte
    try:
        tb_reader.read_events(path)
        raise AssertionError(f"a flipped bit at byte {pos} went unnoticed")
    except tb_reader.TBError as e:
        assert e.path == path and e.offset == rec, (pos, rec, str(e))
        assert "CRC mismatch" in e.message, str(e)
print(f"flipped bits at {len(positions)} positions: each reported at its record's offset")

r = run([PY, TB_DUMP, path], check=False)
assert r.returncode == 1 and path in r.stderr and f"offset {rec}" in r.stderr and "Traceback" not in r.stderr, \
    (r.returncode, r.stderr)
print("tb_dump on a damaged file:", r.stderr.strip())

for cut in (1, 5, 13, len(good) - records[-1][0] - 3):
    path = os.path.join(damaged, "events.out.tfevents.2.cut")
    open(path, "wb").write(good[:-cut])
    try:
        tb_reader.read_events(path)
        raise AssertionError(f"a file cut by {cut} bytes went unnoticed")
    except tb_reader.TBError as e:
        assert "truncated" in e.message and e.offset == max(off for off, _ in records if off < len(good) - cut), str(e)
    r = run([PY, TB_DUMP, path], check=False)
    assert r.returncode == 1 and "truncated" in r.stderr and "Traceback" not in r.stderr, (r.returncode, r.stderr)
print("tb_dump on a truncated file:", r.stderr.strip())
r = run([PY, TB_DUMP, os.path.join(a.work, "no-such-run")], check=False)
assert r.returncode == 2 and "no-such-run" in r.stderr, (r.returncode, r.stderr)

# ---- the switch, and --overwrite ---------------------------------------------------------
off = os.path.join(a.work, "off")
train(off, "--set", "logging.tensorboard=false", "--set", "training.steps=3")
assert not os.path.exists(os.path.join(off, "tensorboard")), os.listdir(off)
train(rd, "--overwrite", "--set", "training.steps=3")
events = tb_reader.event_files(rd)
assert len(events) == 1, f"--overwrite must start the event directory over: {events}"
compare(expected_scalars(rd), tb_reader.read_scalars(rd), "after --overwrite")
print("tensorboard test passed")
