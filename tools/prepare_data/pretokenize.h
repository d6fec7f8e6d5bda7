// Pre-tokenizer: cuts text into chunks that BPE never merges across, so a token never spans
// a word boundary and chunk-level caching works. It works on raw UTF-8 bytes.
//
// Byte classes: letter = A-Z a-z and every byte >= 0x80 (so UTF-8 characters stay inside their
// word); digit = 0-9; space = ' ' \t \n \r \v \f; punct = every other byte.
// Chunks, left to right, longest match:
//   ' '? letter+  |  ' '? digit+  |  ' '? punct+  |  space+
// where a space run that ends in ' ' and is followed by a non-space byte leaves that last ' '
// to start the next chunk (so "a  b" -> "a", " ", " b" and a word keeps its single leading
// space). Then any chunk longer than kMaxChunkBytes is cut into pieces of that many bytes
// (bounds the cost of pathological input such as a megabyte without spaces).
// Equivalent Python (on bytes): kPreTokenizerRegex with re.findall, then the cut.
#pragma once
#include <cstddef>
#include <string_view>

namespace bk::tok {

inline constexpr size_t kMaxChunkBytes = 128;
inline constexpr const char* kPreTokenizerName = "birkhoff-bytes-v1";
inline constexpr const char* kPreTokenizerRegex =
    R"( ?[A-Za-z\x80-\xff]+| ?[0-9]+| ?[^A-Za-z0-9\x80-\xff \t\n\r\x0b\x0c]+|)"
    R"([ \t\n\r\x0b\x0c]+(?= [^ \t\n\r\x0b\x0c])|[ \t\n\r\x0b\x0c]+)";

// Calls emit(std::string_view chunk) for each chunk in order; the chunks concatenate to text.
template <typename F>
void pretokenize(std::string_view text, F&& emit);

// ---- implementation (a template so the per-chunk callback inlines) -----------------------

enum class ByteClass : unsigned char { letter, digit, space, punct };

inline ByteClass byte_class(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return ByteClass::letter;
  if (c >= '0' && c <= '9') return ByteClass::digit;
  if (c == ' ' || (c >= '\t' && c <= '\r')) return ByteClass::space;
  return ByteClass::punct;
}

template <typename F>
void pretokenize(std::string_view text, F&& emit) {
  const size_t n = text.size();
  auto cls = [&](size_t i) { return byte_class((unsigned char)text[i]); };
  auto out = [&](size_t b, size_t e) {
    for (; e - b > kMaxChunkBytes; b += kMaxChunkBytes) emit(text.substr(b, kMaxChunkBytes));
    emit(text.substr(b, e - b));
  };
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    if (text[i] == ' ' && i + 1 < n && cls(i + 1) != ByteClass::space) {
      // A single space followed by a non-space: the leading space of a word/number/punct run.
      const ByteClass c = cls(i + 1);
      j = i + 1;
      while (j < n && cls(j) == c) ++j;
    } else if (cls(i) == ByteClass::space) {
      while (j < n && cls(j) == ByteClass::space) ++j;
      // Leave a final ' ' to the next chunk. j - 1 > i here: a lone ' ' took the branch above.
      if (j < n && text[j - 1] == ' ') --j;
    } else {
      const ByteClass c = cls(i);
      while (j < n && cls(j) == c) ++j;
    }
    out(i, j);
    i = j;
  }
}

}  // namespace bk::tok
