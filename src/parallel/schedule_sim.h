// A timeline simulator for pipeline schedules (schedule.h): runs every rank's action list with
// given op costs and a per-message latency, each action as soon as its rank is free and its inputs
// are there, and reports per-rank busy spans, the step's makespan and each rank's bubble; detects
// deadlock. Plus the Chrome trace writer (chrome://tracing, ui.perfetto.dev) used by
// `birkhoff schedule --trace` and tools/schedule_timeline.py.
//
// The model: all ranks start at 0; an action starts when (1) the rank's previous action has
// ended, (2) every receive of its ops has arrived — a message leaves when the sending action ends
// and arrives `latency` later (a local hand-off arrives at once) — (3) for B/b, this rank's F of
// the same (stage, micro-batch) has ended, (4) for W, its b has ended. Sends never block
// (receives are posted early, buffers are unlimited), so the only way to get stuck is a cycle of
// waits: a deadlock, reported with what each stuck rank waits for.
#pragma once
#include <string>
#include <vector>

#include "parallel/schedule.h"

namespace bk {

// Costs in arbitrary time units (the trace shows 1 unit as 1 ms).
struct OpCosts {
  double f = 1;         // forward of one stage
  double b = 2;         // full backward (input and weight gradient)
  double w = 1;         // the weight-gradient part of b; an input-gradient-only b costs b - w
  double fb = -1;       // an overlapped F&B pair; < 0 means f + b (no gain from overlapping)
  double latency = 0;   // per message between ranks
  double pair() const { return fb < 0 ? f + b : fb; }
  double input_grad() const { return b - w; }
  double of(ActionKind kind) const;
};

// bk::Error naming the flag (--cost-f, --cost-b, --cost-w, --cost-fb, --latency) when a cost is
// not positive, w >= b, or the latency is negative.
void validate_costs(const OpCosts& c);

struct SimSpan {
  double start = 0, end = 0;
  int action = 0;  // index into Schedule::ranks[rank]
};

// A rank that cannot go on: its next action and the first input it lacks.
struct SimWait {
  int rank = 0;
  int action = 0;
  std::string waits_for;
};

struct SimResult {
  bool deadlock = false;
  std::vector<SimWait> waits;               // when deadlocked: every stuck rank
  std::vector<std::vector<SimSpan>> spans;  // [rank] -> the actions it ran, in order
  double makespan = 0;                      // end of the last action on any rank
  std::vector<double> busy;                 // [rank] sum of its actions' durations
  std::vector<double> bubble;               // [rank] makespan - busy
  double bubble_fraction(int rank) const { return makespan > 0 ? bubble[rank] / makespan : 0.0; }
  std::string deadlock_report(const Schedule& s) const;  // one line per stuck rank
};

SimResult simulate(const Schedule& s, const OpCosts& costs);

// The bubble of the schedule's published formula, per rank, in cost units:
// 1F1B (pp-1)(F+B); DualPipe (pp/2-1)(F&B+B-3W); DualPipeV the same with PP = 2*pp stages,
// (pp-1)(F&B+B-3W). analytical_formula gives the formula as text.
double analytical_bubble(const Schedule& s, const OpCosts& c);
std::string analytical_formula(ScheduleKind kind);

// Chrome trace event JSON: one process per rank ("rank r"), one complete event per action with
// name (format_action), cat (F, B, b, W, F&B), ts/dur in microseconds (1 cost unit = 1000 us),
// args {kind, d, m, mb, stage, chunk, direction, action} (for F&B each but kind and action is a
// pair [forward, backward]); otherData carries the schedule, sizes, costs, makespan and bubbles.
// Requires a simulation without deadlock.
std::string chrome_trace_json(const Schedule& s, const SimResult& r, const OpCosts& c);
void write_chrome_trace(const std::string& path, const Schedule& s, const SimResult& r, const OpCosts& c);

}  // namespace bk
