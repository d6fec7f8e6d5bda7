// Multi-token prediction (DeepSeek-V3), the model's last layer when model.mtp.depth = D > 0
// (docs/model.md). The main head computes the next-token loss from h^0, the hidden state after
// the last block; then module k = 1..D predicts token t+k+1 at position t:
//   h'^k = W_k [RMSNorm(h^{k-1}); RMSNorm(Emb(t_{t+k}))]        (W_k: 2C -> C)
//   h^k  = Block_k(h'^k)                                         (the model's block and connector)
//   L^k  = CE(Head(h^k), t_{t+k+1}) over the positions where that token exists
// with the embedding and the head shared with the main model. The objective adds
// (mtp.weight / D) * sum_k L^k; y stays the main per-token loss, and take_loss() reports the MTP
// losses apart.
#pragma once
#include <memory>
#include <vector>

#include "model/block.h"
#include "model/head.h"
#include "model/layer.h"
#include "model/rmsnorm_layer.h"

namespace bk {

class MtpHead : public Layer {
 public:
  // head: the main head (owned); table: the embedding table (shared, owned by the Embedding).
  MtpHead(const ModelConfig& cfg, std::unique_ptr<Head> head, Param* table, BlockBuilder& blocks);
  std::string name() const override { return "mtp"; }
  void forward(const MicroBatch& mb, Tensor x, Tensor y) override;
  void backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) override;
  void backward_weight(const MicroBatch& mb) override;
  ParamList params() override;
  int64_t out_width() const override { return 1; }
  Buffer output(int64_t tokens) const override { return stats_buffer({tokens, 1}); }
  void set_format(const ActivationFormat& f) override;
  std::vector<Layer*> children() override;
  // Mean over depths of each depth's mean cross-entropy, over the training micro-batches since
  // the last call.
  double take_loss();

 private:
  struct Module {
    Norm norm_h, norm_e;
    Param proj;                                  // [C, 2C]
    std::vector<std::unique_ptr<Layer>> layers;  // [expand], attn_conn, ffn_conn, [collapse]
    std::unique_ptr<Head> head;                  // shares the main head's weights
  };
  struct Saved {
    Buffer tokens, targets;    // i32 [N]: t_{t+k} (0 where it does not exist; on the device), t_{t+k+1} or -1 (host)
    Buffer h, rstd_h, e, rstd_e, cat;  // module inputs
    Buffer d_cat, d_hn, d_en, d_e;     // from backward_input
  };
  MicroBatch module_batch(const MicroBatch& mb, int k, const Saved& st) const;

  ModelConfig cfg_;
  std::unique_ptr<Head> head_;
  Param* table_;
  std::vector<Module> modules_;
  std::vector<PerMicroBatch<Saved>> saved_;  // per module
  std::vector<double> loss_sum_, loss_tokens_;
};

}  // namespace bk
