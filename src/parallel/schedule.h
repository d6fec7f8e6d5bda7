// Pipeline schedules as data (DESIGN.md §4, docs/dualpipe.md): for 1F1B, DualPipe and DualPipeV,
// the ordered list of actions each pipeline rank runs in one training step, with the point-to-point
// transfers every action needs. One executor runs any list: for each action in order it waits for
// the action's receives, runs its ops, and starts its sends; receives can be posted as early as the
// executor likes (every transfer has a tag that sender and receiver compute alike), sends completed
// as late as it likes.
//
// Vocabulary
//   stage   a contiguous range of the model's layers. 1F1B and DualPipe have pp stages, DualPipeV
//           2*pp. Stage 0 holds the embedding, the last stage the head and the loss.
//   chunk   which of a rank's stages an op runs on: index into Schedule::rank_stages[rank].
//   mb      global micro-batch id 0..N-1 of the step: the key for saved activations
//           (PerMicroBatch) and for the data. DualPipe gives ids 0..N/2-1 to direction 0 and
//           N/2..N-1 to direction 1.
//   d, m    the printed label "F<d>.<m>": for DualPipe d is the direction (0: enters at rank 0,
//           1: enters at rank pp-1) and m the micro-batch within it (mb = d*N/2 + m); for 1F1B and
//           DualPipeV d is the stage and m = mb.
//   direction  DualPipe's two pipelines over the same stages: direction 0 runs stage s on rank s,
//           direction 1 runs stage s on rank pp-1-s (so rank r holds stages r and pp-1-r, and
//           ranks r and pp-1-r hold the same two stages and add their gradients). Always 0 for
//           1F1B and DualPipeV.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bk {

enum class ScheduleKind { OneFOneB, DualPipe, DualPipeV };

// "1f1b", "dualpipe", "dualpipev" (bk::Error listing them otherwise).
ScheduleKind parse_schedule_kind(std::string_view name);
const char* schedule_kind_name(ScheduleKind kind);

// One unit of compute on one stage.
enum class OpKind : unsigned char {
  F,  // forward
  B,  // full backward: input gradient and weight gradient
  b,  // input gradient only; its weight gradient runs later as a W of the same (stage, mb)
  W,  // the deferred weight gradient of an earlier b (no communication)
};

// What an action is: one op, or DualPipe's overlapped pair (ops[0] the forward of one micro-batch,
// ops[1] the full backward of another, run interleaved so that each one's communication hides
// behind the other's compute).
enum class ActionKind : unsigned char { F, B, b, W, FB };

enum class Payload : unsigned char {
  Activation,  // forward: the output of stage s, the input of stage s+1
  Gradient,    // backward: the gradient of stage s+1's input, sent to stage s
};

// A point-to-point message between the ranks of one pipeline (pp-group ranks).
struct Transfer {
  int peer = -1;        // the other end; equal to this rank for a local hand-off (local = true)
  bool local = false;   // both stages on this rank (DualPipeV's turn at rank pp-1): no message,
                        // the executor passes the tensor from one chunk to the other
  Payload payload = Payload::Activation;
  int from_stage = 0;   // the stage that produces the tensor
  int to_stage = 0;     // the stage that consumes it (from_stage +- 1)
  int mb = 0;           // global micro-batch id
  int tag = 0;          // unique within a step and the same on both ends:
                        // (payload * num_stages + to_stage) * N + mb, below 2 * num_stages * N
};

struct Op {
  OpKind kind = OpKind::F;
  int d = 0, m = 0;      // printed label (see the vocabulary above)
  int mb = 0;            // global micro-batch id
  int stage = 0;         // model stage it runs
  int chunk = 0;         // index of `stage` in Schedule::rank_stages[rank]
  int direction = 0;     // DualPipe direction; 0 otherwise
  // Needed before the op starts: the activation from the previous stage (F of every stage but 0)
  // or the gradient from the next stage (B/b of every stage but the last, which starts from the
  // loss). Never for W.
  std::optional<Transfer> recv;
  // Produced by the op: the activation for the next stage (F of every stage but the last) or the
  // input gradient for the previous stage (B/b of every stage but 0). Never for W.
  std::optional<Transfer> send;
};

struct Action {
  ActionKind kind = ActionKind::F;
  std::vector<Op> ops;  // one op; two for FB (ops[0].kind == F, ops[1].kind == B)
};

struct Schedule {
  ScheduleKind kind = ScheduleKind::OneFOneB;
  int pp = 1;                 // pipeline ranks
  int microbatches = 1;       // N, micro-batches per step over all directions
  int num_stages = 1;         // pp (1F1B, DualPipe) or 2*pp (DualPipeV)
  std::vector<std::vector<int>> rank_stages;  // [rank][chunk] -> stage
  std::vector<std::vector<Action>> ranks;     // [rank] -> the actions of one step, in order
};

// The schedule of one training step. bk::Error when the sizes do not fit the kind (DualPipe: even
// pp, even N >= 2*pp; DualPipeV: N >= 2*pp); the message names --pp / --microbatches and the
// config keys they come from, and the nearest valid value.
Schedule make_schedule(ScheduleKind kind, int pp, int microbatches);

// The rank that runs `stage` of `direction`.
int stage_owner(const Schedule& s, int stage, int direction);

// "F0.1", "B1.2", "b0.3", "W0.3", "[F0.3&B1.1]".
std::string format_op(const Op& op);
std::string format_action(const Action& a);
// "rank<r>: OP OP ..." (no newline).
std::string format_rank(const Schedule& s, int rank);

// Structural check, independent of timing: every (stage, mb) has exactly one F and either one B
// or one b followed (on the same rank) by one W, all on the rank that owns the stage, B/b after
// that rank's F; every receive has exactly one matching send on its peer and vice versa. Returns
// the problems found (empty: consistent). Cross-rank ordering and deadlock freedom are the
// simulator's job (schedule_sim.h).
std::vector<std::string> check_schedule(const Schedule& s);

}  // namespace bk
