#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace bk {

namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
  }
  return "?";
}

bool parse_dtype(const std::string& s, DType* out) {
  for (DType t : {DType::f32, DType::bf16, DType::f64, DType::i32, DType::i64})
    if (s == st_dtype(t)) return *out = t, true;
  return false;
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    BK_CHECK(t.tensor.device == Device::cpu, "write_safetensors {}: tensor {} is not on the CPU", path, t.name);
    BK_CHECK(!header.contains(t.name), "write_safetensors {}: duplicate tensor name {}", path, t.name);
    std::vector<int64_t> shape(t.tensor.shape.d.begin(), t.tensor.shape.d.begin() + t.tensor.ndim());
    header[t.name] = {{"dtype", st_dtype(t.tensor.dtype)}, {"shape", shape},
                      {"data_offsets", {offset, offset + t.tensor.nbytes()}}};
    offset += t.tensor.nbytes();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  BK_CHECK(f.good(), "cannot open {} for writing", path);
  uint64_t n = json.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(json.data(), std::streamsize(json.size()));
  for (const NamedTensor& t : tensors)
    f.write(static_cast<const char*>(t.tensor.data), std::streamsize(t.tensor.nbytes()));
  f.flush();
  BK_CHECK(f.good(), "error writing {} (disk full?)", path);
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  BK_CHECK(f.good(), "cannot open safetensors file {}", path);
  const uint64_t file_size = uint64_t(f.tellg());
  f.seekg(0);
  BK_CHECK(file_size >= 8, "{}: truncated ({} bytes; a safetensors file starts with an 8-byte length)",
           path, file_size);
  uint8_t len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  BK_CHECK(n <= file_size - 8, "{}: header length {} exceeds the file size {}", path, n, file_size);
  std::string json(n, '\0');
  f.read(json.data(), std::streamsize(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const std::exception& e) {
    BK_FAIL("{}: header is not valid JSON: {}", path, e.what());
  }
  BK_CHECK(header.is_object(), "{}: header is not a JSON object", path);

  SafetensorsFile out;
  out.path = path;
  const uint64_t data_size = file_size - 8 - n;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& [name, e] : header.items()) {
    if (name == "__metadata__") {
      BK_CHECK(e.is_object(), "{}: __metadata__ must be an object of strings", path);
      for (auto& [k, v] : e.items()) {
        BK_CHECK(v.is_string(), "{}: __metadata__.{} is not a string", path, k);
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    BK_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
             "{}: tensor {}: entry needs dtype, shape and data_offsets", path, name);
    SafetensorsFile::Entry entry;
    BK_CHECK(e["dtype"].is_string() && parse_dtype(e["dtype"].get<std::string>(), &entry.dtype),
             "{}: tensor {}: unsupported dtype {}", path, name, e["dtype"].dump());
    BK_CHECK(e["shape"].is_array() && e["shape"].size() <= size_t(kMaxDims),
             "{}: tensor {}: shape must be an array of at most {} dims", path, name, kMaxDims);
    for (auto& d : e["shape"]) {
      BK_CHECK(d.is_number_unsigned(), "{}: tensor {}: bad shape {}", path, name, e["shape"].dump());
      entry.shape.d[entry.shape.ndim++] = d.get<int64_t>();
    }
    auto& off = e["data_offsets"];
    BK_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
             "{}: tensor {}: bad data_offsets {}", path, name, off.dump());
    uint64_t b = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    BK_CHECK(b <= end && end <= data_size, "{}: tensor {}: data_offsets [{}, {}] outside the {} data bytes (truncated file?)",
             path, name, b, end, data_size);
    BK_CHECK(end - b == uint64_t(entry.shape.numel()) * dtype_size(entry.dtype),
             "{}: tensor {}: {} bytes for shape {} of {}", path, name, end - b, entry.shape.str(),
             dtype_name(entry.dtype));
    entry.bytes.resize(end - b);
    f.seekg(std::streamoff(8 + n + b));
    f.read(reinterpret_cast<char*>(entry.bytes.data()), std::streamsize(end - b));
    BK_CHECK(f.good(), "{}: tensor {}: read failed", path, name);
    ranges.emplace_back(b, end);
    out.tensors.emplace(name, std::move(entry));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    BK_CHECK(ranges[i].first >= ranges[i - 1].second, "{}: tensors overlap in the data section", path);
  return out;
}

void SafetensorsFile::read_into(const std::string& name, Tensor dst) const {
  auto it = tensors.find(name);
  BK_CHECK(it != tensors.end(), "{}: missing tensor {}", path, name);
  const Entry& e = it->second;
  BK_CHECK(e.dtype == dst.dtype && e.shape == dst.shape, "{}: tensor {} is {} {}, expected {} {}", path,
           name, dtype_name(e.dtype), e.shape.str(), dtype_name(dst.dtype), dst.shape.str());
  std::memcpy(dst.data, e.bytes.data(), e.bytes.size());
}

}  // namespace bk
