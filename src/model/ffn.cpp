#include "model/ffn.h"

namespace bk {

Ffn::Ffn(const std::string& prefix, int64_t dim, int64_t hidden, float norm_eps)
    : prefix_(prefix), dim_(dim), hidden_(hidden), norm_(prefix + ".norm", dim, norm_eps), mlp_(prefix, dim, hidden) {}

void Ffn::forward(const MicroBatch& mb, Tensor x, Tensor y) {
  const int64_t N = mb.tokens_count();
  Saved local;
  Saved& st = mb.saves() ? saved_.put(mb.id) : local;
  st.x = buffer({N, dim_});
  ops::copy(st.x, x);
  st.rstd = stats_buffer({N});
  st.n = buffer({N, dim_});
  norm_.forward(st.n, st.rstd, x);
  st.gate = buffer({N, hidden_});
  st.up = buffer({N, hidden_});
  st.h = buffer({N, hidden_});
  mlp_.forward(st.n, st.gate, st.up, st.h, y);
}

void Ffn::backward_input(const MicroBatch& mb, Tensor dy, Tensor dx) {
  const int64_t N = mb.tokens_count();
  Saved& st = saved_.at(mb.id);
  st.dy = buffer({N, dim_});
  ops::copy(st.dy, dy);
  st.dgate = buffer({N, hidden_});
  st.dup = buffer({N, hidden_});
  st.dn = buffer({N, dim_});
  Buffer dh = buffer({N, hidden_});
  Buffer part = buffer({N, dim_});
  mlp_.backward_input(dy, st.gate, st.up, st.dgate, st.dup, st.dn, dh, part);
  norm_.backward_input(dx, st.dn, st.x, st.rstd);
}

void Ffn::backward_weight(const MicroBatch& mb) {
  Saved& st = saved_.at(mb.id);
  mlp_.backward_weight(st.n, st.h, st.dy, st.dgate, st.dup);
  norm_.backward_weight(st.dn, st.x, st.rstd);
  saved_.drop(mb.id);
}

}  // namespace bk
