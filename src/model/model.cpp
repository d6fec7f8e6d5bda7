#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "core/buffer.h"
#include "model/block.h"
#include "model/embedding.h"
#include "model/head.h"
#include "model/hyper_connection.h"
#include "model/layer_stack.h"
#include "model/model_plan.h"
#include "model/mtp.h"
#include "model/residual.h"
#include "model/streams.h"

namespace bk {

Model::Model(const ModelConfig& cfg, uint64_t seed, Communicator* ep) : cfg_(cfg) {
  const int64_t n = cfg.streams();
  BlockBuilder blocks{cfg, seed, ep};

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
  return sum_losses(forward_layers(layers_, mb, layers_.front()->buffer({mb.tokens_count(), 1}), &recompute_));
}

void Model::backward(const MicroBatch& mb) {
  // The head is the root (it seeds its own gradient); the embedding has no input gradient.
  backward_layers(layers_, mb, layers_.back()->output(mb.tokens_count()), 1, &recompute_);
}

void Model::set_recompute(const std::string& mode, int block, int num_stages) {
  Recompute rc;
  rc.mode = parse_recompute_mode(mode);
  // The sublayers of the main stack: the connector layers (Residual or HyperConnection).
  std::vector<size_t> sub;
  for (size_t i = 0; i < layers_.size(); ++i)
    if (dynamic_cast<Residual*>(layers_[i].get()) || dynamic_cast<HyperConnection*>(layers_[i].get()))
      sub.push_back(i);
  BK_CHECK(num_stages >= 1 && sub.size() % size_t(num_stages) == 0,
           "recompute: {} pipeline stages do not divide the {} sublayers", num_stages, sub.size());
  const size_t per_stage = sub.size() / size_t(num_stages);
  BK_CHECK(block >= 0 && size_t(block) <= per_stage,
           "training.recompute_block = {}: a block holds 1 to {} sublayers (one pipeline stage's; blocks never "
           "cross a stage), or 0 for one block per stage", block, per_stage);
  BK_CHECK(rc.mode != Recompute::Mode::mhc || cfg_.streams() > 1,
           "training.recompute: mhc rebuilds the hyper-connection intermediates, but model.residual.mode is "
           "baseline; use none or full");
  if (rc.mode != Recompute::Mode::none) {
    const size_t k = block == 0 ? per_stage : size_t(block);
    for (size_t stage = 0; stage < sub.size(); stage += per_stage)
      for (size_t b = stage; b < stage + per_stage; b += k)  // sublayers are adjacent layers
        rc.blocks.emplace_back(sub[b], sub[std::min(b + k, stage + per_stage) - 1] + 1);
  }
  for (size_t i : sub)
    if (auto* h = dynamic_cast<HyperConnection*>(layers_[i].get())) h->set_light(rc.mode == Recompute::Mode::mhc);
  recompute_ = std::move(rc);
}

ParamList Model::params() {
  ParamList out;
  for (auto& layer : layers_)
    for (Param* p : layer->params()) out.push_back(p);
  return out;
}

void Model::place(const ActivationFormat& f) {
  BK_CHECK(f.dtype != DType::bf16 || f.device != Device::cpu,
           "bf16 activations need the GPU: the CPU kernels compute in f32 (or f64)");
  for (auto& layer : layers_) layer->set_format(f);
  for (Param* p : params()) p->place(f.device, f.dtype);
  format_ = f;
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

std::vector<MoeStats> Model::end_step(double bias_update_speed, Communicator* data) {
  std::vector<MoeStats> out;
  for (Moe* m : moe_layers()) out.push_back(m->end_step(bias_update_speed, data));
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
