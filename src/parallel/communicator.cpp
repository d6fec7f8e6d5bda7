#include "parallel/communicator.h"

#include "core/error.h"

namespace bk {

void check_reduce_scatter_args(Tensor out, Tensor in, int size) {
  BK_CHECK(in.dtype == out.dtype, "reduce_scatter_sum: dtypes {} and {}", dtype_name(in.dtype),
           dtype_name(out.dtype));
  BK_CHECK(in.numel() == out.numel() * size, "reduce_scatter_sum: in {} must hold size ({}) x out {}",
           in.shape.str(), size, out.shape.str());
}

void check_all_gather_args(Tensor out, Tensor in, int size) {
  BK_CHECK(in.dtype == out.dtype, "all_gather: dtypes {} and {}", dtype_name(in.dtype), dtype_name(out.dtype));
  BK_CHECK(out.numel() == in.numel() * size, "all_gather: out {} must hold size ({}) x in {}", out.shape.str(),
           size, in.shape.str());
}

int64_t check_all_to_all_v_args(Tensor out, const std::vector<int64_t>& recv_rows, Tensor in,
                                const std::vector<int64_t>& send_rows, int size) {
  BK_CHECK(in.dtype == out.dtype, "all_to_all_v: dtypes {} and {}", dtype_name(in.dtype), dtype_name(out.dtype));
  BK_CHECK(int(send_rows.size()) == size && int(recv_rows.size()) == size,
           "all_to_all_v: {} send and {} recv row counts for {} ranks", send_rows.size(), recv_rows.size(), size);
  BK_CHECK(in.ndim() >= 1 && out.ndim() >= 1, "all_to_all_v: tensors need a row dimension");
  const int64_t in_row = in.size(0) ? in.numel() / in.size(0) : 0;
  const int64_t out_row = out.size(0) ? out.numel() / out.size(0) : 0;
  BK_CHECK(in.size(0) == 0 || out.size(0) == 0 || in_row == out_row, "all_to_all_v: row sizes differ: in {} out {}",
           in.shape.str(), out.shape.str());
  int64_t sent = 0, received = 0;
  for (int r = 0; r < size; ++r) {
    BK_CHECK(send_rows[size_t(r)] >= 0 && recv_rows[size_t(r)] >= 0, "all_to_all_v: negative row count");
    sent += send_rows[size_t(r)];
    received += recv_rows[size_t(r)];
  }
  BK_CHECK(sent == in.size(0), "all_to_all_v: send rows sum to {}, in has {}", sent, in.size(0));
  BK_CHECK(received == out.size(0), "all_to_all_v: recv rows sum to {}, out has {}", received, out.size(0));
  return in_row ? in_row : out_row;
}

}  // namespace bk
