"""tools/compare on three real short runs (baseline, hc, mhc from the learning tests): the plots
and tables are written, and the table's numbers (summary.json, and summary.md as printed) equal
the runs' own last metrics; the runs' TensorBoard events hold the same train and validation
losses as their metrics.jsonl."""
import json
import math
import os
import statistics
import struct
import subprocess
import sys

from bk_testlib import parse_args, read_metrics

a = parse_args([(("--runs",), dict(nargs=3, required=True))])
sys.path.insert(0, os.path.join(a.source, "tools"))
import tb_reader  # noqa: E402
out = os.path.join(a.work, "compare")
cmd = ["/usr/bin/python3", os.path.join(a.source, "tools/compare"), *a.runs, "--out", out, "--json"]
r = subprocess.run(cmd, capture_output=True, text=True)
print(r.stdout, r.stderr)
assert r.returncode == 0, f"tools/compare exited {r.returncode}"

for name in ["loss.png", "grad_norm.png", "amax.png", "throughput.png", "amax_layers.png", "summary.md"]:
    path = os.path.join(out, name)
    assert os.path.getsize(path) > 0, f"{path} is empty"
    if name.endswith(".png"):
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"

summary = json.load(open(os.path.join(out, "summary.json")))
rows = summary["runs"] if isinstance(summary, dict) and "runs" in summary else summary
assert len(rows) == 3, rows


def close(x, y):
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


md_rows = {}
for line in open(os.path.join(out, "summary.md")):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) > 1 and cells[0] not in ("run", "---", "") and not cells[0].startswith("-"):
        md_rows[cells[0]] = cells


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


base_tps = None
for run_dir, row in zip(a.runs, rows):
    m = read_metrics(run_dir)
    last10 = [x["loss"] for x in m[-10:]]
    val = [x["val_loss"] for x in m if "val_loss" in x]
    conn = [x["conn"] for x in m if "conn" in x]
    tps = statistics.median(x["tokens_per_s"] for x in m)
    base_tps = base_tps or tps  # the first run is the baseline
    print(row)
    assert row["steps"] == len(m), row
    assert close(row["final_train_loss"], sum(last10) / len(last10)), row
    assert close(row["final_val_loss"], val[-1]), row
    assert close(row["median_tokens_per_s"], tps), row
    assert close(row["relative_throughput"], tps / base_tps), row
    if conn:
        assert close(row["amax_fwd_final"], conn[-1]["amax_fwd_max"]), row
        assert close(row["amax_bwd_final"], conn[-1]["amax_bwd_max"]), row
    cells = md_rows[row["label"]]
    want = [f"{m[-1]['step']}", f"{sum(last10) / len(last10):.4f}", f"{val[-1]:.4f}", f"{m[-1]['grad_norm']:.3f}"]
    got = [cells[2].split(" /")[0], cells[4], cells[5], cells[11]]
    assert got == want, f"summary.md row {cells}: {got} != {want} (steps, train loss, val loss, grad norm)"
    if conn:
        conn_step = [x["step"] for x in m if "conn" in x][-1]
        assert cells[7] == f"{conn[-1]['amax_fwd_max']:#.4g} @{conn_step}", cells
    tb = tb_reader.read_scalars(run_dir)
    assert tb["train/loss"] == {x["step"]: f32(x["loss"]) for x in m}, f"{run_dir}: TensorBoard train/loss"
    assert tb["val/loss"] == {x["step"]: f32(x["val_loss"]) for x in m if "val_loss" in x}, run_dir
print("compare on real runs passed")
