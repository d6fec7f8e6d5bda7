#include "tools/prepare_data/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace bk::tok {

using Clock = std::chrono::steady_clock;

namespace {
// 42s, 3m05s, 2h07m
std::string format_eta(double s) {
  const long long t = (long long)(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}
}  // namespace

Progress::Progress(std::string label, double total, std::string unit, double unit_scale)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), scale_(unit_scale),
      start_(Clock::now()), last_(start_), tty_(::isatty(STDERR_FILENO)) {}

double Progress::seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

void Progress::update(double done) {
  done_ = done;
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.1 : 5.0)) return;
  last_ = now;
  print(done, false, "");
}

void Progress::finish(const std::string& extra) { print(done_, true, extra); }

void Progress::print(double done, bool final, const std::string& extra) {
  const double t = seconds();
  const double rate = t > 0 ? done * scale_ / t : 0.0;
  const int prec = scale_ == 1.0 ? 0 : 2;  // counts as integers, scaled units with decimals
  std::string line = fmt::format("[{}] {:.{}f}/{:.{}f} {} {:3.0f}%  {:.{}f} {}/s  {:.2f}s", label_,
                                 done * scale_, prec, total_ * scale_, prec, unit_,
                                 total_ > 0 ? 100.0 * done / total_ : 100.0, rate, prec, unit_, t);
  if (!final && done > 0 && total_ > done) line += "  ETA " + format_eta((total_ - done) * t / done);
  if (!extra.empty()) line += "  " + extra;
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace bk::tok
