#include "model/model.h"

#include <cmath>

#include "core/buffer.h"
#include "model/block.h"
#include "model/embedding.h"
#include "model/head.h"
#include "model/layer_stack.h"
#include "model/model_plan.h"
#include "model/mtp.h"
#include "model/streams.h"

namespace bk {

Model::Model(const ModelConfig& cfg, uint64_t seed) : cfg_(cfg) {
  const int64_t n = cfg.streams();
  BlockBuilder blocks{cfg, seed};

  auto embed = std::make_unique<Embedding>(cfg.vocab_size, cfg.dim);
  embed->init(seed, cfg.init_std);
  Param* table = embed->params()[0];
  layers_.push_back(std::move(embed));
  if (n > 1) layers_.push_back(std::make_unique<StreamExpand>(n, cfg.dim));
  for (int l = 0; l < cfg.n_layers; ++l)
    blocks.add_block(layers_, "layers." + std::to_string(l), cfg.ffn == "moe" && l >= cfg.moe.first_dense_layers);
  if (n > 1) layers_.push_back(std::make_unique<StreamCollapse>(n, cfg.dim));
  auto head = std::make_unique<Head>(cfg.vocab_size, cfg.dim, float(cfg.norm_eps));
  head->init(seed, cfg.init_std);
  if (cfg.mtp.depth > 0)
    layers_.push_back(std::make_unique<MtpHead>(cfg, std::move(head), table, blocks));
  else
    layers_.push_back(std::move(head));
}

double Model::forward(const MicroBatch& mb) {
  // The embedding ignores its input; the head outputs one loss per token.
  return sum_losses(forward_layers(layers_, mb, Buffer({mb.tokens_count(), 1}, dtype_)));
}

void Model::backward(const MicroBatch& mb) {
  // The head is the root (it seeds its own gradient); the embedding has no input gradient.
  backward_input_layers(layers_, mb, Buffer({mb.tokens_count(), 1}, dtype_), 1);
  backward_weight_layers(layers_, mb);
}

ParamList Model::params() {
  ParamList out;
  for (auto& layer : layers_)
    for (Param* p : layer->params()) out.push_back(p);
  return out;
}

void Model::to(DType dtype) {
  dtype_ = dtype;
  for (auto& layer : layers_) layer->set_dtype(dtype);
  for (Param* p : params()) p->to(dtype);
}

std::vector<Moe*> Model::moe_layers() const {
  std::vector<Moe*> out;
  std::vector<Layer*> todo;
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) todo.push_back(it->get());
  while (!todo.empty()) {  // depth first, in model order
    Layer* l = todo.back();
    todo.pop_back();
    if (auto* m = dynamic_cast<Moe*>(l)) out.push_back(m);
    auto kids = l->children();
    for (auto it = kids.rbegin(); it != kids.rend(); ++it) todo.push_back(*it);
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Model::state() {
  std::vector<std::pair<std::string, Tensor>> out;
  for (Moe* m : moe_layers())
    for (auto& s : m->state()) out.push_back(s);
  return out;
}

double Model::take_mtp_loss() {
  auto* mtp = dynamic_cast<MtpHead*>(layers_.back().get());
  return mtp ? mtp->take_loss() : 0.0;
}

std::vector<MoeStats> Model::end_step(double bias_update_speed) {
  std::vector<MoeStats> out;
  for (Moe* m : moe_layers()) out.push_back(m->end_step(bias_update_speed));
  return out;
}

std::vector<const ConnectorProbe*> Model::connectors() const {
  std::vector<const ConnectorProbe*> out;
  for (auto& layer : layers_)
    if (auto* c = dynamic_cast<const ConnectorProbe*>(layer.get())) out.push_back(c);
  return out;
}

int64_t Model::num_params() const {
  int64_t n = 0;
  for (auto& layer : layers_)
    for (Param* p : layer->params()) n += p->value.numel();
  return n;
}

int64_t Model::num_matmul_params() const {
  int64_t n = 0;
  for (auto& layer : layers_)
    for (Param* p : layer->params())
      if (p->value.shape().ndim == 2 && p->name != "embed.weight") n += p->value.numel();
  return n;
}

double Model::flops_per_token() const {
  // One formula for the trainer's MFU and `birkhoff plan` (docs/model.md): active matrix
  // products (top-k and shared experts only) plus causal attention.
  return count_model(cfg_).flops_per_token;
}

}  // namespace bk
