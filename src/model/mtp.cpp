#include "model/mtp.h"

#include "kernels/ops.h"
#include "model/layer_stack.h"
#include "model/streams.h"

namespace bk {

MtpHead::MtpHead(const ModelConfig& cfg, std::unique_ptr<Head> head, Param* table, BlockBuilder& blocks)
    : cfg_(cfg), head_(std::move(head)), table_(table) {
  const int64_t C = cfg.dim, n = cfg.streams();
  const float eps = float(cfg.norm_eps);
  for (int j = 0; j < cfg.mtp.depth; ++j) {
    const std::string p = "mtp." + std::to_string(j);
    Module m{Norm(p + ".norm_h", C, eps), Norm(p + ".norm_e", C, eps), Param(p + ".proj.weight", {C, 2 * C}, true),
             {}, std::make_unique<Head>(head_->weights())};
    m.proj.init_normal(blocks.seed, cfg.init_std);
    if (n > 1) m.layers.push_back(std::make_unique<StreamExpand>(n, C));
    blocks.add_block(m.layers, p, cfg.ffn == "moe" && cfg.n_layers > cfg.moe.first_dense_layers);
    if (n > 1) m.layers.push_back(std::make_unique<StreamCollapse>(n, C));
    modules_.push_back(std::move(m));
  }
  saved_.resize(modules_.size());
  loss_sum_.assign(modules_.size(), 0.0);
  loss_tokens_.assign(modules_.size(), 0.0);
}

ParamList MtpHead::params() {
  ParamList p = head_->params();
  for (Module& m : modules_) {
    p.insert(p.end(), {&m.norm_h.weight, &m.norm_e.weight, &m.proj});
    for (auto& l : m.layers)
      for (Param* q : l->params()) p.push_back(q);
  }
  return p;
}

std::vector<Layer*> MtpHead::children() {
  std::vector<Layer*> out;
  for (Module& m : modules_)
    for (auto& l : m.layers) out.push_back(l.get());
  return out;
}

void MtpHead::set_format(const ActivationFormat& f) {
  fmt_ = f;
  head_->set_format(f);
  for (Module& m : modules_) {
    m.head->set_format(f);
    for (auto& l : m.layers) l->set_format(f);
  }
}

// Module k's micro-batch: same tokens and id, its own targets, and its share of the objective:
// weight / D, over the positions that have a target (T - k per sequence).
MicroBatch MtpHead::module_batch(const MicroBatch& mb, int k, const Saved& st) const {
  MicroBatch m = mb;
  m.targets = st.targets.ptr<int32_t>();
  m.loss_scale = float(double(mb.loss_scale) * cfg_.mtp.weight / cfg_.mtp.depth * mb.T / double(mb.T - k));
  return m;
}

void MtpHead::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  head_->forward(mb, x, y);
  if (!mb.keep) return;  // evaluation reports the main loss only
  const int64_t N = mb.tokens_count(), C = cfg_.dim;
  Buffer h = buffer({N, C});
  ops::copy(h, x);
  for (size_t j = 0; j < modules_.size(); ++j) {
    Module& m = modules_[j];
    const int k = int(j) + 1;
    Saved& st = saved_[j].put(mb.id);
    Buffer tokens({N}, DType::i32);
    st.targets = Buffer({N}, DType::i32);  // host: module_batch hands it to the head as mb.targets
    int32_t* tok = tokens.ptr<int32_t>();
    int32_t* tgt = st.targets.ptr<int32_t>();
    for (int b = 0; b < mb.B; ++b)
      for (int t = 0; t < mb.T; ++t) {
        const int64_t i = int64_t(b) * mb.T + t;
        const int32_t next = t + k - 1 < mb.T ? mb.targets[i + k - 1] : -1;  // t_{t+k}
        tok[i] = next < 0 ? 0 : next;
        tgt[i] = t + k < mb.T ? mb.targets[i + k] : -1;                     // t_{t+k+1}
      }
    st.tokens = upload_indices(tok, N);
    st.h = std::move(h);
    st.rstd_h = stats_buffer({N});
    st.e = buffer({N, C});
    st.rstd_e = stats_buffer({N});
    ops::embedding_forward(st.e, st.tokens, table_->value);
    Buffer hn = buffer({N, C}), en = buffer({N, C});
    m.norm_h.forward(hn, st.rstd_h, st.h);
    m.norm_e.forward(en, st.rstd_e, st.e);
    st.cat = buffer({N, 2 * C});
    ops::copy_columns(st.cat, 0, hn, 0, C, false);
    ops::copy_columns(st.cat, C, en, 0, C, false);
    Buffer proj = buffer({N, C});
    ops::linear_forward(proj, st.cat, m.proj.value);
    Buffer cur = forward_layers(m.layers, mb, std::move(proj));
    const MicroBatch mk = module_batch(mb, k, st);
    Buffer losses = m.head->output(N);
    m.head->forward(mk, cur, losses);
    loss_sum_[j] += sum_losses(losses);
    loss_tokens_[j] += double(mb.B) * (mb.T - k);
    h = std::move(cur);  // h^k, the next module's input
  }
}

void MtpHead::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count(), C = cfg_.dim;
  head_->backward_input(mb, dy, dx);
  Buffer dh_next;  // gradient into h^k from module k+1
  for (size_t j = modules_.size(); j-- > 0;) {
    Module& m = modules_[j];
    Saved& st = saved_[j].at(mb.id);
    const MicroBatch mk = module_batch(mb, int(j) + 1, st);
    Buffer d = buffer({N, C});
    m.head->backward_input(mk, m.head->output(N), d);
    if (!dh_next.empty()) ops::add_inplace(d, dh_next);
    // The gradient of the projection output, kept for its weight gradient.
    st.d_cat = backward_input_layers(m.layers, mb, std::move(d), C);
    Buffer dcat = buffer({N, 2 * C});
    ops::linear_backward_input(dcat, st.d_cat, m.proj.value);
    st.d_hn = buffer({N, C});
    st.d_en = buffer({N, C});
    ops::copy_columns(st.d_hn, 0, dcat, 0, C, false);
    ops::copy_columns(st.d_en, 0, dcat, C, C, false);
    Buffer dh = buffer({N, C});
    m.norm_h.backward_input(dh, st.d_hn, st.h, st.rstd_h);
    st.d_e = buffer({N, C});
    m.norm_e.backward_input(st.d_e, st.d_en, st.e, st.rstd_e);
    dh_next = std::move(dh);
  }
  if (!dh_next.empty()) ops::add_inplace(dx, dh_next);
}

void MtpHead::backward_weight(const MicroBatch& mb) {
  head_->backward_weight(mb);
  for (size_t j = 0; j < modules_.size(); ++j) {
    Module& m = modules_[j];
    Saved& st = saved_[j].at(mb.id);
    m.head->backward_weight(module_batch(mb, int(j) + 1, st));
    backward_weight_layers(m.layers, mb);
    ops::linear_backward_weight(m.proj.grad, st.d_cat, st.cat);
    // The norms' inputs are recomputed views: hn/en are not kept, their weight gradient needs
    // only the input and its rstd.
    m.norm_h.backward_weight(st.d_hn, st.h, st.rstd_h);
    m.norm_e.backward_weight(st.d_en, st.e, st.rstd_e);
    ops::embedding_backward_weight(table_->grad, st.tokens, st.d_e);
    saved_[j].drop(mb.id);
  }
}

double MtpHead::take_loss() {
  double mean = 0;
  for (size_t j = 0; j < modules_.size(); ++j) {
    if (loss_tokens_[j] > 0) mean += loss_sum_[j] / loss_tokens_[j] / double(modules_.size());
    loss_sum_[j] = loss_tokens_[j] = 0;
  }
  return mean;
}

}  // namespace bk
