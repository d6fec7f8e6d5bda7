"""tools/compare on synthetic run directories with known numbers: every plot is written, the
summary numbers equal those computed here from the same data, and bad input exits with code 2
and a message naming the culprit. Needs no birkhoff binary; standalone:

    /usr/bin/python3 tests/integration/compare_test.py [--source REPO] [--work DIR]
"""
import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

p = argparse.ArgumentParser()
p.add_argument("--source", default=os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
p.add_argument("--work", default=None)
a, _unused = p.parse_known_args()  # ctest's helper also passes --birkhoff and --data
work = a.work or tempfile.mkdtemp(prefix="bk-compare-")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
COMPARE = os.path.join(a.source, "tools", "compare")
PNGS = ["loss.png", "grad_norm.png", "amax.png", "throughput.png", "amax_layers.png"]
N_LAYERS = 4
SUBLAYERS = 2 * N_LAYERS

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def close(x, y):
    if x is None or y is None:
        return x is None and y is None
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


CONFIG = """# resolved configuration of this run (synthetic, written by compare_test.py)
run:
  name: "{name}"
  seed: 1234
model:
  dim: 128
  n_layers: {n_layers}
  residual:
    mode: "{mode}"
    streams: {streams}
training:
  steps: {steps}
  max_grad_norm: 1.0
"""


def make_run(dirname, name, mode, steps_total, steps_done, tps_mean, amax_rate, *, seed, config=True,
             val_every=20, conn_every=10, partial_tail=None, crashed_attempt=None, moe_layers=0):
    """Writes a run directory; returns the records as they should be read back (step order)."""
    rng = random.Random(seed)
    d = os.path.join(work, dirname)
    os.makedirs(d)
    if config:
        with open(os.path.join(d, "config.yaml"), "w") as f:
            f.write(CONFIG.format(name=name, mode=mode, n_layers=N_LAYERS, steps=steps_total,
                                  streams=1 if mode == "baseline" else 4))

    def record(step, bump=0.0):
        loss = 4.0 + 3.6 * math.exp(-step / 15) + 0.05 * rng.uniform(-1, 1) + bump
        r = {"step": step, "loss": loss, "grad_norm": 0.4 + 1.5 * math.exp(-step / 10) + 0.05 * rng.random(),
             "clip_scale": 1.0, "lr": 1e-3, "tokens": 2048 * step,
             "tokens_per_s": tps_mean * (1 + 0.05 * rng.uniform(-1, 1)), "ms_per_step": 200.0,
             "mfu": 0.1, "elapsed_s": 0.2 * step}
        if (val_every and step % val_every == 0) or step == steps_total:
            r["val_loss"] = loss + 0.1 + 0.01 * rng.random()
            r["val_ppl"] = math.exp(r["val_loss"])
        if mode != "baseline" and (step == 1 or step % conn_every == 0 or step == steps_total):
            # Composite gain from sublayer l to the last: grows with depth and with the step.
            comp_f = [amax_rate ** (step * (SUBLAYERS - l) / SUBLAYERS) * (1 + 1e-3 * rng.random())
                      for l in range(SUBLAYERS)]
            comp_b = [g * (1 + 0.2 * (amax_rate - 1)) for g in comp_f]
            r["conn"] = {"amax_fwd_max": max(comp_f), "amax_bwd_max": max(comp_b),
                         "h_res_diag": [0.9] * SUBLAYERS, "row_err": [0.0] * SUBLAYERS,
                         "col_err": [0.0] * SUBLAYERS, "h_pre": [0.25] * SUBLAYERS,
                         "h_post": [0.5] * SUBLAYERS, "fwd_gain": [1.0] * SUBLAYERS,
                         "bwd_gain": [1.0] * SUBLAYERS, "comp_fwd_gain": comp_f, "comp_bwd_gain": comp_b}
        if moe_layers:  # 8 experts per layer, the spread shrinking over the steps
            r["moe"] = []
            for i in range(moe_layers):
                load = [100 + rng.uniform(-1, 1) * 80 / (1 + step / 10) for _ in range(8)]
                mean = sum(load) / 8
                cv = math.sqrt(sum((x - mean) ** 2 for x in load) / 8) / mean
                r["moe"].append({"layer": f"layers.{i + 1}.ffn", "load_max": max(load), "load_min": min(load),
                                 "load_cv": cv, "bias_min": -0.01, "bias_max": 0.01, "balance_loss": 1e-4,
                                 "load": load})
        return r

    lines = []
    if crashed_attempt:  # (first, last): steps logged by an attempt that crashed, then resumed
        lo, hi = crashed_attempt
        lines += [record(s) for s in range(1, hi + 1)]
        lines[lo - 1:] = [record(s, bump=1.0) for s in range(lo, hi + 1)]
        kept = [record(s) for s in range(lo, steps_done + 1)]
        expected = lines[:lo - 1] + kept
        lines += kept
    else:
        expected = lines = [record(s) for s in range(1, steps_done + 1)]
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for r in lines:
            f.write(json.dumps(r) + "\n")
        if partial_tail:
            f.write(partial_tail)
    return d, expected


def expected_summary(recs, ref_recs):
    med = statistics.median(r["tokens_per_s"] for r in recs)
    ref_med = statistics.median(r["tokens_per_s"] for r in ref_recs)
    n = min(10, len(recs))
    val = [r["val_loss"] for r in recs if "val_loss" in r]
    conn = [r["conn"] for r in recs if "conn" in r]
    moe = recs[-1].get("moe")
    return {"moe_load_cv_final": sum(x["load_cv"] for x in moe) / len(moe) if moe else None,
            "moe_load_cv_worst_final": max(x["load_cv"] for x in moe) if moe else None,
            "moe_max_over_mean_final": max(x["load_max"] / (sum(x["load"]) / 8) for x in moe) if moe else None,"steps": recs[-1]["step"], "tokens": recs[-1]["tokens"],
            "final_train_loss": sum(r["loss"] for r in recs[-n:]) / n,
            "final_val_loss": val[-1] if val else None, "best_val_loss": min(val) if val else None,
            "amax_fwd_final": conn[-1]["amax_fwd_max"] if conn else 1.0,
            "amax_bwd_final": conn[-1]["amax_bwd_max"] if conn else 1.0,
            "median_tokens_per_s": med, "relative_throughput": med / ref_med,
            "final_grad_norm": recs[-1]["grad_norm"]}


def compare(*args):
    cmd = [COMPARE] + list(args)
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True)


def check_outputs(out, r, tag, moe=False):
    check(r.returncode == 0, f"{tag}: exit 0 (got {r.returncode}; stderr: {r.stderr.strip()[-500:]})")
    check(os.path.exists(os.path.join(out, "moe_load.png")) == moe,
          f"{tag}: moe_load.png {'written' if moe else 'not written'} ({'a' if moe else 'no'} run has MoE layers)")
    for name in PNGS + (["moe_load.png"] if moe else []):
        path = os.path.join(out, name)
        ok = os.path.isfile(path) and os.path.getsize(path) > 1000
        if ok:
            with open(path, "rb") as f:
                ok = f.read(8) == b"\x89PNG\r\n\x1a\n"
        check(ok, f"{tag}: {name} is a non-empty PNG")
    check(os.path.isfile(os.path.join(out, "summary.md")), f"{tag}: summary.md written")
    path = os.path.join(out, "summary.json")
    check(os.path.isfile(path), f"{tag}: summary.json written")
    with open(path) as f:
        return json.load(f)


def check_numbers(tag, got, label, want):
    check(got["label"] == label, f"{tag}: label {got['label']!r} == {label!r}")
    for k, v in want.items():
        check(close(got[k], v), f"{tag}/{label}: {k} {got[k]!r} == {v!r}")


# ---- runs: a baseline; hc with growing Amax (resumed after a crash); a live mhc run near 1
base_dir, base = make_run("base", "syn-baseline", "baseline", 60, 60, 10000.0, None, seed=1)
hc_dir, hc = make_run("hc", "syn-hc", "hc", 60, 60, 8500.0, 1.08, seed=2, crashed_attempt=(31, 35),
                      moe_layers=2)
mhc_dir, mhc = make_run("mhc", "syn-mhc", "mhc", 60, 45, 8000.0, 1.0, seed=3,
                        partial_tail='{"step":46,"loss":4.1,"grad_no')
mini_dir, mini = make_run("mini", None, "baseline", 6, 6, 5000.0, None, seed=4, config=False, val_every=0)
check(hc[-1]["conn"]["amax_fwd_max"] > 50, "synthetic hc Amax grows (sanity of the test data)")

# 1: explicit labels, baseline not first: relative throughput is over the baseline's.
out1 = os.path.join(work, "out1")
r = compare(hc_dir, base_dir, mhc_dir, "--out", out1, "--labels", "H,B,M", "--smooth", "5", "--json")
s = check_outputs(out1, r, "labels+smooth", moe=True)
rows = s["runs"]
check(len(rows) == 3, "three rows")
check(s["throughput_reference"]["label"] == "B", "reference is the baseline run")
check([x["mode"] for x in rows] == ["hc", "baseline", "mhc"], "modes read from config.yaml")
check_numbers("1", rows[0], "H", expected_summary(hc, base))
check_numbers("1", rows[1], "B", expected_summary(base, base))
check_numbers("1", rows[2], "M", expected_summary(mhc, base))
check(rows[2]["partial_last_line"] is True, "partial last line reported")
check(rows[2]["steps"] == 45 and rows[2]["steps_total"] == 60, "live run: 45 of 60 steps")
with open(os.path.join(out1, "summary.md")) as f:
    md = f.read()
check("1 (baseline)" in md and "min(10, steps)" in md, "summary.md: baseline Amax and loss window stated")
check("baseline run" in md, "summary.md says the reference is the baseline run")
check("| H |" in r.stdout and "| B |" in r.stdout, "table printed to stdout")
h_row = next(line for line in md.splitlines() if line.startswith("| H |"))
want_cv = expected_summary(hc, base)["moe_load_cv_final"]
check(h_row.rstrip(" |").endswith(f"{want_cv:.4f}"), f"summary.md: H's expert load CV is {want_cv:.4f}: {h_row}")
check(next(line for line in md.splitlines() if line.startswith("| B |")).rstrip().endswith("| – |"),
      "summary.md: a dense run's expert load CV is –")

# 2: no labels (run.name from config.yaml), no baseline: reference is the first run; steps on x.
out2 = os.path.join(work, "out2")
r = compare(mhc_dir, hc_dir, "--out", out2, "--x", "step", "--json")
s = check_outputs(out2, r, "names+step", moe=True)
check(s["throughput_reference"]["label"] == "syn-mhc", "reference is the first run without a baseline")
check_numbers("2", s["runs"][0], "syn-mhc", expected_summary(mhc, mhc))
check_numbers("2", s["runs"][1], "syn-hc", expected_summary(hc, mhc))

# 3: no config.yaml (label = directory name), fewer than 10 steps, no validation.
out3 = os.path.join(work, "out3")
r = compare(mini_dir, "--out", out3, "--json")
s = check_outputs(out3, r, "mini")
check_numbers("3", s["runs"][0], "mini", expected_summary(mini, mini))
check(s["runs"][0]["final_train_loss_steps"] == 6, "loss window is min(10, steps) = 6")

# ---- errors: exit code 2 and a message naming the directory / file
no_metrics = os.path.join(work, "no-metrics")
os.makedirs(no_metrics)
empty = os.path.join(work, "empty")
os.makedirs(empty)
open(os.path.join(empty, "metrics.jsonl"), "w").close()
only_partial = os.path.join(work, "only-partial")
os.makedirs(only_partial)
with open(os.path.join(only_partial, "metrics.jsonl"), "w") as f:
    f.write('{"step":1,"lo')
missing = os.path.join(work, "does-not-exist")
eout = os.path.join(work, "out-err")
for args, needles in [
    ([base_dir, no_metrics], [no_metrics, "metrics.jsonl"]),
    ([empty, base_dir], [empty]),
    ([only_partial], [only_partial]),
    ([missing], [missing]),
    ([base_dir, hc_dir, "--labels", "a,b,c"], ["--labels", "3", "2"]),
]:
    r = compare(*args, "--out", eout)
    ok = r.returncode == 2 and all(n in r.stderr for n in needles) and "Traceback" not in r.stderr
    check(ok, f"error {'--labels' if '--labels' in args else needles[0]}: exit 2 naming it "
              f"(got {r.returncode}: {r.stderr.strip()[:300]})")

print(f"\n{len(failures)} failure(s)" if failures else "\nall checks passed")
sys.exit(1 if failures else 0)
