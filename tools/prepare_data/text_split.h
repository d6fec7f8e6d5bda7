// Train/validation split of a text, by contiguous pieces of whole lines.
//
// The text is cut into pieces of about piece_bytes = clamp(total * val_fraction / 4, 256 B,
// 64 KiB) (so even a small text gets several validation pieces), each ending just after a
// newline (or at the end of the text). Piece i goes to validation when
// floor((i + 1) * f + u) > floor(i * f + u), with f = val_fraction and u in [0, 1) drawn from
// the seed: an evenly spaced ~f of the pieces (every ~1/f-th), spread over the whole text
// rather than its tail, which for a book is a different distribution.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace bk::tok {

struct TextPiece {
  size_t begin = 0, end = 0;  // byte range [begin, end) of the text
  bool val = false;
};

std::vector<TextPiece> split_train_val(std::string_view text, double val_fraction, uint64_t seed);

}  // namespace bk::tok
