// Logging: spdlog to the console and, once a run directory exists, to RUN_DIR/train.log.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace bk {

// level: trace | debug | info | warn | error. log_file empty = console only.
// rank >= 0 (a job of several processes): the console shows that rank's warnings and errors
// only, prefixed "rank R"; its file gets everything at `level`. rank < 0: one process.
void setup_logging(const std::string& level, const std::string& log_file = "", int rank = -1);

}  // namespace bk
