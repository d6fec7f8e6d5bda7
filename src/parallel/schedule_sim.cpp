#include "parallel/schedule_sim.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <unordered_map>

#include "core/error.h"

namespace bk {

double OpCosts::of(ActionKind kind) const {
  switch (kind) {
    case ActionKind::F: return f;
    case ActionKind::B: return b;
    case ActionKind::b: return input_grad();
    case ActionKind::W: return w;
    case ActionKind::FB: return pair();
  }
  return 0;
}

void validate_costs(const OpCosts& c) {
  auto finite_pos = [](double v) { return std::isfinite(v) && v > 0; };
  BK_CHECK(finite_pos(c.f), "--cost-f: the forward cost must be a number > 0, got {}", c.f);
  BK_CHECK(finite_pos(c.b), "--cost-b: the backward cost must be a number > 0, got {}", c.b);
  BK_CHECK(finite_pos(c.w) && c.w < c.b,
           "--cost-w: the weight-gradient cost must be > 0 and below the full backward cost --cost-b = {} "
           "(an input-gradient-only backward costs B - W), got {}",
           c.b, c.w);
  BK_CHECK(c.fb < 0 || finite_pos(c.fb),
           "--cost-fb: the cost of an overlapped F&B pair must be a number > 0 (leave it out for F + B), got {}", c.fb);
  BK_CHECK(std::isfinite(c.latency) && c.latency >= 0, "--latency: the per-message latency must be >= 0, got {}",
           c.latency);
}

namespace {

// Keys of the dependencies: message tags (from the schedule), and per (stage, mb) "F done" and
// "b done" events.
struct Dep {
  enum Kind { Message, ForwardDone, InputGradDone } kind;
  long key;
};

long done_key(const Schedule& s, const Op& o) { return long(o.stage) * s.microbatches + o.mb; }

std::string describe(const Schedule& s, const Dep& d, const Op& o) {
  switch (d.kind) {
    case Dep::Message:
      return fmt::format("the {} of stage {} micro-batch {} from rank {}",
                         o.recv->payload == Payload::Activation ? "activation" : "gradient", o.recv->from_stage,
                         o.mb, o.recv->peer);
    case Dep::ForwardDone:
      return fmt::format("its own forward of stage {} micro-batch {}", o.stage, o.mb);
    case Dep::InputGradDone:
      return fmt::format("its own input gradient (b) of stage {} micro-batch {}", o.stage, o.mb);
  }
  (void)s;
  return "?";
}

struct Producer {
  int rank = -1, action = -1;
};

}  // namespace

SimResult simulate(const Schedule& s, const OpCosts& costs) {
  validate_costs(costs);
  const int P = s.pp;
  SimResult res;
  res.spans.resize(P);
  res.busy.assign(P, 0.0);
  res.bubble.assign(P, 0.0);

  // Who produces each dependency (for the deadlock report), and when it became available.
  std::unordered_map<long, Producer> msg_by, fwd_by, bgrad_by;
  for (int r = 0; r < P; ++r)
    for (int i = 0; i < int(s.ranks[r].size()); ++i)
      for (const Op& o : s.ranks[r][i].ops) {
        if (o.send) msg_by[o.send->tag] = {r, i};
        if (o.kind == OpKind::F) fwd_by[done_key(s, o)] = {r, i};
        if (o.kind == OpKind::b) bgrad_by[done_key(s, o)] = {r, i};
      }
  std::unordered_map<long, double> msg_at, fwd_at, bgrad_at;

  auto deps_of = [&](const Op& o) {
    std::vector<Dep> deps;
    if (o.recv) deps.push_back({Dep::Message, o.recv->tag});
    if (o.kind == OpKind::B || o.kind == OpKind::b) deps.push_back({Dep::ForwardDone, done_key(s, o)});
    if (o.kind == OpKind::W) deps.push_back({Dep::InputGradDone, done_key(s, o)});
    return deps;
  };
  auto table = [&](Dep::Kind k) -> std::unordered_map<long, double>& {
    return k == Dep::Message ? msg_at : k == Dep::ForwardDone ? fwd_at : bgrad_at;
  };

  std::vector<int> pos(P, 0);
  std::vector<double> free_at(P, 0.0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < P; ++r) {
      while (pos[r] < int(s.ranks[r].size())) {
        const Action& a = s.ranks[r][pos[r]];
        double start = free_at[r];
        bool ready = true;
        for (const Op& o : a.ops)
          for (const Dep& d : deps_of(o)) {
            const auto& t = table(d.kind);
            auto it = t.find(d.key);
            if (it == t.end()) {
              ready = false;
              break;
            }
            start = std::max(start, it->second);
          }
        if (!ready) break;
        const double end = start + costs.of(a.kind);
        res.spans[r].push_back({start, end, pos[r]});
        res.busy[r] += end - start;
        free_at[r] = end;
        for (const Op& o : a.ops) {
          if (o.send) msg_at[o.send->tag] = end + (o.send->local ? 0.0 : costs.latency);
          if (o.kind == OpKind::F) fwd_at[done_key(s, o)] = end;
          if (o.kind == OpKind::b) bgrad_at[done_key(s, o)] = end;
        }
        ++pos[r];
        progress = true;
      }
    }
  }

  for (int r = 0; r < P; ++r) {
    if (pos[r] == int(s.ranks[r].size())) continue;
    res.deadlock = true;
    const Action& a = s.ranks[r][pos[r]];
    std::string what;
    for (const Op& o : a.ops) {
      for (const Dep& d : deps_of(o)) {
        if (table(d.kind).count(d.key)) continue;
        const auto& by = d.kind == Dep::Message ? msg_by : d.kind == Dep::ForwardDone ? fwd_by : bgrad_by;
        auto it = by.find(d.key);
        std::string source = "which no action produces";
        if (it != by.end()) {
          const Action& pa = s.ranks[it->second.rank][it->second.action];
          source = fmt::format("produced by rank {} action {} ({}), not run yet", it->second.rank,
                               it->second.action, format_action(pa));
        }
        what = describe(s, d, o) + ", " + source;
        break;
      }
      if (!what.empty()) break;
    }
    res.waits.push_back({r, pos[r], what});
  }
  for (int r = 0; r < P; ++r)
    if (!res.spans[r].empty()) res.makespan = std::max(res.makespan, res.spans[r].back().end);
  for (int r = 0; r < P; ++r) res.bubble[r] = res.makespan - res.busy[r];
  return res;
}

std::string SimResult::deadlock_report(const Schedule& s) const {
  std::string out;
  for (const SimWait& w : waits)
    out += fmt::format("rank {} is stuck at action {} ({}): waits for {}\n", w.rank, w.action,
                       format_action(s.ranks[w.rank][w.action]), w.waits_for);
  return out;
}

double analytical_bubble(const Schedule& s, const OpCosts& c) {
  switch (s.kind) {
    case ScheduleKind::OneFOneB: return (s.pp - 1) * (c.f + c.b);
    case ScheduleKind::DualPipe: return (s.pp / 2 - 1) * (c.pair() + c.b - 3 * c.w);
    case ScheduleKind::DualPipeV: return (s.pp - 1) * (c.pair() + c.b - 3 * c.w);
  }
  return 0;
}

std::string analytical_formula(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::OneFOneB: return "(PP-1)(F+B)";
    case ScheduleKind::DualPipe: return "(PP/2-1)(F&B+B-3W)";
    case ScheduleKind::DualPipeV: return "(PP/2-1)(F&B+B-3W), PP = 2 x pp stages";
  }
  return "";
}

std::string chrome_trace_json(const Schedule& s, const SimResult& r, const OpCosts& c) {
  BK_CHECK(!r.deadlock, "cannot write a trace of a deadlocked schedule:\n{}", r.deadlock_report(s));
  constexpr double kUs = 1000.0;  // one cost unit is shown as 1 ms
  auto num = [](double v) { return fmt::format("{:.6g}", v); };
  auto kind_name = [](ActionKind k) {
    switch (k) {
      case ActionKind::F: return "F";
      case ActionKind::B: return "B";
      case ActionKind::b: return "b";
      case ActionKind::W: return "W";
      case ActionKind::FB: return "F&B";
    }
    return "?";
  };
  std::string out = "{\"traceEvents\":[\n";
  bool first = true;
  auto event = [&](const std::string& e) {
    if (!first) out += ",\n";
    out += e;
    first = false;
  };
  for (int rank = 0; rank < s.pp; ++rank) {
    event(fmt::format(R"({{"name":"process_name","ph":"M","pid":{},"tid":0,"args":{{"name":"rank {}"}}}})", rank, rank));
    event(fmt::format(R"({{"name":"process_sort_index","ph":"M","pid":{},"tid":0,"args":{{"sort_index":{}}}}})", rank,
                      rank));
    event(fmt::format(R"({{"name":"thread_name","ph":"M","pid":{},"tid":0,"args":{{"name":"compute"}}}})", rank));
    for (const SimSpan& sp : r.spans[rank]) {
      const Action& a = s.ranks[rank][sp.action];
      auto field = [&](auto get) {
        if (a.ops.size() == 1) return fmt::format("{}", get(a.ops[0]));
        return fmt::format("[{},{}]", get(a.ops[0]), get(a.ops[1]));
      };
      const std::string args = fmt::format(
          R"({{"kind":"{}","d":{},"m":{},"mb":{},"stage":{},"chunk":{},"direction":{},"action":{}}})",
          kind_name(a.kind), field([](const Op& o) { return o.d; }), field([](const Op& o) { return o.m; }),
          field([](const Op& o) { return o.mb; }), field([](const Op& o) { return o.stage; }),
          field([](const Op& o) { return o.chunk; }), field([](const Op& o) { return o.direction; }), sp.action);
      event(fmt::format(R"({{"name":"{}","cat":"{}","ph":"X","pid":{},"tid":0,"ts":{},"dur":{},"args":{}}})",
                        format_action(a), kind_name(a.kind), rank, num(sp.start * kUs),
                        num((sp.end - sp.start) * kUs), args));
    }
  }
  out += "\n],\n\"displayTimeUnit\":\"ms\",\n";
  std::string bubbles;
  for (int rank = 0; rank < s.pp; ++rank) {
    if (rank) bubbles += ',';
    bubbles += num(r.bubble[rank]);
  }
  out += fmt::format(
      R"("otherData":{{"schedule":"{}","pp":{},"microbatches":{},"num_stages":{},"time_unit":"1 cost unit = 1 ms",)"
      R"("cost_f":{},"cost_b":{},"cost_w":{},"cost_fb":{},"latency":{},"makespan":{},"bubble":[{}],)"
      R"("analytical_bubble":{},"analytical_formula":"{}"}})",
      schedule_kind_name(s.kind), s.pp, s.microbatches, s.num_stages, num(c.f), num(c.b), num(c.w), num(c.pair()),
      num(c.latency), num(r.makespan), bubbles, num(analytical_bubble(s, c)), analytical_formula(s.kind));
  out += "\n}\n";
  return out;
}

void write_chrome_trace(const std::string& path, const Schedule& s, const SimResult& r, const OpCosts& c) {
  const std::string json = chrome_trace_json(s, r, c);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  BK_CHECK(f.good(), "--trace: cannot open '{}' for writing", path);
  f << json;
  f.close();
  BK_CHECK(f.good(), "--trace: writing '{}' failed", path);
}

}  // namespace bk
