// Helpers shared by the model tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/model.h"

namespace bk::testing {

// A small model: 3 blocks of width 24 over 10 tokens, the given connector (4 streams); with moe,
// MLA attention and a MoE FFN (4 routed experts top-2 + 1 shared) after one dense block.
inline ModelConfig small_config(const std::string& residual, bool moe = false) {
  ModelConfig c;
  c.vocab_size = 53;
  c.dim = 24;
  c.n_layers = 3;
  c.n_heads = 2;
  c.ffn_dim = 40;
  c.seq_len = 10;
  c.residual.mode = residual;
  c.residual.streams = 4;
  if (moe) {
    c.attention = "mla";
    c.mla = MlaConfig{0, 10, 4, 4, 6};
    c.ffn = "moe";
    c.moe.first_dense_layers = 1;
    c.moe.routed_experts = 4;
    c.moe.shared_experts = 1;
    c.moe.top_k = 2;
    c.moe.moe_inter_dim = 8;
    c.moe.balance_loss_weight = 0.1;
  }
  return c;
}

struct Tokens {
  std::vector<int32_t> in, tgt;
};

inline Tokens random_tokens(int B, int T, int V, uint64_t seed) {
  Rng rng(seed, 7);
  Tokens t;
  for (int i = 0; i < B * T; ++i) {
    t.in.push_back(int32_t(rng.next_u64() % V));
    t.tgt.push_back(int32_t(rng.next_u64() % V));
  }
  return t;
}

// Sequences [first_seq, first_seq + B) of t as a training micro-batch.
inline MicroBatch make_mb(int id, const Tokens& t, int first_seq, int B, int T, float scale) {
  return MicroBatch{id, B, T, t.in.data() + first_seq * T, t.tgt.data() + first_seq * T, scale, true};
}

// Every parameter's gradient, in parameter order.
inline std::vector<std::vector<float>> grads(Model& m) {
  std::vector<std::vector<float>> out;
  for (Param* p : m.params()) {
    const float* g = p->grad.ptr<float>();
    out.emplace_back(g, g + p->grad.numel());
  }
  return out;
}

// ||a - b|| / ||b|| over all elements (in double).
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace bk::testing
