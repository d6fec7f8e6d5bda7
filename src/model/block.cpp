#include "model/block.h"

#include <cmath>

#include "model/attention.h"
#include "model/ffn.h"
#include "model/hyper_connection.h"
#include "model/mla.h"
#include "model/moe.h"
#include "model/residual.h"

namespace bk {

std::unique_ptr<Layer> BlockBuilder::connect(const std::string& name, std::unique_ptr<Layer> f) {
  const int index = next_sublayer++;
  if (cfg.streams() == 1) return std::make_unique<Residual>(name, std::move(f));
  auto c = std::make_unique<HyperConnection>(name, std::move(f), cfg.residual, cfg.dim, index, float(cfg.norm_eps));
  c->init(seed);
  return c;
}

void BlockBuilder::add_block(std::vector<std::unique_ptr<Layer>>& out, const std::string& p, bool moe) {
  const double std = cfg.init_std;
  // Output projections feed the residual sum of 2L sublayers: scale them so its variance does
  // not grow with depth (GPT-2).
  const double out_std = cfg.init_std / std::sqrt(2.0 * cfg.n_layers);
  const float eps = float(cfg.norm_eps);

  std::unique_ptr<Layer> attn;
  if (cfg.attention == "mla") {
    auto a = std::make_unique<Mla>(p + ".attn", cfg.dim, cfg.n_heads, cfg.mla, float(cfg.rope_theta), eps);
    a->init(seed, std, out_std);
    attn = std::move(a);
  } else {
    auto a = std::make_unique<Attention>(p + ".attn", AttentionShape{cfg.dim, cfg.n_heads, float(cfg.rope_theta), eps});
    a->init(seed, std, out_std);
    attn = std::move(a);
  }
  out.push_back(connect(p + ".attn_conn", std::move(attn)));

  std::unique_ptr<Layer> ffn;
  if (moe) {
    auto f = std::make_unique<Moe>(p + ".ffn", cfg.dim, cfg.moe, eps, ep);
    f->init(seed, std, out_std);
    ffn = std::move(f);
  } else {
    auto f = std::make_unique<Ffn>(p + ".ffn", cfg.dim, cfg.ffn_dim, eps);
    f->init(seed, std, out_std);
    ffn = std::move(f);
  }
  out.push_back(connect(p + ".ffn_conn", std::move(ffn)));
}

}  // namespace bk
