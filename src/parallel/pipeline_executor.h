// PipelineExecutor: runs one training step of any pipeline Schedule (1F1B, DualPipe, DualPipeV,
// schedule.h) on the CPU over a Communicator, the pipeline group (issue #7, docs/dualpipe.md).
//
// Stages. A stage is a contiguous range of Model::layers() (split_stages): the 2 * n_layers
// sublayers (connector + attention / FFN) are cut into num_stages equal contiguous parts, as
// plan_stages does; stage 0 also holds the embedding (and StreamExpand), the last stage
// StreamCollapse and the head with the loss. Every rank builds the full Model (same config and
// seed, so the same weights) and runs only the layer ranges of its stages, which it views in
// place. That is the simplest correct layout for the CPU reference; its cost is memory: every
// rank holds all parameters and gradient buffers (pp times what its stages need; only the
// stages' params() get gradients and need optimizer state, so build the optimizer over
// PipelineExecutor::params()). A stage-only model would remove that overhead later without
// changing this class's interface.
//
// What each op does (rank-local buffers, tags from the Transfer, schedule.h):
//   F  receive the activation (all n mHC streams: [tokens, n*C]; stage 0 starts from the tokens),
//      run the stage's layers forward, send the output (the last stage keeps the micro-batch loss)
//   B  receive the output gradient (the last stage starts from the loss), backward_input through
//      the stage, send the input gradient, then backward_weight
//   b  the same without backward_weight: the (stage, mb) goes into a FIFO
//   W  backward_weight of the oldest FIFO entry (checked to be the op's own (stage, mb))
//   FB the pair's F and B interleaved sublayer by sublayer (LayerPass, layer_stack.h): one layer of
//      the forward, one of the backward, in turn, so on the GPU one micro-batch's communication
//      (expert all-to-all) overlaps the other's compute. The two are independent: the numbers are
//      those of running them one after the other.
// A local Transfer (DualPipeV's turn at rank pp-1) hands the buffer from one chunk to the other.
//
// Communication. A progress thread (PipelineOptions::progress_thread) calls pipe.progress() every
// 100 us during the step, so transfers move while the ops compute. Receives are posted ahead: before action i computes, the receives of actions
// i .. i + lookahead are posted (each into its own buffer); an op waits only for its own receive.
// Sends are started when their op has produced the tensor and completed at the end of the step
// (the buffers are kept alive until then). Every wait is on a receive that the schedule
// guarantees a peer sends without waiting for anything (sends never block), so a schedule that
// the simulator (schedule_sim.h) runs without deadlock runs here without deadlock.
//
// Gradients accumulate into Param::grad of the stages' layers in the order the schedule runs
// their backward (W) ops; the caller zeroes them before the step (as train_step does). DualPipe:
// ranks r and pp-1-r hold the same two stages, each having run half of the micro-batches on
// them; at the end of run() the pair adds its gradients (one all_reduce_sum over the two ranks,
// lower rank first, so both get the same bits).
//
// Losses: the last stage's ops record each micro-batch's sum of per-token losses (double, as
// Model::forward returns it); run() returns all of them on every pipeline rank, and their sum in
// micro-batch order.
//
// Failure. If an op throws (a layer error, an MPI error), run() abandons the step's in-flight
// requests and their buffers (they are leaked, not waited for: waiting on a receive whose sender
// died would hang) and rethrows. The job cannot continue after that: the caller must end it
// (abort_job, as the trainer and the tests do), which also stops the peers blocked in their waits.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/layer.h"
#include "parallel/schedule.h"

namespace bk {

class Communicator;
class Model;

// A stage: layers [first, end) of Model::layers().
struct StageRange {
  int first = 0, end = 0;
};

// The num_stages contiguous ranges of model's layer list (above). bk::Error when num_stages does
// not divide the 2 * n_layers sublayers or the model has MTP modules (their embedding table is
// shared with stage 0: not supported in a pipeline yet).
std::vector<StageRange> split_stages(const Model& model, int num_stages);

struct PipelineOptions {
  // Receives of this many following actions are posted before an action computes (>= 0).
  int lookahead = 2;
  // Called before each op runs (tests: fault injection; tracing).
  std::function<void(const Op&)> before_op;
  // A thread that drives the communicator's progress (Communicator::progress) while the step
  // computes, so sends and early-posted receives advance during compute, not only inside waits.
  bool progress_thread = true;
};

struct PipelineStepResult {
  std::vector<double> losses;  // [N] sum of the per-token losses of each micro-batch (every rank)
  double loss_sum = 0;         // their sum in micro-batch order
};

class PipelineExecutor {
 public:
  // model: the full model (same config and seed on every pipeline rank). pipe: the pipeline group,
  // pipe.size() == schedule.pp; its rank picks schedule.ranks[rank]. Collective over pipe
  // (DualPipe splits it into mirror pairs).
  PipelineExecutor(Model& model, Schedule schedule, Communicator& pipe, PipelineOptions opts = {});
  ~PipelineExecutor();
  PipelineExecutor(const PipelineExecutor&) = delete;
  PipelineExecutor& operator=(const PipelineExecutor&) = delete;

  // One step's forwards and backwards. mbs: the step's N micro-batches, indexed by Op::mb, the
  // same on every pipeline rank (B and T everywhere; tokens used by stage 0, targets and
  // loss_scale by the last stage). Gradients are added into params() (zero them before).
  PipelineStepResult run(const std::vector<MicroBatch>& mbs);

  const Schedule& schedule() const { return schedule_; }
  // This rank's stages, by chunk (Schedule::rank_stages[rank]).
  const std::vector<int>& stages() const;
  StageRange stage_range(int stage) const { return ranges_.at(size_t(stage)); }
  // The parameters of this rank's stages, stages in ascending order, each once: what this rank
  // trains (and, for DualPipe, what its mirror rank holds too).
  ParamList params() const;
  // Makes the full model current on every pipeline rank (for evaluation, which runs the whole
  // model locally): each stage's parameters are broadcast from the rank that trains it
  // (collective over the pipeline group).
  void broadcast_weights();
  // Whether this rank saves its stages in checkpoints: under DualPipe the lower rank of each
  // mirror pair (both hold the same two stages with the same values), else every rank.
  bool saves_its_stages() const;
  // How many pipeline ranks hold each stage (DualPipe 2, else 1).
  int stage_copies() const;

 private:
  struct StepState;
  void backward_weight_stage(int stage, const MicroBatch& mb);
  int64_t in_width(int stage) const;
  int64_t out_width(int stage) const;
  void reduce_mirror_gradients();

  Model& model_;
  Schedule schedule_;
  Communicator& pipe_;
  PipelineOptions opts_;
  int rank_ = 0;
  DType dtype_ = DType::f32;
  std::vector<StageRange> ranges_;
  std::unique_ptr<Communicator> mirror_;  // DualPipe: {r, pp-1-r}, lower rank first
};

}  // namespace bk
