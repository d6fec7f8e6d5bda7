#!/usr/bin/python3
"""Print the scalars of TensorBoard event files and check their integrity (docs/metrics.md).

    tools/tb_dump.py PATH [--tag PREFIX]... [--tags] [--check]

PATH is a run directory (its tensorboard/ is read), an event directory or one event file.
Prints "step tag value" lines, by tag then step, after applying resumes (a later file's START
drops the steps it re-runs). --tags lists the tags with their number of points and step range;
--check only verifies every record (CRCs, protobuf) and prints one line per file.

A damaged file (a flipped byte, a truncated record) is reported as
"tools/tb_dump.py: error: FILE: offset N: what is wrong" on stderr with exit code 1; a
missing path or bad arguments exit with 2. Uses tools/tb_reader.py (no TensorBoard needed).
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tb_reader  # noqa: E402


def fmt(v):
    return "nan" if math.isnan(v) else f"{v:.9g}"


def main(argv):
    p = argparse.ArgumentParser(prog="tools/tb_dump.py", description=__doc__.split("\n")[1])
    p.add_argument("path", help="run directory, tensorboard directory or event file")
    p.add_argument("--tag", action="append", default=[], metavar="PREFIX",
                   help="only tags starting with PREFIX (repeatable)")
    p.add_argument("--tags", action="store_true", help="list the tags instead of the values")
    p.add_argument("--check", action="store_true", help="only verify the files")
    a = p.parse_args(argv)
    try:
        files = tb_reader.event_files(a.path)
    except FileNotFoundError as e:
        print(f"tools/tb_dump.py: error: {e}", file=sys.stderr)
        return 2
    if not files:
        print(f"tools/tb_dump.py: error: {a.path}: no event files (events.out.tfevents.*)", file=sys.stderr)
        return 2
    try:
        if a.check:
            for f in files:
                evs = tb_reader.read_events(f)
                n = sum(len(e["scalars"]) for e in evs)
                print(f"{f}: ok, {len(evs)} records, {n} scalars")
            return 0
        scalars = tb_reader.read_scalars(a.path)
    except tb_reader.TBError as e:
        print(f"tools/tb_dump.py: error: {e}", file=sys.stderr)
        return 1
    tags = sorted(t for t in scalars if not a.tag or any(t.startswith(pre) for pre in a.tag))
    for t in tags:
        steps = sorted(scalars[t])
        if a.tags:
            print(f"{t}  {len(steps)} points, steps {steps[0]}..{steps[-1]}" if steps else f"{t}  0 points")
            continue
        for s in steps:
            print(f"{s} {t} {fmt(scalars[t][s])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
