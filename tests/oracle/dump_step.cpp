// oracle_dump_step: one training step's forward and backward of the dense model, dumped for the
// torch oracle (tests/oracle/torch_oracle.py), which rebuilds the model in PyTorch from the
// dumped weights and checks the loss and every gradient.
//
// The model is built from the shape given on the command line (no YAML), with random tokens and
// targets from bk::Rng; a fraction of the targets is -1 (ignored). Gradients are accumulated
// over M micro-batches exactly as the trainer does (src/train/trainer.cpp): every micro-batch
// has loss_scale = 1 / (M * B * T), all tokens of the step, ignored ones included. An ignored
// target contributes loss 0 and gradient 0 (kernels/cpu/cross_entropy.cpp), so the objective
// whose gradient is dumped is
//     loss = sum over non-ignored tokens of CE(logits, target) / (M * B * T)
// which is also the `loss` the trainer reports (sum of Model::forward / step tokens). It is NOT
// PyTorch's default "mean over non-ignored tokens"; the oracle computes the same reduction.
//
// The norm weights, which initialise to 1, are jittered (--norm-jitter) so that a backward that
// forgets the weight would be caught. All forwards run before all backwards, so M micro-batches
// are in flight at once (per-micro-batch saved state) and the backward accumulates into the
// gradients left by the previous micro-batch.
//
// Output: one safetensors file with `param.<name>` and `grad.<name>` (f32) for every parameter,
// `tokens` and `targets` (i32 [M,B,T]), `loss` (f64 [1]), `loss_scale` (f64 [1], the value the
// model used) and the configuration as metadata.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "config/config.h"
#include "core/buffer.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace {

const char* kUsage =
    "usage: oracle_dump_step --out FILE [--vocab V] [--dim C] [--layers L] [--heads H] [--ffn F]\n"
    "                        [--seq T] [--micro M] [--batch B] [--seed S] [--init-std X]\n"
    "                        [--rope-theta X] [--norm-eps X] [--norm-jitter X] [--ignore-frac X]\n";

struct Args {
  std::string out;
  bk::ModelConfig model;
  int micro = 2, batch = 2;
  uint64_t seed = 1234;
  double norm_jitter = 0.1, ignore_frac = 0.15;
};

Args parse(int argc, char** argv) {
  Args a;
  a.model.vocab_size = 61;
  a.model.dim = 32;
  a.model.n_layers = 2;
  a.model.n_heads = 4;
  a.model.ffn_dim = 80;
  a.model.seq_len = 12;
  std::map<std::string, std::string> kv;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    BK_CHECK(k.rfind("--", 0) == 0 && i + 1 < argc, "bad argument '{}'\n{}", k, kUsage);
    kv[k.substr(2)] = argv[++i];
  }
  auto take = [&](const char* key, auto& dst) {
    auto it = kv.find(key);
    if (it == kv.end()) return;
    try {
      if constexpr (std::is_same_v<std::decay_t<decltype(dst)>, std::string>)
        dst = it->second;
      else if constexpr (std::is_floating_point_v<std::decay_t<decltype(dst)>>)
        dst = std::stod(it->second);
      else
        dst = static_cast<std::decay_t<decltype(dst)>>(std::stoll(it->second));
    } catch (const std::exception&) {
      BK_FAIL("--{}: cannot parse '{}'", key, it->second);
    }
    kv.erase(it);
  };
  take("out", a.out);
  take("vocab", a.model.vocab_size);
  take("dim", a.model.dim);
  take("layers", a.model.n_layers);
  take("heads", a.model.n_heads);
  take("ffn", a.model.ffn_dim);
  take("seq", a.model.seq_len);
  take("rope-theta", a.model.rope_theta);
  take("norm-eps", a.model.norm_eps);
  take("init-std", a.model.init_std);
  take("micro", a.micro);
  take("batch", a.batch);
  take("seed", a.seed);
  take("norm-jitter", a.norm_jitter);
  take("ignore-frac", a.ignore_frac);
  BK_CHECK(kv.empty(), "unknown option --{}\n{}", kv.begin()->first, kUsage);
  BK_CHECK(!a.out.empty(), "--out is required\n{}", kUsage);
  const bk::ModelConfig& m = a.model;
  BK_CHECK(m.vocab_size > 0 && m.dim > 0 && m.n_layers > 0 && m.n_heads > 0 && m.ffn_dim > 0 &&
               m.seq_len > 0 && a.micro > 0 && a.batch > 0,
           "all sizes must be positive");
  BK_CHECK(m.dim % m.n_heads == 0 && (m.dim / m.n_heads) % 2 == 0,
           "dim {} must split into {} heads of even width", m.dim, m.n_heads);
  BK_CHECK(a.ignore_frac >= 0 && a.ignore_frac < 1, "--ignore-frac must be in [0, 1)");
  return a;
}

int run(const Args& a) {
  const bk::ModelConfig& cfg = a.model;
  const int M = a.micro, B = a.batch, T = cfg.seq_len, V = cfg.vocab_size;
  bk::Model model(cfg, a.seed);

  bk::ParamList params = model.params();
  for (bk::Param* p : params) {
    if (p->value.shape().ndim == 1 && a.norm_jitter > 0) {  // norm weights: 1 + jitter * N(0,1)
      bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.jitter." + p->name));
      float* w = p->value.ptr<float>();
      for (int64_t i = 0; i < p->value.numel(); ++i) w[i] = float(1.0 + a.norm_jitter * rng.normal());
    }
    p->grad.zero();
  }

  // Tokens uniform in [0, V); targets uniform too, with a fraction ignored (-1). Each
  // micro-batch's last token of its first sequence is always ignored, so every run has some.
  bk::Buffer tokens({M, B, T}, bk::DType::i32), targets({M, B, T}, bk::DType::i32);
  {
    bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.tokens"));
    int32_t *tk = tokens.ptr<int32_t>(), *tg = targets.ptr<int32_t>();
    for (int64_t i = 0; i < tokens.numel(); ++i) {
      tk[i] = int32_t(rng.next_u64() % uint64_t(V));
      tg[i] = int32_t(rng.next_u64() % uint64_t(V));
      if (rng.uniform() < a.ignore_frac) tg[i] = -1;
    }
    for (int m = 0; m < M; ++m) tg[int64_t(m) * B * T + T - 1] = -1;
  }

  const int64_t step_tokens = int64_t(M) * B * T;
  const float loss_scale = float(1.0 / double(step_tokens));  // as the trainer
  std::vector<bk::MicroBatch> mbs;
  for (int m = 0; m < M; ++m) {
    bk::MicroBatch mb;
    mb.id = m;
    mb.B = B;
    mb.T = T;
    mb.tokens = tokens.ptr<int32_t>() + int64_t(m) * B * T;
    mb.targets = targets.ptr<int32_t>() + int64_t(m) * B * T;
    mb.loss_scale = loss_scale;
    mb.keep = true;
    mbs.push_back(mb);
  }
  double loss_sum = 0;
  for (const bk::MicroBatch& mb : mbs) loss_sum += model.forward(mb);
  for (const bk::MicroBatch& mb : mbs) model.backward(mb);

  bk::Buffer loss({1}, bk::DType::f64), scale({1}, bk::DType::f64);
  loss.ptr<double>()[0] = loss_sum / double(step_tokens);
  scale.ptr<double>()[0] = double(loss_scale);

  std::vector<bk::NamedTensor> out;
  for (bk::Param* p : params) out.push_back({"param." + p->name, p->value.tensor()});
  for (bk::Param* p : params) out.push_back({"grad." + p->name, p->grad.tensor()});
  out.push_back({"tokens", tokens.tensor()});
  out.push_back({"targets", targets.tensor()});
  out.push_back({"loss", loss.tensor()});
  out.push_back({"loss_scale", scale.tensor()});

  auto num = [](double x) { return fmt::format("{:.17g}", x); };
  std::map<std::string, std::string> meta = {
      {"format", "birkhoff-oracle-step/1"},
      {"vocab_size", std::to_string(cfg.vocab_size)},
      {"dim", std::to_string(cfg.dim)},
      {"n_layers", std::to_string(cfg.n_layers)},
      {"n_heads", std::to_string(cfg.n_heads)},
      {"ffn_dim", std::to_string(cfg.ffn_dim)},
      {"seq_len", std::to_string(cfg.seq_len)},
      {"rope_theta", num(cfg.rope_theta)},
      {"norm_eps", num(cfg.norm_eps)},
      {"init_std", num(cfg.init_std)},
      {"micro_batches", std::to_string(M)},
      {"micro_batch_size", std::to_string(B)},
      {"seed", std::to_string(a.seed)},
      {"loss_reduction", "sum_over_non_ignored_div_all_tokens"},
  };
  bk::write_safetensors(a.out, out, meta);

  int64_t ignored = 0;
  for (int64_t i = 0; i < targets.numel(); ++i) ignored += targets.ptr<int32_t>()[i] < 0;
  std::printf("oracle_dump_step: %s: %zu parameters, M=%d B=%d T=%d (%lld tokens, %lld ignored), loss %.9f\n",
              a.out.c_str(), params.size(), M, B, T, (long long)step_tokens, (long long)ignored,
              loss.ptr<double>()[0]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const bk::Error& e) {
    std::fprintf(stderr, "oracle_dump_step: %s (%s)\n", e.what(), e.where().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "oracle_dump_step: %s\n", e.what());
  }
  return 1;
}
