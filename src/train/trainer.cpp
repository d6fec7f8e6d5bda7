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
#include <thread>

#include "config/load.h"
#include "core/log.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "io/data_loader.h"
#include "parallel/data_parallel.h"
#include "parallel/launch_env.h"
#include "parallel/pipeline_executor.h"
#include "parallel/process_grid.h"
#include "parallel/routed_communicator.h"
#include "parallel/self_communicator.h"
#include "train/lr_schedule.h"

namespace bk {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Processes of this job on this node (OpenMPI, MPICH/Hydra), to share the cores among them.
int ranks_on_this_node(int world) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (const char* v = std::getenv(var))
      if (std::atoi(v) > 0) return std::atoi(v);
  return world;
}

// Test hook (docs/parallelism.md): BIRKHOFF_INJECT_FAULT="RANK:STEP:throw|hang" makes that rank
// throw, or stop responding, at the start of that step, to exercise the job's failure handling.
void maybe_inject_fault(int rank, int64_t step) {
  const char* spec = std::getenv("BIRKHOFF_INJECT_FAULT");
  if (!spec) return;
  int r = -1;
  long long st = -1;
  char kind[16] = {0};
  BK_CHECK(std::sscanf(spec, "%d:%lld:%15s", &r, &st, kind) == 3,
           "BIRKHOFF_INJECT_FAULT='{}': expected RANK:STEP:throw or RANK:STEP:hang", spec);
  if (r != rank || st != step) return;
  if (std::string(kind) == "hang") {
    spdlog::warn("BIRKHOFF_INJECT_FAULT: rank {} stops responding at step {}", rank, step);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  BK_FAIL("BIRKHOFF_INJECT_FAULT: injected failure on rank {} at step {}", rank, step);
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

Trainer::Trainer(const Config& cfg, const TrainOptions& opts, Communicator* world)
    : cfg_(cfg), opts_(opts), guard_(cfg.training) {
  if (!world) {
    self_world_ = std::make_unique<SelfCommunicator>();
    world = self_world_.get();
  }
  world_ = world;
  main_rank_ = world->rank() == 0;
  const ParallelConfig& par = cfg.parallel;
  BK_CHECK(par.dp * par.pp * par.ep == world->size(),
           "{}: parallel.dp * parallel.pp * parallel.ep = {} * {} * {} = {} must equal the number of processes ({}); "
           "launch with mpirun -np {} or change parallel.*", cfg.source, par.dp, par.pp, par.ep, par.dp * par.pp * par.ep,
           world->size(), par.dp * par.pp * par.ep);
  device_ = std::make_unique<ComputeDevice>(cfg, read_launch_env().local_rank);
  Communicator* grid_world = world;
  if (device_->is_gpu() && world->size() > 1) {
    // Host tensors keep going over MPI, device tensors over NCCL (parallel/routed_communicator.h).
    BK_CHECK(par.pp == 1,
             "{}: parallel.pp = {} on GPUs: pipeline stages run on the CPU only for now (the schedules post "
             "receives ahead, and NCCL point-to-point on one comm stream would serialise them behind the "
             "sends they wait for); use parallel.pp: 1 with dp/ep on GPUs, or run.device: cpu",
             cfg.source, par.pp);
    device_world_ = device_->device_transport(*world, par.timeout_s);
    routed_world_ = std::make_unique<RoutedCommunicator>(*world, *device_world_);
    grid_world = routed_world_.get();
  }
  grid_ = std::make_unique<ProcessGrid>(*grid_world, GridShape{par.pp, par.ep, par.dp});

  const int threads =
      cfg.run.threads > 0 ? cfg.run.threads : std::max(1, omp_get_num_procs() / ranks_on_this_node(world->size()));
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  run_dir_ = cfg_.run.dir.empty() ? (fs::path("runs") / cfg_.run.name).string() : cfg_.run.dir;
  const std::string resume_from = find_resume_checkpoint();
  if (main_rank_) prepare_run_dir(!resume_from.empty());
  world->barrier();  // the run directory exists before any rank writes into it
  if (world->size() == 1) {
    setup_logging(cfg.logging.level, (fs::path(run_dir_) / "train.log").string());
  } else {
    // Every rank its own file; rank 0 keeps train.log and the console progress.
    const int r = world->rank();
    fs::create_directories(fs::path(run_dir_) / "logs");
    setup_logging(cfg.logging.level,
                  r == 0 ? (fs::path(run_dir_) / "train.log").string()
                         : (fs::path(run_dir_) / "logs" / fmt::format("rank{:05d}.log", r)).string(),
                  r);
  }

  train_data_ = std::make_unique<TokenLoader>(cfg.data.train, cfg.model.seq_len, cfg.run.seed, grid_->data_rank(),
                                              grid_->data_size());
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

  model_ = std::make_unique<Model>(cfg.model, cfg.run.seed, &grid_->ep_group());
  model_->place(device_->format());  // built and initialised on the CPU in f32
  int num_stages = 1;
  PipelineShare share;
  if (par.pp > 1) {
    Schedule schedule;
    try {
      schedule = make_schedule(parse_schedule_kind(par.schedule), par.pp, cfg.num_microbatches());
    } catch (const Error& e) {
      BK_FAIL("{}: parallel.schedule {} with parallel.pp = {} and {} micro-batches per rank (training."
              "global_batch_size / (micro_batch_size * dp * ep)): {}", cfg.source, par.schedule, par.pp,
              cfg.num_microbatches(), e.what());
    }
    num_stages = schedule.num_stages;
    pipeline_ = std::make_unique<PipelineExecutor>(*model_, std::move(schedule), grid_->pp_group());
    share = PipelineShare{&grid_->pp_group(), pipeline_->stage_copies(), pipeline_->saves_its_stages()};
  }
  model_->set_recompute(cfg.training.recompute, cfg.training.recompute_block, num_stages);
  optimizer_ = std::make_unique<DataParallelOptimizer>(cfg.optimizer, pipeline_ ? pipeline_->params() : model_->params(),
                                                       grid_->data_group(), grid_->dp_group(), grid_->ep_group(),
                                                       par.zero == 1, share);
  if (!resume_from.empty()) restore(resume_from);
  world->barrier();  // every rank restored (or failed) before rank 0 rewrites config.yaml
  if (main_rank_) write_resolved_config();
  metrics_ = std::make_unique<MetricsLog>(
      cfg.logging.jsonl && main_rank_ ? (fs::path(run_dir_) / "metrics.jsonl").string() : std::string(),
      cfg.logging.tensorboard && main_rank_ ? (fs::path(run_dir_) / "tensorboard").string() : std::string(),
      step_ + 1);
  peak_ = device_->is_gpu() ? gpu_peak(device_->name()) : measure_cpu_peak();
  if (device_->is_gpu() && peak_.flops == 0)
    spdlog::warn("no datasheet bf16 peak for GPU '{}' (train/peak_flops.cpp): MFU is reported as 0", device_->name());
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
    fs::remove_all(dir / "tensorboard");
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

  // All or nothing: every tensor this rank holds, read by its global name (so any layout reads
  // any other's checkpoint), and no tensor that no rank of this job saves.
  for (Param* p : model_->params()) {
    ck.read_model(p->name, p->weights());
    p->refresh();  // mixed precision: the working copy of the restored master
  }
  for (auto& [name, t] : model_->state()) ck.read_model(name, t);
  for (const NamedTensor& t : optimizer_->optimizer_state_held()) ck.read_optimizer(t.name, t.tensor);
  Buffer counts({2}, DType::i64);
  counts.ptr<int64_t>()[0] = int64_t(optimizer_->params_to_save().size()) +
                             (world_->rank() == 0 ? int64_t(model_->state().size()) : 0);
  counts.ptr<int64_t>()[1] = int64_t(optimizer_->optimizer_state_to_save().size());
  world_->all_reduce_sum(counts);
  BK_CHECK(counts.ptr<int64_t>()[0] == int64_t(ck.model_tensors().size()) &&
               counts.ptr<int64_t>()[1] == int64_t(ck.optimizer_tensors().size()),
           "{}: holds {} model and {} optimizer tensors, this model has {} and {}; was it saved from another "
           "model shape?", ck.dir(), ck.model_tensors().size(), ck.optimizer_tensors().size(),
           counts.ptr<int64_t>()[0], counts.ptr<int64_t>()[1]);
  try {
    optimizer_->set_steps_taken(st.at("optimizer").at("steps").get<int64_t>());
    train_data_->set_cursor(st.at("cursor").get<LoaderCursor>());
    tokens_seen_ = st.at("tokens").get<int64_t>();
    step_ = st.at("step").get<int64_t>();
    guard_.set_skipped(st.value("skipped_updates", int64_t(0)));
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
    if (s > step_) newer.append(" ").append(checkpoint_dir(run_dir_, s));  // not " " + ...: GCC 12's -Wrestrict false positive
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
  spdlog::info("  batch       {} sequences/step = {} micro-batches x {} x dp {} x ep {} | {} tokens/step",
               t.global_batch_size, cfg_.num_microbatches(), t.micro_batch_size, cfg_.parallel.dp, cfg_.parallel.ep,
               tokens_per_step);
  if (world_->size() > 1)
    spdlog::info("  parallel    {} processes: pp {} x ep {} x dp {}{} | each MoE layer holds {} of {} routed experts "
                 "per rank | collective timeout {:g} s | logs in {}/logs/", world_->size(), cfg_.parallel.pp,
                 cfg_.parallel.ep, cfg_.parallel.dp, cfg_.parallel.zero ? ", ZeRO-1" : "",
                 m.ffn == "moe" ? m.moe.routed_experts / cfg_.parallel.ep : 0, m.moe.routed_experts,
                 cfg_.parallel.timeout_s, run_dir_);
  spdlog::info("  compute     {} FLOPs/token, {} FLOPs/step | peak {} {} FLOP/s ({})",
               human(model_->flops_per_token()), human(model_->flops_per_token() * double(tokens_per_step)),
               peak_.device, human(peak_.flops), peak_.measured ? "measured sgemm" : "datasheet");
  spdlog::info("  data        train {} ({} tokens){}", cfg_.data.train, human(double(train_data_->num_tokens())),
               val_data_ ? fmt::format(" | val {} ({} tokens)", cfg_.data.val, human(double(val_data_->num_tokens())))
                         : std::string());
  spdlog::info("  schedule    {} steps, lr {:.2e} ({}, warmup {}), AdamW b=({}, {}) wd {}, clip {}",
               t.steps, cfg_.optimizer.lr, cfg_.optimizer.schedule.kind, cfg_.optimizer.schedule.warmup_steps,
               cfg_.optimizer.beta1, cfg_.optimizer.beta2, cfg_.optimizer.weight_decay, t.max_grad_norm);
  if (device_->is_gpu())
    spdlog::info("  device      cuda:{} {} | {} activations, f32 master weights, gradients and AdamW state | {} "
                 "threads on the host", device_->index(), device_->name(), dtype_name(device_->format().dtype),
                 omp_get_max_threads());
  else
    spdlog::info("  threads     {} (OpenMP + OpenBLAS), device cpu", omp_get_max_threads());
  if (!resumed_from_.empty())
    spdlog::info("  resumed     from {} at step {} ({} tokens seen)", resumed_from_, step_, human(double(tokens_seen_)));
}

StepMetrics Trainer::train_step(int64_t step) {
  const TrainingConfig& t = cfg_.training;
  const int M = cfg_.num_microbatches();
  const int64_t step_tokens = int64_t(t.global_batch_size) * cfg_.model.seq_len;
  const auto t0 = Clock::now();
  maybe_inject_fault(world_->rank(), step);
  const int64_t held_at_start = host_tensor_bytes().live;
  reset_host_tensor_peak();
  const DeviceMemory dev_at_start = device_->memory();
  device_->reset_peak_memory();

  train_data_->next_global_batch(t.global_batch_size);
  optimizer_->zero_grad();
  double loss_sum = 0;
  const float loss_scale = float(1.0 / double(step_tokens));
  if (pipeline_) {  // the schedule runs the micro-batches over the stages (parallel/pipeline_executor.h)
    std::vector<Batch> batches;
    std::vector<MicroBatch> mbs;
    for (int i = 0; i < M; ++i) batches.push_back(train_data_->micro_batch(i, t.micro_batch_size));
    for (int i = 0; i < M; ++i) {
      const Batch& b = batches[size_t(i)];
      mbs.push_back(MicroBatch{i, b.B, b.T, b.inputs.data(), b.targets.data(), loss_scale, true});
    }
    loss_sum = pipeline_->run(mbs).loss_sum;
  } else {
    for (int i = 0; i < M; ++i) {
      Batch b = train_data_->micro_batch(i, t.micro_batch_size);
      MicroBatch mb{i, b.B, b.T, b.inputs.data(), b.targets.data(), loss_scale, true};
      loss_sum += model_->forward(mb);
      model_->backward(mb);
    }
  }
  guard_.maybe_poison_gradients(step, model_->params());
  optimizer_->reduce_gradients();
  StepMetrics m;
  m.step = step;
  m.total_steps = t.steps;
  m.loss = sum_over_data_ranks(loss_sum) / double(step_tokens);
  m.grad_norm = optimizer_->grad_norm();
  m.lr = learning_rate(cfg_.optimizer, step, t.steps);
  m.skipped = !guard_.admit(step, m.loss, m.grad_norm);  // non-finite: no update (or an error)
  m.skipped_updates = guard_.skipped();
  m.clip_scale = m.skipped ? 0.0 : clip_scale(m.grad_norm, t.max_grad_norm);
  if (!m.skipped) optimizer_->step(m.lr, m.clip_scale);
  // Loads summed over every rank (data ranks split the tokens; a pipeline rank counts only its
  // stages', DualPipe's mirror copies half each): all ranks apply the same bias update to every
  // MoE layer, so every copy of a bias stays the same.
  m.moe = model_->end_step(m.skipped ? 0.0 : cfg_.model.moe.bias_update_speed, world_);
  if (cfg_.model.mtp.depth > 0) m.mtp_loss = sum_over_data_ranks(model_->take_mtp_loss()) / grid_->data_size();

  tokens_seen_ += step_tokens;
  m.tokens = tokens_seen_;
  device_->synchronize();  // the step's last kernels (the optimizer's) count in its time
  const double s = seconds_since(t0);
  m.ms_per_step = 1e3 * s;
  m.tokens_per_s = double(step_tokens) / s;
  // Against the peak of all the job's processes (each measured its own).
  m.mfu = peak_.flops > 0 ? model_->flops_per_token() * m.tokens_per_s / (peak_.flops * world_->size()) : 0;
  m.mem_gb = peak_rss_gb();
  if (device_->is_gpu()) {
    const DeviceMemory dev = device_->memory();
    m.act_gb = dev.peak_gb - dev_at_start.allocated_gb;
    m.gpu_mem_gb = dev.peak_gb;
    m.gpu_reserved_gb = dev.reserved_gb;
  } else {
    m.act_gb = double(host_tensor_bytes().peak - held_at_start) / double(1 << 30);
  }
  return m;
}

void Trainer::prepare_local_forward() {
  // The weights change only in the optimizer step: one broadcast serves every forward-only pass
  // of a step (validation and the connector probe).
  if (!pipeline_ || weights_broadcast_at_ == step_) return;
  pipeline_->broadcast_weights();
  weights_broadcast_at_ = step_;
}

double Trainer::evaluate() {
  BK_CHECK(val_data_, "evaluate: no validation data (data.val is empty)");
  prepare_local_forward();
  const int B = cfg_.training.micro_batch_size;
  // The data ranks split the batches (eval_batches is a multiple of their number, so every rank
  // runs as many forwards: the expert all-to-alls pair up).
  Buffer sums({2}, DType::f64);  // loss sum, tokens: added over the data ranks in one call
  double* s = sums.ptr<double>();
  for (int i = grid_->data_rank(); i < cfg_.training.eval_batches; i += grid_->data_size()) {
    Batch b = val_data_->eval_batch(i, B);
    MicroBatch mb{-1 - i, b.B, b.T, b.inputs.data(), b.targets.data(), 1.0f, false};
    s[0] += model_->forward(mb);
    s[1] += double(mb.tokens_count());
  }
  grid_->data_group().all_reduce_sum(sums);
  return s[0] / s[1];
}

double Trainer::sum_over_data_ranks(double x) const {
  Buffer b({1}, DType::f64);
  b.ptr<double>()[0] = x;
  grid_->data_group().all_reduce_sum(b);
  return b.ptr<double>()[0];
}

ConnectorStats Trainer::probe_connectors() {
  // Every rank runs it (MoE layers exchange tokens); rank 0 reports its batch.
  prepare_local_forward();
  Batch b = val_data_->eval_batch(grid_->data_rank(), cfg_.training.micro_batch_size);
  MicroBatch mb{-1, b.B, b.T, b.inputs.data(), b.targets.data(), 1.0f, false, true};
  model_->forward(mb);
  return connector_stats(model_->connectors());
}

void Trainer::save_checkpoint_at(int64_t step, double lr) {
  if (step == last_saved_step_) return;
  // Each tensor from one rank: parameters and moments from their owners (parallel/data_parallel.h),
  // the MoE biases (the same on every rank) from rank 0.
  CheckpointContents ckpt;
  ckpt.step = step;
  ckpt.model = optimizer_->params_to_save();
  if (world_->rank() == 0)
    for (auto& [name, t] : model_->state()) ckpt.model.push_back({name, t});
  ckpt.optimizer = optimizer_->optimizer_state_to_save();
  const std::string config = to_yaml(cfg_);
  ckpt.state = {{"step", step},
                {"tokens", tokens_seen_},
                {"cursor", train_data_->cursor()},
                {"rng", {{"seed", cfg_.run.seed}}},  // every random stream derives from it (core/rng.h)
                {"lr", {{"step", step}, {"value", lr}}},
                {"optimizer", {{"steps", optimizer_->steps_taken()}}},
                {"skipped_updates", guard_.skipped()},
                {"config", config},
                {"config_hash", config_hash(config)}};
  const auto t0 = Clock::now();
  const RetentionPolicy keep{cfg_.checkpoint.keep_last, cfg_.checkpoint.keep_every};
  const std::string dir = world_->size() == 1
                              ? save_checkpoint(run_dir_, ckpt, keep)
                              : save_checkpoint_sharded(run_dir_, ckpt, world_->rank(), world_->size(),
                                                        [this] { world_->barrier(); }, keep);
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
    metrics_->write(m);  // a no-op on the other ranks (no files)
    if (log_step) {  // other ranks: into their own log files
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
    // Every rank stops at the same step, whichever of them the signal reached first.
    Buffer stop({1}, DType::i64);
    stop.ptr<int64_t>()[0] = g_stop_signal.load();
    world_->all_reduce_sum(stop);
    if (stop.ptr<int64_t>()[0] != 0) {
      spdlog::warn("{} received: saving a checkpoint at step {} and exiting (resume with --resume auto)",
                   g_stop_signal.load() == SIGINT ? "SIGINT" : g_stop_signal.load() == SIGTERM ? "SIGTERM"
                                                                                 : "a peer rank's stop signal", step);
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
