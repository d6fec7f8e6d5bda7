#include "core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/error.h"

namespace bk {

void setup_logging(const std::string& level, const std::string& log_file, int rank) {
  std::vector<spdlog::sink_ptr> sinks;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  if (rank < 0) {
    console->set_pattern("%^[%H:%M:%S %L]%$ %v");
  } else {
    console->set_pattern(fmt::format("%^[%H:%M:%S %L rank {}]%$ %v", rank));
    if (rank > 0) console->set_level(spdlog::level::warn);
  }
  sinks.push_back(console);
  if (!log_file.empty()) {
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file, false);
    file->set_pattern("[%Y-%m-%d %H:%M:%S.%e %L] %v");
    sinks.push_back(file);
  }
  auto logger = std::make_shared<spdlog::logger>("birkhoff", sinks.begin(), sinks.end());
  auto lvl = spdlog::level::from_str(level);
  BK_CHECK(lvl != spdlog::level::off || level == "off", "unknown log level '{}'", level);
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace bk
