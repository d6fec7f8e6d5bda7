"""The trainer's step guard (src/train/step_guard.h) on real short runs:

- NaN gradients at step 3 (training.debug_nan_at_step) are skipped: metrics.jsonl and the
  TensorBoard events mark the step (skipped, skipped_updates, clip_scale 0), train.log warns,
  and the weights and optimizer state after step 3 are bit for bit those after step 2 (no
  optimizer step, no MoE bias update); the count survives a resume;
- with training.skip_nonfinite_updates: false the same step stops the run with an error naming it;
- loss spikes: with training.loss_spike_factor below 1 every step from the 11th on warns (the
  first check needs 10 steps of history); with the default none does.
"""
import json
import os
import sys

from bk_testlib import parse_args, run

a = parse_args()
sys.path.insert(0, os.path.join(a.source, "tools"))
sys.path.insert(0, os.path.join(a.source, "tests"))
import tb_reader  # noqa: E402
from bk_safetensors import read_safetensors  # noqa: E402

SMALL = ["--set", "model.dim=32", "--set", "model.n_layers=2", "--set", "model.n_heads=2",
         "--set", "model.ffn_dim=64", "--set", "model.seq_len=32",
         "--set", "training.micro_batch_size=4", "--set", "training.global_batch_size=8",
         "--set", "training.log_interval=1", "--set", "training.eval_interval=0",
         "--set", "training.steps=12", "--set", "optimizer.schedule.warmup_steps=2",
         "--set", "checkpoint.keep_last=0", "--set", "run.threads=2",
         "--set", f"data.train={a.data}/train.bin", "--set", f"data.val={a.data}/val.bin"]


def train(config, run_dir, *extra, check=True):
    cfg = os.path.join(a.source, f"configs/{config}.yaml")
    return run([a.birkhoff, "train", cfg, *SMALL, "--set", f"run.dir={run_dir}", *extra], check=check)


def records(run_dir):
    return {r["step"]: r for r in map(json.loads, open(os.path.join(run_dir, "metrics.jsonl")))}


def ckpt_tensors(run_dir, step):
    """{file: {tensor: (dtype, raw bytes)}} of a checkpoint (its metadata names the step: left out)."""
    d = os.path.join(run_dir, "checkpoints", f"step_{step:08d}")
    out = {}
    for f in ("model.safetensors", "optimizer.safetensors"):
        tensors, _meta = read_safetensors(os.path.join(d, f))
        out[f] = {name: (dt, arr.tobytes()) for name, (dt, arr) in tensors.items()}
    return out


for config in ("tiny-cpu-mhc", "tiny-cpu-moe-mhc"):
    ref = os.path.join(a.work, f"{config}-ref")        # steps 1-2
    nan = os.path.join(a.work, f"{config}-nan")        # steps 1-3, NaN gradients at 3
    train(config, ref, "--set", "training.stop_at_step=2")
    r = train(config, nan, "--set", "training.debug_nan_at_step=3", "--set", "training.stop_at_step=3")
    assert "step 3: gradient norm is nan: update skipped" in r.stderr, r.stderr[-3000:]
    m = records(nan)
    assert sorted(m) == [1, 2, 3], sorted(m)
    assert m[3].get("skipped") is True and m[3]["skipped_updates"] == 1 and m[3]["clip_scale"] == 0, m[3]
    assert m[3]["grad_norm"] is None, m[3]  # NaN is null in JSON
    assert all("skipped" not in m[s] and m[s]["skipped_updates"] == 0 for s in (1, 2)), m
    tb = tb_reader.read_scalars(nan)
    assert tb["train/skipped_updates"] == {1: 0.0, 2: 0.0, 3: 1.0}, tb["train/skipped_updates"]
    got, want = ckpt_tensors(nan, 3), ckpt_tensors(ref, 2)
    for f in want:
        assert sorted(got[f]) == sorted(want[f]), f
        changed = [n for n in want[f] if got[f][n] != want[f][n]]
        assert not changed, f"{config}: the skipped step changed {f}: {changed[:5]}"
    print(f"{config}: NaN step skipped; weights and optimizer state after it equal those after step 2")

    # The count is in the checkpoint: a resume keeps counting from it.
    train(config, nan, "--resume", "auto", "--set", "training.stop_at_step=5")
    m = records(nan)
    assert m[4]["skipped_updates"] == 1 and m[5]["skipped_updates"] == 1 and "skipped" not in m[5], m[5]
    assert m[4]["grad_norm"] is not None and m[4]["clip_scale"] > 0, m[4]

# Skipping off: the run stops at the step, naming it.
off = os.path.join(a.work, "nan-noskip")
r = train("tiny-cpu-mhc", off, "--set", "training.debug_nan_at_step=3",
          "--set", "training.skip_nonfinite_updates=false", check=False)
assert r.returncode != 0 and "step 3: gradient norm is nan" in r.stderr, (r.returncode, r.stderr[-2000:])
assert sorted(records(off)) == [1, 2], sorted(records(off))
print("skip_nonfinite_updates: false stops the run:", r.stderr.strip().splitlines()[-1])

# Loss spikes: factor 0.5 flags every step once there is a history of 10; the default none.
spiky = os.path.join(a.work, "spike")
r = train("tiny-cpu-baseline", spiky, "--set", "training.loss_spike_factor=0.5")
log = open(os.path.join(spiky, "train.log")).read()
flagged = [s for s in range(1, 13) if f"step {s}: loss spike:" in log]
assert flagged == [11, 12], (flagged, log[-3000:])
calm = os.path.join(a.work, "calm")
train("tiny-cpu-baseline", calm)
assert "loss spike" not in open(os.path.join(calm, "train.log")).read()
print("loss spike warnings at steps", flagged)
print("step guard test passed")
