#!/usr/bin/python3
"""Draws the per-rank timeline of a pipeline schedule from the Chrome trace that
`birkhoff schedule --trace FILE` writes (docs/dualpipe.md).

usage: tools/schedule_timeline.py TRACE.json OUT.png [--title TEXT] [--width INCHES]

One row per rank (rank 0 on top), one box per action at its simulated start and duration (the trace
shows one cost unit as 1 ms; the axis is in cost units). Colours: F blue, B green, b (input gradient
only) teal, W (deferred weight gradient) purple; the rank's second stage (DualPipe's direction 1,
DualPipeV's way back) in the darker shade; an overlapped F&B pair is split, forward on top, backward
below. Idle time is white. Needs Debian's python3-matplotlib (run with /usr/bin/python3).
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

# (first stage, second stage) shades per op kind.
COLOURS = {
    "F": ("#9ecae1", "#3182bd"),
    "B": ("#a1d99b", "#31a354"),
    "b": ("#99d8c9", "#2ca25f"),
    "W": ("#bcbddc", "#756bb1"),
}


def label(kind, d, m):
    return f"{kind}{d}.{m}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace")
    p.add_argument("out")
    p.add_argument("--title", default=None)
    p.add_argument("--width", type=float, default=None, help="figure width in inches (default: from makespan)")
    a = p.parse_args()

    with open(a.trace) as f:
        t = json.load(f)
    events = [e for e in t["traceEvents"] if e.get("ph") == "X"]
    if not events:
        sys.exit(f"{a.trace}: no events")
    meta = t.get("otherData", {})
    ranks = sorted({e["pid"] for e in events})
    makespan = max(e["ts"] + e["dur"] for e in events) / 1000.0
    min_dur = min(e["dur"] for e in events) / 1000.0

    width = a.width or min(28.0, max(8.0, 0.45 * makespan / max(min_dur, 1e-9) * 0.9))
    fig, ax = plt.subplots(figsize=(width, 0.55 * len(ranks) + 1.6))
    scale = width / makespan  # inches per cost unit, for deciding what fits in a box

    def text(x, y, s, dur, size=8):
        # Only where it fits: about 0.075 inch per character at this size.
        if dur * scale >= 0.075 * len(s) * size / 8:
            ax.text(x, y, s, ha="center", va="center", fontsize=size, color="black")

    for e in events:
        r = ranks.index(e["pid"])
        y = len(ranks) - 1 - r
        x, dur = e["ts"] / 1000.0, e["dur"] / 1000.0
        args = e["args"]
        kind = args["kind"]
        if kind == "F&B":
            for half, k in enumerate(("F", "B")):
                c = COLOURS[k][args["chunk"][half]]
                y0 = y + 0.05 + (0.45 if half == 0 else 0.0)
                ax.add_patch(Rectangle((x, y0), dur, 0.45, facecolor=c, edgecolor="black", linewidth=0.5))
                text(x + dur / 2, y0 + 0.225, label(k, args["d"][half], args["m"][half]), dur, 7)
        else:
            c = COLOURS[kind][args["chunk"]]
            ax.add_patch(Rectangle((x, y + 0.05), dur, 0.9, facecolor=c, edgecolor="black", linewidth=0.5))
            text(x + dur / 2, y + 0.5, label(kind, args["d"], args["m"]), dur)

    ax.set_xlim(0, makespan)
    ax.set_ylim(0, len(ranks))
    ax.set_yticks([len(ranks) - 1 - i + 0.5 for i in range(len(ranks))])
    ax.set_yticklabels([f"rank {r}" for r in ranks])
    ax.set_xlabel("time (cost units)")
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    title = a.title
    if title is None and meta:
        title = (f"{meta.get('schedule')}  pp={meta.get('pp')}  N={meta.get('microbatches')}  "
                 f"(F={meta.get('cost_f')} B={meta.get('cost_b')} W={meta.get('cost_w')} "
                 f"F&B={meta.get('cost_fb')} latency={meta.get('latency')})  makespan {meta.get('makespan')}, "
                 f"bubble per rank {meta.get('bubble')}, formula {meta.get('analytical_formula')} = "
                 f"{meta.get('analytical_bubble')}")
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    handles = [Patch(facecolor=COLOURS[k][0], edgecolor="black", label=n)
               for k, n in (("F", "F forward"), ("B", "B backward"), ("b", "b input grad"), ("W", "W weight grad"))]
    handles.append(Patch(facecolor=COLOURS["F"][1], edgecolor="black", label="darker: second stage"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.02 * (6 - min(len(ranks), 6))),
              ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
