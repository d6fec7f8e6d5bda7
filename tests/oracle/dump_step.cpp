// oracle_dump_step: one training step's forward and backward of the model (the dense baseline,
// or the hc / mhc n-stream model: --mode), dumped for the torch oracle
// (tests/oracle/torch_oracle.py), which rebuilds the model in PyTorch from the dumped weights and
// checks the loss and every gradient.
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
// hc / mhc: at initialisation every connector is exactly the baseline residual (zero projection,
// static coefficients that reproduce x + F(x) on identical streams), which would leave the
// coefficient paths (Sinkhorn, sigmoids, tanh, static terms) untested: a wrong formula there can
// still give the baseline's numbers. So the projection (phi / w) is drawn with --phi-init-std > 0
// and every other connector parameter (alpha, bias / scale, static_pre, static_post, static_res)
// gets + --conn-jitter * N(0,1), each from its own random stream. The streams are identical after
// the expand; the per-stream coefficients make them diverge from the first sublayer on.
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
    "                        [--rope-theta X] [--norm-eps X] [--norm-jitter X] [--ignore-frac X]\n"
    "                        [--mode baseline|hc|mhc] [--streams n] [--sinkhorn-iters K]\n"
    "                        [--alpha-init X] [--res-init-diag X] [--phi-init-std X] [--conn-jitter X]\n";

struct Args {
  std::string out;
  bk::ModelConfig model;
  int micro = 2, batch = 2;
  uint64_t seed = 1234;
  double norm_jitter = 0.1, ignore_frac = 0.15;
  double conn_jitter = 0.0;
};

// A norm weight (initialised to 1): attn.norm, ffn.norm, final_norm.
bool is_norm_weight(const std::string& name) {
  const std::string suffix = "norm.weight";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A connector parameter other than the projection: mhc alpha, bias; hc scale, static_*.
bool is_conn_coefficient(const std::string& name) {
  const size_t at = name.find("_conn.");
  if (at == std::string::npos) return false;
  const std::string leaf = name.substr(at + 6);
  return leaf != "phi" && leaf != "w";
}

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
  take("mode", a.model.residual.mode);
  take("streams", a.model.residual.streams);
  take("sinkhorn-iters", a.model.residual.sinkhorn_iters);
  take("alpha-init", a.model.residual.alpha_init);
  take("res-init-diag", a.model.residual.res_init_diag);
  take("phi-init-std", a.model.residual.phi_init_std);
  take("conn-jitter", a.conn_jitter);
  BK_CHECK(kv.empty(), "unknown option --{}\n{}", kv.begin()->first, kUsage);
  BK_CHECK(!a.out.empty(), "--out is required\n{}", kUsage);
  const bk::ModelConfig& m = a.model;
  BK_CHECK(m.vocab_size > 0 && m.dim > 0 && m.n_layers > 0 && m.n_heads > 0 && m.ffn_dim > 0 &&
               m.seq_len > 0 && a.micro > 0 && a.batch > 0,
           "all sizes must be positive");
  BK_CHECK(m.dim % m.n_heads == 0 && (m.dim / m.n_heads) % 2 == 0,
           "dim {} must split into {} heads of even width", m.dim, m.n_heads);
  BK_CHECK(a.ignore_frac >= 0 && a.ignore_frac < 1, "--ignore-frac must be in [0, 1)");
  // The checks of src/config/schema.cpp (this tool builds the ModelConfig without it).
  const bk::ResidualConfig& r = m.residual;
  BK_CHECK(r.mode == "baseline" || r.mode == "hc" || r.mode == "mhc", "--mode must be baseline, hc or mhc, got '{}'",
           r.mode);
  BK_CHECK(r.mode == "baseline" || r.streams >= 2, "--streams must be at least 2 for {}", r.mode);
  BK_CHECK(r.sinkhorn_iters >= 1, "--sinkhorn-iters must be at least 1");
  BK_CHECK(r.alpha_init >= 0 && r.phi_init_std >= 0 && a.conn_jitter >= 0,
           "--alpha-init, --phi-init-std and --conn-jitter must be >= 0");
  BK_CHECK(r.res_init_diag > 0 && r.res_init_diag < 1, "--res-init-diag must be in (0, 1)");
  return a;
}

int run(const Args& a) {
  const bk::ModelConfig& cfg = a.model;
  const int M = a.micro, B = a.batch, T = cfg.seq_len, V = cfg.vocab_size;
  bk::Model model(cfg, a.seed);

  bk::ParamList params = model.params();
  int jittered_conn = 0;
  for (bk::Param* p : params) {
    if (is_norm_weight(p->name) && a.norm_jitter > 0) {  // norm weights: 1 + jitter * N(0,1)
      bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.jitter." + p->name));
      float* w = p->value.ptr<float>();
      for (int64_t i = 0; i < p->value.numel(); ++i) w[i] = float(1.0 + a.norm_jitter * rng.normal());
    }
    if (is_conn_coefficient(p->name) && a.conn_jitter > 0) {  // connector coefficients: + jitter * N(0,1)
      bk::Rng rng(a.seed, bk::Rng::stream_of("oracle.conn_jitter." + p->name));
      float* w = p->value.ptr<float>();
      for (int64_t i = 0; i < p->value.numel(); ++i) w[i] = float(double(w[i]) + a.conn_jitter * rng.normal());
      ++jittered_conn;
    }
    p->grad.zero();
  }
  BK_CHECK(cfg.streams() == 1 || a.conn_jitter == 0 || jittered_conn == 2 * cfg.n_layers * (cfg.residual.mode == "mhc" ? 2 : 4),
           "--conn-jitter: jittered {} connector parameters, expected {} per connector", jittered_conn,
           cfg.residual.mode == "mhc" ? 2 : 4);

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
      {"residual_mode", cfg.residual.mode},
      {"streams", std::to_string(cfg.streams())},
      {"sinkhorn_iters", std::to_string(cfg.residual.sinkhorn_iters)},
      {"alpha_init", num(cfg.residual.alpha_init)},
      {"res_init_diag", num(cfg.residual.res_init_diag)},
      {"phi_init_std", num(cfg.residual.phi_init_std)},
      {"conn_jitter", num(a.conn_jitter)},
      {"norm_jitter", num(a.norm_jitter)},
  };
  bk::write_safetensors(a.out, out, meta);

  int64_t ignored = 0;
  for (int64_t i = 0; i < targets.numel(); ++i) ignored += targets.ptr<int32_t>()[i] < 0;
  std::printf("oracle_dump_step: %s: %s (n=%d), %zu parameters, M=%d B=%d T=%d (%lld tokens, %lld ignored), "
              "loss %.9f\n",
              a.out.c_str(), cfg.residual.mode.c_str(), int(cfg.streams()), params.size(), M, B, T,
              (long long)step_tokens, (long long)ignored, loss.ptr<double>()[0]);
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
