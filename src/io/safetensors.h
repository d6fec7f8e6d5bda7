// safetensors files: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}}, then the raw little-endian tensor bytes.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace bk {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // CPU view; written as-is
};

// Writes `path` (the caller makes it atomic by writing into a temporary directory).
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

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

// Reads and validates a whole file (header JSON, dtypes, offsets within the file, no overlap).
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace bk
