#include "parallel/pipeline_executor.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstring>
#include <deque>
#include <map>
#include <utility>

#include "core/buffer.h"
#include "core/error.h"
#include "model/layer_stack.h"
#include "model/model.h"
#include "parallel/communicator.h"

namespace bk {

std::vector<StageRange> split_stages(const Model& model, int num_stages) {
  const ModelConfig& cfg = model.config();
  BK_CHECK(num_stages >= 1, "pipeline: {} stages: need at least 1", num_stages);
  BK_CHECK(cfg.mtp.depth == 0,
           "pipeline: model.mtp.depth = {}: the MTP modules share the embedding table with stage 0, which "
           "the pipeline executor does not support yet; set model.mtp.depth: 0 or parallel.pp: 1",
           cfg.mtp.depth);
  const int layers = int(model.layers().size());
  const int ends = cfg.streams() > 1 ? 2 : 1;  // embedding (+ expand); (collapse +) head
  const int units = 2 * cfg.n_layers;
  BK_CHECK(layers == ends + units + ends,
           "pipeline: the model has {} layers, expected {} (embedding, {} sublayers, head{})", layers,
           2 * ends + units, units, ends > 1 ? ", stream expand/collapse" : "");
  BK_CHECK(units % num_stages == 0,
           "pipeline: {} stages do not divide the {} sublayers ({} layers x 2): stages are equal contiguous "
           "splits of the sublayer list; choose parallel.pp (DualPipeV: 2 * pp stages) dividing {}",
           num_stages, units, cfg.n_layers, units);
  const int per = units / num_stages;
  std::vector<StageRange> out(static_cast<size_t>(num_stages));
  for (int s = 0; s < num_stages; ++s) {
    out[size_t(s)].first = s == 0 ? 0 : ends + s * per;
    out[size_t(s)].end = s == num_stages - 1 ? layers : ends + (s + 1) * per;
  }
  return out;
}

namespace {

struct PendingRecv {
  Buffer buf;
  std::unique_ptr<Request> req;
};
struct PendingSend {
  Buffer buf;
  std::unique_ptr<Request> req;
};

}  // namespace

// Everything in flight during one run(); leaked on failure (see the header).
struct PipelineExecutor::StepState {
  std::map<int, PendingRecv> recvs;  // by tag
  std::vector<PendingSend> sends;
  std::map<int, Buffer> local;       // local hand-offs, by tag
  std::deque<std::pair<int, int>> deferred;  // (stage, mb) of b ops awaiting their W
};

PipelineExecutor::PipelineExecutor(Model& model, Schedule schedule, Communicator& pipe, PipelineOptions opts)
    : model_(model), schedule_(std::move(schedule)), pipe_(pipe), opts_(std::move(opts)), rank_(pipe.rank()) {
  BK_CHECK(pipe.size() == schedule_.pp, "pipeline: the schedule is for pp = {} ranks but the pipeline group has {}",
           schedule_.pp, pipe.size());
  BK_CHECK(opts_.lookahead >= 0, "pipeline: lookahead must be >= 0, got {}", opts_.lookahead);
  const std::vector<std::string> problems = check_schedule(schedule_);
  BK_CHECK(problems.empty(), "pipeline: inconsistent {} schedule: {}", schedule_kind_name(schedule_.kind),
           problems.front());
  ranges_ = split_stages(model_, schedule_.num_stages);
  const ParamList all = model_.params();
  if (!all.empty()) dtype_ = all.front()->value.dtype();
  if (schedule_.kind == ScheduleKind::DualPipe) {
    const int pp = schedule_.pp;
    mirror_ = pipe_.split(std::min(rank_, pp - 1 - rank_), rank_);
    BK_CHECK(mirror_->size() == 2, "pipeline: DualPipe mirror group of rank {} has {} ranks, expected 2", rank_,
             mirror_->size());
  }
}

PipelineExecutor::~PipelineExecutor() = default;

const std::vector<int>& PipelineExecutor::stages() const { return schedule_.rank_stages.at(size_t(rank_)); }

ParamList PipelineExecutor::params() const {
  std::vector<int> st = stages();
  std::sort(st.begin(), st.end());
  ParamList out;
  const auto& layers = model_.layers();
  for (int s : st)
    for (int i = ranges_[size_t(s)].first; i < ranges_[size_t(s)].end; ++i)
      for (Param* p : layers[size_t(i)]->params()) out.push_back(p);
  return out;
}

void PipelineExecutor::broadcast_weights() {
  const auto& layers = model_.layers();
  for (int s = 0; s < schedule_.num_stages; ++s) {
    const int owner = stage_owner(schedule_, s, 0);
    for (int i = ranges_[size_t(s)].first; i < ranges_[size_t(s)].end; ++i)
      for (Param* p : layers[size_t(i)]->params()) pipe_.broadcast(p->value, owner);
  }
}

int PipelineExecutor::stage_copies() const { return schedule_.kind == ScheduleKind::DualPipe ? 2 : 1; }

bool PipelineExecutor::saves_its_stages() const {
  return schedule_.kind != ScheduleKind::DualPipe || rank_ < schedule_.pp - 1 - rank_;
}

int64_t PipelineExecutor::in_width(int stage) const {
  // The embedding ignores its input: a [tokens, 1] placeholder, as in Model::forward.
  const int first = ranges_.at(size_t(stage)).first;
  return first == 0 ? 1 : model_.layers()[size_t(first - 1)]->out_width();
}

int64_t PipelineExecutor::out_width(int stage) const {
  return model_.layers()[size_t(ranges_.at(size_t(stage)).end - 1)]->out_width();
}

// Deferred or full-backward weight gradients of a stage, through the model's layer runner.
void PipelineExecutor::backward_weight_stage(int stage, const MicroBatch& mb) {
  const StageRange r = ranges_[size_t(stage)];
  backward_weight_layers(model_.layers(), mb, {size_t(r.first), size_t(r.end)});
}

PipelineStepResult PipelineExecutor::run(const std::vector<MicroBatch>& mbs) {
  const int N = schedule_.microbatches;
  const int last_stage = schedule_.num_stages - 1;
  BK_CHECK(int(mbs.size()) == N, "pipeline: the {} schedule has {} micro-batches, run() got {}",
           schedule_kind_name(schedule_.kind), N, mbs.size());
  const std::vector<Action>& actions = schedule_.ranks.at(size_t(rank_));
  std::vector<double> losses(size_t(N), 0.0);
  auto st = std::make_unique<StepState>();

  // The non-local receives in action order, posted `lookahead` actions ahead.
  std::vector<std::pair<size_t, const Transfer*>> recv_list;  // (action index, transfer)
  for (size_t a = 0; a < actions.size(); ++a)
    for (const Op& op : actions[a].ops)
      if (op.recv && !op.recv->local) recv_list.push_back({a, &*op.recv});
  size_t posted = 0;
  auto post_until = [&](size_t action) {
    for (; posted < recv_list.size() && recv_list[posted].first <= action; ++posted) {
      const Transfer& t = *recv_list[posted].second;
      const int64_t width = t.payload == Payload::Activation ? in_width(t.to_stage) : out_width(t.to_stage);
      PendingRecv pr{Buffer({mbs[size_t(t.mb)].tokens_count(), width}, dtype_), nullptr};
      pr.req = pipe_.irecv(pr.buf, t.peer, t.tag);
      st->recvs.emplace(t.tag, std::move(pr));
    }
  };
  auto receive = [&](const Transfer& t) -> Buffer {
    if (t.local) {
      auto it = st->local.find(t.tag);
      BK_CHECK(it != st->local.end(), "pipeline: rank {}: local hand-off {} (stage {} -> {}, mb {}) used before it "
               "was produced", rank_, t.tag, t.from_stage, t.to_stage, t.mb);
      Buffer b = std::move(it->second);
      st->local.erase(it);
      return b;
    }
    auto it = st->recvs.find(t.tag);
    BK_CHECK(it != st->recvs.end(), "pipeline: rank {}: receive {} was not posted", rank_, t.tag);
    it->second.req->wait();
    Buffer b = std::move(it->second.buf);
    st->recvs.erase(it);
    return b;
  };
  auto send = [&](const Transfer& t, Buffer b) {
    if (t.local) {
      st->local.emplace(t.tag, std::move(b));
      return;
    }
    PendingSend ps{std::move(b), nullptr};
    ps.req = pipe_.isend(ps.buf, t.peer, t.tag);
    st->sends.push_back(std::move(ps));
  };

  // An op's compute is a LayerPass over its stage; an action's passes (two for an F&B pair: the
  // forward of one micro-batch and the backward of another) advance a sublayer at a time in turn.
  struct Running {
    const Op* op;
    LayerPass pass;
  };
  auto start = [&](const Op& op) -> Running {
    const MicroBatch& mb = mbs[size_t(op.mb)];
    const StageRange r = ranges_[size_t(op.stage)];
    const LayerRange range{size_t(r.first), size_t(r.end)};
    // Stage 0's embedding ignores its input and the head seeds its own gradient from the loss:
    // [tokens, 1] placeholders where nothing is received.
    Buffer in = op.recv ? receive(*op.recv) : Buffer({mb.tokens_count(), 1}, dtype_);
    const LayerPass::Kind kind = op.kind == OpKind::F ? LayerPass::Kind::forward : LayerPass::Kind::backward_input;
    return Running{&op, LayerPass(kind, model_.layers(), mb, std::move(in), in_width(op.stage), &model_.recompute(),
                                  range)};
  };
  auto finish = [&](Running& run) {
    const Op& op = *run.op;
    Buffer out = run.pass.take();
    if (op.kind == OpKind::F && op.stage == last_stage) losses[size_t(op.mb)] = sum_losses(out);
    if (op.send) send(*op.send, std::move(out));  // the input gradient leaves before the W work
    if (op.kind == OpKind::B) backward_weight_stage(op.stage, mbs[size_t(op.mb)]);
    if (op.kind == OpKind::b) st->deferred.push_back({op.stage, op.mb});
  };

  // Stopped and joined on every way out of run(), including an exception.
  struct ProgressThread {
    std::atomic<bool> stop{false};
    std::thread thread;
    ProgressThread(Communicator& c, bool on) {
      if (on && c.size() > 1)
        thread = std::thread([this, &c] {
          while (!stop.load(std::memory_order_relaxed)) {
            c.progress();
            std::this_thread::sleep_for(std::chrono::microseconds(100));
          }
        });
    }
    ~ProgressThread() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } progress(pipe_, opts_.progress_thread);

  try {
    for (size_t a = 0; a < actions.size(); ++a) {
      post_until(a + size_t(opts_.lookahead));
      std::vector<Running> running;
      for (const Op& op : actions[a].ops) {
        if (opts_.before_op) opts_.before_op(op);
        if (op.kind != OpKind::W) {
          running.push_back(start(op));
          continue;
        }
        BK_CHECK(!st->deferred.empty(), "pipeline: rank {}: {} with no deferred weight gradient", rank_,
                 format_op(op));
        const auto [stage, m] = st->deferred.front();
        BK_CHECK(stage == op.stage && m == op.mb,
                 "pipeline: rank {}: {} but the oldest deferred weight gradient is stage {} mb {}", rank_,
                 format_op(op), stage, m);
        st->deferred.pop_front();
        backward_weight_stage(stage, mbs[size_t(m)]);
      }
      for (bool stepped = true; stepped;) {
        stepped = false;
        for (Running& r : running)
          if (!r.pass.done()) {
            r.pass.step();
            stepped = true;
          }
      }
      for (Running& r : running) finish(r);
    }
    for (PendingSend& s : st->sends) s.req->wait();
    BK_CHECK(st->recvs.empty() && st->local.empty() && st->deferred.empty(),
             "pipeline: rank {}: step ended with {} receives, {} local hand-offs, {} weight gradients left", rank_,
             st->recvs.size(), st->local.size(), st->deferred.size());
    st.reset();
    reduce_mirror_gradients();
    // Each loss is held by one rank (zeros elsewhere): x + 0 = x, so the sum is exact.
    pipe_.all_reduce_sum(Tensor{losses.data(), DType::f64, Shape{int64_t(N)}});
  } catch (...) {
    // Requests still in flight must not be waited for (their peer may be gone) nor their buffers
    // freed (MPI may still write into them): abandon them. The caller ends the job.
    (void)st.release();
    throw;
  }
  PipelineStepResult out;
  out.losses = std::move(losses);
  for (double l : out.losses) out.loss_sum += l;
  return out;
}

void PipelineExecutor::reduce_mirror_gradients() {
  if (!mirror_) return;
  // Both ranks of the pair list the same stages in the same (ascending) order.
  const ParamList ps = params();
  int64_t total = 0;
  for (Param* p : ps) {
    BK_CHECK(p->grad.dtype() == dtype_, "pipeline: gradient {} is {}, expected {}", p->name,
             dtype_name(p->grad.dtype()), dtype_name(dtype_));
    total += p->grad.numel();
  }
  if (total == 0) return;
  Buffer flat({total}, dtype_);
  const size_t esize = dtype_size(dtype_);
  int64_t off = 0;
  for (Param* p : ps) {
    std::memcpy(static_cast<char*>(flat.tensor().data) + off * esize, p->grad.tensor().data, p->grad.nbytes());
    off += p->grad.numel();
  }
  mirror_->all_reduce_sum(flat);
  off = 0;
  for (Param* p : ps) {
    std::memcpy(p->grad.tensor().data, static_cast<const char*>(flat.tensor().data) + off * esize, p->grad.nbytes());
    off += p->grad.numel();
  }
}

}  // namespace bk
