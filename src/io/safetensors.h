// safetensors files (https://github.com/huggingface/safetensors, docs/checkpoint-format.md):
// 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}} (padded with spaces), then the raw little-endian tensor
// bytes; offsets are relative to the start of that data section, which they cover exactly.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace bk {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // written as-is; a GPU tensor through a host copy of it alone
};

// The file's dtype name: F32, BF16, F64, I32, I64.
const char* safetensors_dtype(DType t);

struct SafetensorsWritten {
  uint64_t bytes = 0;   // file size
  uint32_t crc32c = 0;  // CRC32C of the whole file (core/crc32c.h)
};

// Writes `path` (the caller makes it atomic by writing into a temporary directory). Tensors are
// stored in the order given (GPU tensors staged through host memory one at a time), 8-byte aligned (the header is padded with spaces). Returns the
// size and checksum of what it wrote, so the caller need not read the file back.
SafetensorsWritten write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                                     const std::map<std::string, std::string>& metadata = {});

// The header of a file, validated: JSON object, known dtypes, shapes of at most kMaxDims
// dims, each tensor's byte range matching its shape, ranges within the file, no overlaps and
// no gaps (the data section is covered exactly, so a truncated or extended file is an error).
struct SafetensorsHeader {
  struct Entry {
    DType dtype;
    Shape shape;
    uint64_t begin = 0, end = 0;  // within the data section
  };
  std::string path;
  uint64_t file_size = 0;
  uint64_t data_start = 0;  // 8 + N
  std::map<std::string, Entry> tensors;
  std::map<std::string, std::string> metadata;
};
SafetensorsHeader read_safetensors_header(const std::string& path);

// Reads tensor `name` described by h into dst; dtype and shape must match. Errors name the
// file and tensor.
void read_safetensors_tensor(const SafetensorsHeader& h, const std::string& name, Tensor dst);

struct SafetensorsFile {
  struct Entry {
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry> tensors;
  std::map<std::string, std::string> metadata;

  // Copies tensor `name` into dst, checking dtype and shape; errors name the file and tensor.
  void read_into(const std::string& name, Tensor dst) const;
  std::string path;
};

// Reads and validates a whole file (the header as read_safetensors_header, then every tensor).
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace bk
