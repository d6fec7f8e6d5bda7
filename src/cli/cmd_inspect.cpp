// birkhoff inspect PATH [--verify] [--json]: what a checkpoint holds (docs/checkpoint-format.md).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <yaml-cpp/yaml.h>

#include "cli/commands.h"
#include "config/load.h"
#include "core/buffer.h"
#include "core/error.h"
#include "io/checkpoint.h"

namespace bk {

namespace {

const char* kInspectUsage =
    "usage: birkhoff inspect PATH [--verify] [--json]\n"
    "  PATH      a checkpoint directory (RUN_DIR/checkpoints/step_XXXXXXXX) or a run directory (its latest)\n"
    "  --verify  check the CRC32C of every file against state.json (exit 1 on a mismatch)\n"
    "  --json    print everything as one JSON object, with per-tensor statistics (l2, mean, min, max)";

std::string shape_str(const Shape& s) { return s.str(); }

std::string with_commas(uint64_t v) {
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

double element(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::f32: return static_cast<const float*>(t.data)[i];
    case DType::f64: return static_cast<const double*>(t.data)[i];
    case DType::i32: return static_cast<const int32_t*>(t.data)[i];
    case DType::i64: return double(static_cast<const int64_t*>(t.data)[i]);
    case DType::bf16: {
      uint32_t bits = uint32_t(static_cast<const uint16_t*>(t.data)[i]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
  }
  return 0;
}

// l2 norm, mean, min, max in double (empty tensors: zeros; NaN/inf propagate and print as null).
nlohmann::json tensor_stats(const Tensor& t) {
  const int64_t n = t.numel();
  double sumsq = 0, sum = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (int64_t i = 0; i < n; ++i) {
    const double x = element(t, i);
    sumsq += x * x;
    sum += x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  if (n == 0) lo = hi = 0;
  return {{"l2", std::sqrt(sumsq)}, {"mean", n ? sum / double(n) : 0.0}, {"min", lo}, {"max", hi}};
}

// The recorded config: validated with parse_config (so inspect says whether eval and resume can
// use it), and its model section as JSON, taken from the YAML itself so that the summary shows
// every model.* key whatever the schema of the build.
struct ConfigSummary {
  bool valid = false;
  std::string error;                               // why it cannot be used
  std::string run_name;
  nlohmann::ordered_json model = nlohmann::ordered_json::object();  // model.* keys, in YAML order
};

nlohmann::ordered_json yaml_to_json(const YAML::Node& n) {
  if (n.IsMap()) {
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (const auto& kv : n) out[kv.first.as<std::string>()] = yaml_to_json(kv.second);
    return out;
  }
  if (n.IsSequence()) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& v : n) out.push_back(yaml_to_json(v));
    return out;
  }
  if (!n.IsScalar()) return nullptr;
  const std::string text = n.Scalar();
  if (n.Tag() == "!") return text;  // quoted: a string
  try {
    size_t used = 0;
    const long long i = std::stoll(text, &used);
    if (used == text.size()) return i;
    const double d = std::stod(text, &used);
    if (used == text.size()) return d;
  } catch (const std::exception&) {
  }
  if (text == "true" || text == "false") return text == "true";
  return text;
}

ConfigSummary read_config(const Checkpoint& ck) {
  ConfigSummary out;
  const auto& s = ck.state();
  if (!s.contains("config") || !s["config"].is_string()) {
    out.error = "state.json records no config";
    return out;
  }
  const std::string text = s["config"].get<std::string>();
  try {
    const Config cfg = parse_config(text, ck.dir() + "/state.json");
    out.valid = true;
    out.run_name = cfg.run.name;
  } catch (const Error& e) {
    out.error = e.what();
  }
  try {
    const YAML::Node root = YAML::Load(text);
    if (root["model"]) out.model = yaml_to_json(root["model"]);
  } catch (const std::exception&) {
    // parse_config has already said why
  }
  return out;
}

std::string scalar_str(const nlohmann::ordered_json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string state_str(const nlohmann::json& s, const char* key) {
  if (!s.contains(key)) return "?";
  return s[key].is_string() ? s[key].get<std::string>() : s[key].dump();
}

nlohmann::json tensors_json(const Checkpoint& ck, const std::map<std::string, Checkpoint::TensorInfo>& tensors,
                            bool model) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, t] : tensors) {
    Buffer buf(t.shape, t.dtype);
    if (model) ck.read_model(name, buf);
    else ck.read_optimizer(name, buf);
    std::vector<int64_t> shape(t.shape.d.begin(), t.shape.d.begin() + t.shape.ndim);
    nlohmann::json j = {{"name", name}, {"dtype", safetensors_dtype(t.dtype)}, {"shape", shape},
                        {"numel", t.shape.numel()}, {"file", t.file}};
    j.update(tensor_stats(buf));
    out.push_back(std::move(j));
  }
  return out;
}

int64_t count_params(const std::map<std::string, Checkpoint::TensorInfo>& tensors) {
  int64_t n = 0;
  for (const auto& [name, t] : tensors) n += t.shape.numel();
  return n;
}

void print_tensor_table(const std::map<std::string, Checkpoint::TensorInfo>& tensors) {
  size_t wn = 4, ws = 5;
  for (const auto& [name, t] : tensors) {
    wn = std::max(wn, name.size());
    ws = std::max(ws, shape_str(t.shape).size());
  }
  fmt::print("  {:<{}}  {:<5}  {:<{}}  {:>12}\n", "name", wn, "dtype", "shape", ws, "numel");
  for (const auto& [name, t] : tensors)
    fmt::print("  {:<{}}  {:<5}  {:<{}}  {:>12}\n", name, wn, safetensors_dtype(t.dtype), shape_str(t.shape), ws,
               with_commas(uint64_t(t.shape.numel())));
}

}  // namespace

int cmd_inspect(const Args& args) {
  ParsedArgs a = parse_args(args, {"--verify", "--json"}, kInspectUsage);
  if (a.help) return fmt::print("{}\n", kInspectUsage), 0;
  BK_CHECK(a.sets.empty(), "inspect takes no --set\n{}", kInspectUsage);
  BK_CHECK(a.positional.size() == 1, "inspect needs exactly one checkpoint or run directory\n{}", kInspectUsage);
  const bool verify = a.has("--verify"), as_json = a.has("--json");
  // Without --verify the files' sizes and headers are still checked; only the CRC pass is skipped.
  const Checkpoint ck = Checkpoint::open(a.positional[0], verify);
  const nlohmann::json& s = ck.state();
  const ConfigSummary conf = read_config(ck);
  const int64_t n_params = count_params(ck.model_tensors());

  if (as_json) {
    nlohmann::json files = nlohmann::json::object();
    for (const auto& [name, f] : ck.files())
      files[name] = {{"bytes", f.bytes}, {"crc32c", fmt::format("{:08x}", f.crc32c)}, {"verified", verify}};
    nlohmann::json out = {{"checkpoint", ck.dir()},
                          {"step", ck.step()},
                          {"tokens", s.value("tokens", nlohmann::json())},
                          {"format_version", s["format_version"]},
                          {"birkhoff_version", s.value("birkhoff_version", nlohmann::json())},
                          {"config_hash", s.value("config_hash", nlohmann::json())},
                          {"parameters", n_params},
                          {"checksums_verified", verify},
                          {"files", files},
                          {"model", tensors_json(ck, ck.model_tensors(), true)},
                          {"optimizer", tensors_json(ck, ck.optimizer_tensors(), false)},
                          {"state", s}};
    out["model_config"] = nlohmann::json::parse(conf.model.dump());
    if (!conf.valid) out["config_error"] = conf.error;
    fmt::print("{}\n", out.dump(2));
    return verify && !conf.valid ? 1 : 0;
  }

  fmt::print("checkpoint  {}\n", ck.dir());
  fmt::print("step        {} | tokens {} | format {} | written by birkhoff {}\n", ck.step(),
             s.contains("tokens") && s["tokens"].is_number_unsigned() ? with_commas(s["tokens"].get<uint64_t>())
                                                                     : state_str(s, "tokens"),
             s["format_version"].dump(), state_str(s, "birkhoff_version"));
  if (conf.model.is_object() && !conf.model.empty()) {
    // "model       residual mhc | attention mha | ffn dense" then the scalar keys, then each
    // sub-section (residual, mla, moe, ...) on a line of its own.
    const nlohmann::ordered_json& m = conf.model;
    std::string head = m.contains("residual") && m["residual"].contains("mode")
                           ? "residual " + scalar_str(m["residual"]["mode"]) : std::string();
    for (const char* k : {"attention", "ffn"})
      if (m.contains(k)) head += (head.empty() ? "" : " | ") + std::string(k) + " " + scalar_str(m[k]);
    std::string scalars;
    for (const auto& [k, v] : m.items())
      if (!v.is_object() && k != "attention" && k != "ffn") scalars += (scalars.empty() ? "" : ", ") + k + " " + scalar_str(v);
    fmt::print("model       {}\n", head.empty() ? scalars : head);
    if (!head.empty()) fmt::print("            {}\n", scalars);
    for (const auto& [k, v] : m.items()) {
      if (!v.is_object()) continue;
      std::string line;
      for (const auto& [k2, v2] : v.items()) line += (line.empty() ? "" : ", ") + k2 + " " + scalar_str(v2);
      fmt::print("            {}: {}\n", k, line);
    }
  }
  if (conf.valid)
    fmt::print("config      run {} | hash {}\n", conf.run_name, state_str(s, "config_hash"));
  else
    fmt::print("config      not usable by eval or resume: {}\n", conf.error);
  fmt::print("parameters  {} in {} tensors\n", with_commas(uint64_t(n_params)), ck.model_tensors().size());

  fmt::print("\nfiles\n");
  size_t wf = 4;
  for (const auto& [name, f] : ck.files()) wf = std::max(wf, name.size());
  for (const auto& [name, f] : ck.files())
    fmt::print("  {:<{}}  {:>14} bytes  crc32c {:08x}  {}\n", name, wf, with_commas(f.bytes), f.crc32c,
               verify ? "ok" : "not verified");

  fmt::print("\nmodel tensors ({})\n", ck.model_tensors().size());
  print_tensor_table(ck.model_tensors());
  if (!ck.optimizer_tensors().empty()) {
    fmt::print("\noptimizer tensors ({}, {} values)\n", ck.optimizer_tensors().size(),
               with_commas(uint64_t(count_params(ck.optimizer_tensors()))));
    print_tensor_table(ck.optimizer_tensors());
  } else {
    fmt::print("\nno optimizer state\n");
  }
  if (verify) {
    BK_CHECK(conf.valid, "{}/state.json: {}", ck.dir(), conf.error);
    fmt::print("\nverified: every file matches its CRC32C in state.json\n");
  }
  return 0;
}

}  // namespace bk
