// Multi-head latent attention (DeepSeek-V2/V3) sublayer with its own pre-norm (docs/model.md):
//   n = RMSNorm(x)
//   q = W_q n                   or   q = W_uq RMSNorm(W_dq n)        (q_lora_rank > 0)
//   [c, k_pe] = W_dkv n         c: latent [kv_rank], k_pe: one rotary key [rope] for all heads
//   [k_nope, v] = W_ukv RMSNorm(c)                       per head [nope], [v_head]
//   Q_h = [q_nope_h, rope(q_pe_h)], K_h = [k_nope_h, rope(k_pe)]
//   F(x) = W_o causal_attention(Q, K, V; scale 1/sqrt(nope + rope))
#pragma once
#include "config/config.h"
#include "model/layer.h"
#include "model/rmsnorm_layer.h"

namespace bk {

class Mla : public Layer {
 public:
  Mla(const std::string& prefix, int64_t dim, int64_t n_heads, const MlaConfig& cfg, float rope_theta,
      float norm_eps);
  std::string name() const override { return prefix_; }
  void init(uint64_t seed, double std, double out_std);
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override;
  int64_t out_width() const override { return dim_; }

 private:
  struct Saved {
    Buffer x, rstd, n;                  // sublayer input and its norm
    Buffer cq, rstd_q, cqn;             // query latent (q_lora_rank > 0)
    Buffer c, rstd_c, cn;               // key/value latent
    Buffer q, k, v, o, lse;             // attention operands [B,T,H,*]
    Buffer dy, dq, dckv, dkv, dcn, dcq, dcqn, dn;  // from backward_input
  };
  std::string prefix_;
  int64_t dim_, H_, q_rank_, kv_rank_, nope_, rope_, vdim_;
  float theta_;
  Norm norm_, q_norm_, kv_norm_;
  Param w_q_, w_dq_, w_uq_, w_dkv_, w_ukv_, w_o_;
  PerMicroBatch<Saved> saved_;
  int64_t qk() const { return nope_ + rope_; }
};

}  // namespace bk
