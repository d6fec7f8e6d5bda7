"""Bad input on the command line, in a config or in the data gives a clear error (naming the
file, key and fix) and a non-zero exit, never a crash."""
import os

from bk_testlib import parse_args, run

a = parse_args()
cfg = os.path.join(a.source, "configs/tiny-cpu-baseline.yaml")
data = [f"--set=data.train={a.data}/train.bin", f"--set=data.val={a.data}/val.bin"]
bad_shard = os.path.join(a.work, "bad.bin")
with open(bad_shard, "wb") as f:
    f.write(b"not a token shard at all, just text" * 4)
bad_yaml = os.path.join(a.work, "bad.yaml")
with open(bad_yaml, "w") as f:
    f.write("model:\n  dim: 128\n  n_heads: [oops\n")

cases = [
    # (args, exit code, substrings the message must contain)
    ([], 2, ["usage"]),
    (["frobnicate"], 2, ["unknown command 'frobnicate'"]),
    (["train"], 1, ["exactly one config file"]),
    (["train", cfg, "--bogus"], 1, ["unknown option --bogus"]),
    (["train", "/nonexistent/x.yaml"], 1, ["/nonexistent/x.yaml"]),
    (["train", bad_yaml], 1, ["bad.yaml:", "YAML syntax error"]),
    (["train", cfg, "--set", "model.dimm=3"] + data, 1, ["model.dimm"]),
    (["train", cfg, "--set", "training.steps=-5"] + data, 1, ["training.steps"]),
    (["train", cfg, "--set", "model.n_heads=5"] + data, 1, ["model.n_heads"]),
    (["train", cfg, "--set", f"run.dir={a.work}/r1", "--set=data.train=/nonexistent/train.bin"], 1,
     ["/nonexistent/train.bin"]),
    (["train", cfg, "--set", f"run.dir={a.work}/r2", f"--set=data.train={bad_shard}"], 1, ["bad.bin"]),
    (["train", cfg, "--set", f"run.dir={a.work}/r3", "--set", "model.vocab_size=100"] + data, 1,
     ["model.vocab_size"]),
    (["train", cfg, "--set", "run.device=cuda", "--set", f"run.dir={a.work}/r4"] + data, 1, ["run.device"]),
    (["train", cfg, "--set", "run.device=cpu", "--set", "run.precision=bf16", "--set", f"run.dir={a.work}/r5"] + data,
     1, ["run.precision: bf16 needs the GPU"]),
    (["train", cfg, "--set", "run.precision=fp8"] + data, 1, ["run.precision"]),
    (["train", cfg, "--set", "parallel.dp=2", "--set", "training.global_batch_size=16"] + data, 1, ["parallel"]),
    (["eval", "--checkpoint", a.work, "--device", "gpu"], 1, ["--device: expected auto, cpu or cuda"]),
]
failures = []
for args, code, needles in cases:
    r = run([a.birkhoff] + args, check=False)
    out = r.stdout + r.stderr
    ok = r.returncode == code and all(n in out for n in needles) and "terminate called" not in out
    print(("ok  " if ok else "FAIL"), args, "->", r.returncode, out.strip().splitlines()[:3])
    if not ok:
        failures.append((args, r.returncode, out))
for args, rc, out in failures:
    print(f"\nFAILED {args}: exit {rc}\n{out}")
print(f"{len(cases) - len(failures)} passed, {len(failures)} failed")
raise SystemExit(1 if failures else 0)
