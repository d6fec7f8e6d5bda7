"""`birkhoff plan` on the paper configs: the printed parameter counts are within 3% of the mHC
paper's, --pp splits the model into that many stages, and a bad layout is a clear error."""
import os
import re

from bk_testlib import Checklist, parse_args, run

a = parse_args()
check = Checklist()


def count(out, name):
    m = re.search(rf"^\s+{name}\s+([\d,]+)\s", out, re.M)
    return int(m.group(1).replace(",", "")) if m else None


def stages(out):
    return [int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s+(?:embed\+)?\d+-\d+", out, re.M)]


paper = {"3b": (2.97e9, 612e6), "9b": (9.18e9, 1.66e9), "27b": (27.0e9, 4.14e9)}
for name, (total, active) in paper.items():
    cfg = os.path.join(a.source, f"configs/paper-{name}-mhc.yaml")
    r = run([a.birkhoff, "plan", cfg])
    print(r.stdout)
    t, act = count(r.stdout, "total"), count(r.stdout, "active")
    check(t is not None and abs(t / total - 1) <= 0.03, f"{name}: total {t} within 3% of {total:.3g}")
    check(act is not None and abs(act / active - 1) <= 0.03, f"{name}: active {act} within 3% of {active:.3g}")
    check("FLOPs per token" in r.stdout and "FLOPs per step" in r.stdout, f"{name}: FLOPs printed")
    # The config is also valid for `birkhoff config`.
    check(run([a.birkhoff, "config", cfg], check=False).returncode == 0, f"{name}: birkhoff config accepts it")

cfg3 = os.path.join(a.source, "configs/paper-3b-mhc.yaml")
r = run([a.birkhoff, "plan", cfg3, "--pp", "4"])
print(r.stdout)
check(stages(r.stdout) == [0, 1, 2, 3], f"--pp 4 prints stages 0..3 (got {stages(r.stdout)})")
check("pp 4 x ep 8 x dp 1" in r.stdout, "--pp 4 shows the layout")
r = run([a.birkhoff, "plan", cfg3, "--pp=2", "--ep", "4", "--dtype", "f32"])
check(stages(r.stdout) == [0, 1] and "pp 2 x ep 4" in r.stdout and ", f32" in r.stdout, "--pp=2 --ep 4 --dtype f32")
r = run([a.birkhoff, "plan", os.path.join(a.source, "configs/tiny-cpu-mhc.yaml"), "--set", "model.n_layers=2"])
check(count(r.stdout, "total") is not None and len(stages(r.stdout)) == 1, "tiny config with --set")

bad = [
    (["--pp", "0"], ["--pp", ">= 1"]),
    (["--pp", "5"], ["pp = 5", "does not divide the 24 sublayers"]),
    (["--pp", "two"], ["--pp", "'two'"]),
    (["--ep", "5"], ["parallel.ep = 5", "multiple of parallel.dp * parallel.ep"]),
    (["--dtype", "fp8"], ["--dtype", "bf16 or f32"]),
    (["--dp", "3"], ["global_batch_size"]),
    (["--bogus"], ["unknown option --bogus"]),
]
for args, needles in bad:
    r = run([a.birkhoff, "plan", cfg3] + args, check=False)
    out = r.stdout + r.stderr
    ok = r.returncode == 1 and all(n in out for n in needles) and "terminate called" not in out
    check(ok, f"{args} -> exit {r.returncode}: {out.strip().splitlines()[:1]}")
r = run([a.birkhoff, "plan"], check=False)
check(r.returncode == 1 and "exactly one config" in r.stderr, "no config -> error")

check.finish()
