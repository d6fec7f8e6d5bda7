// MPI test of the pipeline executor (src/parallel/pipeline_executor.h): every schedule run over
// the world as the pipeline group gives the same per-micro-batch losses (bit for bit) and the same
// gradients (within a stated tolerance; bit for bit where the accumulation order is the
// reference's) as a plain single-process step over the same micro-batches. Run by ctest through
// mpirun with 2 and 4 ranks (tests/parallel/CMakeLists.txt). A plain main: gtest_main would not
// initialise MPI. An unexpected exception aborts the job (abort_job) so no rank hangs.
//
// With BK_TEST_PIPELINE_FAULT=1 in the environment it is the deadlock-safety check instead: rank 1
// throws in its first backward op while rank 0 waits for that op's gradient; the job must end
// with a non-zero exit code and rank 1's message (check_abort.sh), not hang.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/model.h"
#include "mpi_testing.h"
#include "parallel/mpi_communicator.h"
#include "parallel/pipeline_executor.h"

using namespace bk;

namespace {

using mpi_testing::g_rank;

// 4 blocks = 8 sublayers: 2, 4 and 8 stages split them evenly.
ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 64;
  c.dim = 32;
  c.n_layers = 4;
  c.n_heads = 2;
  c.ffn_dim = 64;
  c.seq_len = 16;
  c.residual.mode = "mhc";
  c.residual.streams = 4;
  c.residual.phi_init_std = 0.05;  // the streams mix from the start (0 would start as the baseline)
  return c;
}

// The step's data, the same on every rank (one seed): B sequences per micro-batch.
struct StepData {
  std::vector<std::vector<int32_t>> in, tgt;
  std::vector<MicroBatch> mbs;
};

StepData make_data(const ModelConfig& c, int N, int B) {
  StepData d;
  Rng rng(1234, uint64_t(N));
  const int T = c.seq_len;
  d.in.resize(size_t(N));
  d.tgt.resize(size_t(N));
  for (int i = 0; i < N; ++i) {
    for (int k = 0; k < B * T; ++k) {
      d.in[size_t(i)].push_back(int32_t(rng.next_u64() % uint64_t(c.vocab_size)));
      // A few ignored targets, as padding would give.
      d.tgt[size_t(i)].push_back(rng.next_u64() % 13 == 0 ? -1 : int32_t(rng.next_u64() % uint64_t(c.vocab_size)));
    }
  }
  const float scale = float(1.0 / double(int64_t(N) * B * T));  // 1 / tokens per step, as train_step
  for (int i = 0; i < N; ++i)
    d.mbs.push_back(MicroBatch{i, B, T, d.in[size_t(i)].data(), d.tgt[size_t(i)].data(), scale, true});
  return d;
}

using Grads = std::map<std::string, std::vector<float>>;

void zero_grads(Model& m) {
  for (Param* p : m.params()) p->grad.zero();
}

Grads grads_of(const ParamList& ps) {
  Grads g;
  for (Param* p : ps) {
    const float* x = p->grad.ptr<float>();
    g[p->name].assign(x, x + p->grad.numel());
  }
  return g;
}

// The reference: what train_step does in one process, micro-batch after micro-batch.
std::vector<double> reference_step(Model& m, const StepData& d, Grads& grads) {
  zero_grads(m);
  std::vector<double> losses;
  for (const MicroBatch& mb : d.mbs) {
    losses.push_back(m.forward(mb));
    m.backward(mb);
  }
  grads = grads_of(m.params());
  return losses;
}

// Gradient tolerance. The executor adds each parameter's per-micro-batch contributions in the
// order its schedule runs the weight gradients. For 1F1B and DualPipeV that is micro-batch order
// on one rank, as in the reference, so the bits must match (checked). DualPipe's mirror ranks
// each sum half of the micro-batches (one direction) before the pair adds the two halves: the
// same N fp32 terms, associated differently. Re-associating a sum of N terms moves it by at most
// about (N-1) * u * sum|term| (u = 2^-24: below 6e-7 * sum|term| for the N <= 10 used here), and
// sum|term| exceeds the result where contributions cancel (small tensors such as connector
// biases). Observed: at most 2e-6 of the tensor's largest entry. The check allows 5e-5 of the
// tensor's largest reference entry (25x the observed worst), plus 1e-12 absolute for all-zero
// tensors. A real executor error (a micro-batch missing or counted twice, a wrong stage input, a
// mirror pair not added) moves gradients by O(1/N) of their size: dropping the mirror all-reduce
// gives differences of 50% and more here.
constexpr double kGradRelTol = 5e-5;

struct Case {
  ScheduleKind kind;
  int pp, N;
  int lookahead = 2;  // PipelineOptions::lookahead
};

void check_case(Communicator& world, Model& model, const Case& c) {
  const int B = 2;
  StepData d = make_data(model.config(), c.N, B);
  Grads ref;
  const std::vector<double> ref_losses = reference_step(model, d, ref);

  // Two steps with one executor (tags and buffers reused): the same result both times.
  PipelineOptions opts;
  opts.lookahead = c.lookahead;
  PipelineExecutor ex(model, make_schedule(c.kind, c.pp, c.N), world, opts);
  zero_grads(model);
  PipelineStepResult res = ex.run(d.mbs);
  const Grads first = grads_of(model.params());
  zero_grads(model);
  PipelineStepResult again = ex.run(d.mbs);
  CHECK(again.losses == res.losses && again.loss_sum == res.loss_sum);
  CHECK(grads_of(model.params()) == first);

  // Losses: the same forward arithmetic on the same inputs and weights: identical bits.
  CHECK(res.losses.size() == ref_losses.size());
  bool losses_same = res.losses.size() == ref_losses.size() &&
                     std::memcmp(res.losses.data(), ref_losses.data(), ref_losses.size() * sizeof(double)) == 0;
  CHECK(losses_same);
  double ref_sum = 0;
  for (double l : ref_losses) ref_sum += l;
  CHECK(res.loss_sum == ref_sum);

  // Gradients of this rank's stages against the reference's.
  const ParamList mine = ex.params();
  CHECK(!mine.empty());
  bool all_bitwise = true, within = true;
  double worst = 0;
  std::string worst_name;
  for (Param* p : mine) {
    const std::vector<float>& r = ref.at(p->name);
    const float* g = p->grad.ptr<float>();
    double maxref = 0, maxdiff = 0;
    for (size_t i = 0; i < r.size(); ++i) {
      maxref = std::max(maxref, std::fabs(double(r[i])));
      maxdiff = std::max(maxdiff, std::fabs(double(g[i]) - double(r[i])));
    }
    if (std::memcmp(g, r.data(), r.size() * sizeof(float)) != 0) all_bitwise = false;
    if (!(maxdiff <= kGradRelTol * maxref + 1e-12)) {
      within = false;
      std::fprintf(stderr, "rank %d: %s pp=%d N=%d: %s differs by %.3g (largest |ref| %.3g)\n", g_rank,
                   schedule_kind_name(c.kind), c.pp, c.N, p->name.c_str(), maxdiff, maxref);
    }
    const double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    if (rel > worst) worst = rel, worst_name = p->name;
  }
  CHECK(within);
  // 1F1B and DualPipeV run each stage's weight gradients in micro-batch order on one rank, as the
  // reference does: the same additions in the same order.
  if (c.kind != ScheduleKind::DualPipe) CHECK(all_bitwise);
  // Parameters of other stages were not touched.
  std::map<std::string, bool> is_mine;
  for (Param* p : mine) is_mine[p->name] = true;
  bool others_zero = true;
  for (Param* p : model.params())
    if (!is_mine.count(p->name))
      for (int64_t i = 0; i < p->grad.numel(); ++i) others_zero = others_zero && p->grad.ptr<float>()[i] == 0.f;
  CHECK(others_zero);

  // One report line per case from each rank in turn.
  std::string stage_list;
  for (int st : ex.stages()) {
    if (!stage_list.empty()) stage_list += ',';
    stage_list += std::to_string(st);
  }
  for (int r = 0; r < world.size(); ++r) {
    world.barrier();
    if (r == g_rank)
      std::printf("rank %d %-9s pp=%d N=%-2d ahead %d stages %s: losses %s, grads %s (max rel diff %.2g%s%s)\n", g_rank,
                  schedule_kind_name(c.kind), c.pp, c.N, c.lookahead,
                  stage_list.c_str(),
                  losses_same ? "bitwise equal" : "DIFFER", all_bitwise ? "bitwise equal" : within ? "within tol" : "DIFFER",
                  worst, worst_name.empty() ? "" : " in ", worst_name.c_str());
    std::fflush(stdout);
  }
  world.barrier();
}

void check_stage_split(Model& model) {
  // 1 + expand, 8 sublayers, collapse + head: 12 layers.
  const auto layers = int(model.layers().size());
  CHECK(layers == 12);
  std::vector<StageRange> s2 = split_stages(model, 2);
  CHECK(s2.size() == 2 && s2[0].first == 0 && s2[0].end == 6 && s2[1].first == 6 && s2[1].end == 12);
  std::vector<StageRange> s8 = split_stages(model, 8);
  CHECK(s8.size() == 8 && s8[0].end == 3 && s8[1].first == 3 && s8[7].first == 9 && s8[7].end == 12);
  bool threw = false;
  try {
    split_stages(model, 3);
  } catch (const Error& e) {
    threw = std::string(e.what()).find("do not divide the 8 sublayers") != std::string::npos;
  }
  CHECK(threw);
}

void run_all(Communicator& world) {
  const int P = world.size();
  Model model(tiny_config(), 7);
  check_stage_split(model);
  std::vector<Case> cases = {
      {ScheduleKind::OneFOneB, P, 2 * P},
      {ScheduleKind::OneFOneB, P, P + 1},
      {ScheduleKind::DualPipe, P, 2 * P},
      {ScheduleKind::DualPipe, P, 2 * P + 2},
      {ScheduleKind::DualPipeV, P, 2 * P},
  };
  if (P == 2) cases.push_back({ScheduleKind::DualPipeV, P, 5});
  // Receives posted just in time, and all of the step's at its start.
  cases.push_back({ScheduleKind::DualPipe, P, 2 * P, 0});
  cases.push_back({ScheduleKind::DualPipeV, P, 2 * P, 1000});
  for (const Case& c : cases) check_case(world, model, c);

  // The baseline residual (one stream: no expand / collapse layers around the sublayers).
  ModelConfig base_cfg = tiny_config();
  base_cfg.residual.mode = "baseline";
  Model base(base_cfg, 7);
  CHECK(split_stages(base, 2)[1].first == 5);  // embedding + 4 sublayers
  check_case(world, base, {ScheduleKind::OneFOneB, P, 2 * P});
  check_case(world, base, {ScheduleKind::DualPipeV, P, 2 * P});

  // A wrong number of micro-batches is an error before any communication.
  bool threw = false;
  try {
    PipelineExecutor ex(model, make_schedule(ScheduleKind::OneFOneB, P, 2), world);
    StepData d = make_data(model.config(), 3, 1);
    ex.run(d.mbs);
  } catch (const Error& e) {
    threw = std::string(e.what()).find("run() got 3") != std::string::npos;
  }
  CHECK(threw);
}

// Rank 1 fails in its first backward; rank 0 is then blocked waiting for that gradient.
void run_fault(Communicator& world) {
  Model model(tiny_config(), 7);
  const int P = world.size();
  StepData d = make_data(model.config(), 2 * P, 1);
  PipelineOptions opts;
  opts.before_op = [&](const Op& op) {
    if (world.rank() == 1 && op.kind == OpKind::B)
      BK_FAIL("injected failure in {} on stage {}", format_op(op), op.stage);
  };
  PipelineExecutor ex(model, make_schedule(ScheduleKind::OneFOneB, P, 2 * P), world, opts);
  ex.run(d.mbs);
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime rt(&argc, &argv);
  auto world = rt.world();
  g_rank = world->rank();
  const char* fault = std::getenv("BK_TEST_PIPELINE_FAULT");
  try {
    if (fault && std::string(fault) == "1") {
      run_fault(*world);
      std::printf("rank %d: the injected failure did not happen\n", g_rank);
      return 0;
    }
    run_all(*world);
  } catch (const std::exception& e) {
    abort_job(std::string("unexpected exception: ") + e.what());
  }
  return mpi_testing::finish(*world);
}
