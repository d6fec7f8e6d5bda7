// Typed, validated configuration. YAML (config/load.h) -> these plain structs; every key is
// declared once in the schema (config/schema.cpp) with its type, range and doc, its default is
// the member initialiser below, and docs/config.md is generated from that schema. A new field
// needs one line in the schema table (tests/unit/config checks that every field has one).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bk {

struct RunConfig {
  std::string name = "run";        // run.name
  std::string dir;                 // run.dir; empty -> runs/<name>
  uint64_t seed = 1234;            // run.seed
  std::string device = "auto";     // auto | cpu | cuda
  std::string precision = "auto";  // auto | f32 | bf16 (activations and working weights)
  int threads = 0;                 // CPU threads (OpenMP + OpenBLAS); 0 = all cores
};

// The connector around every sublayer (docs/mhc.md): X' = H_res X + H_post^T F(H_pre X).
struct ResidualConfig {
  std::string mode = "baseline";  // baseline | hc | mhc
  int streams = 4;                // n for hc and mhc; baseline always has one stream
  int sinkhorn_iters = 20;        // mhc
  double alpha_init = 0.01;       // mhc alpha (per group) / hc scale s (per group)
  double res_init_diag = 0.9;     // mhc: diagonal of H_res at initialisation, in (0, 1)
  double phi_init_std = 0.0;      // mhc phi / hc w; 0 starts exactly as the baseline
};

// Multi-head latent attention (DeepSeek-V2/V3), used when model.attention is mla.
struct MlaConfig {
  int q_lora_rank = 0;    // 0: plain query projection; > 0: W_dq -> RMSNorm -> W_uq
  int kv_lora_rank = 64;  // latent width of keys and values
  int qk_nope_dim = 32;   // per-head query/key part without position
  int qk_rope_dim = 16;   // per-head rotary part (the key's is shared by all heads)
  int v_head_dim = 32;
};

// DeepSeekMoE, used when model.ffn is moe (docs/model.md).
struct MoeConfig {
  int first_dense_layers = 1;   // leading blocks with a dense SwiGLU FFN (model.ffn_dim)
  int routed_experts = 8;
  int shared_experts = 1;
  int top_k = 2;
  int moe_inter_dim = 64;       // width of every routed and shared expert
  int n_groups = 1;             // group-limited routing: groups of routed experts
  int topk_groups = 1;          // groups a token may route to
  double route_scale = 1.0;     // gate multiplier
  double bias_update_speed = 1e-3;  // loss-free balancing step gamma (0 disables)
  double balance_loss_weight = 1e-4;  // sequence-wise balance loss alpha (0 disables)
};

// Multi-token prediction (DeepSeek-V3), depth 0 disables it.
struct MtpConfig {
  int depth = 0;
  double weight = 0.3;  // lambda: the MTP losses' weight in the objective
};

struct ModelConfig {
  int vocab_size = 2048;
  int dim = 128;            // C
  int n_layers = 4;         // blocks; each has an attention and an FFN sublayer
  int n_heads = 4;          // head_dim = dim / n_heads
  int ffn_dim = 384;        // SwiGLU hidden width
  int seq_len = 128;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  double init_std = 0.02;   // output projections use init_std / sqrt(2 * n_layers)
  std::string attention = "mha";  // mha | mla
  std::string ffn = "dense";      // dense | moe
  ResidualConfig residual;
  MlaConfig mla;
  MoeConfig moe;
  MtpConfig mtp;
  int streams() const { return residual.mode == "baseline" ? 1 : residual.streams; }
};

struct DataConfig {
  std::string train;        // token shard (tools/prepare_data output)
  std::string val;          // validation shard; empty = no validation
};

struct TrainingConfig {
  int64_t steps = 300;
  int micro_batch_size = 16;   // sequences per micro-batch
  int global_batch_size = 16;  // sequences per optimizer step = micro * num_microbatches * dp
  double max_grad_norm = 1.0;  // 0 disables clipping
  int log_interval = 10;
  int eval_interval = 100;     // 0 disables periodic validation
  int eval_batches = 8;        // micro-batches per validation
  int64_t stop_at_step = 0;    // save a checkpoint and exit after this step (0 = run to steps)
  double loss_spike_factor = 2.0;     // warn when loss > factor x running mean (0 = off)
  bool skip_nonfinite_updates = true; // skip the update of a step with NaN/inf loss or gradients
  int max_consecutive_skips = 10;     // stop the run after more skips than this in a row
  int64_t debug_nan_at_step = 0;      // test hook: NaN gradients at this step (0 = never)
  std::string recompute = "none";     // none | mhc | full (docs/recompute.md)
  int recompute_block = 0;            // sublayers per recompute block; 0 = one per pipeline stage
};

struct LrSchedule {
  std::string kind = "cosine";  // cosine | step | constant
  int64_t warmup_steps = 30;
  double min_lr_ratio = 0.1;                   // cosine floor, as a fraction of lr
  std::vector<double> decay_at = {0.8, 0.9};   // step: fractions of training.steps
  std::vector<double> decay_factors = {0.316, 0.1};  // step: lr multiplier from each point on
};

struct OptimizerConfig {
  double lr = 3e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // not applied to norms and biases
  LrSchedule schedule;
};

struct ParallelConfig {
  int dp = 1;
  int pp = 1;
  int ep = 1;
  std::string schedule = "1f1b";  // pipeline schedule: 1f1b | dualpipe | dualpipev (docs/dualpipe.md)
  int zero = 0;             // 1: ZeRO-1, optimizer state sharded over the data-parallel ranks
  double timeout_s = 600;   // a collective that waits longer aborts the job
  // Ranks that each read their own slice of the global batch (ep ranks hold different tokens).
  int data_ranks() const { return dp * ep; }
};

struct CheckpointConfig {
  int interval = 0;       // save every N steps; 0 = no periodic saves
  bool save_final = true;
  int keep_last = 3;      // keep the newest k checkpoints (0 = keep all)
  int keep_every = 0;     // also keep every checkpoint whose step is a multiple of m (0 = none)
};

struct LoggingConfig {
  std::string level = "info";  // trace | debug | info | warn | error
  bool jsonl = true;           // RUN_DIR/metrics.jsonl
  bool tensorboard = true;     // RUN_DIR/tensorboard/events.out.tfevents.*
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainingConfig training;
  OptimizerConfig optimizer;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  LoggingConfig logging;

  std::string source;  // file the config came from (for messages)
  // Micro-batches per rank and step: global = micro x num_microbatches x dp x ep.
  int num_microbatches() const {
    return training.global_batch_size / parallel.data_ranks() / training.micro_batch_size;
  }
};

}  // namespace bk
