"""Data and expert parallelism through mpirun on the CPU (docs/parallelism.md).

--part equivalence: with the same global batch and seed, dp=2, dp=4, ep=2, ep=4 and dp=2 x ep=2
    give the same per-step losses and final weights as one process.
--part pipeline: pp=2 and pp=4 with 1F1B, DualPipe and DualPipeV (and pp=2 x dp=2, pp=2 x ep=2)
    give the same per-step losses (step 1 bit for bit) and weights as one process; recomputation
    (mhc, full) inside the stages gives the same bits as none.
--part zero: ZeRO-1 gives the same weights, bit for bit, as plain dp (and dp x ep).
--part checkpoint: a checkpoint saved by dp=2 x ep=2 restores in one process, and one saved by
    one process restores under dp=2 x ep=2; the losses afterwards match the uninterrupted run.
--part failure: a rank that throws mid-step ends the job non-zero with its message; a rank that
    hangs is caught by the collective timeout.

Tolerances. The model is an MLA + MoE + mhc tiny model (4 layers, one dense). Per-sequence work
is the same whatever the layout, but sums are associated differently: gradients accumulate per
rank and then add across ranks (fp32), the experts' weight gradients sum rows of several ranks
in one GEMM, the loss adds per-rank double sums. Each such reordering changes a result by a few
fp32 ulps (relative ~1e-7). Over 4 AdamW steps that difference is amplified where a moment is
tiny: AdamW's first update is lr * g/|g|, so an element whose gradient is ~0 can move by a
whole lr step (3e-3) either way. Single elements are therefore not compared; each tensor's
relative Frobenius difference must stay below 3e-4. Measured: up to 6.5e-5, in the mHC phi
that starts at zero (so its norm is only its four updates, where such sign flips weigh most).
A bug that drops or doubles one rank's share of a gradient moves a tensor by ~1e-2 relative or
more (four updates of lr = 3e-3 on weights of std 0.02, off by a tenth), and the per-step losses within 2e-5 relative (measured <= 1e-8).
A run whose data differs in order fails both (the negative control below). Step 1's loss is
computed before any update: within 1e-6.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

from bk_testlib import parse_args, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bk_safetensors import read_safetensors  # noqa: E402

a = parse_args([(["--part"], {"required": True}), (["--mpirun"], {"required": True})])
CONFIG = os.path.join(a.source, "configs/tiny-cpu-moe-mhc.yaml")
STEPS = 4
COMMON = ["--set", "training.micro_batch_size=2", "--set", "training.global_batch_size=16",
          "--set", "model.seq_len=64", "--set", "model.n_layers=3",
          "--set", f"training.steps={STEPS}", "--set", "optimizer.schedule.warmup_steps=1",
          "--set", "training.eval_interval=0", "--set", "training.eval_batches=4",
          "--set", "training.log_interval=1", "--set", "run.threads=1",
          "--set", f"data.train={a.data}/train.bin", "--set", f"data.val={a.data}/val.bin"]
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_pml="ob1", OMPI_MCA_btl="self,vader",
               OMPI_MCA_hwloc_base_binding_policy="none")


def train(name, dp=1, ep=1, extra=(), check=True, env=None):
    run_dir = os.path.join(a.work, name)
    args = [a.birkhoff, "train", CONFIG, *COMMON, "--set", f"run.dir={run_dir}",
            "--set", f"parallel.dp={dp}", "--set", f"parallel.ep={ep}", *extra]
    pp = next((int(x.split("=")[1]) for x in extra if str(x).startswith("parallel.pp=")), 1)
    if dp * ep * pp > 1:
        args = [a.mpirun, "-np", str(dp * ep * pp), *args]
    r = run(args, check=check, env=env or MPI_ENV, timeout=600)
    return run_dir, r


def losses(run_dir):
    out = {}
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        r = json.loads(line)
        out[r["step"]] = r["loss"]
    return out


def weights(run_dir, step=STEPS, kind="model"):
    """Every tensor of a checkpoint, single file or sharded, by global name."""
    d = os.path.join(run_dir, "checkpoints", f"step_{step:08d}")
    files = sorted(f for f in os.listdir(d) if f.startswith(kind + "") and f.endswith(".safetensors")
                   and (f == kind + ".safetensors" or f.startswith(kind + "-")))
    assert files, f"{d}: no {kind} files"
    out = {}
    for f in files:
        tensors, _ = read_safetensors(os.path.join(d, f))
        for name, (_, arr) in tensors.items():
            assert name not in out, f"{name} saved twice ({f})"
            out[name] = arr
    return out


def compare(ref, got, label, loss_tol=2e-5, w_tol=3e-4):
    lr, lg = losses(ref), losses(got)
    assert sorted(lr) == sorted(lg), f"{label}: steps {sorted(lg)} vs {sorted(lr)}"
    for s in sorted(lr):
        tol = 1e-6 if s == 1 else loss_tol
        rel = abs(lg[s] - lr[s]) / abs(lr[s])
        print(f"{label}: step {s} loss {lg[s]:.7f} vs {lr[s]:.7f} (rel {rel:.1e}, tol {tol:g})")
        assert rel <= tol, f"{label}: step {s} loss {lg[s]} differs from the single-process {lr[s]}"
    wr, wg = weights(ref), weights(got)
    assert sorted(wr) == sorted(wg), f"{label}: tensor names differ: {set(wr) ^ set(wg)}"
    def rel(n):
        d = np.linalg.norm(wg[n].astype(np.float64) - wr[n])
        return d / max(np.linalg.norm(wr[n].astype(np.float64)), 1e-30)
    worst = max(wr, key=rel)
    print(f"{label}: {len(wr)} tensors, worst relative Frobenius difference {rel(worst):.2e} ({worst}; "
          f"tol {w_tol:g})")
    assert rel(worst) <= w_tol, f"{label}: final weights of {worst} differ by {rel(worst)} (relative)"


def identical(x, y, label):
    for kind in ("model", "optimizer"):
        wx, wy = weights(x, kind=kind), weights(y, kind=kind)
        assert sorted(wx) == sorted(wy), f"{label}: {kind} tensor names differ"
        for n in wx:
            assert np.array_equal(wx[n], wy[n]), f"{label}: {kind} tensor {n} differs"
        print(f"{label}: {len(wx)} {kind} tensors bit-identical")
    lx, ly = losses(x), losses(y)
    assert lx == ly, f"{label}: losses differ: {lx} vs {ly}"


if a.part == "equivalence":
    ref, _ = train("single")
    for dp, ep in [(2, 1), (4, 1), (1, 2), (1, 4), (2, 2)]:
        got, _ = train(f"dp{dp}_ep{ep}", dp, ep)
        compare(ref, got, f"dp={dp} ep={ep}")
    # Negative control: the same comparison must fail for a run that differs in one sequence of
    # the batch (another seed for the data order only changes which windows are read).
    other, _ = train("other_data", 2, 1, ["--set", "run.seed=99"])
    for what, kw in (("losses", {"w_tol": 1e9}), ("weights", {"loss_tol": 1e9})):
        try:
            if what == "weights":
                os.rename(os.path.join(other, "metrics.jsonl"), os.path.join(other, "metrics.other"))
                os.symlink(os.path.join(ref, "metrics.jsonl"), os.path.join(other, "metrics.jsonl"))
            compare(ref, other, f"negative control on {what} (other data order)", **kw)
        except AssertionError as e:
            print(f"negative control on {what} fails as it must: {e}")
        else:
            raise SystemExit(f"the {what} comparison accepted a run on other data: tolerance too loose")

elif a.part == "pipeline":
    # 8 sublayers: pp=2 and pp=4 stages, DualPipeV's 2 pp stages. 8 micro-batches per step (4 with
    # dp or ep = 2): DualPipe needs N >= 2 pp.
    deep = ["--set", "model.n_layers=4"]
    ref, _ = train("single", extra=deep)
    for pp in (2, 4):
        for schedule in ("1f1b", "dualpipe", "dualpipev"):
            got, _ = train(f"pp{pp}_{schedule}", extra=deep + ["--set", f"parallel.pp={pp}",
                                                                 "--set", f"parallel.schedule={schedule}"])
            # Step 1 runs the same arithmetic per micro-batch and sums the losses in micro-batch
            # order: bit-identical. Later steps: the grad norm adds the stages in another order,
            # and DualPipe's mirror copies add their micro-batches' gradients in another order.
            assert losses(got)[1] == losses(ref)[1], f"pp={pp} {schedule}: step-1 loss differs"
            compare(ref, got, f"pp={pp} {schedule}")
    for extra in (["--set", "parallel.dp=2"], ["--set", "parallel.ep=2"]):
        got, _ = train(f"pp2_{extra[1].replace('=', '')}", dp=2 if "dp" in extra[1] else 1,
                       ep=2 if "ep" in extra[1] else 1,
                       extra=deep + ["--set", "parallel.pp=2", "--set", "parallel.schedule=dualpipe"])
        compare(ref, got, f"pp=2 dualpipe x {extra[1]}")
    # Recomputation inside the stages changes no bit.
    base = os.path.join(a.work, "pp2_dualpipev")
    for mode, block in (("mhc", 1), ("full", 0)):
        got, _ = train(f"pp2_dualpipev_recompute_{mode}", extra=deep + [
            "--set", "parallel.pp=2", "--set", "parallel.schedule=dualpipev",
            "--set", f"training.recompute={mode}", "--set", f"training.recompute_block={block}"])
        identical(base, got, f"pp=2 dualpipev recompute {mode} vs none")

elif a.part == "zero":
    for dp, ep in [(2, 1), (2, 2)]:
        plain, _ = train(f"plain_dp{dp}_ep{ep}", dp, ep)
        zero, _ = train(f"zero_dp{dp}_ep{ep}", dp, ep, ["--set", "parallel.zero=1"])
        identical(plain, zero, f"ZeRO-1 vs plain, dp={dp} ep={ep}")
        # The sharded optimizer state is saved by its owners: one file per rank holds some.
        d = os.path.join(zero, "checkpoints", f"step_{STEPS:08d}")
        shards = [f for f in os.listdir(d) if f.startswith("optimizer-")]
        assert len(shards) == dp * ep, f"{d}: expected {dp * ep} optimizer shards, got {shards}"

elif a.part == "checkpoint":
    ref, _ = train("uninterrupted")
    half = ["--set", f"training.stop_at_step={STEPS // 2}"]
    # dp=2 x ep=2 -> one process.
    d, _ = train("from_4_to_1", 2, 2, half)
    run([a.birkhoff, "inspect", d, "--verify"])
    train("from_4_to_1", 1, 1, ["--resume", "auto"])
    compare(ref, d, "saved by dp=2 x ep=2, resumed by one process")
    # one process -> dp=2 x ep=2 (with ZeRO-1: the moments are re-sharded).
    d, _ = train("from_1_to_4", 1, 1, half)
    train("from_1_to_4", 2, 2, ["--resume", "auto", "--set", "parallel.zero=1"])
    compare(ref, d, "saved by one process, resumed by dp=2 x ep=2 with ZeRO-1")

elif a.part == "failure":
    # A rank that throws: the job ends non-zero, quickly, with that rank's message.
    env = dict(MPI_ENV, BIRKHOFF_INJECT_FAULT="1:2:throw")
    t0 = time.time()
    _, r = train("throw", 2, 1, check=False, env=env)
    took = time.time() - t0
    out = r.stdout + r.stderr
    print(out[-2000:])
    assert r.returncode != 0, "the job exited 0 although rank 1 failed"
    assert "rank 1: error: BIRKHOFF_INJECT_FAULT: injected failure on rank 1 at step 2" in out, \
        "the failing rank's message is missing"
    assert took < 60, f"took {took:.0f} s to end the job"
    # A rank that hangs: the others time out in their next collective and abort the job.
    env = dict(MPI_ENV, BIRKHOFF_INJECT_FAULT="1:2:hang")
    t0 = time.time()
    _, r = train("hang", 2, 1, ["--set", "parallel.timeout_s=5"], check=False, env=env)
    took = time.time() - t0
    out = r.stdout + r.stderr
    print(out[-2000:])
    assert r.returncode != 0, "the job exited 0 although rank 1 hung"
    assert "did not complete within parallel.timeout_s = 5 s" in out, "no timeout message"
    assert "on communicator 'data'" in out or "on communicator 'world'" in out, "the communicator is not named"
    assert took < 60, f"took {took:.0f} s to end a job whose timeout is 5 s"
    print(f"hang detected and the job ended in {took:.1f} s")
else:
    raise SystemExit(f"unknown --part {a.part}")
print("OK")
