// The schedule generator (parallel/schedule.h): DeepSeek's reference lists, the structure of every
// schedule over many sizes, an independent replay of the cross-rank dependencies, the transfers,
// and the size checks.
#include "parallel/schedule.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"

namespace bk {
namespace {

std::string lists(const Schedule& s) {
  std::string out;
  for (int r = 0; r < s.pp; ++r) out += format_rank(s, r) + "\n";
  return out;
}

TEST(Schedule, DualPipeReferencePp4N8) {
  const std::string want =
      "rank0: F0.0 F0.1 F0.2 F1.0 b1.0 W1.0 F1.1 [F0.3&B1.1] [F1.2&B0.0] B1.2 [F1.3&B0.1] B1.3 b0.2 W0.2 b0.3 W0.3\n"
      "rank1: F0.0 F1.0 F0.1 F1.1 F0.2 B1.0 [F1.2&B0.0] [F0.3&B1.1] [F1.3&B0.1] B1.2 B0.2 b1.3 b0.3 W1.3 W0.3\n"
      "rank2: F1.0 F0.0 F1.1 F0.1 F1.2 B0.0 [F0.2&B1.0] [F1.3&B0.1] [F0.3&B1.1] B0.2 B1.2 b0.3 b1.3 W0.3 W1.3\n"
      "rank3: F1.0 F1.1 F1.2 F0.0 b0.0 W0.0 F0.1 [F1.3&B0.1] [F0.2&B1.0] B0.2 [F0.3&B1.1] B0.3 b1.2 W1.2 b1.3 W1.3\n";
  EXPECT_EQ(lists(make_schedule(ScheduleKind::DualPipe, 4, 8)), want);
}

TEST(Schedule, DualPipeVReferencePp2N4) {
  const std::string want =
      "rank0: F0.0 F0.1 F0.2 F3.0 b3.0 W3.0 F3.1 [F0.3&B3.1] [F3.2&B0.0] B3.2 [F3.3&B0.1] B3.3 b0.2 W0.2 b0.3 W0.3\n"
      "rank1: F1.0 F2.0 F1.1 F2.1 F1.2 B2.0 [F2.2&B1.0] [F1.3&B2.1] [F2.3&B1.1] B2.2 B1.2 b2.3 b1.3 W2.3 W1.3\n";
  EXPECT_EQ(lists(make_schedule(ScheduleKind::DualPipeV, 2, 4)), want);
}

TEST(Schedule, OneFOneBPp4N8) {
  const std::string want =
      "rank0: F0.0 F0.1 F0.2 F0.3 B0.0 F0.4 B0.1 F0.5 B0.2 F0.6 B0.3 F0.7 B0.4 B0.5 B0.6 B0.7\n"
      "rank1: F1.0 F1.1 F1.2 B1.0 F1.3 B1.1 F1.4 B1.2 F1.5 B1.3 F1.6 B1.4 F1.7 B1.5 B1.6 B1.7\n"
      "rank2: F2.0 F2.1 B2.0 F2.2 B2.1 F2.3 B2.2 F2.4 B2.3 F2.5 B2.4 F2.6 B2.5 F2.7 B2.6 B2.7\n"
      "rank3: F3.0 B3.0 F3.1 B3.1 F3.2 B3.2 F3.3 B3.3 F3.4 B3.4 F3.5 B3.5 F3.6 B3.6 F3.7 B3.7\n";
  EXPECT_EQ(lists(make_schedule(ScheduleKind::OneFOneB, 4, 8)), want);
  // Fewer micro-batches than ranks: the warm-up is cut short.
  EXPECT_EQ(lists(make_schedule(ScheduleKind::OneFOneB, 3, 1)), "rank0: F0.0 B0.0\nrank1: F1.0 B1.0\nrank2: F2.0 B2.0\n");
}

// Every size the tests sweep: pp in 2, 4, 6, 8 (and odd pp where the kind allows), N over the
// valid range up to 3 * 2pp.
std::vector<std::tuple<ScheduleKind, int, int>> sizes() {
  std::vector<std::tuple<ScheduleKind, int, int>> out;
  for (int pp : {1, 2, 3, 4, 5, 6, 8}) {
    for (int n = 1; n <= 6 * pp + 3; ++n) out.emplace_back(ScheduleKind::OneFOneB, pp, n);
    if (pp % 2 == 0)
      for (int n = 2 * pp; n <= 6 * pp; n += 2) out.emplace_back(ScheduleKind::DualPipe, pp, n);
    for (int n = 2 * pp; n <= 6 * pp + 1; ++n) out.emplace_back(ScheduleKind::DualPipeV, pp, n);
  }
  return out;
}

std::string name(ScheduleKind k, int pp, int n) { return fmt::format("{} pp={} N={}", schedule_kind_name(k), pp, n); }

TEST(Schedule, EveryOpOnceOnItsOwner) {
  for (const auto& [kind, pp, n] : sizes()) {
    const Schedule s = make_schedule(kind, pp, n);
    SCOPED_TRACE(name(kind, pp, n));
    ASSERT_EQ(s.num_stages, kind == ScheduleKind::DualPipeV ? 2 * pp : pp);
    // Counted here independently of check_schedule.
    std::map<std::tuple<char, int, int>, int> count;  // (kind, stage, mb)
    for (int r = 0; r < pp; ++r) {
      ASSERT_EQ(s.rank_stages[r].size(), kind == ScheduleKind::OneFOneB ? 1u : 2u);
      for (const Action& a : s.ranks[r])
        for (const Op& o : a.ops) {
          const char k = "FBbW"[int(o.kind)];
          ++count[{k, o.stage, o.mb}];
          ASSERT_EQ(s.rank_stages[r][o.chunk], o.stage);
          // DualPipe: rank r runs stage r in direction 0 and stage pp-1-r in direction 1.
          if (kind == ScheduleKind::DualPipe) {
            ASSERT_EQ(o.stage, o.direction == 0 ? r : pp - 1 - r);
            ASSERT_EQ(o.direction, o.mb < n / 2 ? 0 : 1);
            ASSERT_EQ(o.d, o.direction);
            ASSERT_EQ(o.m, o.mb - o.direction * n / 2);
          } else {
            ASSERT_EQ(o.direction, 0);
            ASSERT_EQ(o.d, o.stage);
            ASSERT_EQ(o.m, o.mb);
          }
          if (kind == ScheduleKind::DualPipeV) {
            ASSERT_TRUE(o.stage == r || o.stage == 2 * pp - 1 - r);
          }
          if (kind == ScheduleKind::OneFOneB) {
            ASSERT_EQ(o.stage, r);
          }
        }
    }
    for (int st = 0; st < s.num_stages; ++st)
      for (int mb = 0; mb < n; ++mb) {
        const int f = count[{'F', st, mb}], B = count[{'B', st, mb}], b = count[{'b', st, mb}],
                  w = count[{'W', st, mb}];
        ASSERT_EQ(f, 1) << "stage " << st << " mb " << mb;
        ASSERT_TRUE((B == 1 && b == 0 && w == 0) || (B == 0 && b == 1 && w == 1)) << "stage " << st << " mb " << mb;
        if (kind == ScheduleKind::OneFOneB) {
          ASSERT_EQ(B, 1);  // 1F1B never splits the backward
        }
      }
    EXPECT_EQ(check_schedule(s), std::vector<std::string>{});
  }
}

// A replay that knows nothing of the transfers or the simulator: repeatedly run the next action of
// any rank whose ops' inputs exist — F(s, mb) needs F(s-1, mb) (whichever rank ran it), B/b(s, mb)
// needs B/b(s+1, mb) and this rank's F(s, mb), W needs this rank's b(s, mb). Every action must
// run (no deadlock), and running them in that order is a topological order of the dependencies.
TEST(Schedule, TopologicalReplayAcrossRanks) {
  for (const auto& [kind, pp, n] : sizes()) {
    const Schedule s = make_schedule(kind, pp, n);
    SCOPED_TRACE(name(kind, pp, n));
    std::set<std::tuple<int, int, int>> done;  // (0 F / 1 backward input / 2 b, stage, mb)
    std::map<std::tuple<int, int>, int> f_rank;
    std::vector<size_t> pos(pp, 0);
    auto ready = [&](int r, const Op& o) {
      switch (o.kind) {
        case OpKind::F: return o.stage == 0 || done.count({0, o.stage - 1, o.mb}) > 0;
        case OpKind::B:
        case OpKind::b:
          return (o.stage == s.num_stages - 1 || done.count({1, o.stage + 1, o.mb}) > 0) &&
                 done.count({0, o.stage, o.mb}) > 0 && f_rank[{o.stage, o.mb}] == r;
        case OpKind::W: return done.count({2, o.stage, o.mb}) > 0;
      }
      return false;
    };
    for (bool progress = true; progress;) {
      progress = false;
      for (int r = 0; r < pp; ++r)
        while (pos[r] < s.ranks[r].size()) {
          const Action& a = s.ranks[r][pos[r]];
          bool ok = true;
          for (const Op& o : a.ops) ok = ok && ready(r, o);
          if (!ok) break;
          for (const Op& o : a.ops) {
            if (o.kind == OpKind::F) done.insert({0, o.stage, o.mb}), f_rank[{o.stage, o.mb}] = r;
            if (o.kind == OpKind::B || o.kind == OpKind::b) done.insert({1, o.stage, o.mb});
            if (o.kind == OpKind::b) done.insert({2, o.stage, o.mb});
          }
          ++pos[r];
          progress = true;
        }
    }
    for (int r = 0; r < pp; ++r)
      EXPECT_EQ(pos[r], s.ranks[r].size()) << "rank " << r << " stuck at "
                                            << (pos[r] < s.ranks[r].size() ? format_action(s.ranks[r][pos[r]]) : "");
  }
}

TEST(Schedule, TransfersPairUpWithUniqueTags) {
  for (const auto& [kind, pp, n] : sizes()) {
    const Schedule s = make_schedule(kind, pp, n);
    SCOPED_TRACE(name(kind, pp, n));
    std::map<int, std::pair<int, Transfer>> sends, recvs;  // tag -> (rank, transfer)
    for (int r = 0; r < pp; ++r)
      for (const Action& a : s.ranks[r])
        for (const Op& o : a.ops) {
          if (o.send) {
            ASSERT_TRUE(sends.emplace(o.send->tag, std::make_pair(r, *o.send)).second);
          }
          if (o.recv) {
            ASSERT_TRUE(recvs.emplace(o.recv->tag, std::make_pair(r, *o.recv)).second);
          }
          for (const auto* t : {&o.send, &o.recv}) {
            if (*t) {
              ASSERT_GE((*t)->tag, 0);
              ASSERT_LT((*t)->tag, 2 * s.num_stages * n);
              ASSERT_EQ((*t)->mb, o.mb);
              ASSERT_EQ((*t)->local, (*t)->peer == r);
              ASSERT_EQ((*t)->payload, o.kind == OpKind::F ? Payload::Activation : Payload::Gradient);
            }
          }
        }
    // Each stage boundary, both ways, for every micro-batch.
    ASSERT_EQ(sends.size(), size_t(2 * (s.num_stages - 1) * n));
    ASSERT_EQ(recvs.size(), sends.size());
    for (const auto& [tag, sr] : sends) {
      const auto& [sender, st] = sr;
      ASSERT_TRUE(recvs.count(tag));
      const auto& [receiver, rt] = recvs.at(tag);
      EXPECT_EQ(st.peer, receiver);
      EXPECT_EQ(rt.peer, sender);
      EXPECT_EQ(st.from_stage, rt.from_stage);
      EXPECT_EQ(st.to_stage, rt.to_stage);
      EXPECT_EQ(std::abs(st.to_stage - st.from_stage), 1);
    }
  }
}

TEST(Schedule, TransfersOfKnownOps) {
  // DualPipe pp=4: rank 0 runs stage 0 for direction 0 and stage 3 (the last) for direction 1.
  const Schedule d = make_schedule(ScheduleKind::DualPipe, 4, 8);
  EXPECT_EQ(d.rank_stages[0], (std::vector<int>{0, 3}));
  const Op& f00 = d.ranks[0][0].ops[0];  // F0.0: loads data, sends its activation to rank 1
  EXPECT_FALSE(f00.recv);
  ASSERT_TRUE(f00.send);
  EXPECT_EQ(f00.send->peer, 1);
  EXPECT_EQ(f00.send->payload, Payload::Activation);
  const Op& f10 = d.ranks[0][3].ops[0];  // F1.0 on stage 3: input from rank 1 (stage 2), no send
  EXPECT_EQ(format_op(f10), "F1.0");
  EXPECT_EQ(f10.stage, 3);
  EXPECT_EQ(f10.chunk, 1);
  EXPECT_EQ(f10.mb, 4);
  ASSERT_TRUE(f10.recv);
  EXPECT_EQ(f10.recv->peer, 1);
  EXPECT_EQ(f10.recv->from_stage, 2);
  EXPECT_FALSE(f10.send);
  const Op& b10 = d.ranks[0][4].ops[0];  // b1.0: starts from the loss, gradient to rank 1
  EXPECT_EQ(format_op(b10), "b1.0");
  EXPECT_FALSE(b10.recv);
  ASSERT_TRUE(b10.send);
  EXPECT_EQ(b10.send->peer, 1);
  EXPECT_EQ(b10.send->payload, Payload::Gradient);
  EXPECT_EQ(d.ranks[0][5].kind, ActionKind::W);
  EXPECT_FALSE(d.ranks[0][5].ops[0].recv || d.ranks[0][5].ops[0].send);
  const Action& pair = d.ranks[0][7];  // [F0.3&B1.1]
  ASSERT_EQ(pair.kind, ActionKind::FB);
  ASSERT_EQ(pair.ops.size(), 2u);
  EXPECT_EQ(pair.ops[0].kind, OpKind::F);
  EXPECT_EQ(pair.ops[1].kind, OpKind::B);
  EXPECT_EQ(format_action(pair), "[F0.3&B1.1]");

  // DualPipeV pp=2: rank 1 holds stages 1 and 2; the turn from stage 1 to 2 is a local hand-off.
  const Schedule v = make_schedule(ScheduleKind::DualPipeV, 2, 4);
  EXPECT_EQ(v.rank_stages[1], (std::vector<int>{1, 2}));
  const Op& f1 = v.ranks[1][0].ops[0];  // F1.0
  ASSERT_TRUE(f1.send && f1.recv);
  EXPECT_TRUE(f1.send->local);
  EXPECT_EQ(f1.send->peer, 1);
  EXPECT_EQ(f1.send->to_stage, 2);
  EXPECT_FALSE(f1.recv->local);
  EXPECT_EQ(f1.recv->peer, 0);
  const Op& f2 = v.ranks[1][1].ops[0];  // F2.0: local input, output back to rank 0 (stage 3)
  ASSERT_TRUE(f2.recv && f2.send);
  EXPECT_TRUE(f2.recv->local);
  EXPECT_EQ(f2.send->peer, 0);
  // Stage 3 (the last, on rank 0) has no send on F, and its backward starts from the loss.
  const Op& f3 = v.ranks[0][3].ops[0];
  EXPECT_EQ(format_op(f3), "F3.0");
  EXPECT_FALSE(f3.send);
  EXPECT_FALSE(v.ranks[0][4].ops[0].recv);
}

TEST(Schedule, ParseKinds) {
  EXPECT_EQ(parse_schedule_kind("1f1b"), ScheduleKind::OneFOneB);
  EXPECT_EQ(parse_schedule_kind("dualpipe"), ScheduleKind::DualPipe);
  EXPECT_EQ(parse_schedule_kind("dualpipev"), ScheduleKind::DualPipeV);
  try {
    parse_schedule_kind("gpipe");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1f1b, dualpipe or dualpipev"), std::string::npos) << e.what();
  }
}

void expect_rejected(ScheduleKind kind, int pp, int n, const std::vector<std::string>& needles) {
  SCOPED_TRACE(name(kind, pp, n));
  try {
    make_schedule(kind, pp, n);
    FAIL() << "no error";
  } catch (const Error& e) {
    for (const std::string& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "'" << needle << "' not in: " << e.what();
  }
}

TEST(Schedule, InvalidSizesRejected) {
  expect_rejected(ScheduleKind::DualPipe, 3, 8, {"--pp", "parallel.pp", "even", "got 3", "use pp = 4"});
  expect_rejected(ScheduleKind::DualPipe, 4, 9, {"--microbatches", "even", "got 9", "use 10"});
  expect_rejected(ScheduleKind::DualPipe, 4, 6, {"--microbatches", "at least 2 x pp = 8", "got 6", "use 8"});
  expect_rejected(ScheduleKind::DualPipe, 8, 4, {"at least 2 x pp = 16"});
  expect_rejected(ScheduleKind::DualPipeV, 4, 7, {"--microbatches", "at least 2 x pp = 8", "got 7"});
  expect_rejected(ScheduleKind::OneFOneB, 0, 4, {"--pp", ">= 1"});
  expect_rejected(ScheduleKind::OneFOneB, 4, 0, {"--microbatches", ">= 1"});
  expect_rejected(ScheduleKind::DualPipeV, -1, 4, {"--pp"});
  // The smallest valid sizes are accepted.
  EXPECT_NO_THROW(make_schedule(ScheduleKind::DualPipe, 2, 4));
  EXPECT_NO_THROW(make_schedule(ScheduleKind::DualPipeV, 1, 2));
  EXPECT_NO_THROW(make_schedule(ScheduleKind::OneFOneB, 1, 1));
}

TEST(Schedule, CheckScheduleFindsBrokenLists) {
  Schedule s = make_schedule(ScheduleKind::DualPipe, 4, 8);
  // Drop a W: its (stage, mb) now has a b without W.
  Schedule missing = s;
  missing.ranks[0].erase(missing.ranks[0].begin() + 5);  // W1.0
  const auto e1 = check_schedule(missing);
  ASSERT_FALSE(e1.empty());
  EXPECT_NE(e1[0].find("stage 3 micro-batch 4"), std::string::npos) << e1[0];
  // Move a forward to another rank.
  Schedule moved = s;
  moved.ranks[1].push_back(moved.ranks[0][0]);
  moved.ranks[0].erase(moved.ranks[0].begin());
  EXPECT_FALSE(check_schedule(moved).empty());
  // A W before its b.
  Schedule early = s;
  std::swap(early.ranks[0][4], early.ranks[0][5]);
  const auto e3 = check_schedule(early);
  ASSERT_FALSE(e3.empty());
  EXPECT_NE(e3[0].find("before its input gradient"), std::string::npos) << e3[0];
}

}  // namespace
}  // namespace bk
