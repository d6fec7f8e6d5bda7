"""Bit-exact resume: for each connector mode, dense and MLA + MoE (whose routing biases and
loads must survive the resume too), train 2N steps in one go; separately train N steps
(training.stop_at_step), resume with --resume auto and train N more. The per-step losses and
gradient norms and the final weights and optimizer state must be identical bit for bit. Also:
SIGTERM mid-run saves a checkpoint at the step boundary and exits 0, and resuming from it again
reproduces the uninterrupted run."""
import json
import os
import signal
import subprocess
import time

from bk_testlib import parse_args, run

a = parse_args()
N = 6
SMALL = ["--set", "model.dim=32", "--set", "model.n_layers=2", "--set", "model.n_heads=2",
         "--set", "model.ffn_dim=64", "--set", "model.seq_len=32",
         "--set", "training.micro_batch_size=4", "--set", "training.global_batch_size=8",
         "--set", "training.log_interval=1", "--set", "training.eval_interval=0",
         "--set", f"training.steps={2 * N}", "--set", "optimizer.schedule.warmup_steps=2",
         "--set", f"data.train={a.data}/train.bin", "--set", f"data.val={a.data}/val.bin"]


def train(mode, run_dir, *extra, check=True):
    """mode: a connector (baseline, hc, mhc), or moe-<connector> for the MLA + MoE configs."""
    cfg = os.path.join(a.source, f"configs/tiny-cpu-{mode}.yaml")
    return run([a.birkhoff, "train", cfg, *SMALL, "--set", f"run.dir={run_dir}", *extra], check=check)


def per_step(run_dir):
    """The last record of every step (a resumed run appends re-run steps)."""
    rows = {}
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        r = json.loads(line)
        rows[r["step"]] = (r["loss"], r["grad_norm"], r["lr"])
    return rows


def final_files(run_dir):
    latest = open(os.path.join(run_dir, "checkpoints", "latest")).read().strip()
    d = os.path.join(run_dir, "checkpoints", latest)
    return latest, {f: open(os.path.join(d, f), "rb").read()
                    for f in ("model.safetensors", "optimizer.safetensors")}


def same_run(ref_dir, other_dir, what):
    ref, got = per_step(ref_dir), per_step(other_dir)
    assert sorted(ref) == sorted(got) == list(range(1, 2 * N + 1)), (what, sorted(got))
    for s in ref:
        assert ref[s] == got[s], f"{what}: step {s}: {got[s]} != uninterrupted {ref[s]}"
    (ls, fs), (lo, fo) = final_files(ref_dir), final_files(other_dir)
    assert ls == lo, (what, ls, lo)
    for f in fs:
        assert fs[f] == fo[f], f"{what}: final {f} differs from the uninterrupted run's"
    print(f"{what}: {2 * N} steps and final weights identical bit for bit")


for mode in ["baseline", "hc", "mhc", "moe-baseline", "moe-hc", "moe-mhc"]:
    whole = os.path.join(a.work, f"{mode}-whole")
    split = os.path.join(a.work, f"{mode}-split")
    train(mode, whole)
    train(mode, split, "--set", f"training.stop_at_step={N}")
    assert sorted(per_step(split)) == list(range(1, N + 1)), "stop_at_step did not stop"
    r = train(mode, split, "--resume", "auto")
    assert f"resumed     from" in r.stderr, r.stderr[-2000:]
    same_run(whole, split, f"{mode}: stop at {N} + resume")

# Changing the model shape on resume is refused and names the key; a training-only key is fine.
base_split = os.path.join(a.work, "baseline-split")
r = train("baseline", base_split, "--resume", "auto", "--set", "model.ffn_dim=96", check=False)
assert r.returncode == 1 and "model.ffn_dim" in r.stderr, r.stderr[-2000:]
r = train("baseline", base_split, "--resume", "auto", "--set", f"training.steps={2 * N + 1}")
assert "training.steps changed from" in r.stderr, r.stderr[-2000:]

# SIGTERM at a step boundary: exit 0 with a checkpoint; the resumed run matches.
term = os.path.join(a.work, "baseline-sigterm")
cfg = os.path.join(a.source, "configs/tiny-cpu-baseline.yaml")
cmd = [a.birkhoff, "train", cfg, *SMALL, "--set", f"run.dir={term}"]
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
metrics = os.path.join(term, "metrics.jsonl")
deadline = time.time() + 120
while time.time() < deadline and not (os.path.exists(metrics) and open(metrics).read().count("\n") >= 2):
    time.sleep(0.01)
p.send_signal(signal.SIGTERM)
out, err = p.communicate(timeout=120)
assert p.returncode == 0, (p.returncode, err[-2000:])
assert "SIGTERM received" in err, err[-2000:]
stopped = max(per_step(term))
assert stopped < 2 * N, f"SIGTERM came too late to test anything (stopped at {stopped})"
train("baseline", term, "--resume", "auto")
same_run(os.path.join(a.work, "baseline-whole"), term, f"baseline: SIGTERM after step {stopped} + resume")
print("resume test passed")
