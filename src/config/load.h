// Reading, checking and writing configs. Every function is driven by the schema
// (config/schema.h); errors are bk::Error with messages that name the file and line (or the
// --set argument), the key, and what is allowed:
//   configs/x.yaml:12: model.n_heads: expected an integer >= 1, got "four"
//   --set training.steps=-1: training.steps must be >= 1, got -1
#pragma once
#include <string>
#include <vector>

#include "config/config.h"

namespace bk {

// Parse a YAML file, then apply overrides ("a.b=c"; the value is read as a YAML scalar or flow
// list, e.g. "optimizer.schedule.decay_at=[0.5,0.75]"), then validate the result.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same from text; source_name stands for the file in messages.
Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});

// Range and consistency checks of a config built in code (load/parse already run them).
void validate_config(const Config& cfg);

// The resolved config: every key, in schema order; parse_config reads it back to the same values.
std::string to_yaml(const Config& cfg);

// Keys whose values differ between two configs, in schema order.
struct ConfigDifference {
  std::string key, before, after;  // values as YAML text
};
std::vector<ConfigDifference> diff_configs(const Config& before, const Config& after);

// docs/config.md (`birkhoff config --reference > docs/config.md`).
std::string config_reference_markdown();

}  // namespace bk
