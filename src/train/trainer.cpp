#include "train/trainer.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config/load.h"
#include "core/log.h"
#include "io/checkpoint.h"
#include "io/data_loader.h"
#include "train/lr_schedule.h"

namespace bk {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Processes in this job, from the launcher's environment (OpenMPI, Slurm, PMI).
int launcher_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return 1;
}

std::string human(double x) {
  if (x >= 1e9) return fmt::format("{:.2f}B", x / 1e9);
  if (x >= 1e6) return fmt::format("{:.2f}M", x / 1e6);
  if (x >= 1e3) return fmt::format("{:.1f}k", x / 1e3);
  return fmt::format("{:.0f}", x);
}

}  // namespace

Trainer::Trainer(const Config& cfg, const TrainOptions& opts) : cfg_(cfg), opts_(opts) {
  const ParallelConfig& par = cfg.parallel;
  const int world = launcher_world_size();
  BK_CHECK(par.dp * par.pp * par.ep == world,
           "{}: parallel.dp * parallel.pp * parallel.ep = {} * {} * {} must equal the number of processes ({})",
           cfg.source, par.dp, par.pp, par.ep, world);
  BK_CHECK(world == 1,
           "{}: this version of Birkhoff trains in a single process; launch without mpirun -np > 1 "
           "and set parallel.dp, parallel.pp and parallel.ep to 1", cfg.source);
  BK_CHECK(cfg.run.device != "cuda",
           "{}: run.device: cuda: this build runs the model on the CPU only; set run.device to cpu or auto",
           cfg.source);

  const int threads = cfg.run.threads > 0 ? cfg.run.threads : omp_get_num_procs();
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  prepare_run_dir();
  setup_logging(cfg.logging.level, (fs::path(run_dir_) / "train.log").string());

  train_data_ = std::make_unique<TokenLoader>(cfg.data.train, cfg.model.seq_len, cfg.run.seed);
  BK_CHECK(int64_t(train_data_->vocab_size()) <= cfg.model.vocab_size,
           "{}: model.vocab_size is {} but the training shard {} was written with a tokenizer of {} tokens; "
           "set model.vocab_size: {}", cfg.source, cfg.model.vocab_size, cfg.data.train,
           train_data_->vocab_size(), train_data_->vocab_size());
  if (!cfg.data.val.empty()) {
    val_data_ = std::make_unique<TokenLoader>(cfg.data.val, cfg.model.seq_len, cfg.run.seed);
    BK_CHECK(val_data_->vocab_size() == train_data_->vocab_size(),
             "{}: data.val {} has vocabulary size {} but data.train {} has {}: they come from different tokenizers",
             cfg.source, cfg.data.val, val_data_->vocab_size(), cfg.data.train, train_data_->vocab_size());
  }

  model_ = std::make_unique<Model>(cfg.model, cfg.run.seed);
  optimizer_ = std::make_unique<AdamW>(cfg.optimizer, model_->params());
  metrics_ = std::make_unique<MetricsLog>(
      cfg.logging.jsonl ? (fs::path(run_dir_) / "metrics.jsonl").string() : std::string());
  peak_ = measure_cpu_peak();
  // The kernels parallelise with OpenMP and call BLAS single-threaded inside their own blocks;
  // an idle OpenBLAS pool would only compete for the cores.
  openblas_set_num_threads(1);
  print_startup_table();
}

Trainer::~Trainer() = default;

void Trainer::prepare_run_dir() {
  run_dir_ = cfg_.run.dir.empty() ? (fs::path("runs") / cfg_.run.name).string() : cfg_.run.dir;
  const fs::path dir(run_dir_);
  const bool has_results = fs::exists(dir / "metrics.jsonl") || fs::exists(dir / "checkpoints");
  if (has_results) {
    BK_CHECK(opts_.overwrite,
             "run directory {} already holds a run (metrics.jsonl or checkpoints/); pass --overwrite to "
             "start over there, or choose another with --set run.dir=PATH", run_dir_);
    fs::remove_all(dir / "checkpoints");
    fs::remove(dir / "metrics.jsonl");
    fs::remove(dir / "train.log");
  }
  fs::create_directories(dir);
  std::ofstream f(dir / "config.yaml", std::ios::trunc);
  BK_CHECK(f.good(), "cannot write {}", (dir / "config.yaml").string());
  f << "# resolved configuration of this run (from " << cfg_.source << ")\n" << to_yaml(cfg_);
}

void Trainer::print_startup_table() const {
  const TrainingConfig& t = cfg_.training;
  const ModelConfig& m = cfg_.model;
  const int64_t tokens_per_step = int64_t(t.global_batch_size) * m.seq_len;
  spdlog::info("birkhoff {} | run {} | dir {}", BIRKHOFF_VERSION, cfg_.run.name, run_dir_);
  spdlog::info("  model       dense decoder, residual {}{}: {} layers, dim {}, {} heads, ffn {}, vocab {}, seq {}",
               m.residual.mode, m.streams() > 1 ? fmt::format(" (n = {})", m.streams()) : std::string(),
               m.n_layers, m.dim, m.n_heads, m.ffn_dim, m.vocab_size, m.seq_len);
  spdlog::info("  parameters  {} total ({} in matrix products)", human(double(model_->num_params())),
               human(double(model_->num_matmul_params())));
  spdlog::info("  batch       {} sequences/step = {} micro-batches x {} x dp {} | {} tokens/step",
               t.global_batch_size, cfg_.num_microbatches(), t.micro_batch_size, cfg_.parallel.dp,
               tokens_per_step);
  spdlog::info("  compute     {} FLOPs/token, {} FLOPs/step | peak {} {} FLOP/s ({})",
               human(model_->flops_per_token()), human(model_->flops_per_token() * double(tokens_per_step)),
               peak_.device, human(peak_.flops), peak_.measured ? "measured sgemm" : "datasheet");
  spdlog::info("  data        train {} ({} tokens){}", cfg_.data.train, human(double(train_data_->num_tokens())),
               val_data_ ? fmt::format(" | val {} ({} tokens)", cfg_.data.val, human(double(val_data_->num_tokens())))
                         : std::string());
  spdlog::info("  schedule    {} steps, lr {:.2e} ({}, warmup {}), AdamW b=({}, {}) wd {}, clip {}",
               t.steps, cfg_.optimizer.lr, cfg_.optimizer.schedule.kind, cfg_.optimizer.schedule.warmup_steps,
               cfg_.optimizer.beta1, cfg_.optimizer.beta2, cfg_.optimizer.weight_decay, t.max_grad_norm);
  spdlog::info("  threads     {} (OpenMP + OpenBLAS), device cpu", omp_get_max_threads());
}

StepMetrics Trainer::train_step(int64_t step) {
  const TrainingConfig& t = cfg_.training;
  const int M = cfg_.num_microbatches();
  const int64_t step_tokens = int64_t(t.global_batch_size) * cfg_.model.seq_len;
  const auto t0 = Clock::now();

  train_data_->next_global_batch(t.global_batch_size);
  optimizer_->zero_grad();
  double loss_sum = 0;
  for (int i = 0; i < M; ++i) {
    Batch b = train_data_->micro_batch(i, t.micro_batch_size);
    MicroBatch mb{i, b.B, b.T, b.inputs.data(), b.targets.data(), float(1.0 / double(step_tokens)), true};
    loss_sum += model_->forward(mb);
    model_->backward(mb);
  }
  StepMetrics m;
  m.step = step;
  m.total_steps = t.steps;
  m.loss = loss_sum / double(step_tokens);
  BK_CHECK(std::isfinite(m.loss), "step {}: training loss is {}; lower optimizer.lr or raise warmup", step, m.loss);
  m.grad_norm = optimizer_->grad_norm();
  BK_CHECK(std::isfinite(m.grad_norm), "step {}: gradient norm is {}; lower optimizer.lr", step, m.grad_norm);
  m.clip_scale = clip_scale(m.grad_norm, t.max_grad_norm);
  m.lr = learning_rate(cfg_.optimizer, step, t.steps);
  optimizer_->step(m.lr, m.clip_scale);

  tokens_seen_ += step_tokens;
  m.tokens = tokens_seen_;
  const double s = seconds_since(t0);
  m.ms_per_step = 1e3 * s;
  m.tokens_per_s = double(step_tokens) / s;
  m.mfu = peak_.flops > 0 ? model_->flops_per_token() * m.tokens_per_s / peak_.flops : 0;
  return m;
}

double Trainer::evaluate() {
  BK_CHECK(val_data_, "evaluate: no validation data (data.val is empty)");
  const int B = cfg_.training.micro_batch_size;
  double sum = 0;
  int64_t count = 0;
  for (int i = 0; i < cfg_.training.eval_batches; ++i) {
    Batch b = val_data_->eval_batch(i, B);
    MicroBatch mb{-1 - i, b.B, b.T, b.inputs.data(), b.targets.data(), 1.0f, false};
    sum += model_->forward(mb);
    count += mb.tokens_count();
  }
  return sum / double(count);
}

ConnectorStats Trainer::probe_connectors() {
  Batch b = val_data_->eval_batch(0, cfg_.training.micro_batch_size);
  MicroBatch mb{-1, b.B, b.T, b.inputs.data(), b.targets.data(), 1.0f, false, true};
  model_->forward(mb);
  return connector_stats(model_->connectors());
}

void Trainer::save_checkpoint_at(int64_t step) {
  CheckpointContents ckpt;
  ckpt.step = step;
  for (Param* p : model_->params()) ckpt.model.push_back({p->name, p->value.tensor()});
  ckpt.state = {{"format_version", 1},
                {"step", step},
                {"tokens", tokens_seen_},
                {"birkhoff_version", BIRKHOFF_VERSION},
                {"config", to_yaml(cfg_)}};
  const std::string dir = save_checkpoint(run_dir_, ckpt);
  spdlog::info("saved checkpoint {}", dir);
}

double Trainer::run() {
  const TrainingConfig& t = cfg_.training;
  const auto start = Clock::now();
  double last_val = std::nan("");
  double interval_loss = 0;
  int interval_steps = 0;
  for (int64_t step = 1; step <= t.steps; ++step) {
    StepMetrics m = train_step(step);
    m.elapsed_s = seconds_since(start);
    interval_loss += m.loss;
    ++interval_steps;
    const bool last = step == t.steps;
    if (val_data_ && ((t.eval_interval > 0 && step % t.eval_interval == 0) || last)) {
      m.val_loss = last_val = evaluate();
    }
    const bool log_step = step % t.log_interval == 0 || step == 1 || last;
    if (log_step && val_data_ && cfg_.model.streams() > 1) m.connectors = probe_connectors();
    metrics_->write(m);
    if (log_step) {
      StepMetrics shown = m;
      shown.loss = interval_loss / interval_steps;  // mean over the interval: less noisy
      spdlog::info("{}", progress_line(shown));
      interval_loss = 0;
      interval_steps = 0;
      if (m.connectors) spdlog::info("{}", connector_line(*m.connectors));
    }
    if (m.val_loss)
      spdlog::info("step {} | val loss {:.4f} | val ppl {:.2f}", step, *m.val_loss, std::exp(*m.val_loss));
    if ((cfg_.checkpoint.interval > 0 && step % cfg_.checkpoint.interval == 0) ||
        (last && cfg_.checkpoint.save_final))
      save_checkpoint_at(step);
  }
  const double total = seconds_since(start);
  spdlog::info("done: {} steps in {} ({:.0f} tokens/s){}", t.steps, format_duration(total),
               double(tokens_seen_) / total,
               std::isnan(last_val) ? std::string() : fmt::format(", final val loss {:.4f}", last_val));
  return last_val;
}

}  // namespace bk
