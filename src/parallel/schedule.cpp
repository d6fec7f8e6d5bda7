#include "parallel/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <tuple>

#include "core/error.h"

namespace bk {

namespace {

const char* kMicrobatchSource =
    "--microbatches; in training global_batch_size / (micro_batch_size x parallel.dp)";

void validate_sizes(ScheduleKind kind, int pp, int n) {
  const char* name = schedule_kind_name(kind);
  BK_CHECK(pp >= 1, "schedule {}: the number of pipeline ranks (--pp, parallel.pp) must be >= 1, got {}", name, pp);
  BK_CHECK(n >= 1, "schedule {}: the number of micro-batches ({}) must be >= 1, got {}", name, kMicrobatchSource, n);
  if (kind == ScheduleKind::DualPipe) {
    BK_CHECK(pp % 2 == 0,
             "schedule dualpipe: the number of pipeline ranks (--pp, parallel.pp) must be even (rank r and "
             "its mirror pp-1-r hold the same two stages), got {}; use pp = {} (or the dualpipev schedule, "
             "which takes any pp)",
             pp, pp + 1);
    BK_CHECK(n % 2 == 0,
             "schedule dualpipe: the number of micro-batches ({}) must be even (half enter at rank 0, half "
             "at rank pp-1), got {}; use {}",
             kMicrobatchSource, n, std::max(n + 1, 2 * pp));
    BK_CHECK(n >= 2 * pp,
             "schedule dualpipe: needs at least 2 x pp = {} micro-batches ({}), got {}; use {} or more, "
             "or a smaller pp",
             2 * pp, kMicrobatchSource, n, 2 * pp);
  } else if (kind == ScheduleKind::DualPipeV) {
    BK_CHECK(n >= 2 * pp,
             "schedule dualpipev: needs at least 2 x pp = {} micro-batches ({}), got {}; use {} or more, "
             "or a smaller pp",
             2 * pp, kMicrobatchSource, n, 2 * pp);
  }
}

// Builds the ops of one rank; transfers are attached afterwards (attach_transfers).
struct RankBuilder {
  const Schedule& s;
  int rank;
  std::vector<Action>& out;

  Op op(OpKind kind, int stage, int direction, int mb) const {
    Op o;
    o.kind = kind;
    o.stage = stage;
    o.direction = direction;
    o.mb = mb;
    const auto& held = s.rank_stages[rank];
    o.chunk = int(std::find(held.begin(), held.end(), stage) - held.begin());
    if (s.kind == ScheduleKind::DualPipe) {
      o.d = direction;
      o.m = mb - direction * (s.microbatches / 2);
    } else {
      o.d = stage;
      o.m = mb;
    }
    return o;
  }
  void single(Op o) {
    Action a;
    a.kind = o.kind == OpKind::F ? ActionKind::F
             : o.kind == OpKind::B ? ActionKind::B
             : o.kind == OpKind::b ? ActionKind::b
                                   : ActionKind::W;
    a.ops.push_back(std::move(o));
    out.push_back(std::move(a));
  }
  void pair(Op f, Op b) {
    Action a;
    a.kind = ActionKind::FB;
    a.ops.push_back(std::move(f));
    a.ops.push_back(std::move(b));
    out.push_back(std::move(a));
  }
};

void build_1f1b(const Schedule& s, int r, std::vector<Action>& out) {
  RankBuilder rb{s, r, out};
  const int n = s.microbatches;
  const int warmup = std::min(s.pp - 1 - r, n);
  int f = 0, b = 0;
  for (int i = 0; i < warmup; ++i) rb.single(rb.op(OpKind::F, r, 0, f++));
  for (int i = 0; i < n - warmup; ++i) {
    rb.single(rb.op(OpKind::F, r, 0, f++));
    rb.single(rb.op(OpKind::B, r, 0, b++));
  }
  while (b < n) rb.single(rb.op(OpKind::B, r, 0, b++));
}

// DualPipe and DualPipeV share one phase structure (docs/dualpipe.md). A rank runs two "phases"
// (its two stages): phase 0 is the stage its first micro-batches arrive at (on the way in), phase 1
// the other. H ranks form one half of the pipeline (DualPipe: pp/2, each half mirrored by the other;
// DualPipeV: all pp), h is the rank's distance from the entry end, C the micro-batches per phase.
struct PhaseOf {
  int stage = 0, direction = 0, mb_base = 0;
};

void build_dual(const Schedule& s, int r, int H, int h, int C, const PhaseOf phase[2], std::vector<Action>& out) {
  RankBuilder rb{s, r, out};
  int next_f[2] = {0, 0}, next_b[2] = {0, 0};
  std::deque<Op> deferred;  // b ops whose W has not run yet, oldest first
  const bool middle = h == H - 1;  // the turning point: both phases' neighbours are each other

  auto fwd = [&](int p) {
    BK_CHECK(next_f[p] < C, "internal: schedule {} rank {} runs too many forwards", schedule_kind_name(s.kind), r);
    return rb.op(OpKind::F, phase[p].stage, phase[p].direction, phase[p].mb_base + next_f[p]++);
  };
  auto bwd = [&](int p, bool defer_weight) {
    BK_CHECK(next_b[p] < next_f[p], "internal: schedule {} rank {} runs a backward before its forward",
             schedule_kind_name(s.kind), r);
    Op o = rb.op(defer_weight ? OpKind::b : OpKind::B, phase[p].stage, phase[p].direction,
                 phase[p].mb_base + next_b[p]++);
    if (defer_weight) deferred.push_back(o);
    return o;
  };
  auto weight = [&] {
    BK_CHECK(!deferred.empty(), "internal: schedule {} rank {} has no deferred weight gradient",
             schedule_kind_name(s.kind), r);
    Op o = rb.op(OpKind::W, deferred.front().stage, deferred.front().direction, deferred.front().mb);
    deferred.pop_front();
    rb.single(o);
  };

  // 1. warm-up: forwards of phase 0 while the far side fills.
  for (int i = 0; i < 2 * (H - h - 1); ++i) rb.single(fwd(0));
  // 2. alternate phase-0 and phase-1 forwards.
  for (int i = 0; i < h + 1; ++i) {
    rb.single(fwd(0));
    rb.single(fwd(1));
  }
  // 3. zero-bubble: input-gradient of phase 1, its weight gradient, another phase-1 forward.
  for (int i = 0; i < H - h - 1; ++i) {
    rb.single(bwd(1, true));
    weight();
    rb.single(fwd(1));
  }
  // 4. main loop: overlapped pairs F0&B1, F1&B0. On the middle rank the first F0 and B1 run
  //    apart, as in DeepSeek's reference: the phase-1 activation held back at the end of step 2 can
  //    go out between them, so the neighbour starts earlier.
  for (int i = 0; i < C - 2 * H + h + 1; ++i) {
    if (i == 0 && middle) {
      rb.single(fwd(0));
      rb.single(bwd(1, false));
    } else {
      Op f = fwd(0);
      rb.pair(std::move(f), bwd(1, false));
    }
    Op f = fwd(1);
    rb.pair(std::move(f), bwd(0, false));
  }
  // 5. phase-1 backward, then an F1&B0 pair.
  for (int i = 0; i < H - h - 1; ++i) {
    rb.single(bwd(1, false));
    Op f = fwd(1);
    rb.pair(std::move(f), bwd(0, false));
  }
  // 6. cool-down backwards B1 B0; from the middle of this phase on, weight gradients are deferred.
  bool defer = false;
  for (int i = 0; i < h + 1; ++i) {
    if (i == (h + 1) / 2 && h % 2 == 1) defer = true;
    rb.single(bwd(1, defer));
    if (i == (h + 1) / 2 && h % 2 == 0) defer = true;
    rb.single(bwd(0, defer));
  }
  // 7. zero-bubble: a deferred weight gradient, then a phase-0 input gradient.
  for (int i = 0; i < H - h - 1; ++i) {
    weight();
    rb.single(bwd(0, true));
  }
  // 8. the remaining weight gradients.
  for (int i = 0; i < h + 1; ++i) weight();
  BK_CHECK(deferred.empty() && next_f[0] == C && next_f[1] == C && next_b[0] == C && next_b[1] == C,
           "internal: schedule {} rank {} is incomplete", schedule_kind_name(s.kind), r);
}

void attach_transfers(Schedule& s) {
  const int S = s.num_stages, N = s.microbatches;
  // The message of `payload` from stage `from` to stage `to`, seen from `rank` (one of its ends).
  auto transfer = [&](int rank, bool receiving, Payload payload, int from, int to, const Op& o) {
    Transfer t;
    t.peer = stage_owner(s, receiving ? from : to, o.direction);
    t.local = t.peer == rank;
    t.payload = payload;
    t.from_stage = from;
    t.to_stage = to;
    t.mb = o.mb;
    t.tag = (int(payload) * S + to) * N + o.mb;
    return t;
  };
  for (int r = 0; r < s.pp; ++r)
    for (Action& a : s.ranks[r])
      for (Op& o : a.ops) {
        const int st = o.stage;
        if (o.kind == OpKind::F) {
          if (st > 0) o.recv = transfer(r, true, Payload::Activation, st - 1, st, o);
          if (st < S - 1) o.send = transfer(r, false, Payload::Activation, st, st + 1, o);
        } else if (o.kind == OpKind::B || o.kind == OpKind::b) {
          if (st < S - 1) o.recv = transfer(r, true, Payload::Gradient, st + 1, st, o);
          if (st > 0) o.send = transfer(r, false, Payload::Gradient, st, st - 1, o);
        }
      }
}

}  // namespace

ScheduleKind parse_schedule_kind(std::string_view name) {
  if (name == "1f1b") return ScheduleKind::OneFOneB;
  if (name == "dualpipe") return ScheduleKind::DualPipe;
  if (name == "dualpipev") return ScheduleKind::DualPipeV;
  BK_FAIL("unknown pipeline schedule '{}': expected 1f1b, dualpipe or dualpipev", name);
}

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::OneFOneB: return "1f1b";
    case ScheduleKind::DualPipe: return "dualpipe";
    case ScheduleKind::DualPipeV: return "dualpipev";
  }
  return "?";
}

int stage_owner(const Schedule& s, int stage, int direction) {
  switch (s.kind) {
    case ScheduleKind::OneFOneB: return stage;
    case ScheduleKind::DualPipe: return direction == 0 ? stage : s.pp - 1 - stage;
    case ScheduleKind::DualPipeV: return stage < s.pp ? stage : 2 * s.pp - 1 - stage;
  }
  return -1;
}

Schedule make_schedule(ScheduleKind kind, int pp, int microbatches) {
  validate_sizes(kind, pp, microbatches);
  Schedule s;
  s.kind = kind;
  s.pp = pp;
  s.microbatches = microbatches;
  s.num_stages = kind == ScheduleKind::DualPipeV ? 2 * pp : pp;
  s.rank_stages.resize(pp);
  s.ranks.resize(pp);
  for (int r = 0; r < pp; ++r) {
    switch (kind) {
      case ScheduleKind::OneFOneB: s.rank_stages[r] = {r}; break;
      case ScheduleKind::DualPipe: s.rank_stages[r] = {r, pp - 1 - r}; break;  // chunk = direction
      case ScheduleKind::DualPipeV: s.rank_stages[r] = {r, 2 * pp - 1 - r}; break;
    }
  }
  for (int r = 0; r < pp; ++r) {
    if (kind == ScheduleKind::OneFOneB) {
      build_1f1b(s, r, s.ranks[r]);
    } else if (kind == ScheduleKind::DualPipe) {
      // Ranks of the second half are the first half mirrored: their phase 0 is direction 1.
      const int half = pp / 2, C = microbatches / 2;
      const int first_dir = r < half ? 0 : 1;
      PhaseOf phase[2];
      for (int p = 0; p < 2; ++p) {
        const int dir = p ^ first_dir;
        phase[p] = {dir == 0 ? r : pp - 1 - r, dir, dir * C};
      }
      build_dual(s, r, half, std::min(r, pp - 1 - r), C, phase, s.ranks[r]);
    } else {
      // DualPipeV: phase 0 is stage r on the way out, phase 1 stage 2pp-1-r on the way back.
      const PhaseOf phase[2] = {{r, 0, 0}, {2 * pp - 1 - r, 0, 0}};
      build_dual(s, r, pp, r, microbatches, phase, s.ranks[r]);
    }
  }
  attach_transfers(s);
  return s;
}

std::string format_op(const Op& op) {
  const char k = op.kind == OpKind::F ? 'F' : op.kind == OpKind::B ? 'B' : op.kind == OpKind::b ? 'b' : 'W';
  return fmt::format("{}{}.{}", k, op.d, op.m);
}

std::string format_action(const Action& a) {
  if (a.kind == ActionKind::FB && a.ops.size() == 2)
    return fmt::format("[{}&{}]", format_op(a.ops[0]), format_op(a.ops[1]));
  std::string out;
  for (const Op& o : a.ops) {
    if (!out.empty()) out += '&';
    out += format_op(o);
  }
  return out;
}

std::string format_rank(const Schedule& s, int rank) {
  std::string out = fmt::format("rank{}:", rank);
  for (const Action& a : s.ranks[rank]) {
    out += ' ';
    out += format_action(a);
  }
  return out;
}

std::vector<std::string> check_schedule(const Schedule& s) {
  std::vector<std::string> errors;
  auto err = [&](std::string e) {
    if (errors.size() < 50) errors.push_back(std::move(e));
  };
  const int S = s.num_stages, N = s.microbatches;
  if (int(s.ranks.size()) != s.pp || int(s.rank_stages.size()) != s.pp) {
    err(fmt::format("{} rank lists and {} stage lists for pp = {}", s.ranks.size(), s.rank_stages.size(), s.pp));
    return errors;
  }
  struct Seen {
    int f = 0, B = 0, b = 0, W = 0;
  };
  std::vector<Seen> seen(size_t(S) * N);
  struct End {
    int rank, action;
    Transfer t;
  };
  std::map<int, std::vector<End>> sends, recvs;

  for (int r = 0; r < s.pp; ++r) {
    // Per rank: where each (stage, mb) had its F and its b.
    std::map<std::pair<int, int>, int> f_at, b_at;
    for (int i = 0; i < int(s.ranks[r].size()); ++i) {
      const Action& a = s.ranks[r][i];
      const std::string where = fmt::format("rank {} action {} ({})", r, i, format_action(a));
      const bool shape_ok = a.kind == ActionKind::FB
                                ? a.ops.size() == 2 && a.ops[0].kind == OpKind::F && a.ops[1].kind == OpKind::B
                                : a.ops.size() == 1 && int(a.ops[0].kind) == int(a.kind);
      if (!shape_ok) err(where + ": ops do not match the action kind");
      for (const Op& o : a.ops) {
        if (o.stage < 0 || o.stage >= S || o.mb < 0 || o.mb >= N) {
          err(fmt::format("{}: stage {} or micro-batch {} out of range", where, o.stage, o.mb));
          continue;
        }
        if (stage_owner(s, o.stage, o.direction) != r)
          err(fmt::format("{}: stage {} direction {} belongs to rank {}", where, o.stage, o.direction,
                          stage_owner(s, o.stage, o.direction)));
        if (o.chunk < 0 || o.chunk >= int(s.rank_stages[r].size()) || s.rank_stages[r][o.chunk] != o.stage)
          err(fmt::format("{}: chunk {} does not hold stage {}", where, o.chunk, o.stage));
        if (s.kind == ScheduleKind::DualPipe && o.direction != (o.mb >= N / 2 ? 1 : 0))
          err(fmt::format("{}: micro-batch {} is not in direction {}", where, o.mb, o.direction));
        Seen& c = seen[size_t(o.stage) * N + o.mb];
        const auto key = std::make_pair(o.stage, o.mb);
        switch (o.kind) {
          case OpKind::F:
            ++c.f;
            f_at[key] = i;
            break;
          case OpKind::B:
          case OpKind::b:
            ++(o.kind == OpKind::B ? c.B : c.b);
            if (!f_at.count(key)) err(where + ": backward before this rank's forward of the same micro-batch");
            if (o.kind == OpKind::b) b_at[key] = i;
            break;
          case OpKind::W:
            ++c.W;
            if (!b_at.count(key)) err(where + ": weight gradient before its input gradient (b) on this rank");
            break;
        }
        // Transfers this op must have, and that it has.
        const bool is_bwd = o.kind == OpKind::B || o.kind == OpKind::b;
        const bool want_recv = (o.kind == OpKind::F && o.stage > 0) || (is_bwd && o.stage < S - 1);
        const bool want_send = (o.kind == OpKind::F && o.stage < S - 1) || (is_bwd && o.stage > 0);
        if (want_recv != o.recv.has_value()) err(where + (want_recv ? ": missing receive" : ": unexpected receive"));
        if (want_send != o.send.has_value()) err(where + (want_send ? ": missing send" : ": unexpected send"));
        if (o.recv) recvs[o.recv->tag].push_back({r, i, *o.recv});
        if (o.send) sends[o.send->tag].push_back({r, i, *o.send});
      }
    }
  }
  for (int st = 0; st < S; ++st)
    for (int mb = 0; mb < N; ++mb) {
      const Seen& c = seen[size_t(st) * N + mb];
      if (c.f != 1 || !((c.B == 1 && c.b == 0 && c.W == 0) || (c.B == 0 && c.b == 1 && c.W == 1)))
        err(fmt::format("stage {} micro-batch {}: {} F, {} B, {} b, {} W (want 1 F and 1 B, or 1 F, 1 b and 1 W)", st,
                        mb, c.f, c.B, c.b, c.W));
    }
  for (const auto& [tag, list] : recvs) {
    auto it = sends.find(tag);
    if (list.size() != 1 || it == sends.end() || it->second.size() != 1) {
      err(fmt::format("tag {}: {} receive(s) and {} send(s)", tag, list.size(),
                      it == sends.end() ? 0 : it->second.size()));
      continue;
    }
    const End& rv = list[0];
    const End& sd = it->second[0];
    if (rv.t.peer != sd.rank || sd.t.peer != rv.rank || rv.t.payload != sd.t.payload ||
        rv.t.from_stage != sd.t.from_stage || rv.t.to_stage != sd.t.to_stage || rv.t.mb != sd.t.mb ||
        rv.t.local != (rv.rank == sd.rank) || sd.t.local != (rv.rank == sd.rank))
      err(fmt::format("tag {}: receive on rank {} (peer {}) does not match send on rank {} (peer {})", tag, rv.rank,
                      rv.t.peer, sd.rank, sd.t.peer));
  }
  for (const auto& [tag, list] : sends)
    if (!recvs.count(tag)) err(fmt::format("tag {}: sent by rank {} but never received", tag, list[0].rank));
  return errors;
}

}  // namespace bk
