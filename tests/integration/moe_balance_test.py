"""Loss-free balancing works: on the same run length, expert load spread (coefficient of
variation of the per-expert loads, averaged over MoE layers and the last steps) is smaller with
model.moe.bias_update_speed > 0 than with 0, and the biases move only when it is on."""
import os

from bk_testlib import parse_args, read_metrics, run

a = parse_args([(("--steps",), dict(type=int, default=120))])
cfg = os.path.join(a.source, "configs/tiny-cpu-moe-baseline.yaml")
common = ["--set", f"data.train={a.data}/train.bin", "--set", f"data.val={a.data}/val.bin",
          "--set", f"training.steps={a.steps}", "--set", "training.eval_interval=0",
          "--set", "model.moe.balance_loss_weight=0"]  # isolate the bias mechanism


def spread(gamma):
    run_dir = os.path.join(a.work, f"gamma-{gamma}")
    run([a.birkhoff, "train", cfg, *common, "--set", f"model.moe.bias_update_speed={gamma}",
         "--set", f"run.dir={run_dir}", "--overwrite"])
    rows = read_metrics(run_dir)
    assert all("moe" in r for r in rows), "metrics.jsonl lacks the moe statistics"
    tail = rows[-20:]
    cv = sum(sum(l["load_cv"] for l in r["moe"]) / len(r["moe"]) for r in tail) / len(tail)
    bias = max(max(abs(l["bias_min"]), abs(l["bias_max"])) for l in rows[-1]["moe"])
    loads_ok = all(abs(sum(l["load"]) - r["tokens"] / r["step"] * 2) < 1e-6 for r in rows[-1:] for l in r["moe"])
    return cv, bias, loads_ok


cv_on, bias_on, ok_on = spread(0.01)
cv_off, bias_off, ok_off = spread(0.0)
print(f"load cv (mean of the last 20 steps): with balancing {cv_on:.3f}, without {cv_off:.3f}; "
      f"max |bias| {bias_on:.3f} vs {bias_off:.3f}")
assert ok_on and ok_off, "per-expert loads do not add up to top_k x tokens per step"
assert bias_off == 0.0, "the bias moved with bias_update_speed = 0"
assert bias_on > 0.0, "the bias did not move with bias_update_speed > 0"
assert cv_on < 0.8 * cv_off, f"balancing did not reduce the load spread ({cv_on:.3f} vs {cv_off:.3f})"
print("moe balance test passed")
