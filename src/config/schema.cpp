// The tables: sections, keys (with ranges and docs) and the rules between keys. The text
// helpers below turn a key into what errors, to_yaml and docs/config.md say about it.
#include "config/schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>

namespace bk::schema {
namespace {

Allowed bounded(std::optional<Bound> lo, std::optional<Bound> hi) {
  Allowed a;
  a.lo = lo, a.hi = hi;
  return a;
}
Allowed at_least(double v) { return bounded(Bound{v, true}, {}); }
Allowed above(double v) { return bounded(Bound{v, false}, {}); }
Allowed in_closed_open(double lo, double hi) { return bounded(Bound{lo, true}, Bound{hi, false}); }
Allowed in_closed(double lo, double hi) { return bounded(Bound{lo, true}, Bound{hi, true}); }
Allowed in_open(double lo, double hi) { return bounded(Bound{lo, false}, Bound{hi, false}); }
Allowed in_open_closed(double lo, double hi) { return bounded(Bound{lo, false}, Bound{hi, true}); }
Allowed one_of(std::vector<std::string_view> choices) {
  Allowed a;
  a.choices = std::move(choices);
  return a;
}
Allowed required() {
  Allowed a;
  a.required = true;
  return a;
}
Allowed any() { return {}; }

// KEY(model.dim) expands to the path "model.dim" and an accessor returning &cfg.model.dim, so a
// key's name and the member it sets cannot drift apart.
#define KEY(path) #path, [](Config& c) -> FieldRef { return &c.path; }

const std::vector<Section> kSections = {
    {"run", "Identity, randomness and hardware of a run."},
    {"model", "Transformer shape and initialisation. A block is an attention sublayer (MHA or MLA) followed "
              "by a feed-forward sublayer (dense SwiGLU or DeepSeekMoE), each with its own pre-RMSNorm and "
              "wrapped in the residual connector of model.residual."},
    {"model.residual", "Connector around every sublayer (docs/mhc.md): X' = H_res X + H_post^T F(H_pre X) "
                       "over n streams. baseline is the plain pre-norm residual (n = 1)."},
    {"model.mla", "Multi-head latent attention (DeepSeek-V2/V3), used when model.attention is mla "
                  "(docs/model.md)."},
    {"model.moe", "DeepSeekMoE feed-forward, used when model.ffn is moe: shared experts plus "
                  "fine-grained routed experts with sigmoid affinities and auxiliary-loss-free bias "
                  "balancing (docs/model.md)."},
    {"model.mtp", "Multi-token prediction (DeepSeek-V3): depth extra modules each predict one more "
                  "token ahead (docs/model.md)."},
    {"data", "Pre-tokenized shards (a header and uint32 tokens, see tools/prepare_data)."},
    {"training", "Length of training, batch sizes (as in Megatron: global = micro x "
                 "num_microbatches x dp), gradient clipping, and logging and validation cadence."},
    {"optimizer", "AdamW with decoupled weight decay."},
    {"optimizer.schedule", "Learning-rate schedule: linear warmup, then cosine, step or constant."},
    {"parallel", "Process grid pp x ep x dp; its product must equal the number of MPI ranks "
                 "(checked at launch)."},
    {"checkpoint", "Checkpoints go to RUN_DIR/checkpoints, one directory per step."},
    {"logging", "Console log and metrics files."},
};

const std::vector<Key> kKeys = {
    {KEY(run.name), required(), "Name of the run; the default run directory is runs/<run.name>."},
    {KEY(run.dir), any(), "Run directory (checkpoints, metrics, train.log, resolved config.yaml); "
                          "empty means runs/<run.name>."},
    {KEY(run.seed), at_least(0), "Seed of every random stream (parameter init, data order): same "
                                 "seed and config give the same run."},
    {KEY(run.device), one_of({"auto", "cpu", "cuda"}),
     "Backend that runs the kernels: cuda (one GPU per process, the process's local rank picks it; needs "
     "a build with CUDA), cpu, or auto: cuda when this build has CUDA and the host a GPU, else cpu."},
    {KEY(run.precision), one_of({"auto", "f32", "bf16"}),
     "Activations and working weights: bf16 (GPU only; fp32 master weights, gradients, AdamW moments, "
     "statistics, router scores and connector coefficients, as docs/cuda.md lists), f32, or auto: bf16 on "
     "the GPU, f32 on the CPU."},
    {KEY(run.threads), at_least(0), "CPU threads for OpenMP and OpenBLAS; 0 uses every core."},

    {KEY(model.vocab_size), at_least(1), "Vocabulary size; must cover every token id in the data shards."},
    {KEY(model.dim), at_least(1), "Model width C: the size of each token's hidden state."},
    {KEY(model.n_layers), at_least(1), "Number of blocks (each has an attention and an FFN sublayer)."},
    {KEY(model.n_heads), at_least(1), "Attention heads; head dim = dim / n_heads, which must be even (RoPE)."},
    {KEY(model.ffn_dim), at_least(1), "Hidden width of the SwiGLU feed-forward."},
    {KEY(model.seq_len), at_least(1), "Tokens per training sequence (the context length)."},
    {KEY(model.rope_theta), above(0), "RoPE base: the rotation of pair i advances by theta^(-2i/head_dim) per position."},
    {KEY(model.norm_eps), above(0), "Epsilon added to the mean square in RMSNorm."},
    {KEY(model.init_std), above(0), "Std of the normal init of weight matrices; output projections "
                                    "use init_std / sqrt(2 * n_layers)."},

    {KEY(model.attention), one_of({"mha", "mla"}),
     "mha: multi-head attention (dim / n_heads per head, RoPE on all of it); mla: multi-head latent "
     "attention with the model.mla shapes."},
    {KEY(model.ffn), one_of({"dense", "moe"}),
     "dense: a SwiGLU of model.ffn_dim in every block; moe: DeepSeekMoE (model.moe) after "
     "model.moe.first_dense_layers dense blocks."},
    {KEY(model.residual.mode), one_of({"baseline", "hc", "mhc"}),
     "baseline: x + F(x); hc: Hyper-Connections (static + dynamic tanh mappings, unconstrained "
     "H_res); mhc: manifold-constrained (sigmoid H_pre, 2*sigmoid H_post, doubly-stochastic H_res "
     "by Sinkhorn-Knopp)."},
    {KEY(model.residual.streams), at_least(1), "Streams n of the hc and mhc state (n x dim per token); "
                                               "at least 2 for hc and mhc; ignored by baseline."},
    {KEY(model.residual.sinkhorn_iters), at_least(1), "mhc: Sinkhorn-Knopp iterations (column then row "
                                                      "normalisation each)."},
    {KEY(model.residual.alpha_init), at_least(0), "mhc: initial alpha of each coefficient group; hc: "
                                                  "initial scale s of each dynamic mapping."},
    {KEY(model.residual.res_init_diag), in_open(0, 1),
     "mhc: diagonal of H_res at initialisation (off-diagonals (1 - d) / (n - 1)); the H_res bias is "
     "log(d (n-1) / (1-d)) on the diagonal and 0 elsewhere."},
    {KEY(model.residual.phi_init_std), at_least(0),
     "Std of the initial dynamic projection (mhc phi, hc w), drawn from the connector's own random "
     "stream; 0 (default) makes every connector start exactly as the baseline residual."},

    {KEY(model.mla.q_lora_rank), at_least(0), "Query latent width: x -> W_dq -> RMSNorm -> W_uq; 0 projects "
                                             "queries directly (W_q)."},
    {KEY(model.mla.kv_lora_rank), at_least(1), "Key/value latent width (W_dkv -> RMSNorm -> W_ukv)."},
    {KEY(model.mla.qk_nope_dim), at_least(1), "Per-head query/key dims without position."},
    {KEY(model.mla.qk_rope_dim), at_least(2), "Per-head rotary query/key dims (even); one rotary key per "
                                              "token is shared by all heads."},
    {KEY(model.mla.v_head_dim), at_least(1), "Per-head value dims."},

    {KEY(model.moe.first_dense_layers), at_least(0), "Leading blocks with a dense SwiGLU of model.ffn_dim "
                                                     "instead of MoE."},
    {KEY(model.moe.routed_experts), at_least(1), "Routed experts per MoE layer."},
    {KEY(model.moe.shared_experts), at_least(0), "Always-on shared experts per MoE layer."},
    {KEY(model.moe.top_k), at_least(1), "Routed experts per token."},
    {KEY(model.moe.moe_inter_dim), at_least(1), "Hidden width of every routed and shared SwiGLU expert."},
    {KEY(model.moe.n_groups), at_least(1), "Groups of routed experts for group-limited routing (1: none); "
                                           "must divide routed_experts."},
    {KEY(model.moe.topk_groups), at_least(1), "Groups a token may route to: the best by the sum of their "
                                              "top-2 biased affinities."},
    {KEY(model.moe.route_scale), above(0), "Multiplier of the normalised gate weights."},
    {KEY(model.moe.bias_update_speed), at_least(0),
     "Loss-free balancing: after every optimizer step each expert's routing bias moves by this "
     "toward the mean load (down if overloaded, up if underloaded); 0 disables."},
    {KEY(model.moe.balance_loss_weight), at_least(0),
     "Weight alpha of DeepSeek-V3's sequence-wise balance loss; 0 disables."},

    {KEY(model.mtp.depth), at_least(0), "Multi-token prediction modules (each one block deeper and one "
                                        "token further ahead); 0 disables MTP."},
    {KEY(model.mtp.weight), at_least(0), "Weight lambda of the mean MTP loss in the training objective."},

    {KEY(data.train), required(), "Training token shard (a file written by tools/prepare_data). Required."},
    {KEY(data.val), any(), "Validation token shard; empty disables validation."},

    {KEY(training.steps), at_least(1), "Optimizer steps to train for."},
    {KEY(training.micro_batch_size), at_least(1), "Sequences in one forward/backward pass."},
    {KEY(training.global_batch_size), at_least(1),
     "Sequences per optimizer step; a multiple of micro_batch_size * parallel.dp * parallel.ep (each "
     "of the dp x ep ranks takes an equal slice and accumulates gradients over global / (micro * dp * ep) "
     "micro-batches)."},
    {KEY(training.max_grad_norm), at_least(0), "Clip the global gradient norm to this value; 0 disables clipping."},
    {KEY(training.log_interval), at_least(1), "Steps between console progress lines (metrics.jsonl gets every step)."},
    {KEY(training.eval_interval), at_least(0), "Steps between validation passes on data.val; 0 disables them."},
    {KEY(training.eval_batches), at_least(0),
     "Micro-batches of data.val per validation pass; a multiple of parallel.dp * parallel.ep (the ranks "
     "split them)."},
    {KEY(training.stop_at_step), at_least(0),
     "Save a checkpoint and exit after this step, as a pre-empted job would (resume with --resume "
     "auto continues to training.steps); 0 runs to training.steps."},
    {KEY(training.loss_spike_factor), at_least(0),
     "Warn (train.log) when a step's loss exceeds this times the mean loss of the previous 50 steps "
     "(checked from the 11th step on); 0 disables the check. The update is applied."},
    {KEY(training.skip_nonfinite_updates), any(),
     "When a step's loss or gradient norm is NaN or infinite: true skips its update (no optimizer "
     "step, no MoE bias update; counted as skipped_updates in metrics.jsonl), false stops the run "
     "with an error."},
    {KEY(training.max_consecutive_skips), at_least(1),
     "Stop the run with an error when more than this many updates in a row were skipped "
     "(training.skip_nonfinite_updates)."},
    {KEY(training.debug_nan_at_step), at_least(0),
     "Test hook: set the gradients of this step to NaN, to exercise training.skip_nonfinite_updates; "
     "0 (default) never."},

    {KEY(training.recompute), one_of({"none", "mhc", "full"}),
     "Selective recomputation (docs/recompute.md): mhc keeps only each block's input stream state "
     "and every sublayer's output and rebuilds the hyper-connection intermediates in backward "
     "(residual hc or mhc only); full also re-runs the sublayers; none keeps everything. The "
     "gradients are the same bits either way."},
    {KEY(training.recompute_block), at_least(0),
     "Sublayers (an attention or FFN with its connector) per recompute block; blocks never cross a "
     "pipeline stage; 0 = one block per stage. The mHC paper's optimum is about sqrt(n L / (n + 2)) "
     "for n streams and L sublayers."},

    {KEY(optimizer.lr), above(0), "Peak learning rate, reached at the end of warmup."},
    {KEY(optimizer.beta1), in_closed_open(0, 1), "AdamW decay rate of the first moment (mean of gradients)."},
    {KEY(optimizer.beta2), in_closed_open(0, 1), "AdamW decay rate of the second moment (mean of squared gradients)."},
    {KEY(optimizer.eps), above(0), "AdamW epsilon, added to the root of the second moment."},
    {KEY(optimizer.weight_decay), at_least(0),
     "Decoupled weight decay (scaled by the learning rate); not applied to norm weights and biases."},

    {KEY(optimizer.schedule.kind), one_of({"cosine", "step", "constant"}),
     "After warmup: cosine decays to min_lr_ratio * lr at the last step; step multiplies lr by "
     "decay_factors from the decay_at points on; constant keeps lr."},
    {KEY(optimizer.schedule.warmup_steps), at_least(0),
     "Steps of linear warmup from 0 to lr; less than training.steps."},
    {KEY(optimizer.schedule.min_lr_ratio), in_closed(0, 1), "cosine: final learning rate as a fraction of lr."},
    {KEY(optimizer.schedule.decay_at), in_open(0, 1),
     "step: where the learning rate drops, as fractions of training.steps; strictly increasing."},
    {KEY(optimizer.schedule.decay_factors), in_open_closed(0, 1),
     "step: learning rate as a fraction of lr from the matching decay_at point on (not cumulative); "
     "one per decay_at point."},

    {KEY(parallel.dp), at_least(1),
     "Data-parallel replicas; each takes its share of the global batch and gradients are summed over "
     "them in a fixed order (docs/parallelism.md)."},
    {KEY(parallel.pp), at_least(1), "Pipeline stages (contiguous ranges of sublayers)."},
    {KEY(parallel.ep), at_least(1),
     "Expert-parallel group size: each MoE layer's routed experts are split evenly over ep ranks, which "
     "also take different slices of the batch (tokens travel to their experts by all-to-all)."},
    {KEY(parallel.schedule), one_of({"1f1b", "dualpipe", "dualpipev"}),
     "Pipeline schedule when parallel.pp > 1 (docs/dualpipe.md): 1f1b (one stage per rank); dualpipe "
     "(pp even, micro-batches per rank even and >= 2 pp; rank r holds stages r and pp-1-r); dualpipev "
     "(2 pp stages, rank r holds r and 2pp-1-r; micro-batches >= 2 pp). `birkhoff schedule` prints them."},
    {KEY(parallel.zero), in_closed(0, 1),
     "1: ZeRO-1, AdamW state sharded over the ranks that share a batch (reduce-scatter of gradients, "
     "all-gather of updated weights); 0: every rank holds all of it. Same results either way."},
    {KEY(parallel.timeout_s), above(0),
     "Seconds a collective or transfer may wait for the other ranks before the whole job is aborted "
     "with a message (a failed or stalled rank never leaves the others hanging)."},

    {KEY(checkpoint.interval), at_least(0), "Save a checkpoint every this many steps; 0 disables periodic saves."},
    {KEY(checkpoint.save_final), any(), "Save a checkpoint after the last step."},
    {KEY(checkpoint.keep_last), at_least(0), "Keep the newest this many checkpoints and delete older ones "
                                             "(after the new one is complete); 0 keeps all."},
    {KEY(checkpoint.keep_every), at_least(0), "Also keep every checkpoint whose step is a multiple of this "
                                              "(milestones); 0 keeps none beyond keep_last."},

    {KEY(logging.level), one_of({"trace", "debug", "info", "warn", "error"}), "Least severe console log level shown."},
    {KEY(logging.jsonl), any(), "Write one JSON object of metrics per optimizer step to RUN_DIR/metrics.jsonl (docs/metrics.md)."},
    {KEY(logging.tensorboard), any(),
     "Write the same metrics as TensorBoard scalars to RUN_DIR/tensorboard/events.out.tfevents.* "
     "(a new file per start or resume; docs/metrics.md). View with: tensorboard --logdir runs."},
};

#undef KEY

const std::vector<Rule> kRules = {
    {{"model.residual.mode", "model.residual.streams"}, "model.residual.streams must be at least 2 for hc and mhc",
     [](const Config& c) { return c.model.residual.mode == "baseline" || c.model.residual.streams >= 2; }},
    {{"model.dim", "model.n_heads", "model.attention"}, "model.dim must be divisible by model.n_heads (mha)",
     [](const Config& c) { return c.model.attention != "mha" || c.model.dim % c.model.n_heads == 0; }},
    {{"model.dim", "model.n_heads", "model.attention"},
     "the head dim model.dim / model.n_heads must be even (mha; RoPE rotates pairs)",
     [](const Config& c) {
       return c.model.attention != "mha" || c.model.dim % c.model.n_heads != 0 ||
              (c.model.dim / c.model.n_heads) % 2 == 0;
     }},
    {{"model.seq_len", "model.mtp.depth"}, "model.seq_len must exceed model.mtp.depth (module k predicts k+1 tokens ahead)",
     [](const Config& c) { return c.model.mtp.depth == 0 || c.model.seq_len > c.model.mtp.depth; }},
    {{"model.mla.qk_rope_dim"}, "model.mla.qk_rope_dim must be even (RoPE rotates pairs)",
     [](const Config& c) { return c.model.mla.qk_rope_dim % 2 == 0; }},
    {{"model.moe.routed_experts", "model.moe.n_groups"}, "model.moe.n_groups must divide model.moe.routed_experts",
     [](const Config& c) { return c.model.moe.routed_experts % c.model.moe.n_groups == 0; }},
    {{"model.moe.topk_groups", "model.moe.n_groups"}, "model.moe.topk_groups must be at most model.moe.n_groups",
     [](const Config& c) { return c.model.moe.topk_groups <= c.model.moe.n_groups; }},
    {{"model.moe.top_k", "model.moe.routed_experts", "model.moe.n_groups", "model.moe.topk_groups"},
     "model.moe.top_k must be at most the experts in the eligible groups (routed_experts / n_groups * topk_groups)",
     [](const Config& c) {
       const auto& m = c.model.moe;
       return m.n_groups == 0 || m.top_k <= m.routed_experts / m.n_groups * m.topk_groups;
     }},
    {{"training.global_batch_size", "training.micro_batch_size", "parallel.dp", "parallel.ep"},
     "training.global_batch_size must be a multiple of training.micro_batch_size * parallel.dp * parallel.ep",
     [](const Config& c) {
       return c.training.global_batch_size % (int64_t(c.training.micro_batch_size) * c.parallel.data_ranks()) == 0;
     }},
    {{"training.eval_batches", "parallel.dp", "parallel.ep"},
     "training.eval_batches must be a multiple of parallel.dp * parallel.ep (each rank evaluates an equal share)",
     [](const Config& c) { return c.training.eval_batches % c.parallel.data_ranks() == 0; }},
    {{"model.moe.routed_experts", "parallel.ep"},
     "model.moe.routed_experts must be a multiple of parallel.ep (each ep rank holds an equal share of the experts)",
     [](const Config& c) { return c.model.ffn != "moe" || c.model.moe.routed_experts % c.parallel.ep == 0; }},
    {{"parallel.ep", "model.ffn"}, "parallel.ep > 1 needs a MoE model (model.ffn: moe); use parallel.dp for a dense one",
     [](const Config& c) { return c.parallel.ep == 1 || c.model.ffn == "moe"; }},
    {{"optimizer.schedule.decay_at", "optimizer.schedule.decay_factors"},
     "optimizer.schedule.decay_at and optimizer.schedule.decay_factors must have the same length",
     [](const Config& c) { return c.optimizer.schedule.decay_at.size() == c.optimizer.schedule.decay_factors.size(); }},
    {{"optimizer.schedule.decay_at"}, "optimizer.schedule.decay_at must be strictly increasing",
     [](const Config& c) {
       const auto& a = c.optimizer.schedule.decay_at;
       return std::adjacent_find(a.begin(), a.end(), std::greater_equal<>()) == a.end();
     }},
    {{"optimizer.schedule.warmup_steps", "training.steps"},
     "optimizer.schedule.warmup_steps must be less than training.steps",
     [](const Config& c) { return c.optimizer.schedule.warmup_steps < c.training.steps; }},
    {{"training.eval_batches", "training.eval_interval"},
     "training.eval_batches must be >= 1 when training.eval_interval > 0",
     [](const Config& c) { return c.training.eval_interval == 0 || c.training.eval_batches >= 1; }},
};

// Edit distance counting a swap of neighbours as one edit (optimal string alignment).
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string_view after_last_dot(std::string_view p) {
  size_t dot = p.rfind('.');
  return dot == std::string_view::npos ? p : p.substr(dot + 1);
}

std::string format_double(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back exactly
  std::string s(buf, r.ptr);
  if (std::isfinite(v) && s.find_first_of(".e") == std::string::npos) s += ".0";  // reads as a float
  return s;
}

// YAML double-quoted scalar: always quoted, so no string is mistaken for a number or bool.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\', out += char(ch);
    else if (ch == '\n') out += "\\n";
    else if (ch == '\t') out += "\\t";
    else if (ch < 0x20 || ch == 0x7f) out += fmt::format("\\x{:02x}", ch);
    else out += char(ch);
  }
  return out + "\"";
}

std::string bounds_text(const Allowed& a) {
  const auto& lo = a.lo;
  const auto& hi = a.hi;
  if (lo && hi)
    return fmt::format("in {}{:g}, {:g}{}", lo->inclusive ? '[' : '(', lo->value, hi->value, hi->inclusive ? ']' : ')');
  if (lo) return fmt::format("{} {:g}", lo->inclusive ? ">=" : ">", lo->value);
  if (hi) return fmt::format("{} {:g}", hi->inclusive ? "<=" : "<", hi->value);
  return "";
}

bool within(const Allowed& a, double v) {
  if (a.lo && (a.lo->inclusive ? v < a.lo->value : v <= a.lo->value)) return false;
  if (a.hi && (a.hi->inclusive ? v > a.hi->value : v >= a.hi->value)) return false;
  return true;
}

}  // namespace

std::string_view parent(std::string_view p) {
  size_t dot = p.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : p.substr(0, dot);
}

std::string_view Key::section() const { return parent(path); }
std::string_view Key::name() const { return after_last_dot(path); }

const std::vector<Section>& sections() { return kSections; }
const std::vector<Key>& keys() { return kKeys; }
const std::vector<Rule>& rules() { return kRules; }

const Key* find_key(std::string_view path) {
  for (const Key& k : kKeys)
    if (k.path == path) return &k;
  return nullptr;
}

const Section* find_section(std::string_view path) {
  for (const Section& s : kSections)
    if (s.path == path) return &s;
  return nullptr;
}

std::vector<std::string_view> children(std::string_view section) {
  std::vector<std::string_view> names;  // keys first, then subsections, as to_yaml writes them
  for (const Key& k : kKeys)
    if (k.section() == section) names.push_back(k.name());
  for (const Section& s : kSections)
    if (parent(s.path) == section) names.push_back(after_last_dot(s.path));
  return names;
}

std::string_view suggest(std::string_view path) {
  // The same name in another section first (training.lr -> optimizer.lr), then a near miss.
  std::string_view leaf = after_last_dot(path);
  for (const Key& k : kKeys)
    if (k.name() == leaf) return k.path;
  std::string_view best;
  size_t best_d = std::max<size_t>(2, leaf.size() / 3) + 1;
  auto consider = [&](std::string_view cand) {
    size_t d = edit_distance(path, cand);
    if (d < best_d) best = cand, best_d = d;
  };
  for (const Key& k : kKeys) consider(k.path);
  for (const Section& s : kSections) consider(s.path);
  return best;
}

std::string type_name(const Key& k) {
  static const char* names[] = {"int", "int", "int", "float", "bool", "string", "list of float"};
  return names[k.ref(Config{}).index()];
}

std::string allowed_text(const Key& k) {
  const Allowed& a = k.allowed;
  FieldRef f = k.ref(Config{});
  if (std::holds_alternative<bool*>(f)) return "true or false";
  if (!a.choices.empty()) return fmt::format("one of {}", fmt::join(a.choices, ", "));
  if (a.required) return "non-empty";
  std::string b = bounds_text(a);
  if (b.empty()) return "any";
  return std::holds_alternative<std::vector<double>*>(f) ? "each " + b : b;
}

std::string expected(const Key& k) {
  const Allowed& a = k.allowed;
  const std::string b = bounds_text(a);
  return std::visit(
      [&]<typename T>(T*) -> std::string {
        if constexpr (std::is_same_v<T, bool>) return "true or false";
        else if constexpr (std::is_same_v<T, double>) return b.empty() ? "a number" : "a number " + b;
        else if constexpr (std::is_same_v<T, std::string>) {
          if (!a.choices.empty()) return fmt::format("one of {}", fmt::join(a.choices, ", "));
          return a.required ? "a non-empty string" : "a string";
        } else if constexpr (std::is_same_v<T, std::vector<double>>)
          return b.empty() ? "a list of numbers" : "a list of numbers, each " + b;
        else return b.empty() ? "an integer" : "an integer " + b;
      },
      k.ref(Config{}));
}

std::string format_value(const FieldRef& f) {
  return std::visit(
      []<typename T>(T* v) -> std::string {
        if constexpr (std::is_same_v<T, bool>) return *v ? "true" : "false";
        else if constexpr (std::is_same_v<T, double>) return format_double(*v);
        else if constexpr (std::is_same_v<T, std::string>) return quote(*v);
        else if constexpr (std::is_same_v<T, std::vector<double>>) {
          std::vector<std::string> parts;
          for (double x : *v) parts.push_back(format_double(x));
          return fmt::format("[{}]", fmt::join(parts, ", "));
        } else return std::to_string(*v);
      },
      f);
}

std::string check_value(const Key& k, const Config& cfg) {
  const Allowed& a = k.allowed;
  return std::visit(
      [&]<typename T>(T* v) -> std::string {
        if constexpr (std::is_same_v<T, bool>) return "";
        else if constexpr (std::is_same_v<T, std::string>) {
          if (a.required && v->empty())
            return fmt::format("{} is required and must not be empty; set it in the file or with --set {}=...",
                               k.path, k.path);
          if (!a.choices.empty() && std::find(a.choices.begin(), a.choices.end(), *v) == a.choices.end())
            return fmt::format("{} must be {}, got {}", k.path, allowed_text(k), quote(*v));
          return "";
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          for (size_t i = 0; i < v->size(); ++i)
            if (!within(a, (*v)[i]))
              return fmt::format("{}[{}] must be {}, got {}", k.path, i, bounds_text(a), format_double((*v)[i]));
          return "";
        } else {
          if (within(a, double(*v))) return "";
          return fmt::format("{} must be {}, got {}", k.path, bounds_text(a), format_value(v));
        }
      },
      k.ref(cfg));
}

}  // namespace bk::schema
