"""`birkhoff schedule`: stdout is exactly DeepSeek's reference lists (one line per rank, nothing
else), the simulation report is on stderr, --trace writes valid Chrome-trace JSON, and bad
arguments are clear errors."""
import json
import os

from bk_testlib import Checklist, parse_args, run

a = parse_args()
check = Checklist()


DUALPIPE_4_8 = """\
rank0: F0.0 F0.1 F0.2 F1.0 b1.0 W1.0 F1.1 [F0.3&B1.1] [F1.2&B0.0] B1.2 [F1.3&B0.1] B1.3 b0.2 W0.2 b0.3 W0.3
rank1: F0.0 F1.0 F0.1 F1.1 F0.2 B1.0 [F1.2&B0.0] [F0.3&B1.1] [F1.3&B0.1] B1.2 B0.2 b1.3 b0.3 W1.3 W0.3
rank2: F1.0 F0.0 F1.1 F0.1 F1.2 B0.0 [F0.2&B1.0] [F1.3&B0.1] [F0.3&B1.1] B0.2 B1.2 b0.3 b1.3 W0.3 W1.3
rank3: F1.0 F1.1 F1.2 F0.0 b0.0 W0.0 F0.1 [F1.3&B0.1] [F0.2&B1.0] B0.2 [F0.3&B1.1] B0.3 b1.2 W1.2 b1.3 W1.3
"""
DUALPIPEV_2_4 = """\
rank0: F0.0 F0.1 F0.2 F3.0 b3.0 W3.0 F3.1 [F0.3&B3.1] [F3.2&B0.0] B3.2 [F3.3&B0.1] B3.3 b0.2 W0.2 b0.3 W0.3
rank1: F1.0 F2.0 F1.1 F2.1 F1.2 B2.0 [F2.2&B1.0] [F1.3&B2.1] [F2.3&B1.1] B2.2 B1.2 b2.3 b1.3 W2.3 W1.3
"""


def diff(got, want):
    import difflib
    return "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "want", "got"))


for kind, pp, n, want in [("dualpipe", 4, 8, DUALPIPE_4_8), ("dualpipev", 2, 4, DUALPIPEV_2_4)]:
    r = run([a.birkhoff, "schedule", "--kind", kind, "--pp", str(pp), "--microbatches", str(n)])
    d = diff(r.stdout, want)
    if d:
        print(d)
    check(not d, f"{kind} pp={pp} N={n}: stdout is the reference list")
    check("makespan 26" in r.stderr and "bubble" in r.stderr and "(PP/2-1)(F&B+B-3W)" in r.stderr,
          f"{kind}: the simulation report is on stderr")

# 1F1B: one line per rank, and the simulated bubble equals (PP-1)(F+B) = 9 on every rank.
r = run([a.birkhoff, "schedule", "--kind=1f1b", "--pp=4", "--microbatches=8"])
lines = r.stdout.splitlines()
check(len(lines) == 4 and all(l.startswith(f"rank{i}: ") for i, l in enumerate(lines)), "1f1b: one line per rank")
check(lines[3] == "rank3: " + " ".join(f"F3.{m} B3.{m}" for m in range(8)), "1f1b: last rank alternates F and B")
rows = [l.split() for l in r.stderr.splitlines() if l.strip() and l.split()[0].isdigit()]
check(len(rows) == 4 and all(float(row[2]) == 9 for row in rows), f"1f1b: bubble 9 on every rank ({rows})")

# --trace: valid JSON, one process per rank, one complete event per action with its arguments.
trace = os.path.join(a.work, "dualpipe.json")
r = run([a.birkhoff, "schedule", "--kind", "dualpipe", "--pp", "4", "--microbatches", "16", "--trace", trace,
         "--cost-f", "1", "--cost-b", "2", "--cost-w", "1", "--cost-fb", "2.5", "--latency", "0.1"])
with open(trace) as f:
    t = json.load(f)
events = [e for e in t["traceEvents"] if e["ph"] == "X"]
procs = {e["pid"]: e["args"]["name"] for e in t["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
listed = [len(l.split()) - 1 for l in r.stdout.splitlines()]
check(procs == {i: f"rank {i}" for i in range(4)}, "trace: one process per rank")
check([sum(e["pid"] == i for e in events) for i in range(4)] == listed, "trace: one event per action")
check(all({"name", "ts", "dur", "cat"} <= e.keys() and {"d", "m", "mb", "stage", "direction"} <= e["args"].keys() for e in events),
      "trace: events carry name, ts, dur, micro-batch and direction")
names = [e["name"] for e in events if e["pid"] == 0]
check(names == r.stdout.splitlines()[0].split()[1:], "trace: rank 0's events in list order")
check(t["otherData"]["schedule"] == "dualpipe" and t["otherData"]["cost_fb"] == 2.5, "trace: otherData")

bad = [
    (["--kind", "gpipe", "--pp", "4", "--microbatches", "8"], ["--kind", "1f1b, dualpipe or dualpipev", "gpipe"]),
    (["--pp", "4", "--microbatches", "8"], ["--kind is required"]),
    (["--kind", "dualpipe", "--pp", "3", "--microbatches", "8"], ["--pp", "even", "use pp = 4"]),
    (["--kind", "dualpipe", "--pp", "4", "--microbatches", "6"], ["--microbatches", "at least 2 x pp = 8", "use 8"]),
    (["--kind", "dualpipe", "--pp", "4", "--microbatches", "9"], ["--microbatches", "even"]),
    (["--kind", "dualpipev", "--pp", "4", "--microbatches", "7"], ["--microbatches", "at least 2 x pp = 8"]),
    (["--kind", "1f1b", "--pp", "0", "--microbatches", "8"], ["--pp", ">= 1"]),
    (["--kind", "1f1b", "--pp", "four", "--microbatches", "8"], ["--pp", "'four'"]),
    (["--kind", "1f1b", "--pp", "4"], ["--microbatches is required"]),
    (["--kind", "1f1b", "--pp", "4", "--microbatches", "8", "--cost-w", "2"], ["--cost-w", "below the full backward"]),
    (["--kind", "1f1b", "--pp", "4", "--microbatches", "8", "--cost-f", "x"], ["--cost-f", "'x'"]),
    (["--kind", "1f1b", "--pp", "4", "--microbatches", "8", "--latency", "-1"], ["--latency", ">= 0"]),
    (["--kind", "1f1b", "--pp", "4", "--microbatches", "8", "--bogus"], ["unknown option --bogus"]),
    (["--kind", "1f1b", "--pp", "4", "--microbatches", "8", "--trace", "/nonexistent/dir/t.json"],
     ["--trace", "/nonexistent/dir/t.json"]),
]
for args, needles in bad:
    r = run([a.birkhoff, "schedule"] + args, check=False)
    out = r.stdout + r.stderr
    ok = r.returncode == 1 and all(n in out for n in needles) and "terminate called" not in out and not r.stdout
    check(ok, f"{args} -> exit {r.returncode}: {r.stderr.strip().splitlines()[:1]}")
r = run([a.birkhoff, "schedule", "--help"], check=False)
check(r.returncode == 0 and "usage: birkhoff schedule" in r.stdout, "--help")

check.finish()
