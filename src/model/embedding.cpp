#include "model/embedding.h"

#include "kernels/ops.h"

namespace bk {

void Embedding::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  Buffer tokens = upload_indices(mb.tokens, mb.tokens_count());
  ops::embedding_forward(y, tokens, table_.value);
  if (mb.saves()) saved_.put(mb.id).tokens = std::move(tokens);
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
