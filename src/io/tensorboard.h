// TensorBoard event files, written natively (no TensorFlow, no protobuf library).
//
// A file is a sequence of TFRecords:
//   uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
// (little endian; masked crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8, core/crc32c.h), each
// record's data a serialised tensorflow.Event protobuf, encoded here by hand:
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//                Summary summary = 5; SessionLog session_log = 7; }   // 6: LogMessage, unused
//   Summary    { repeated Value value = 1; }
//   Value      { string tag = 1; float simple_value = 2; }
//   SessionLog { enum Status status = 1; }   // START = 1
// The first record of a file is {wall_time, file_version: "brain.Event:2"}. Every write is
// flushed, so a reader (or a crash) sees whole records up to the last step.
// Reader written independently from this description: tools/tb_reader.py.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace bk {

using Scalars = std::vector<std::pair<std::string, double>>;

class TensorBoardWriter {
 public:
  // Creates `dir` if needed and a new event file in it, events.out.tfevents.<seconds>.<host>.
  // The seconds are the current time, or one more than the newest event file already there,
  // so file names sort in the order the files were written (a resumed run appends a file).
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One Event at `step` whose Summary holds every (tag, value) as a simple_value (float32).
  void write_scalars(int64_t step, const Scalars& scalars);
  // SessionLog START at `step`: TensorBoard then discards the events of steps >= `step` read
  // before it (a resumed run re-runs the steps after its checkpoint).
  void write_session_start(int64_t step);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::FILE* file_ = nullptr;
};

namespace tensorboard {
// Encoding pieces, exposed for tests.
double now_seconds();
std::string event_file_version(double wall_time);
std::string event_scalars(double wall_time, int64_t step, const Scalars& scalars);
std::string event_session_start(double wall_time, int64_t step);
std::string tfrecord(const std::string& data);
}  // namespace tensorboard

}  // namespace bk
