// Data parallelism for the optimizer step (DESIGN.md §4): gradients summed over the ranks that
// share the global batch, the global grad norm, AdamW, and with ZeRO-1 the optimizer state
// sharded over those ranks.
//
// Two gradient groups. Replicated parameters (embedding, attention, dense FFN, shared experts,
// router, norms, connectors) are summed over the data group (ep x dp ranks); routed-expert
// parameters (Param::expert), which one ep rank owns, over the dp group only.
//
// Layout. Each group's parameters are cut, in parameter order, into one contiguous run per rank
// of its communicator (balanced by element count); rank r "owns" run r. The gradients are packed
// into a flat buffer of P equal segments (run r at segment r, padded), so
//   plain dp: all_reduce_sum(flat), every rank updates every parameter;
//   ZeRO-1:   reduce_scatter_sum -> rank r holds the summed run r, updates only it (AdamW state
//             exists for it only) -> all_gather of the updated values.
// Both sum every element in rank order (communicator.h), and AdamW is elementwise, so ZeRO-1 and
// plain dp give the same bits. The grad norm adds per-run partial sums in rank order in both.
//
// Checkpoints keep global names: each parameter and its moments are saved by their owner, so
// every tensor is written exactly once whatever the layout, and read back by name under any.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "io/safetensors.h"
#include "model/param.h"
#include "parallel/communicator.h"
#include "train/optimizer.h"

namespace bk {

// With pipeline stages, `pipe` (the pipeline group) adds the stages' squares into the grad norm;
// under DualPipe every stage lives on two pipeline ranks (stage_copies = 2) and only the lower
// of the two saves it (saves = false on the upper one).
struct PipelineShare {
  Communicator* pipe = nullptr;
  int stage_copies = 1;
  bool saves = true;
};

class DataParallelOptimizer {
 public:
  // params: what this rank trains (its pipeline stages'). data: ranks sharing the batch (same
  // pipeline coordinate); dp: same ep rank among them; ep: the expert group (to add the expert
  // gradients' squares of the other ep ranks into the norm).
  DataParallelOptimizer(const OptimizerConfig& cfg, ParamList params, Communicator& data, Communicator& dp,
                        Communicator& ep, bool zero1, PipelineShare pipeline = {});
  ~DataParallelOptimizer();

  void zero_grad();
  // Sums every gradient over its group (after the step's last backward).
  void reduce_gradients();
  // Global L2 norm of the summed gradients (collective: ZeRO-1 gathers partial sums).
  double grad_norm();
  // One AdamW update with the clip scale; under ZeRO-1 followed by the all_gather of the values.
  void step(double lr, double clip_scale);

  int64_t steps_taken() const;
  void set_steps_taken(int64_t t);

  // What this rank writes to a checkpoint (each tensor of the job by exactly one rank) and what
  // it reads back on restore (everything it holds).
  std::vector<NamedTensor> params_to_save() const;
  std::vector<NamedTensor> optimizer_state_to_save() const;
  std::vector<NamedTensor> optimizer_state_held() const;

 private:
  struct Group;
  std::unique_ptr<Group> replicated_, expert_;
  Communicator* ep_;
  bool zero1_;
  PipelineShare pipeline_;
  std::unique_ptr<AdamW> adam_;  // over the parameters this rank updates
};

}  // namespace bk
