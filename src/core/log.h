// Logging: spdlog to the console and, once a run directory exists, to RUN_DIR/train.log.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace bk {

// level: trace | debug | info | warn | error. log_file empty = console only.
void setup_logging(const std::string& level, const std::string& log_file = "");

}  // namespace bk
