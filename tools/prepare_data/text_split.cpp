#include "tools/prepare_data/text_split.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace bk::tok {

std::vector<TextPiece> split_train_val(std::string_view text, double val_fraction, uint64_t seed) {
  BK_CHECK(val_fraction >= 0.0 && val_fraction <= 0.5,
           "val fraction {} is outside [0, 0.5]", val_fraction);
  const size_t target =
      val_fraction > 0
          ? std::clamp<size_t>(size_t(double(text.size()) * val_fraction / 4), 256, 65536)
          : 65536;
  const double u = Rng(seed, Rng::stream_of("data.val_split")).uniform();

  std::vector<TextPiece> pieces;
  for (size_t b = 0; b < text.size();) {
    size_t e = std::min(text.size(), b + target);
    if (e < text.size()) {
      const size_t nl = text.find('\n', e - 1);
      e = nl == std::string_view::npos ? text.size() : nl + 1;
    }
    const double i = double(pieces.size());
    const bool val = std::floor((i + 1) * val_fraction + u) > std::floor(i * val_fraction + u);
    pieces.push_back({b, e, val});
    b = e;
  }
  return pieces;
}

}  // namespace bk::tok
