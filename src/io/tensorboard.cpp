#include "io/tensorboard.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/crc32c.h"
#include "core/error.h"

namespace bk {

namespace fs = std::filesystem;

namespace tensorboard {
namespace {

// Protobuf wire format: key = (field << 3) | wire type; 0 varint, 1 64-bit, 2 length-delimited,
// 5 32-bit. Fixed-width values are little endian.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}
void put_key(std::string& out, int field, int wire) { put_varint(out, uint64_t(field) << 3 | uint64_t(wire)); }
template <typename T>
void put_fixed(std::string& out, T v) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64 Linux are little endian
  out.append(reinterpret_cast<const char*>(b), sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string event_head(double wall_time, int64_t step) {
  std::string e;
  put_key(e, 1, 1);
  put_fixed(e, wall_time);
  put_key(e, 2, 0);
  put_varint(e, uint64_t(step));  // int64: two's complement, so negatives take 10 bytes
  return e;
}

}  // namespace

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string event_file_version(double wall_time) {
  std::string e;
  put_key(e, 1, 1);
  put_fixed(e, wall_time);
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

std::string event_scalars(double wall_time, int64_t step, const Scalars& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, 1, tag);
    put_key(v, 2, 5);
    put_fixed(v, float(value));
    put_bytes(summary, 1, v);
  }
  std::string e = event_head(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

std::string event_session_start(double wall_time, int64_t step) {
  std::string log;
  put_key(log, 1, 0);
  put_varint(log, 1);  // SessionLog.START
  std::string e = event_head(wall_time, step);
  put_bytes(e, 7, log);
  return e;
}

std::string tfrecord(const std::string& data) {
  std::string r;
  const uint64_t n = data.size();
  put_fixed(r, n);
  put_fixed(r, masked_crc32c(r.data(), 8));
  r += data;
  put_fixed(r, masked_crc32c(data.data(), data.size()));
  return r;
}

}  // namespace tensorboard

namespace {

constexpr const char* kPrefix = "events.out.tfevents.";

// The <seconds> field of an event file name, or -1.
long long name_seconds(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const std::string rest = name.substr(std::strlen(kPrefix));
  const size_t dot = rest.find('.');
  try {
    return std::stoll(rest.substr(0, dot));
  } catch (const std::exception&) {
    return -1;
  }
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  std::string h(buf);
  for (char& c : h)
    if (c == '/' || c == ' ') c = '_';
  return h;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  BK_CHECK(!ec, "cannot create the TensorBoard directory {}: {}", dir, ec.message());
  long long seconds = (long long)tensorboard::now_seconds();
  for (const auto& entry : fs::directory_iterator(dir))
    seconds = std::max(seconds, name_seconds(entry.path().filename().string()) + 1);
  path_ = (fs::path(dir) / fmt::format("{}{}.{}", kPrefix, seconds, host_name())).string();
  file_ = std::fopen(path_.c_str(), "wb");
  BK_CHECK(file_ != nullptr, "cannot create the TensorBoard event file {}: {}", path_, std::strerror(errno));
  write_record(tensorboard::event_file_version(tensorboard::now_seconds()));
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::write_scalars(int64_t step, const Scalars& scalars) {
  write_record(tensorboard::event_scalars(tensorboard::now_seconds(), step, scalars));
}

void TensorBoardWriter::write_session_start(int64_t step) {
  write_record(tensorboard::event_session_start(tensorboard::now_seconds(), step));
}

// A failed write (a full disk) stops the event file, not the training run.
void TensorBoardWriter::write_record(const std::string& data) {
  if (!file_) return;
  const std::string r = tensorboard::tfrecord(data);
  if (std::fwrite(r.data(), 1, r.size(), file_) != r.size() || std::fflush(file_) != 0) {
    spdlog::warn("cannot write the TensorBoard event file {} ({}); no more TensorBoard events this run", path_,
                 std::strerror(errno));
    std::fclose(file_);
    file_ = nullptr;
  }
}

}  // namespace bk
