// birkhoff eval --checkpoint PATH [--data SHARD] [--tokens N]: validation loss and perplexity of
// a checkpoint's model, built from the resolved config recorded in its state.json.
#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "config/load.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/data_loader.h"
#include "model/model.h"
#include "train/compute_device.h"
#include "train/metrics.h"

namespace bk {

namespace {

const char* kEvalUsage =
    "usage: birkhoff eval --checkpoint PATH [--data SHARD] [--tokens N] [--device auto|cpu|cuda]\n"
    "  --checkpoint PATH  a checkpoint directory (RUN_DIR/checkpoints/step_XXXXXXXX) or a run directory (its latest)\n"
    "  --data SHARD       token shard to evaluate on (default: data.val of the checkpoint's config)\n"
    "  --tokens N         evaluate at most N tokens (default: the whole shard)\n"
    "  --device D         where to run (default: the run's run.device; its run.precision applies)\n"
    "Progress goes to stderr every ~2 s; the result line to stdout:\n"
    "  val loss X | ppl Y | tokens N | checkpoint step S";

using Clock = std::chrono::steady_clock;

struct EvalArgs {
  std::string checkpoint, data, device;
  int64_t tokens = -1;  // -1: the whole shard
  bool help = false;
};

EvalArgs parse_eval_args(const Args& args) {
  const ParsedArgs p = parse_args(args, {}, kEvalUsage, {"--checkpoint", "--data", "--tokens", "--device"});
  EvalArgs out;
  out.help = p.help;
  if (out.help) return out;
  BK_CHECK(p.sets.empty(), "eval takes no --set (the model comes from the checkpoint's config)\n{}", kEvalUsage);
  BK_CHECK(p.positional.empty(), "unexpected argument '{}' (the checkpoint goes after --checkpoint)\n{}",
           p.positional.empty() ? "" : p.positional[0], kEvalUsage);
  out.checkpoint = p.value("--checkpoint");
  BK_CHECK(!out.checkpoint.empty(), "eval needs --checkpoint PATH\n{}", kEvalUsage);
  out.data = p.value("--data");
  out.device = p.value("--device");
  BK_CHECK(out.device.empty() || out.device == "auto" || out.device == "cpu" || out.device == "cuda",
           "--device: expected auto, cpu or cuda, got '{}'", out.device);
  if (std::any_of(p.values.begin(), p.values.end(), [](const auto& kv) { return kv.first == "--tokens"; })) {
    const std::string v = p.value("--tokens");
    size_t used = 0;
    long long n = 0;
    try {
      n = std::stoll(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    BK_CHECK(used == v.size() && n >= 1, "--tokens: expected an integer >= 1, got '{}'", v);
    out.tokens = n;
  }
  return out;
}

}  // namespace

int cmd_eval(const Args& args) {
  const EvalArgs a = parse_eval_args(args);
  if (a.help) return fmt::print("{}\n", kEvalUsage), 0;

  const Checkpoint ck = Checkpoint::open(a.checkpoint, /*verify_checksums=*/true);
  const std::string state_path = ck.dir() + "/state.json";
  const nlohmann::json& s = ck.state();
  BK_CHECK(s.contains("config") && s["config"].is_string(),
           "{}: no config (the resolved YAML config of the run); cannot rebuild the model", state_path);
  const Config cfg = parse_config(s["config"].get<std::string>(), state_path);

  omp_set_num_threads(omp_get_num_procs());
  openblas_set_num_threads(1);  // the kernels call BLAS single-threaded inside their OpenMP blocks

  // Where the run trained unless --device says otherwise (so a CPU run reproduces its own
  // validation loss); declared before the model: its device buffers go before the context.
  Config where = cfg;
  if (!a.device.empty()) where.run.device = a.device;
  std::unique_ptr<ComputeDevice> device_holder;
  try {
    device_holder = std::make_unique<ComputeDevice>(where, 0);
  } catch (const Error& e) {
    BK_FAIL("{}\n(eval: --device cpu evaluates on the CPU whatever the run trained on)", e.what());
  }
  const ComputeDevice& device = *device_holder;
  Model model(cfg.model, cfg.run.seed);
  std::vector<NamedTensor> params;
  for (Param* p : model.params()) params.push_back({p->name, p->value.tensor()});
  for (auto& [name, t] : model.state()) params.push_back({name, t});  // e.g. MoE routing biases
  ck.read_model(params);  // all or nothing: a tensor the model lacks is an error too
  model.place(device.format());

  const std::string data = a.data.empty() ? cfg.data.val : a.data;
  BK_CHECK(!data.empty(), "{}: the run had no validation data (data.val is empty); pass --data SHARD", state_path);
  BK_CHECK(std::filesystem::exists(data), "token shard {} does not exist{}", data,
           a.data.empty() ? " (data.val of the checkpoint's config, relative to where training ran); pass --data SHARD"
                          : "");
  const int T = cfg.model.seq_len;
  TokenLoader loader(data, T, cfg.run.seed);
  BK_CHECK(int64_t(loader.vocab_size()) <= cfg.model.vocab_size,
           "{}: written with a tokenizer of {} tokens, but the model has model.vocab_size {}: a different tokenizer",
           data, loader.vocab_size(), cfg.model.vocab_size);
  BK_CHECK(loader.num_windows() > 0, "{}: {} tokens, fewer than one sequence of seq_len + 1 = {}", data,
           loader.num_tokens(), T + 1);
  const int B = int(std::min<uint64_t>(uint64_t(cfg.training.micro_batch_size), loader.num_windows()));
  const int64_t batches = int64_t(loader.num_eval_batches(B));
  const int64_t available = batches * B * T;
  const int64_t total = a.tokens > 0 ? std::min(a.tokens, available) : available;

  fmt::print("eval checkpoint {} (step {}) on {}\n", ck.dir(), ck.step(), data);
  fmt::print("  on {} ({} activations)\n", device.is_gpu() ? fmt::format("GPU {}", device.name()) : std::string("the CPU"),
             dtype_name(device.format().dtype));
  fmt::print("  {} tokens: {}{} micro-batches of {} x {} tokens, {} threads\n", total,
             a.tokens > 0 ? fmt::format("at most {} (--tokens {}) of the shard's {}; ", a.tokens, a.tokens, available)
                          : std::string("the whole shard; "),
             (total + int64_t(B) * T - 1) / (int64_t(B) * T), B, T, omp_get_max_threads());
  std::fflush(stdout);

  const auto t0 = Clock::now();
  auto last_print = t0;
  double loss_sum = 0;
  int64_t done = 0;
  for (int64_t i = 0; done < total; ++i) {
    Batch b = loader.eval_batch(int(i), B);
    const int64_t take = std::min<int64_t>(int64_t(B) * T, total - done);
    const int seqs = int((take + T - 1) / T);
    for (int64_t k = take; k < int64_t(seqs) * T; ++k) b.targets[size_t(k)] = -1;  // beyond --tokens: ignored
    MicroBatch mb{int(-1 - i), seqs, T, b.inputs.data(), b.targets.data(), 1.0f, false};
    loss_sum += model.forward(mb);
    done += take;
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - last_print).count() >= 2.0 && done < total) {
      const double el = std::chrono::duration<double>(now - t0).count(), rate = double(done) / el;
      fmt::print(stderr, "eval batch {}/{} | {}/{} tokens ({:.1f}%) | {} tokens/s | ETA {}\n", i + 1,
                 (total + int64_t(B) * T - 1) / (int64_t(B) * T), done, total, 100.0 * double(done) / double(total),
                 human(rate), format_duration(double(total - done) / rate));
      std::fflush(stderr);
      last_print = now;
    }
  }
  const double el = std::chrono::duration<double>(Clock::now() - t0).count();
  const double loss = loss_sum / double(done);
  fmt::print("val loss {:.4f} | ppl {:.2f} | tokens {} | checkpoint step {}\n", loss, std::exp(loss), done,
             ck.step());
  fmt::print("  ({} in {}, {} tokens/s)\n", a.tokens > 0 && a.tokens < available ? "limited by --tokens" : "whole shard",
             format_duration(el), human(double(done) / std::max(el, 1e-9)));
  BK_CHECK(std::isfinite(loss), "validation loss is {}: the checkpoint's weights are not finite", loss);
  return 0;
}

}  // namespace bk
