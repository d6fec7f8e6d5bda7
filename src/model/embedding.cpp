#include "model/embedding.h"

#include <cstring>

#include "kernels/ops.h"

namespace bk {

namespace {
Tensor token_view(const MicroBatch& mb) {
  return Tensor{const_cast<int32_t*>(mb.tokens), DType::i32, {mb.tokens_count()}, Device::cpu};
}
}  // namespace

void Embedding::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  ops::embedding_forward(y, token_view(mb), table_.value);
  if (!mb.saves()) return;
  Saved& st = saved_.put(mb.id);
  st.tokens = Buffer({mb.tokens_count()}, DType::i32);
  ops::copy(st.tokens, token_view(mb));
}

void Embedding::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  Saved& st = saved_.at(mb.id);
  st.dy = buffer(dy.shape);
  ops::copy(st.dy, dy);
}

void Embedding::backward_weight(const MicroBatch& mb) {
  Saved& st = saved_.at(mb.id);
  ops::embedding_backward_weight(table_.grad, st.tokens, st.dy);
  saved_.drop(mb.id);
}

}  // namespace bk
