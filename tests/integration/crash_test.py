"""Crash safety: SIGKILL the trainer while it is writing a checkpoint (the moment a temporary
checkpoint directory appears); the previous checkpoint stays intact, `--resume auto` loads it and
the run finishes — with exactly the weights of an uninterrupted run."""
import glob
import os
import signal
import subprocess
import time

from bk_testlib import parse_args, run

a = parse_args()
STEPS = 8
# Large enough that a checkpoint takes a while to write, small enough to train fast.
ARGS = ["--set", "model.dim=256", "--set", "model.n_layers=2", "--set", "model.n_heads=4",
        "--set", "model.ffn_dim=512", "--set", "model.seq_len=16",
        "--set", "training.micro_batch_size=2", "--set", "training.global_batch_size=2",
        "--set", "training.eval_interval=0", "--set", f"training.steps={STEPS}",
        "--set", "optimizer.schedule.warmup_steps=2", "--set", "checkpoint.interval=1",
        "--set", "checkpoint.keep_last=2",
        "--set", f"data.train={a.data}/train.bin", "--set", f"data.val={a.data}/val.bin"]
cfg = os.path.join(a.source, "configs/tiny-cpu-baseline.yaml")


def cmd(run_dir, *extra):
    return [a.birkhoff, "train", cfg, *ARGS, "--set", f"run.dir={run_dir}", *extra]


ref = os.path.join(a.work, "uninterrupted")
run(cmd(ref))

crash = os.path.join(a.work, "crashed")
latest = os.path.join(crash, "checkpoints", "latest")


def latest_step():
    return int(open(latest).read().strip()[len("step_"):]) if os.path.exists(latest) else 0


kills = 0
for attempt in range(6):
    extra = ["--resume", "auto"] if attempt else []
    start = latest_step()
    p = subprocess.Popen(cmd(crash, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Let one save complete (so there is a previous checkpoint to protect), then kill the
    # process the moment the next save's temporary directory appears.
    tmp = None
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline:
        found = [f for f in glob.glob(os.path.join(crash, "checkpoints", ".tmp_step_*"))
                 if int(os.path.basename(f).split("_")[2]) >= start + 2]
        if found:
            os.kill(p.pid, signal.SIGKILL)
            tmp = found[0]
            break
    p.wait()
    if tmp is None:
        break  # the run finished before another save began
    kills += 1
    assert os.path.isdir(tmp), "the kill came after the rename; no mid-write crash was tested"
    assert os.path.exists(latest), "no previous checkpoint"
    prev = os.path.join(crash, "checkpoints", open(latest).read().strip())
    assert os.path.exists(os.path.join(prev, "state.json")), f"latest names {prev}, which is incomplete"
    r = run([a.birkhoff, "inspect", prev, "--verify"], check=False)
    assert r.returncode == 0, f"previous checkpoint {prev} does not verify:\n{r.stderr}"
    print(f"kill {kills}: killed while writing {os.path.basename(tmp)}; previous checkpoint intact")
    if kills >= 3:
        break
assert kills >= 1, "never caught a checkpoint being written"

run(cmd(crash, "--resume", "auto"))
assert not glob.glob(os.path.join(crash, "checkpoints", ".tmp_*")), "stale temporary checkpoint left"


def final(run_dir):
    d = os.path.join(run_dir, "checkpoints", open(os.path.join(run_dir, "checkpoints", "latest")).read().strip())
    return os.path.basename(d), open(os.path.join(d, "model.safetensors"), "rb").read()


(n1, w1), (n2, w2) = final(ref), final(crash)
assert n1 == n2 == f"step_{STEPS:08d}", (n1, n2)
assert w1 == w2, "after crashes and resumes the final weights differ from the uninterrupted run"
kept = sorted(os.path.basename(d) for d in glob.glob(os.path.join(crash, "checkpoints", "step_*")))
assert kept == [f"step_{STEPS - 1:08d}", f"step_{STEPS:08d}"], f"keep_last=2 left {kept}"
print(f"crash test passed ({kills} kills mid-write)")
