#include "train/trainer.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config/load.h"
#include "core/log.h"
#include "core/rng.h"
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

// SIGINT/SIGTERM ask for a checkpoint at the next step boundary; a second one kills at once.
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  std::signal(sig, SIG_DFL);
}
struct StopSignalGuard {
  using Handler = void (*)(int);
  Handler old_int, old_term;
  StopSignalGuard() {
    g_stop_signal.store(0);
    old_int = std::signal(SIGINT, on_stop_signal);
    old_term = std::signal(SIGTERM, on_stop_signal);
  }
  ~StopSignalGuard() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

// FNV-1a 64 of the resolved config text, as hex: tells two configs apart in state.json.
std::string config_hash(const std::string& text) { return fmt::format("{:016x}", Rng::stream_of(text)); }


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

  run_dir_ = cfg_.run.dir.empty() ? (fs::path("runs") / cfg_.run.name).string() : cfg_.run.dir;
  const std::string resume_from = find_resume_checkpoint();
  prepare_run_dir(!resume_from.empty());
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
    // Checked now, not at the first validation hours into the run.
    const int64_t need = std::max(cfg.training.eval_batches, 1);
    BK_CHECK(int64_t(val_data_->num_eval_batches(cfg.training.micro_batch_size)) >= need,
             "{}: data.val {} holds {} windows of model.seq_len + 1 tokens, fewer than training.eval_batches x "
             "training.micro_batch_size = {} x {}; lower training.eval_batches or use a larger validation shard",
             cfg.source, cfg.data.val, val_data_->num_windows(), need, cfg.training.micro_batch_size);
  }

  model_ = std::make_unique<Model>(cfg.model, cfg.run.seed);
  optimizer_ = std::make_unique<AdamW>(cfg.optimizer, model_->params());
  if (!resume_from.empty()) restore(resume_from);
  write_resolved_config();
  metrics_ = std::make_unique<MetricsLog>(
      cfg.logging.jsonl ? (fs::path(run_dir_) / "metrics.jsonl").string() : std::string());
  peak_ = measure_cpu_peak();
  // The kernels parallelise with OpenMP and call BLAS single-threaded inside their own blocks;
  // an idle OpenBLAS pool would only compete for the cores.
  openblas_set_num_threads(1);
  print_startup_table();
}

Trainer::~Trainer() = default;

std::string Trainer::find_resume_checkpoint() const {
  if (opts_.resume.empty()) return "";
  BK_CHECK(!opts_.overwrite, "--resume and --overwrite exclude each other: resume continues the run, "
                             "overwrite deletes it");
  if (opts_.resume != "auto") return opts_.resume;
  return latest_checkpoint(run_dir_);  // "" when the run has none: a fresh start (see below)
}

void Trainer::prepare_run_dir(bool resuming) {
  const fs::path dir(run_dir_);
  if (resuming) {
    // Keep the run's history: metrics.jsonl and train.log are appended to (a step re-run after
    // the checkpoint appears again; its later record is the one that counts).
    fs::create_directories(dir);
    remove_incomplete_checkpoints(run_dir_);
  } else if (fs::exists(dir / "metrics.jsonl") || fs::exists(dir / "checkpoints")) {
    // --resume auto with no checkpoint (killed before its first save): nothing to continue
    // from, so the partial run is started over, as a requeued job expects.
    if (opts_.resume == "auto")
      spdlog::warn("--resume auto: {} has no checkpoint yet; starting the run from scratch", run_dir_);
    BK_CHECK(opts_.overwrite || opts_.resume == "auto",
             "run directory {} already holds a run (metrics.jsonl or checkpoints/); pass --resume auto to "
             "continue it, --overwrite to start over there, or choose another with --set run.dir=PATH",
             run_dir_);
    fs::remove_all(dir / "checkpoints");
    fs::remove(dir / "metrics.jsonl");
    fs::remove(dir / "train.log");
  }
  fs::create_directories(dir);
}

// Written once the run is known to start (after a resume's checks), so a refused resume leaves
// the run's record as it was.
void Trainer::write_resolved_config() const {
  const fs::path path = fs::path(run_dir_) / "config.yaml";
  std::ofstream f(path, std::ios::trunc);
  BK_CHECK(f.good(), "cannot write {}", path.string());
  f << "# resolved configuration of this run (from " << cfg_.source << ")\n" << to_yaml(cfg_);
}

void Trainer::restore(const std::string& path) {
  const Checkpoint ck = Checkpoint::open(path);
  const nlohmann::json& st = ck.state();
  const std::string where = (fs::path(ck.dir()) / "state.json").string();
  BK_CHECK(st.contains("config") && st["config"].is_string(), "{}: no resolved config", where);
  const Config saved = parse_config(st["config"].get<std::string>(), where);

  std::string shape_changes;
  for (const ConfigDifference& d : diff_configs(saved, cfg_)) {
    if (d.key.rfind("model.", 0) == 0)
      shape_changes += fmt::format("\n  {}: {} in the checkpoint, {} now", d.key, d.before, d.after);
    else if (d.key == "run.seed" || d.key == "data.train")
      spdlog::warn("resume: {} changed from {} to {}: the data order after the checkpoint differs from "
                   "the original run's, so this is not a bit-exact continuation", d.key, d.before, d.after);
    else
      spdlog::info("resume: {} changed from {} to {}", d.key, d.before, d.after);
  }
  BK_CHECK(shape_changes.empty(),
           "{}: cannot resume from {}: the model differs from the checkpoint's:{}\nset those keys back "
           "(e.g. --set key=value) or start a new run", cfg_.source, ck.dir(), shape_changes);

  // All or nothing: every tensor of the model and the optimizer, and no tensor the model lacks.
  std::vector<NamedTensor> model, optimizer;
  for (Param* p : model_->params()) model.push_back({p->name, p->value.tensor()});
  for (auto& [name, t] : model_->state()) model.push_back({name, t});
  for (auto& [name, t] : optimizer_->state_tensors()) optimizer.push_back({name, t});
  ck.read_model(model);
  ck.read_optimizer(optimizer);
  try {
    optimizer_->set_steps_taken(st.at("optimizer").at("steps").get<int64_t>());
    train_data_->set_cursor(st.at("cursor").get<LoaderCursor>());
    tokens_seen_ = st.at("tokens").get<int64_t>();
    step_ = st.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    BK_FAIL("{}: missing or malformed field: {}", where, e.what());
  }
  BK_CHECK(step_ < cfg_.training.steps, "{}: the checkpoint {} is at step {} and training.steps is {}: nothing "
           "left to train; raise training.steps (e.g. --set training.steps={})", cfg_.source, ck.dir(), step_,
           cfg_.training.steps, step_ + cfg_.training.steps);
  last_saved_step_ = step_;
  resumed_from_ = ck.dir();
  // Resuming from an older checkpoint of this run would reach steps whose checkpoints exist.
  std::string newer;
  for (int64_t s : checkpoint_steps(run_dir_))
    if (s > step_) newer += " " + checkpoint_dir(run_dir_, s);
  BK_CHECK(newer.empty(), "resuming {} from step {}, but newer checkpoints of this run exist:{}\ndelete them to "
           "continue from step {}, or resume into another run directory (--set run.dir=PATH)", run_dir_, step_,
           newer, step_);
}

void Trainer::print_startup_table() const {
  const TrainingConfig& t = cfg_.training;
  const ModelConfig& m = cfg_.model;
  const int64_t tokens_per_step = int64_t(t.global_batch_size) * m.seq_len;
  spdlog::info("birkhoff {} | run {} | dir {}", BIRKHOFF_VERSION, cfg_.run.name, run_dir_);
  spdlog::info("  model       {} attention, {} ffn, residual {}{}: {} layers, dim {}, {} heads, ffn {}, vocab {}, seq {}",
               m.attention, m.ffn == "moe" ? fmt::format("moe ({} routed top-{} + {} shared)", m.moe.routed_experts,
                                                          m.moe.top_k, m.moe.shared_experts)
                                           : std::string("dense"),
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
  if (!resumed_from_.empty())
    spdlog::info("  resumed     from {} at step {} ({} tokens seen)", resumed_from_, step_, human(double(tokens_seen_)));
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
  m.moe = model_->end_step(cfg_.model.moe.bias_update_speed);
  if (cfg_.model.mtp.depth > 0) m.mtp_loss = model_->take_mtp_loss();

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

void Trainer::save_checkpoint_at(int64_t step, double lr) {
  if (step == last_saved_step_) return;
  CheckpointContents ckpt;
  ckpt.step = step;
  for (Param* p : model_->params()) ckpt.model.push_back({p->name, p->value.tensor()});
  for (auto& [name, t] : model_->state()) ckpt.model.push_back({name, t});
  for (auto& [name, t] : optimizer_->state_tensors()) ckpt.optimizer.push_back({name, t});
  const std::string config = to_yaml(cfg_);
  ckpt.state = {{"step", step},
                {"tokens", tokens_seen_},
                {"cursor", train_data_->cursor()},
                {"rng", {{"seed", cfg_.run.seed}}},  // every random stream derives from it (core/rng.h)
                {"lr", {{"step", step}, {"value", lr}}},
                {"optimizer", {{"steps", optimizer_->steps_taken()}}},
                {"config", config},
                {"config_hash", config_hash(config)}};
  const auto t0 = Clock::now();
  const std::string dir =
      save_checkpoint(run_dir_, ckpt, {cfg_.checkpoint.keep_last, cfg_.checkpoint.keep_every});
  last_saved_step_ = step;
  spdlog::info("saved checkpoint {} ({:.2f} s)", dir, seconds_since(t0));
}

double Trainer::run() {
  const TrainingConfig& t = cfg_.training;
  const auto start = Clock::now();
  const int64_t first_step = step_ + 1;
  double last_val = std::nan("");
  double interval_loss = 0;
  int interval_steps = 0;
  StopSignalGuard signals;
  for (int64_t step = first_step; step <= t.steps; ++step) {
    StepMetrics m = train_step(step);
    step_ = step;
    m.elapsed_s = seconds_since(start);
    interval_loss += m.loss;
    ++interval_steps;
    const bool last = step == t.steps;
    // The checkpoint first: a failure in validation must not cost the step's checkpoint.
    if ((cfg_.checkpoint.interval > 0 && step % cfg_.checkpoint.interval == 0) ||
        (last && cfg_.checkpoint.save_final))
      save_checkpoint_at(step, m.lr);
    if (val_data_ && t.eval_batches > 0 && ((t.eval_interval > 0 && step % t.eval_interval == 0) || last)) {
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
      if (!m.moe.empty()) spdlog::info("{}", moe_line(m.moe));
    }
    if (m.val_loss)
      spdlog::info("step {} | val loss {:.4f} | val ppl {:.2f}", step, *m.val_loss, std::exp(*m.val_loss));
    if (const int sig = g_stop_signal.load()) {
      spdlog::warn("{} received: saving a checkpoint at step {} and exiting (resume with --resume auto)",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", step);
      save_checkpoint_at(step, m.lr);
      return last_val;
    }
    if (step == t.stop_at_step) {
      spdlog::info("training.stop_at_step = {}: saving a checkpoint and exiting", step);
      save_checkpoint_at(step, m.lr);
      return last_val;
    }
  }
  const double total = seconds_since(start);
  const int64_t done = t.steps - first_step + 1;
  spdlog::info("done: {} steps in {} ({:.0f} tokens/s){}", done, format_duration(total),
               double(done) * t.global_batch_size * cfg_.model.seq_len / std::max(total, 1e-9),
               std::isnan(last_val) ? std::string() : fmt::format(", final val loss {:.4f}", last_val));
  return last_val;
}

}  // namespace bk
