// Layers allocate their activations uninitialised (Buffer::uninitialized: no zeroing pass, which
// on the GPU would cost a memset per activation). This holds only if every op overwrites what it
// is given and accumulating targets are zeroed explicitly. Poisoning those buffers with NaN (the
// 0xFF fill) must therefore change nothing: the same loss and the same gradient bits, for every
// connector, dense and MoE + MLA + MTP, and every recompute mode. A read of an unwritten element
// would turn the result into NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "unit/model/model_testing.h"

namespace bk::testing {
namespace {

struct Outcome {
  double loss = 0;
  std::vector<std::vector<float>> grads;
};

Outcome train_one(const ModelConfig& c, const std::string& recompute, bool poison) {
  set_poison_uninitialized(poison);
  Model m(c, 3);
  m.set_recompute(recompute, 0);
  const Tokens t = random_tokens(2, c.seq_len, c.vocab_size, 17);
  Outcome r;
  for (int id = 0; id < 2; ++id) {  // two micro-batches: the second reuses freed memory
    const MicroBatch mb = make_mb(id, t, id, 1, c.seq_len, 0.05f);
    r.loss += m.forward(mb);
    m.backward(mb);
  }
  r.grads = grads(m);
  set_poison_uninitialized(false);
  return r;
}

TEST(UninitializedBuffers, PoisonIsVisible) {
  set_poison_uninitialized(true);
  Buffer b = Buffer::uninitialized({4}, DType::f32, Device::cpu);
  set_poison_uninitialized(false);
  EXPECT_TRUE(std::isnan(b.ptr<float>()[0]));
}

TEST(UninitializedBuffers, PoisonChangesNoResult) {
  for (const std::string& mode : {"baseline", "hc", "mhc"})
    for (bool moe : {false, true})
      for (const std::string& rc : {"none", "full", "mhc"}) {
        if (rc == "mhc" && mode == "baseline") continue;  // mhc recompute needs connectors
        ModelConfig c = small_config(mode, moe);
        if (moe) c.mtp.depth = 1;
        SCOPED_TRACE(mode + (moe ? " moe+mla+mtp" : " dense") + " recompute " + rc);
        const Outcome clean = train_one(c, rc, false), poisoned = train_one(c, rc, true);
        ASSERT_TRUE(std::isfinite(poisoned.loss));
        EXPECT_EQ(std::memcmp(&clean.loss, &poisoned.loss, sizeof(double)), 0) << clean.loss << " vs " << poisoned.loss;
        ASSERT_EQ(clean.grads.size(), poisoned.grads.size());
        for (size_t i = 0; i < clean.grads.size(); ++i)
          EXPECT_EQ(clean.grads[i], poisoned.grads[i]) << "gradient " << i;
      }
}

}  // namespace
}  // namespace bk::testing
