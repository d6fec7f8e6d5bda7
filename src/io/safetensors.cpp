#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/buffer.h"
#include "core/crc32c.h"

namespace bk {

namespace {

// The safetensors specification bounds the header at 100 MB (a guard against absurd lengths).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

bool parse_dtype(const std::string& s, DType* out) {
  for (DType t : {DType::f32, DType::bf16, DType::f64, DType::i32, DType::i64})
    if (s == safetensors_dtype(t)) return *out = t, true;
  return false;
}

}  // namespace

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
  }
  return "?";
}

SafetensorsWritten write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                                     const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    BK_CHECK(!t.name.empty() && t.name != "__metadata__", "write_safetensors {}: bad tensor name '{}'", path, t.name);
    BK_CHECK(!header.contains(t.name), "write_safetensors {}: duplicate tensor name {}", path, t.name);
    std::vector<int64_t> shape(t.tensor.shape.d.begin(), t.tensor.shape.d.begin() + t.tensor.ndim());
    header[t.name] = {{"dtype", safetensors_dtype(t.tensor.dtype)}, {"shape", shape},
                      {"data_offsets", {offset, offset + t.tensor.nbytes()}}};
    offset += t.tensor.nbytes();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  BK_CHECK(f.good(), "cannot open {} for writing", path);
  SafetensorsWritten out;
  auto put = [&](const void* p, size_t n) {
    f.write(static_cast<const char*>(p), std::streamsize(n));
    out.crc32c = crc32c(p, n, out.crc32c);
    out.bytes += n;
  };
  const uint64_t n = json.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  put(len, 8);
  put(json.data(), json.size());
  for (const NamedTensor& t : tensors) {
    if (t.tensor.device == Device::cpu) {
      put(t.tensor.data, t.tensor.nbytes());
      continue;
    }
    Buffer staged(t.tensor.shape, t.tensor.dtype);  // a GPU tensor: one host copy at a time
    staged.upload(t.tensor);
    put(staged.tensor().data, staged.nbytes());
  }
  f.flush();
  BK_CHECK(f.good(), "error writing {} (disk full?)", path);
  return out;
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  BK_CHECK(f.good(), "cannot open safetensors file {}", path);
  SafetensorsHeader out;
  out.path = path;
  out.file_size = uint64_t(f.tellg());
  f.seekg(0);
  BK_CHECK(out.file_size >= 8, "{}: truncated ({} bytes; a safetensors file starts with an 8-byte length)",
           path, out.file_size);
  uint8_t len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  BK_CHECK(n <= out.file_size - 8, "{}: header length {} exceeds the file size {} (truncated file?)", path, n,
           out.file_size);
  BK_CHECK(n <= kMaxHeaderBytes, "{}: header length {} exceeds the 100 MB limit of the format", path, n);
  std::string json(n, '\0');
  f.read(json.data(), std::streamsize(n));
  BK_CHECK(f.good(), "{}: cannot read the {}-byte header", path, n);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const std::exception& e) {
    BK_FAIL("{}: header is not valid JSON: {}", path, e.what());
  }
  BK_CHECK(header.is_object(), "{}: header is not a JSON object", path);
  out.data_start = 8 + n;

  const uint64_t data_size = out.file_size - out.data_start;
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> ranges;
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
    SafetensorsHeader::Entry entry;
    BK_CHECK(e["dtype"].is_string() && parse_dtype(e["dtype"].get<std::string>(), &entry.dtype),
             "{}: tensor {}: unsupported dtype {} (Birkhoff reads F32, BF16, F64, I32, I64)", path, name,
             e["dtype"].dump());
    BK_CHECK(e["shape"].is_array() && e["shape"].size() <= size_t(kMaxDims),
             "{}: tensor {}: shape must be an array of at most {} dims, got {}", path, name, kMaxDims,
             e["shape"].dump());
    for (auto& d : e["shape"]) {
      BK_CHECK(d.is_number_unsigned() && d.get<uint64_t>() < (uint64_t(1) << 40), "{}: tensor {}: bad shape {}",
               path, name, e["shape"].dump());
      entry.shape.d[entry.shape.ndim++] = d.get<int64_t>();
    }
    auto& off = e["data_offsets"];
    BK_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
             "{}: tensor {}: bad data_offsets {}", path, name, off.dump());
    entry.begin = off[0].get<uint64_t>();
    entry.end = off[1].get<uint64_t>();
    BK_CHECK(entry.begin <= entry.end && entry.end <= data_size,
             "{}: tensor {}: data_offsets [{}, {}] outside the {} data bytes (truncated file?)", path, name,
             entry.begin, entry.end, data_size);
    BK_CHECK(entry.end - entry.begin == uint64_t(entry.shape.numel()) * dtype_size(entry.dtype),
             "{}: tensor {}: {} bytes for shape {} of {}", path, name, entry.end - entry.begin,
             entry.shape.str(), safetensors_dtype(entry.dtype));
    ranges.push_back({{entry.begin, entry.end}, name});
    out.tensors.emplace(name, entry);
  }
  // The data section must be covered exactly: no overlap, no hole, nothing after the last tensor.
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const auto& [r, name] = ranges[i];
    BK_CHECK(r.first >= covered, "{}: tensors {} and {} overlap in the data section", path, ranges[i - 1].second,
             name);
    BK_CHECK(r.first == covered, "{}: {} unused bytes before tensor {} in the data section", path,
             r.first - covered, name);
    covered = r.second;
  }
  BK_CHECK(covered == data_size, "{}: {} bytes after the last tensor (the data section is {} bytes, the tensors "
           "cover {}); the file was extended or its header edited", path, data_size - covered, data_size, covered);
  return out;
}

void read_safetensors_tensor(const SafetensorsHeader& h, const std::string& name, Tensor dst) {
  auto it = h.tensors.find(name);
  BK_CHECK(it != h.tensors.end(), "{}: missing tensor {}", h.path, name);
  const SafetensorsHeader::Entry& e = it->second;
  BK_CHECK(e.dtype == dst.dtype && e.shape == dst.shape, "{}: tensor {} is {} {}, expected {} {}", h.path, name,
           dtype_name(e.dtype), e.shape.str(), dtype_name(dst.dtype), dst.shape.str());
  BK_CHECK(dst.device == Device::cpu, "{}: tensor {}: the destination is not on the CPU", h.path, name);
  std::ifstream f(h.path, std::ios::binary);
  BK_CHECK(f.good(), "cannot open safetensors file {}", h.path);
  f.seekg(std::streamoff(h.data_start + e.begin));
  f.read(static_cast<char*>(dst.data), std::streamsize(e.end - e.begin));
  BK_CHECK(f.good() && uint64_t(f.gcount()) == e.end - e.begin,
           "{}: tensor {}: read {} of {} bytes (was the file truncated after it was opened?)", h.path, name,
           f.gcount(), e.end - e.begin);
}

SafetensorsFile read_safetensors(const std::string& path) {
  SafetensorsHeader h = read_safetensors_header(path);
  SafetensorsFile out;
  out.path = path;
  out.metadata = h.metadata;
  std::ifstream f(path, std::ios::binary);
  BK_CHECK(f.good(), "cannot open safetensors file {}", path);
  for (const auto& [name, e] : h.tensors) {
    SafetensorsFile::Entry entry{e.dtype, e.shape, std::vector<uint8_t>(e.end - e.begin)};
    f.seekg(std::streamoff(h.data_start + e.begin));
    f.read(reinterpret_cast<char*>(entry.bytes.data()), std::streamsize(entry.bytes.size()));
    BK_CHECK(f.good(), "{}: tensor {}: read failed", path, name);
    out.tensors.emplace(name, std::move(entry));
  }
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
