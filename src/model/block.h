// Transformer blocks as layers: [attn_conn(attn), ffn_conn(ffn)] with the model's attention
// (MHA or MLA), FFN (dense or MoE) and connector (baseline, hc, mhc). Used for the main stack and
// for each MTP module, so both are built the same way.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/layer.h"

namespace bk {

class Communicator;

struct BlockBuilder {
  const ModelConfig& cfg;
  uint64_t seed;
  Communicator* ep = nullptr;  // the expert-parallel group MoE layers split their experts over
  int next_sublayer = 0;  // index of the next sublayer (hc's initial H_pre = e_(index mod n))

  // Appends the two connected sublayers of block `prefix` ("layers.3", "mtp.0") to out.
  void add_block(std::vector<std::unique_ptr<Layer>>& out, const std::string& prefix, bool moe);
  // The connector of the configured mode around f.
  std::unique_ptr<Layer> connect(const std::string& name, std::unique_ptr<Layer> f);
};

}  // namespace bk
