"""Helpers shared by the integration tests (run with Debian's /usr/bin/python3)."""
import argparse
import json
import os
import shutil
import struct
import subprocess

import numpy as np


def parse_args(extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("--birkhoff", required=True)
    p.add_argument("--data", required=True, help="prepared corpus dir (train.bin, val.bin)")
    p.add_argument("--work", required=True, help="scratch directory for runs")
    p.add_argument("--source", required=True, help="repository root")
    for args, kw in (extra or []):
        p.add_argument(*args, **kw)
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    return a


def read_shard(path):
    """Token shard reader written from docs/data.md: 64-byte header, then uint32 tokens."""
    with open(path, "rb") as f:
        header = f.read(64)
        assert header[:8] == b"BKTOKENS", f"{path}: bad magic {header[:8]!r}"
        version, vocab, n = struct.unpack_from("<IIQ", header, 8)
        tokens = np.frombuffer(f.read(), dtype="<u4")
    assert len(tokens) == n, f"{path}: header says {n} tokens, file has {len(tokens)}"
    return vocab, tokens


def unigram_entropy(tokens, vocab):
    """Entropy (nats) of the token frequency distribution: the loss of the best model that
    ignores context."""
    counts = np.bincount(tokens, minlength=vocab).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def run(cmd, check=True, **kw):
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        print(r.stdout)
        print(r.stderr)
        raise SystemExit(f"command failed with exit code {r.returncode}")
    return r


class Checklist:
    """Named checks that all run, each printed ok/FAIL; finish() exits non-zero if any failed."""

    def __init__(self):
        self.failures = []

    def __call__(self, ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            self.failures.append(what)

    def finish(self):
        print(f"{len(self.failures)} failed")
        raise SystemExit(1 if self.failures else 0)


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
