"""Learning: a tiny model trained on the real corpus reaches a validation loss clearly below
the corpus's unigram entropy (computed here from the shards), and the run leaves the outputs a
user relies on (resolved config, per-step metrics, final checkpoint)."""
import math
import os
import sys

from bk_testlib import parse_args, read_metrics, read_shard, run, unigram_entropy

MARGIN_NATS = 1.0  # "clearly below": a context-free model cannot get within 0 of it

a = parse_args([(("--config",), dict(required=True)), (("--steps",), dict(type=int, default=250))])
run_dir = os.path.join(a.work, "run")
r = run([a.birkhoff, "train", os.path.join(a.source, a.config),
         "--set", f"data.train={a.data}/train.bin", "--set", f"data.val={a.data}/val.bin",
         "--set", f"run.dir={run_dir}", "--set", f"training.steps={a.steps}",
         "--set", "training.eval_interval=50", "--overwrite"])
print(r.stderr[-3000:])

vocab, train = read_shard(f"{a.data}/train.bin")
h_unigram = unigram_entropy(train, vocab)
rows = read_metrics(run_dir)
keys = {"step", "loss", "grad_norm", "lr", "tokens", "tokens_per_s", "ms_per_step", "mfu"}
assert len(rows) == a.steps, f"metrics.jsonl has {len(rows)} rows, expected {a.steps}"
for i, row in enumerate(rows):
    assert row["step"] == i + 1 and keys <= row.keys(), f"bad metrics row {row}"
    assert math.isfinite(row["loss"]) and row["tokens_per_s"] > 0, row
val = [row["val_loss"] for row in rows if "val_loss" in row]
assert val, "no validation loss was recorded"
final = val[-1]
print(f"unigram entropy {h_unigram:.4f} nats | initial train loss {rows[0]['loss']:.4f} "
      f"(log V = {math.log(vocab):.4f}) | final val loss {final:.4f} | "
      f"tokens/s {rows[-1]['tokens_per_s']:.0f}")
assert abs(rows[0]["loss"] - math.log(vocab)) < 0.3, "initial loss should be near log(V)"
assert final < h_unigram - MARGIN_NATS, (
    f"final validation loss {final:.4f} is not below the unigram entropy {h_unigram:.4f} "
    f"by {MARGIN_NATS} nats")
assert os.path.exists(os.path.join(run_dir, "config.yaml"))
latest = open(os.path.join(run_dir, "checkpoints", "latest")).read().strip()
assert os.path.exists(os.path.join(run_dir, "checkpoints", latest, "model.safetensors"))
print("learning test passed")
sys.exit(0)
