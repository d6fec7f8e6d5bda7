#!/usr/bin/python3
"""The cost of the residual connector end to end: one model trained by `birkhoff train` with
model.residual.mode baseline, hc and mhc (everything else equal), timed from the runs' own
metrics, as a table of step time, tokens/s, MFU, peak memory and the ratio to the baseline.

    /usr/bin/python3 tools/bench/connector_overhead.py --birkhoff build/bin/birkhoff \\
        [--config configs/bench-1b-moe.yaml] [--steps 30 --warmup 5] [--rounds R] \\
        [--modes baseline,hc,mhc] [--set key=value ...] [--json OUT] [--work-dir DIR] [--torch]

Each run is

    BIRKHOFF train CONFIG --overwrite --set training.eval_interval=0 --set checkpoint.interval=0
        --set checkpoint.save_final=false --set logging.jsonl=true --set logging.tensorboard=false
        --set training.stop_at_step=0 --set data.val=  [--set ...: yours]
        --set model.residual.mode=MODE --set run.dir=WORK/MODE-rR --set training.steps=WARMUP+STEPS
        [--set data.train=WORK/synthetic-train.bin] [--set optimizer.schedule.warmup_steps=...]

(your --set values come after the harness's defaults and before the mode, run directory and step
count, which the script owns). From each run's metrics.jsonl (docs/metrics.md; a later record of
a step wins) it takes the median of ms_per_step over the steps after --warmup, the tokens/s and
MFU of that step time (tokens per step / time; mfu / tokens_per_s is a constant of a run), and the
largest peak memory of the run: gpu_mem_gb (peak device tensor bytes) and gpu_reserved_gb (what
the caching allocator holds) on a GPU, mem_gb (peak resident set) on the CPU. With --rounds R > 1
the modes run R times, every other round in reverse order, and the step time is the median over
the rounds of the per-run medians (slow drifts of the machine cancel). The ratio to the baseline
is of step times: mhc/baseline = 1.05 means mhc steps take 5% longer.

MFU is Birkhoff's own: FLOPs/token x tokens/s over the peak the trainer uses (datasheet dense
bf16 for a known GPU, 989 TFLOP/s for the H100 SXM and H200; a measured sgemm on the CPU); the
script prints that peak, read from the run's train.log.

Data: when the resolved data.train does not exist, a shard of uniformly random tokens
(model.vocab_size, enough for every step of a run without reuse, at most 2^24 tokens) is written
in Birkhoff's format (docs/data.md) into the work directory and every run trains on it: the same
shard, seed and order for every mode. Validation is off (data.val empty).

--birkhoff is a command: a path to the binary, or e.g. "./run.sh birkhoff" in the GPU bundle.
--work-dir DIR keeps every run directory (train.log, metrics.jsonl, config.yaml) and each run's
console output (MODE-rR.console.log) in DIR; without it they go to a temporary directory that is
deleted at the end (kept, and named, when a run fails).

--torch also runs tools/bench/torch_reference.py (the same model in PyTorch, eager and with
--compile where torch >= 2.0; its docstring says what it times) on --torch-device (default cuda)
for every mode, with the same config, --set values, steps and warm-up, under --torch-python
(default: this interpreter), and adds its rows to the table (MFU from Birkhoff's FLOPs/token and
peak). On cuda it passes --dtype bf16: the PyTorch rows are then PyTorch's AMP recipe (bf16
autocast, fp32 weights, gradients and AdamW state; the connector coefficients, Sinkhorn, router
and loss in fp32), the counterpart of Birkhoff's bf16 mixed precision; on another device they
take that script's default (f32 on the CPU). Each PyTorch row names its dtype. A failing PyTorch
run is reported in the table, not fatal.

--summarize RUN_DIR prints the same statistics for one finished run directory (no training; the
bundle's run_gpu_tests.sh uses it for its 200-step run). --write-shard PATH --vocab V --tokens N
[--seed S] only writes a synthetic shard.

Exit status: 0 on success, 1 when a run fails (the tail of its train.log is printed), 2 for a
usage error (missing binary or config, bad option).
"""

import argparse
import array
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GOAL = 1.05    # issue #9: mhc step time at most 5% over the baseline's
PAPER = 1.067  # the mHC paper's reported overhead (6.7%)
MAX_SYNTHETIC_TOKENS = 1 << 24


class RunFailed(Exception):
    pass


def die(msg, status=2):
    print(f"connector_overhead: error: {msg}", file=sys.stderr)
    sys.exit(status)


def say(msg):
    print(f"connector_overhead: {msg}", flush=True)


# ---- the resolved config (`birkhoff config`), a reader for the YAML it prints ------------------

def parse_scalar(s):
    s = s.strip()
    if s.startswith('"') and s.endswith('"') and len(s) >= 2:
        return json.loads(s) if "\\" in s else s[1:-1]
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [parse_scalar(x) for x in inner.split(",")] if inner else []
    if s in ("true", "false"):
        return s == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def parse_resolved(text):
    """The nested maps of `birkhoff config` output: `key: value` lines indented by 2 per level,
    a key with nothing after the colon opens a map."""
    root = {}
    stack = [(-1, root)]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, val = line.strip().partition(":")
        if not sep:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        node = stack[-1][1]
        if val.strip() == "":
            node[key] = {}
            stack.append((indent, node[key]))
        else:
            node[key] = parse_scalar(val)
    return root


def resolve_config(birkhoff, config, sets):
    cmd = birkhoff + ["config", config] + [a for s in sets for a in ("--set", s)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        die(f"cannot run {shlex.join(cmd)}: {e}")
    if r.returncode != 0:
        die(f"`{shlex.join(cmd)}` failed (exit {r.returncode}):\n{(r.stderr or r.stdout).strip()}")
    conf = parse_resolved(r.stdout)
    for section, key in (("model", "vocab_size"), ("model", "seq_len"), ("training", "global_batch_size"),
                         ("data", "train"), ("run", "device")):
        if key not in conf.get(section, {}):
            die(f"`{shlex.join(cmd)}` printed no {section}.{key}: not a config this script can read")
    return conf


# ---- synthetic data ----------------------------------------------------------------------------

def write_shard(path, vocab, n_tokens, seed=1234):
    """A token shard (docs/data.md, src/io/token_shard.h): 64-byte header (magic BKTOKENS, version
    1, vocab_size, num_tokens, dtype 1 = uint32, zeros), then n_tokens little-endian uint32 < vocab."""
    rng = random.Random(seed)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<8sIIQI36x", b"BKTOKENS", 1, vocab, n_tokens, 1))
        left = n_tokens
        while left:
            k = min(left, 1 << 20)
            a = array.array("I", (rng.randrange(vocab) for _ in range(k)))
            if a.itemsize != 4:  # pragma: no cover (array 'I' is 4 bytes on every Linux ABI)
                a = array.array("L", a)
            if sys.byteorder != "little":
                a.byteswap()
            a.tofile(f)
            left -= k
    os.replace(tmp, path)
    assert os.path.getsize(path) == 64 + 4 * n_tokens


# ---- reading a run -----------------------------------------------------------------------------

SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6, "B": 1e9}  # train/metrics.cpp human()


def read_startup(log_text):
    """What the trainer's start-up table says: the peak behind MFU, FLOPs/token, the device."""
    info = {}
    m = re.search(r"peak (.+?) ([0-9.]+)([kMB]?) FLOP/s \(([^)]*)\)", log_text)
    if m:
        info["peak_device"] = m.group(1)
        info["peak_flops"] = float(m.group(2)) * SUFFIX[m.group(3)]
        info["peak_source"] = m.group(4)
    m = re.search(r"compute\s+([0-9.]+)([kMB]?) FLOPs/token", log_text)
    if m:
        info["flops_per_token"] = float(m.group(1)) * SUFFIX[m.group(2)]
    m = re.search(r"device\s+(cuda:\S+ [^|\n]*?)\s*\|\s*(\w+) activations", log_text)
    if m:
        info["device"], info["precision"] = m.group(1).strip(), m.group(2)
    elif re.search(r"device cpu", log_text):
        info["device"] = "cpu"
    m = re.search(r"parameters\s+(\S+) total", log_text)
    if m:
        info["parameters"] = m.group(1)
    return info


def med_of(vals):
    return statistics.median(vals) if vals else None


def read_metrics(run_dir, warmup):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise RunFailed(f"{path} does not exist")
    recs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                recs[rec["step"]] = rec  # a resumed run's later record of a step counts
    timed = [recs[s] for s in sorted(recs) if s > warmup]
    if not timed:
        raise RunFailed(f"{path} has no step after the {warmup} warm-up steps ({len(recs)} steps in all)")

    def med(key):
        vals = [r[key] for r in timed if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def peak(key):
        vals = [r[key] for r in recs.values() if r.get(key) is not None]
        return max(vals) if vals else None

    # The median step time; tokens/s and MFU are that time's (tokens per step / time, and MFU per
    # token/s, a constant of the run), so the three agree even for an even number of steps.
    ms = med("ms_per_step")
    tokens_per_step = statistics.median(r["tokens_per_s"] * r["ms_per_step"] / 1e3 for r in timed)
    tps = tokens_per_step / (ms / 1e3)
    k = med_of([r["mfu"] / r["tokens_per_s"] for r in timed if r.get("mfu") is not None and r["tokens_per_s"]])
    out = {"steps": len(recs), "timed_steps": len(timed), "tokens_per_step": round(tokens_per_step),
           "ms_per_step": ms, "tokens_per_s": tps, "mfu": k * tps if k is not None else None,
           "mfu_per_token_per_s": k, "median_tokens_per_s_of_steps": med("tokens_per_s"),
           "gpu_mem_gb": peak("gpu_mem_gb"), "gpu_reserved_gb": peak("gpu_reserved_gb"),
           "rss_gb": peak("mem_gb"), "act_gb": peak("act_gb"),
           "first_loss": recs[min(recs)].get("loss"), "last_loss": recs[max(recs)].get("loss"),
           "last_val_loss": next((recs[s]["val_loss"] for s in sorted(recs, reverse=True)
                                  if recs[s].get("val_loss") is not None), None),
           "skipped_updates": max((r.get("skipped_updates") or 0) for r in recs.values()),
           "step_ms": [r["ms_per_step"] for r in timed]}
    # Peak memory of the run: device tensors on a GPU, the resident set on the CPU.
    out["peak_mem_gb"] = out["gpu_mem_gb"] if out["gpu_mem_gb"] is not None else out["rss_gb"]
    out["mem_kind"] = "gpu tensors" if out["gpu_mem_gb"] is not None else "rss"
    return out


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip()
    except OSError:
        return f"({path} not readable)"


# ---- running -----------------------------------------------------------------------------------

def run_logged(cmd, log_path, timeout):
    """Runs cmd with stdout and stderr to log_path, in its own process group (a timeout or Ctrl-C
    ends the whole group). Returns the exit status, or None on timeout."""
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return p.wait(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            return None
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise


def run_birkhoff(args, mode, rnd, harness_sets):
    name = f"{mode}-r{rnd + 1}"
    run_dir = os.path.join(args.work_dir, name)
    console = os.path.join(args.work_dir, name + ".console.log")
    cmd = args.birkhoff + ["train", args.config, "--overwrite"] + \
        [a for s in harness_sets(mode, run_dir) for a in ("--set", s)]
    say(f"{time.strftime('%H:%M:%S')} {name}: training ({console})")
    t0 = time.time()
    rc = run_logged(cmd, console, args.timeout)
    wall = time.time() - t0
    log = os.path.join(run_dir, "train.log")
    if rc != 0:
        why = f"timed out after {args.timeout} s" if rc is None else f"exited with status {rc}"
        shown = log if os.path.isfile(log) else console
        raise RunFailed(f"{name}: `{shlex.join(cmd)}` {why}; the tail of {shown}:\n{tail(shown)}"
                        + (f"\nand of {console}:\n{tail(console, 10)}" if shown != console else ""))
    res = read_metrics(run_dir, args.warmup)
    with open(log, errors="replace") if os.path.isfile(log) else open(console, errors="replace") as f:
        res.update(read_startup(f.read()))
    res.update(mode=mode, round=rnd + 1, wall_s=wall, run_dir=run_dir, command=shlex.join(cmd))
    say(f"{time.strftime('%H:%M:%S')} {name}: {res['ms_per_step']:.1f} ms/step, {res['tokens_per_s']:.0f} tokens/s, "
        f"MFU {100 * (res['mfu'] or 0):.1f}%, peak {fmt_gb(res['peak_mem_gb'])} GiB ({res['mem_kind']}), "
        f"{wall:.0f} s wall")
    return res


def run_torch(args, mode):
    """tools/bench/torch_reference.py for one mode; a row per PyTorch variant, or a failure row."""
    script = os.path.join(HERE, "torch_reference.py")
    out = os.path.join(args.work_dir, f"torch-{mode}.json")
    console = os.path.join(args.work_dir, f"torch-{mode}.console.log")
    cmd = [args.torch_python, script, args.config, "--device", args.torch_device, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--compile", "--json", out] + \
        (["--dtype", "bf16"] if args.torch_device == "cuda" else []) + \
        [a for s in args.set + [f"model.residual.mode={mode}"] for a in ("--set", s)]
    say(f"{time.strftime('%H:%M:%S')} pytorch {mode}: torch_reference.py on {args.torch_device} ({console})")
    rc = run_logged(cmd, console, args.timeout)
    if rc != 0 or not os.path.isfile(out):
        why = f"timed out after {args.timeout} s" if rc is None else f"exit status {rc}"
        print(f"connector_overhead: pytorch {mode} failed ({why}); the tail of {console}:\n{tail(console, 15)}",
              file=sys.stderr)
        return [{"impl": "pytorch", "mode": mode, "failed": why, "command": shlex.join(cmd)}]
    with open(out) as f:
        j = json.load(f)
    rows = []
    for r in j["results"]:
        rows.append({"impl": r["impl"], "mode": mode, "device": r.get("device"),
                     "dtype": r.get("dtype", j.get("dtype", "f32")), "ms_per_step": r["ms_per_step"],
                     "tokens_per_s": r["tokens_per_s"], "step_ms": r.get("step_ms"),
                     "first_loss": r.get("first_loss"), "last_loss": r.get("last_loss"),
                     "torch": j.get("torch"), "notes": j.get("notes", []), "command": shlex.join(cmd)})
    return rows


# ---- reporting ---------------------------------------------------------------------------------

def fmt_gb(x):
    return "-" if x is None else f"{x:.2f}"


def fmt_rate(x):
    if x is None:
        return "-"
    return f"{x / 1e6:.3f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def print_table(head, body, right_from=1):
    w = [max(len(str(r[i])) for r in [head] + body) for i in range(len(head))]
    for row in [head] + body:
        print("  " + "  ".join(str(s).ljust(w[i]) if i < right_from else str(s).rjust(w[i])
                               for i, s in enumerate(row)))


def combine(runs):
    """One result per mode: the median over rounds of the per-run medians; memory: the largest."""
    med = lambda k: statistics.median(r[k] for r in runs) if all(r.get(k) is not None for r in runs) else None
    mx = lambda k: max((r[k] for r in runs if r.get(k) is not None), default=None)
    out = dict(runs[-1])
    ms = med("ms_per_step")
    tps = runs[-1]["tokens_per_step"] / (ms / 1e3)
    k = med("mfu_per_token_per_s")
    out.update(ms_per_step=ms, tokens_per_s=tps, mfu=k * tps if k is not None else None, mfu_per_token_per_s=k,
               peak_mem_gb=mx("peak_mem_gb"), gpu_mem_gb=mx("gpu_mem_gb"), gpu_reserved_gb=mx("gpu_reserved_gb"),
               rss_gb=mx("rss_gb"), act_gb=mx("act_gb"), skipped_updates=mx("skipped_updates"),
               rounds=[{key: r.get(key) for key in ("round", "ms_per_step", "tokens_per_s", "mfu", "peak_mem_gb",
                                                   "wall_s", "run_dir")} for r in runs])
    out.pop("round", None)
    out.pop("wall_s", None)
    out.pop("run_dir", None)
    return out


def summarize(run_dir, warmup):
    res = read_metrics(run_dir, warmup)
    log = os.path.join(run_dir, "train.log")
    if os.path.isfile(log):
        with open(log, errors="replace") as f:
            res.update(read_startup(f.read()))
    peak = res.get("peak_flops")
    print(f"{run_dir}: {res['steps']} steps, medians over the {res['timed_steps']} after {warmup}; "
          f"device {res.get('device', '?')}; MFU against {res.get('peak_device', '?')} "
          f"{peak / 1e12 if peak else float('nan'):.4g} TFLOP/s ({res.get('peak_source', '?')})")
    head = ["ms/step", "tokens/s", "MFU", "peak mem GiB", "reserved GiB", "act GiB", "loss first -> last",
            "last val loss", "skipped"]
    loss = lambda x: "-" if x is None else f"{x:.3f}"
    body = [[f"{res['ms_per_step']:.1f}", fmt_rate(res["tokens_per_s"]), f"{100 * (res['mfu'] or 0):.2f}%",
             f"{fmt_gb(res['peak_mem_gb'])} ({res['mem_kind']})", fmt_gb(res["gpu_reserved_gb"]),
             "-" if res["act_gb"] is None else f"{res['act_gb']:.2f}",
             f"{loss(res['first_loss'])} -> {loss(res['last_loss'])}", loss(res["last_val_loss"]),
             str(res["skipped_updates"])]]
    print_table(head, body, right_from=0)
    return res


def host_info(birkhoff):
    info = {}
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            info["gpus"] = [x.strip() for x in r.stdout.strip().splitlines()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        r = subprocess.run(birkhoff + ["version"], capture_output=True, text=True, timeout=30)
        info["birkhoff_version"] = r.stdout.strip() or r.stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    build_info = os.path.join(ROOT, "BUILD_INFO")  # in the GPU bundle
    if os.path.isfile(build_info):
        with open(build_info) as f:
            info["build_info"] = f.read().strip()
    elif os.path.isdir(os.path.join(ROOT, ".git")):
        r = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True)
        info["commit"] = r.stdout.strip()
    return info


# ---- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--birkhoff", metavar="CMD", help="the birkhoff binary (or a command such as './run.sh birkhoff')")
    ap.add_argument("--config", default="configs/bench-1b-moe.yaml",
                    help="Birkhoff config (default configs/bench-1b-moe.yaml; looked up in the current directory, "
                         "then in the repository or bundle root)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before them (default 5)")
    ap.add_argument("--rounds", type=int, default=1, help="run every mode R times, alternating the order (default 1)")
    ap.add_argument("--modes", default="baseline,hc,mhc", help="comma-separated residual modes (default baseline,hc,mhc)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run (repeatable)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    ap.add_argument("--work-dir", metavar="DIR", help="keep run directories and logs here (default: a temporary "
                                                      "directory, deleted unless a run fails)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per run before it is stopped (default: none)")
    ap.add_argument("--torch", action="store_true", help="also time tools/bench/torch_reference.py per mode")
    ap.add_argument("--torch-device", default="cuda",
                    help="device for --torch (default cuda, where the PyTorch rows are bf16 autocast)")
    ap.add_argument("--torch-python", default=sys.executable, help="python with torch for --torch (default: this one)")
    ap.add_argument("--summarize", metavar="RUN_DIR", help="only print the statistics of a finished run directory "
                                                          "(medians over the steps after --warmup)")
    ap.add_argument("--write-shard", metavar="PATH", help="only write a shard of --tokens uniformly random tokens "
                                                         "below --vocab (seed --seed) to PATH")
    ap.add_argument("--vocab", type=int, default=2048, help="with --write-shard (default 2048)")
    ap.add_argument("--tokens", type=int, default=1 << 20, help="with --write-shard (default 2^20)")
    ap.add_argument("--seed", type=int, default=1234, help="with --write-shard (default 1234)")
    args = ap.parse_args()

    if args.steps < 1 or args.warmup < 0 or args.rounds < 1 or args.timeout < 0:
        die("--steps and --rounds must be >= 1, --warmup and --timeout >= 0")
    if args.write_shard:
        if not (1 <= args.vocab < 1 << 32) or args.tokens < 1:
            die("--write-shard needs --vocab in [1, 2^32) and --tokens >= 1")
        os.makedirs(os.path.dirname(os.path.abspath(args.write_shard)), exist_ok=True)
        write_shard(args.write_shard, args.vocab, args.tokens, args.seed)
        say(f"wrote {args.tokens} random tokens (vocab {args.vocab}, seed {args.seed}) to {args.write_shard}")
        return 0
    if args.summarize:
        try:
            summarize(args.summarize, args.warmup)
        except (RunFailed, OSError, ValueError) as e:
            die(str(e), 1)
        return 0

    if not args.birkhoff:
        die("--birkhoff is required: the birkhoff binary (e.g. build/bin/birkhoff, or './run.sh birkhoff' in the bundle)")
    args.birkhoff = shlex.split(args.birkhoff)
    exe = args.birkhoff[0]
    if os.sep in exe:
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            die(f"--birkhoff: {exe!r} is not an executable file (build it: cmake --build build --target birkhoff)")
        args.birkhoff[0] = os.path.abspath(exe)
    elif not shutil.which(exe):
        die(f"--birkhoff: {exe!r} is not on PATH; give the binary's path (e.g. build/bin/birkhoff)")
    if not os.path.isfile(args.config) and not os.path.isabs(args.config) and \
            os.path.isfile(os.path.join(ROOT, args.config)):
        args.config = os.path.join(ROOT, args.config)
    if not os.path.isfile(args.config):
        die(f"config {args.config!r} not found")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("baseline", "hc", "mhc")]
    if bad or not modes:
        die(f"--modes {args.modes!r}: expected a comma-separated list of baseline, hc, mhc")
    for s in args.set:
        if "=" not in s:
            die(f"--set {s!r}: expected key=value")

    harness = ["training.eval_interval=0", "checkpoint.interval=0", "checkpoint.save_final=false",
               "logging.jsonl=true", "logging.tensorboard=false", "training.stop_at_step=0", "data.val="]
    conf = resolve_config(args.birkhoff, args.config, harness + args.set)
    total = args.warmup + args.steps
    owned = [f"training.steps={total}"]
    notes = []
    warmup_lr = conf.get("optimizer", {}).get("schedule", {}).get("warmup_steps", 0)
    if isinstance(warmup_lr, int) and warmup_lr >= total:  # config rule: warmup_steps < training.steps
        owned.append(f"optimizer.schedule.warmup_steps={total - 1}")
        notes.append(f"optimizer.schedule.warmup_steps {warmup_lr} >= {total} steps: set to {total - 1}")

    temp = args.work_dir is None
    args.work_dir = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="connector_overhead_"))
    os.makedirs(args.work_dir, exist_ok=True)

    m, t = conf["model"], conf["training"]
    train = conf["data"]["train"]
    data_note = f"data.train {train}"
    if not os.path.isfile(train):
        vocab, T, G = int(m["vocab_size"]), int(m["seq_len"]), int(t["global_batch_size"])
        n = min(max(total * G * T + 1, T + 2), MAX_SYNTHETIC_TOKENS)
        shard = os.path.join(args.work_dir, f"synthetic-train-v{vocab}.bin")
        expect = 64 + 4 * n
        if not (os.path.isfile(shard) and os.path.getsize(shard) == expect):
            say(f"data.train {train!r} does not exist: writing {n} random tokens (vocab {vocab}) to {shard}")
            t0 = time.time()
            write_shard(shard, vocab, n, seed=int(conf.get("run", {}).get("seed", 1234)))
            say(f"  written in {time.time() - t0:.1f} s")
        owned.append(f"data.train={shard}")
        data_note = f"synthetic: {n} uniformly random tokens, vocab {vocab} ({shard})"

    def harness_sets(mode, run_dir):
        return harness + args.set + [f"model.residual.mode={mode}", f"run.dir={run_dir}"] + owned

    streams = m.get("residual", {}).get("streams", "?")
    say(f"{args.config}: {m.get('attention')} {m.get('ffn')}, dim {m.get('dim')}, {m.get('n_layers')} layers, "
        f"vocab {m['vocab_size']}, seq {m['seq_len']}, {t['global_batch_size']} sequences/step "
        f"(micro {t.get('micro_batch_size')}), n = {streams} streams for hc/mhc; run.device {conf['run']['device']}; "
        f"modes {', '.join(modes)}; {args.warmup} warm-up + {args.steps} timed steps"
        + (f", {args.rounds} rounds" if args.rounds > 1 else "") + f"; work dir {args.work_dir}")

    runs = {mode: [] for mode in modes}
    torch_rows = []
    try:
        for r in range(args.rounds):
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                runs[mode].append(run_birkhoff(args, mode, r, harness_sets))
        if args.torch:
            for mode in modes:
                torch_rows += run_torch(args, mode)
    except RunFailed as e:
        print(f"connector_overhead: error: {e}", file=sys.stderr)
        print(f"connector_overhead: run directories and logs kept in {args.work_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nconnector_overhead: interrupted; logs in {args.work_dir}", file=sys.stderr)
        return 130

    results = [combine(runs[mode]) for mode in modes]
    base = next((x for x in results if x["mode"] == "baseline"), None)
    for x in results:
        x["impl"] = "birkhoff"
        x["time_vs_baseline"] = x["ms_per_step"] / base["ms_per_step"] if base else None
        x["tokens_per_s_vs_baseline"] = x["tokens_per_s"] / base["tokens_per_s"] if base else None
    peak = next(((x.get("peak_device"), x.get("peak_flops"), x.get("peak_source")) for x in results
                 if x.get("peak_flops")), (None, None, None))
    # Every run reports MFU against its own peak: one datasheet figure on a GPU, a measurement per
    # run on the CPU (then they differ a little).
    peaks = sorted({r["peak_flops"] for rs in runs.values() for r in rs if r.get("peak_flops")})
    for row in torch_rows:  # PyTorch rows: MFU with Birkhoff's FLOPs/token and peak for that mode
        bk = next((x for x in results if x["mode"] == row["mode"]), {})
        if row.get("tokens_per_s") and bk.get("mfu_per_token_per_s") is not None:
            row["mfu"] = bk["mfu_per_token_per_s"] * row["tokens_per_s"]
        tb = next((y for y in torch_rows if y["impl"] == row["impl"] and y["mode"] == "baseline"
                   and y.get("ms_per_step")), None)
        if tb and row.get("ms_per_step"):
            row["time_vs_baseline"] = row["ms_per_step"] / tb["ms_per_step"]
    ratios = {f"{x['mode']}/baseline": x["time_vs_baseline"] for x in results
              if base and x["mode"] != "baseline"}

    out = {"config": args.config, "birkhoff": shlex.join(args.birkhoff), "modes": modes, "steps": args.steps,
           "warmup": args.warmup, "rounds": args.rounds, "set": args.set, "data": data_note,
           "peak": {"device": peak[0], "flops": peak[1], "source": peak[2], "per_run": peaks},
           "step_time_ratios": ratios, "goal_mhc_over_baseline": GOAL, "paper_mhc_over_baseline": PAPER,
           "results": results, "torch": torch_rows, "notes": notes, "host": host_info(args.birkhoff)}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        say(f"results written to {args.json}")
    if temp:
        shutil.rmtree(args.work_dir, ignore_errors=True)

    # ---- the table (last) ----
    first = results[0]
    dev = first.get("device", "?") + (f", {first['precision']}" if first.get("precision") else "")
    print()
    print(f"{args.config}: device {dev}; "
          f"{t['global_batch_size']} x {m['seq_len']} tokens per step; median over {args.steps} timed steps after "
          f"{args.warmup}" + (f", median of {args.rounds} rounds" if args.rounds > 1 else ""))
    for n in notes:
        print(f"  note: {n}")
    print(f"  data: {data_note}")
    if len(peaks) == 1:
        print(f"  MFU: Birkhoff's, FLOPs/token x tokens/s over the peak {peak[0]} {peak[1] / 1e12:.4g} TFLOP/s "
              f"({peak[2]})")
    elif peaks:
        print(f"  MFU: Birkhoff's, FLOPs/token x tokens/s over each run's own peak, {peak[0]} "
              f"{peaks[0] / 1e12:.4g}-{peaks[-1] / 1e12:.4g} TFLOP/s ({peak[2]})")
    else:
        print("  MFU: Birkhoff's metrics; train.log names no peak for this device (then its MFU is 0)")
    mem_kind = first["mem_kind"]
    print(f"  peak memory: {'device tensor bytes (gpu_mem_gb); reserved = held by the caching allocator' if mem_kind == 'gpu tensors' else 'peak resident set of the process (mem_gb)'}")
    head = ["implementation", "mode", "params", "ms/step", "tokens/s", "MFU", "peak mem GiB", "reserved GiB",
            "time vs baseline"]
    body = []
    for x in results:
        body.append(["birkhoff", x["mode"], x.get("parameters", "?"), f"{x['ms_per_step']:.1f}", fmt_rate(x["tokens_per_s"]),
                     f"{100 * (x['mfu'] or 0):.1f}%", fmt_gb(x["peak_mem_gb"]), fmt_gb(x["gpu_reserved_gb"]),
                     "-" if x["time_vs_baseline"] is None else f"{x['time_vs_baseline']:.3f}"])
    for x in torch_rows:
        if x.get("failed"):
            body.append([x["impl"], x["mode"], "-", "failed", x["failed"], "-", "-", "-", "-"])
            continue
        body.append([f"{x['impl']} {x['dtype']}", x["mode"], "-", f"{x['ms_per_step']:.1f}", fmt_rate(x["tokens_per_s"]),
                     f"{100 * x['mfu']:.1f}%" if x.get("mfu") is not None else "-", "-", "-",
                     f"{x['time_vs_baseline']:.3f}" if x.get("time_vs_baseline") else "-"])
    print_table(head, body, right_from=2)
    if torch_rows:
        print("  pytorch rows: tools/bench/torch_reference.py in the dtype each names (bf16: autocast with fp32 "
              "weights, gradients and AdamW; f32: float32 throughout); Birkhoff: the trainer's precision; "
              "MFU with Birkhoff's FLOPs/token and peak; time vs the same implementation's baseline")
        for n in sorted({n for x in torch_rows for n in x.get("notes") or []}):
            print(f"  pytorch note: {n}")
    skipped = {x["mode"]: x["skipped_updates"] for x in results if x.get("skipped_updates")}
    if skipped:
        print(f"  warning: updates skipped for non-finite loss or gradients: {skipped}")
    for key, val in ratios.items():
        line = f"  step time {key}: {val:.3f}"
        if key == "mhc/baseline":
            line += f" (goal <= {GOAL}: {'met' if val <= GOAL else 'not met'}; paper {PAPER})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
