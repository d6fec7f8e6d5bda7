// The schedule simulator and trace writer (parallel/schedule_sim.h): dependency order in the
// simulated timeline over many sizes, the 1F1B bubble equals its formula exactly, DualPipe's and
// DualPipeV's worst rank equals theirs (zero latency), deadlock reports, the Chrome trace.
#include "parallel/schedule_sim.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/error.h"

namespace bk {
namespace {

std::vector<std::tuple<ScheduleKind, int, int>> sizes() {
  std::vector<std::tuple<ScheduleKind, int, int>> out;
  for (int pp : {1, 2, 3, 4, 6, 8}) {
    for (int n = 1; n <= 5 * pp + 2; ++n) out.emplace_back(ScheduleKind::OneFOneB, pp, n);
    if (pp % 2 == 0)
      for (int n = 2 * pp; n <= 5 * pp; n += 2) out.emplace_back(ScheduleKind::DualPipe, pp, n);
    for (int n = 2 * pp; n <= 5 * pp + 1; ++n) out.emplace_back(ScheduleKind::DualPipeV, pp, n);
  }
  return out;
}

std::string name(ScheduleKind k, int pp, int n) { return fmt::format("{} pp={} N={}", schedule_kind_name(k), pp, n); }

// Uneven costs and a latency, so that a dependency violation would show in the times.
const OpCosts kUneven{1.0, 2.5, 0.75, 3.0, 0.2};

TEST(ScheduleSim, DependenciesHoldInTheTimeline) {
  for (const auto& [kind, pp, n] : sizes()) {
    const Schedule s = make_schedule(kind, pp, n);
    SCOPED_TRACE(name(kind, pp, n));
    const SimResult r = simulate(s, kUneven);
    ASSERT_FALSE(r.deadlock) << r.deadlock_report(s);
    // When each op started and ended: (kind F/Bb/b, stage, mb) -> (start, end, rank).
    std::map<std::tuple<int, int, int>, std::tuple<double, double, int>> when;
    for (int rank = 0; rank < pp; ++rank) {
      ASSERT_EQ(r.spans[rank].size(), s.ranks[rank].size());
      double prev_end = 0;
      for (const SimSpan& sp : r.spans[rank]) {
        EXPECT_GE(sp.start, prev_end - 1e-12);  // one action at a time per rank, in list order
        prev_end = sp.end;
        for (const Op& o : s.ranks[rank][sp.action].ops) {
          const int k = o.kind == OpKind::F ? 0 : o.kind == OpKind::W ? 3 : 1;
          when[{k, o.stage, o.mb}] = {sp.start, sp.end, rank};
          if (o.kind == OpKind::b) when[{2, o.stage, o.mb}] = {sp.start, sp.end, rank};
        }
      }
    }
    auto lag = [&](int from_rank, int to_rank) { return from_rank == to_rank ? 0.0 : kUneven.latency; };
    for (int st = 0; st < s.num_stages; ++st)
      for (int mb = 0; mb < n; ++mb) {
        const auto [fs, fe, fr] = when.at({0, st, mb});
        const auto [bs, be, br] = when.at({1, st, mb});
        if (st > 0) {  // F of stage s after the F of stage s-1, plus the message
          const auto [ps, pe, pr] = when.at({0, st - 1, mb});
          EXPECT_GE(fs, pe + lag(pr, fr) - 1e-9) << "F stage " << st << " mb " << mb;
        }
        if (st + 1 < s.num_stages) {  // B of stage s after the B of stage s+1
          const auto [ns, ne, nr] = when.at({1, st + 1, mb});
          EXPECT_GE(bs, ne + lag(nr, br) - 1e-9) << "B stage " << st << " mb " << mb;
        }
        EXPECT_EQ(fr, br);
        EXPECT_GE(bs, fe - 1e-9) << "B after F, stage " << st << " mb " << mb;
        if (when.count({3, st, mb})) {
          const auto [ws, we, wr] = when.at({3, st, mb});
          const auto [is, ie, ir] = when.at({2, st, mb});
          EXPECT_EQ(wr, ir);
          EXPECT_GE(ws, ie - 1e-9) << "W after b, stage " << st << " mb " << mb;
        }
      }
    // Busy time is the sum of the action costs.
    for (int rank = 0; rank < pp; ++rank) {
      double busy = 0;
      for (const Action& a : s.ranks[rank]) busy += kUneven.of(a.kind);
      EXPECT_NEAR(r.busy[rank], busy, 1e-9);
      EXPECT_NEAR(r.bubble[rank], r.makespan - busy, 1e-9);
    }
  }
}

TEST(ScheduleSim, OneFOneBBubbleIsTheFormula) {
  for (const OpCosts c : {OpCosts{1, 1, 0.5}, OpCosts{1, 2, 1}, OpCosts{1.5, 2.5, 1}, OpCosts{3, 1, 0.5}}) {
    for (int pp = 1; pp <= 8; ++pp)
      for (int n = 1; n <= 24; ++n) {
        const Schedule s = make_schedule(ScheduleKind::OneFOneB, pp, n);
        const SimResult r = simulate(s, c);
        ASSERT_FALSE(r.deadlock);
        const double formula = (pp - 1) * (c.f + c.b);
        EXPECT_DOUBLE_EQ(analytical_bubble(s, c), formula);
        EXPECT_DOUBLE_EQ(r.makespan, (n + pp - 1) * (c.f + c.b)) << "pp " << pp << " N " << n;
        for (int rank = 0; rank < pp; ++rank)
          EXPECT_DOUBLE_EQ(r.bubble[rank], formula) << "pp " << pp << " N " << n << " rank " << rank;
      }
  }
}

// What the simulator finds (docs/dualpipe.md): without latency, and with costs in DeepSeek's
// regime — the input-gradient b = B - W costs as much as a forward, W <= F, and an overlapped pair
// costs between max(F, B) and F + B — the worst rank of DualPipe and DualPipeV idles exactly the
// published (PP/2-1)(F&B+B-3W). (Outside that regime the formula is only an estimate.)
TEST(ScheduleSim, DualPipeWorstRankBubbleIsTheFormula) {
  for (const OpCosts c : {OpCosts{1, 2, 1}, OpCosts{1, 2, 1, 2.5}, OpCosts{1, 2, 1, 2}, OpCosts{1, 1.5, 0.5, 2},
                          OpCosts{1, 1.25, 0.25, 1.6}, OpCosts{2, 4, 2, 5}})
    for (const auto& [kind, pp, n] : sizes()) {
      if (kind == ScheduleKind::OneFOneB) continue;
      const Schedule s = make_schedule(kind, pp, n);
      const SimResult r = simulate(s, c);
      ASSERT_FALSE(r.deadlock);
      double worst = 0;
      for (double b : r.bubble) worst = std::max(worst, b);
      EXPECT_NEAR(worst, analytical_bubble(s, c), 1e-9) << name(kind, pp, n) << " F&B " << c.pair() << " W " << c.w;
    }
}

TEST(ScheduleSim, ReferenceNumbers) {
  const OpCosts c;  // F 1, B 2, W 1, F&B 3
  const SimResult d = simulate(make_schedule(ScheduleKind::DualPipe, 4, 8), c);
  EXPECT_DOUBLE_EQ(d.makespan, 26);
  for (double b : d.bubble) EXPECT_DOUBLE_EQ(b, 2);
  const SimResult o = simulate(make_schedule(ScheduleKind::OneFOneB, 4, 8), c);
  EXPECT_DOUBLE_EQ(o.makespan, 33);
  EXPECT_NEAR(o.bubble_fraction(0), 9.0 / 33.0, 1e-12);
}

TEST(ScheduleSim, DeadlockIsReported) {
  // 1F1B pp=2 N=2 with rank 0 strictly alternating F0.0 B0.0 F0.1 B0.1 and rank 1 taking the
  // micro-batches in the other order: rank 0 waits for B1.0's gradient, rank 1 for F0.1's activation.
  Schedule s = make_schedule(ScheduleKind::OneFOneB, 2, 2);
  ASSERT_EQ(format_rank(s, 0), "rank0: F0.0 F0.1 B0.0 B0.1");
  std::swap(s.ranks[0][1], s.ranks[0][2]);
  std::swap(s.ranks[1][0], s.ranks[1][2]);
  std::swap(s.ranks[1][1], s.ranks[1][3]);
  ASSERT_EQ(format_rank(s, 1), "rank1: F1.1 B1.1 F1.0 B1.0");
  const SimResult r = simulate(s, OpCosts{});
  ASSERT_TRUE(r.deadlock);
  ASSERT_EQ(r.waits.size(), 2u);
  EXPECT_EQ(r.waits[0].rank, 0);
  EXPECT_EQ(r.waits[0].action, 1);
  EXPECT_EQ(r.waits[1].rank, 1);
  EXPECT_EQ(r.waits[1].action, 0);
  const std::string report = r.deadlock_report(s);
  EXPECT_NE(report.find("rank 0 is stuck at action 1 (B0.0): waits for the gradient of stage 1 micro-batch 0 from "
                        "rank 1, produced by rank 1 action 3 (B1.0), not run yet"),
            std::string::npos)
      << report;
  EXPECT_NE(report.find("rank 1 is stuck at action 0 (F1.1): waits for the activation of stage 0 micro-batch 1 "
                        "from rank 0, produced by rank 0 action 2 (F0.1), not run yet"),
            std::string::npos)
      << report;
  EXPECT_THROW(chrome_trace_json(s, r, OpCosts{}), Error);

  // A backward whose forward was dropped can never run.
  Schedule lost = make_schedule(ScheduleKind::OneFOneB, 1, 1);
  lost.ranks[0].erase(lost.ranks[0].begin());
  const SimResult l = simulate(lost, OpCosts{});
  ASSERT_TRUE(l.deadlock);
  EXPECT_NE(l.deadlock_report(lost).find("which no action produces"), std::string::npos);
}

TEST(ScheduleSim, LatencyDelaysMessagesNotLocalHandOffs) {
  // DualPipeV pp=1: both stages on one rank, every transfer is local; latency changes nothing.
  const Schedule v = make_schedule(ScheduleKind::DualPipeV, 1, 4);
  EXPECT_DOUBLE_EQ(simulate(v, OpCosts{1, 2, 1, -1, 5}).makespan, simulate(v, OpCosts{}).makespan);
  // 1F1B pp=2 N=1: F, message, F, B, message, B.
  const Schedule o = make_schedule(ScheduleKind::OneFOneB, 2, 1);
  EXPECT_DOUBLE_EQ(simulate(o, OpCosts{1, 2, 1, -1, 0.5}).makespan, 1 + 0.5 + 1 + 2 + 0.5 + 2);
}

TEST(ScheduleSim, CostsValidated) {
  const Schedule s = make_schedule(ScheduleKind::OneFOneB, 2, 2);
  auto message = [&](OpCosts c) {
    try {
      simulate(s, c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({0, 2, 1}).find("--cost-f"), std::string::npos);
  EXPECT_NE(message({1, -2, 1}).find("--cost-b"), std::string::npos);
  EXPECT_NE(message({1, 2, 2}).find("--cost-w"), std::string::npos);
  EXPECT_NE(message({1, 2, 0}).find("--cost-w"), std::string::npos);
  EXPECT_NE(message({1, 2, 1, 0}).find("--cost-fb"), std::string::npos);
  EXPECT_NE(message({1, 2, 1, -1, -1}).find("--latency"), std::string::npos);
}

TEST(ScheduleSim, ChromeTrace) {
  const Schedule s = make_schedule(ScheduleKind::DualPipe, 4, 8);
  const OpCosts c;
  const SimResult r = simulate(s, c);
  const nlohmann::json j = nlohmann::json::parse(chrome_trace_json(s, r, c));
  std::map<int, int> per_rank;
  std::map<int, std::string> names;
  for (const auto& e : j.at("traceEvents")) {
    if (e.at("ph") == "M") {
      if (e.at("name") == "process_name") names[e.at("pid").get<int>()] = e.at("args").at("name");
      continue;
    }
    ASSERT_EQ(e.at("ph"), "X");
    const int pid = e.at("pid").get<int>();
    const int i = per_rank[pid]++;
    const Action& a = s.ranks[pid][i];
    EXPECT_EQ(e.at("name"), format_action(a));
    EXPECT_DOUBLE_EQ(e.at("ts").get<double>(), r.spans[pid][i].start * 1000);
    EXPECT_DOUBLE_EQ(e.at("dur").get<double>(), (r.spans[pid][i].end - r.spans[pid][i].start) * 1000);
    const auto& args = e.at("args");
    if (a.kind == ActionKind::FB) {
      EXPECT_EQ(e.at("cat"), "F&B");
      EXPECT_EQ(args.at("d"), nlohmann::json::array({a.ops[0].d, a.ops[1].d}));
      EXPECT_EQ(args.at("m"), nlohmann::json::array({a.ops[0].m, a.ops[1].m}));
    } else {
      EXPECT_EQ(args.at("d"), a.ops[0].d);
      EXPECT_EQ(args.at("m"), a.ops[0].m);
      EXPECT_EQ(args.at("mb"), a.ops[0].mb);
      EXPECT_EQ(args.at("stage"), a.ops[0].stage);
    }
  }
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(per_rank[rank], int(s.ranks[rank].size()));
    EXPECT_EQ(names[rank], fmt::format("rank {}", rank));
  }
  EXPECT_EQ(j.at("otherData").at("schedule"), "dualpipe");
  EXPECT_DOUBLE_EQ(j.at("otherData").at("makespan").get<double>(), 26);
}

}  // namespace
}  // namespace bk
