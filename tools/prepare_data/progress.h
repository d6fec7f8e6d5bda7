// Progress: a one-line console meter for long phases
// ("[encode] 2.10/4.40 MB  48%  1.05 MB/s  2.00s  ETA 2s": done/total, rate, elapsed, remaining).
// On a terminal the line redraws in place (at most 10 times a second); when stderr is a file or
// pipe it prints a line every few seconds instead, so logs stay readable.
#pragma once
#include <chrono>
#include <string>

namespace bk::tok {

class Progress {
 public:
  // unit_scale converts counts to the shown unit (e.g. 1e-6 for bytes shown as MB).
  Progress(std::string label, double total, std::string unit, double unit_scale = 1.0);
  void update(double done);
  // Final line at the last update()d count; extra is appended (e.g. tokens written).
  void finish(const std::string& extra = "");
  double seconds() const;

 private:
  void print(double done, bool final, const std::string& extra);
  std::string label_, unit_;
  double total_, scale_;
  std::chrono::steady_clock::time_point start_, last_;
  bool tty_;
  double done_ = 0;
};

}  // namespace bk::tok
