// Checkpoint writing: RUN_DIR/checkpoints/step_XXXXXXXX/{model.safetensors, state.json}.
// Written into a temporary directory, fsynced, renamed into place, and only then is the
// `latest` pointer replaced (also by rename), so a run killed at any moment leaves the previous
// checkpoint intact.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace bk {

struct CheckpointContents {
  int64_t step = 0;
  std::vector<NamedTensor> model;  // global parameter names
  nlohmann::json state;            // step, tokens, config, ... (state.json)
};

// Returns the final directory path.
std::string save_checkpoint(const std::string& run_dir, const CheckpointContents& ckpt);

// RUN_DIR/checkpoints/step_00001200
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

}  // namespace bk
