// Valid configs: defaults, strict value syntax, overrides, round trips through to_yaml, and the
// schema's own consistency (every key declared once, in a declared section, with a valid default).
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "config/load.h"
#include "config/schema.h"
#include "core/error.h"

namespace {

const std::string D = "data:\n  train: data/train.bin\n";

std::string error_of(auto&& fn) {
  try {
    fn();
  } catch (const bk::Error& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigLoad, MissingKeysTakeStructDefaults) {
  bk::Config c = bk::parse_config(D, "min.yaml");
  bk::Config ref;
  ref.data.train = "data/train.bin";
  ref.source = "min.yaml";
  EXPECT_EQ(bk::to_yaml(c), bk::to_yaml(ref));
  EXPECT_EQ(c.source, "min.yaml");
  EXPECT_EQ(c.model.dim, 128);
  EXPECT_EQ(c.optimizer.schedule.decay_at, (std::vector<double>{0.8, 0.9}));
}

TEST(ConfigLoad, ReadsEveryType) {
  const std::string text = D +
                           "run:\n  name: exp-1\n  seed: 18446744073709551615\n  device: cpu\n"
                           "model:\n  dim: 256\n  n_heads: 8\n  norm_eps: 1e-5\n  rope_theta: 500000\n"
                           "training:\n  steps: +5000000000\n  global_batch_size: 64\n"
                           "optimizer:\n  lr: 3e-3\n  schedule:\n    kind: step\n    decay_at:\n      - 0.5\n"
                           "      - 0.75\n    decay_factors: [0.5, 0.25]\n"
                           "checkpoint:\n  save_final: false\n";
  bk::Config c = bk::parse_config(text, "t.yaml");
  EXPECT_EQ(c.run.name, "exp-1");
  EXPECT_EQ(c.run.seed, 18446744073709551615ull);
  EXPECT_EQ(c.run.device, "cpu");
  EXPECT_EQ(c.model.dim, 256);
  EXPECT_EQ(c.model.norm_eps, 1e-5);
  EXPECT_EQ(c.model.rope_theta, 500000.0);  // an integer is fine for a float
  EXPECT_EQ(c.training.steps, 5000000000);
  EXPECT_EQ(c.optimizer.lr, 3e-3);
  EXPECT_EQ(c.optimizer.schedule.kind, "step");
  EXPECT_EQ(c.optimizer.schedule.decay_at, (std::vector<double>{0.5, 0.75}));
  EXPECT_EQ(c.optimizer.schedule.decay_factors, (std::vector<double>{0.5, 0.25}));
  EXPECT_FALSE(c.checkpoint.save_final);
}

TEST(ConfigLoad, EmptySectionsAndStringsAreAllowed) {
  bk::Config c = bk::parse_config(D + "model:\nlogging: {}\nrun:\n  dir:\n", "e.yaml");
  EXPECT_EQ(c.model.dim, 128);
  EXPECT_EQ(c.run.dir, "");
}

TEST(ConfigOverrides, NestedListsAndAbsentKeys) {
  bk::Config c = bk::parse_config(D + "training:\n  steps: 100\n", "o.yaml",
                                  {"optimizer.schedule.kind=step", "optimizer.schedule.decay_at=[0.5,0.75]",
                                   "optimizer.schedule.decay_factors=[0.3, 0.1]", "model.dim=256",
                                   "optimizer.schedule.warmup_steps=10", "run.name=with spaces",
                                   "training.steps=2000", "training.steps=3000", "data.val="});
  EXPECT_EQ(c.optimizer.schedule.kind, "step");
  EXPECT_EQ(c.optimizer.schedule.decay_at, (std::vector<double>{0.5, 0.75}));
  EXPECT_EQ(c.optimizer.schedule.decay_factors, (std::vector<double>{0.3, 0.1}));
  EXPECT_EQ(c.model.dim, 256);  // model: is absent from the file
  EXPECT_EQ(c.run.name, "with spaces");
  EXPECT_EQ(c.training.steps, 3000);  // the last override wins
  EXPECT_EQ(c.data.val, "");
}

TEST(ConfigOverrides, RangesAndRulesApplyToFinalValues) {
  // Out of range in the file, fixed on the command line: fine, ranges see the final value.
  bk::Config c = bk::parse_config(D + "training:\n  steps: 0\n", "o.yaml", {"training.steps=100"});
  EXPECT_EQ(c.training.steps, 100);
  // A rule broken by the file and repaired by an override.
  c = bk::parse_config(D + "model:\n  n_heads: 3\n", "o.yaml", {"model.dim=96"});
  EXPECT_EQ(c.model.dim / c.model.n_heads, 32);
  // Overrides can supply the required key.
  c = bk::parse_config("", "empty.yaml", {"data.train=x.bin"});
  EXPECT_EQ(c.data.train, "x.bin");
}

TEST(ConfigRoundTrip, ToYamlParsesBackToTheSameConfig) {
  bk::Config c = bk::parse_config(D, "r.yaml");
  c.run.name = "quote\" back\\slash: #hash\ttab\nnewline \x01 ünï";
  c.run.dir = "";
  c.run.seed = 18446744073709551615ull;
  c.run.device = "cuda";
  c.model.init_std = 0.1 + 0.2;  // not exactly representable: must still round-trip bit for bit
  c.model.norm_eps = 1e-300;
  c.model.rope_theta = 1e20;
  c.optimizer.lr = 1.0 / 3.0;
  c.optimizer.schedule.kind = "constant";
  c.optimizer.schedule.decay_at = {};
  c.optimizer.schedule.decay_factors = {};
  c.training.steps = 9000000000;
  c.logging.jsonl = false;
  bk::validate_config(c);

  const std::string y1 = bk::to_yaml(c);
  bk::Config back = bk::parse_config(y1, "resolved.yaml");
  EXPECT_EQ(bk::to_yaml(back), y1) << y1;
  EXPECT_EQ(back.run.name, c.run.name);
  EXPECT_EQ(back.model.init_std, c.model.init_std);
  EXPECT_EQ(back.optimizer.lr, c.optimizer.lr);
  EXPECT_EQ(back.model.norm_eps, 1e-300);
  EXPECT_TRUE(back.optimizer.schedule.decay_at.empty());

  // And from a file with overrides: parse -> to_yaml -> parse -> to_yaml is a fixed point.
  bk::Config f = bk::parse_config(D + "model:\n  dim: 64\n", "x.yaml", {"optimizer.schedule.decay_at=[0.25,0.5]"});
  const std::string y2 = bk::to_yaml(f);
  EXPECT_EQ(bk::to_yaml(bk::parse_config(y2, "x2.yaml")), y2);
}

TEST(ConfigRoundTrip, ToYamlListsEveryKeyOnce) {
  bk::Config c = bk::parse_config(D, "r.yaml");
  const std::string y = bk::to_yaml(c);
  YAML::Node root = YAML::Load(y);
  size_t leaves = 0;
  for (const bk::schema::Key& k : bk::schema::keys()) {
    YAML::Node n = YAML::Clone(root);
    std::string path(k.path);
    for (size_t pos = 0;;) {
      size_t dot = path.find('.', pos);
      n = n[path.substr(pos, dot - pos)];
      ASSERT_TRUE(n.IsDefined()) << k.path << " missing from\n" << y;
      if (dot == std::string::npos) break;
      pos = dot + 1;
    }
    EXPECT_EQ(bk::schema::format_value(k.ref(c)).find('\n'), std::string::npos);
    ++leaves;
  }
  // One line per key, one per section header, one blank line between top-level sections.
  size_t top = 0;
  for (const auto& s : bk::schema::sections()) top += s.path.find('.') == std::string_view::npos;
  EXPECT_EQ(size_t(std::count(y.begin(), y.end(), '\n')), leaves + bk::schema::sections().size() + top - 1);
}

TEST(ConfigFile, LoadsFileAndNamesItInErrors) {
  const auto dir = std::filesystem::temp_directory_path() / ("bk_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string good = (dir / "good.yaml").string(), bad = (dir / "bad.yaml").string();
  std::ofstream(good) << D << "model:\n  dim: 64\n";
  std::ofstream(bad) << D << "model:\n  dim: 64\n  n_heads: four\n";
  EXPECT_EQ(bk::load_config(good).model.dim, 64);
  EXPECT_EQ(bk::load_config(good, {"model.dim=32"}).model.dim, 32);
  EXPECT_EQ(bk::load_config(good).source, good);
  EXPECT_EQ(error_of([&] { bk::load_config(bad); }).rfind(bad + ":5: model.n_heads:", 0), 0u);
  const std::string missing = (dir / "nope.yaml").string();
  EXPECT_NE(error_of([&] { bk::load_config(missing); }).find(missing), std::string::npos);
  EXPECT_NE(error_of([&] { bk::load_config(dir.string()); }).find("not a regular file"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(ConfigValidate, ChecksConfigsBuiltInCode) {
  bk::Config c;
  c.data.train = "x.bin";
  bk::validate_config(c);
  c.source = "code";
  c.model.n_heads = 5;
  const std::string msg = error_of([&] { bk::validate_config(c); });
  EXPECT_EQ(msg.rfind("code: model.dim must be divisible by model.n_heads", 0), 0u) << msg;
  c.model.n_heads = 4;
  c.optimizer.beta2 = 1.0;
  EXPECT_NE(error_of([&] { bk::validate_config(c); }).find("optimizer.beta2 must be in [0, 1)"), std::string::npos);
}

// Members of an aggregate, counted by brace-initialising it with ever more convertible-to-anything
// values; lets the test below see a struct field that has no schema key.
struct AnyField {
  template <typename T>
  operator T() const;
};
template <typename T, typename... A>
constexpr size_t field_count() {
  if constexpr (requires { T{A{}..., AnyField{}}; }) return field_count<T, A..., AnyField>();
  else return sizeof...(A);
}

TEST(ConfigSchema, EveryStructFieldHasAKey) {
  const std::pair<std::string_view, size_t> structs[] = {
      {"run", field_count<bk::RunConfig>()},         {"model", field_count<bk::ModelConfig>()},
      {"model.residual", field_count<bk::ResidualConfig>()},
      {"model.mla", field_count<bk::MlaConfig>()},
      {"model.moe", field_count<bk::MoeConfig>()},
      {"model.mtp", field_count<bk::MtpConfig>()},
      {"data", field_count<bk::DataConfig>()},       {"training", field_count<bk::TrainingConfig>()},
      {"optimizer", field_count<bk::OptimizerConfig>()}, {"optimizer.schedule", field_count<bk::LrSchedule>()},
      {"parallel", field_count<bk::ParallelConfig>()}, {"checkpoint", field_count<bk::CheckpointConfig>()},
      {"logging", field_count<bk::LoggingConfig>()},
  };
  for (auto [section, fields] : structs)
    EXPECT_EQ(bk::schema::children(section).size(), fields)
        << "the struct behind '" << section << "' has a field without a schema key (or the reverse): "
        << "add it to the table in src/config/schema.cpp";
  // Config's members: one per top-level section, plus `source`.
  EXPECT_EQ(bk::schema::children("").size() + 1, field_count<bk::Config>()) << "a section is not in the schema";
  EXPECT_EQ(std::size(structs), bk::schema::sections().size()) << "update this test's struct list";
}

TEST(ConfigSchema, IsConsistent) {
  using namespace bk::schema;
  bk::Config probe;
  std::set<std::string_view> paths;
  std::set<const void*> fields;
  std::set<std::string_view> done_sections;  // a section's keys are contiguous (to_yaml relies on it)
  std::string_view current;
  for (const Key& k : keys()) {
    SCOPED_TRACE(std::string(k.path));
    EXPECT_TRUE(paths.insert(k.path).second) << "declared twice";
    EXPECT_TRUE(fields.insert(std::visit([](auto* p) -> const void* { return p; }, k.ref(probe))).second)
        << "two keys share a field";
    EXPECT_NE(find_section(k.section()), nullptr) << "section not declared";
    if (k.section() != current) {
      EXPECT_TRUE(done_sections.insert(k.section()).second) << "section's keys are not contiguous";
      current = k.section();
    }
    EXPECT_FALSE(k.doc.empty());
    EXPECT_EQ(k.doc.find('\n'), std::string_view::npos);
    EXPECT_EQ(k.doc.back(), '.') << "docs are sentences";
    if (k.path != "data.train") {
      EXPECT_EQ(check_value(k, probe), "") << "default not allowed";
    }
  }
  for (const Section& s : sections()) {
    EXPECT_FALSE(children(s.path).empty()) << s.path << " is empty";
    EXPECT_TRUE(s.path.find('.') == std::string_view::npos || find_section(parent(s.path))) << s.path;
  }
  for (const Rule& r : rules()) {
    EXPECT_TRUE(r.holds(probe)) << r.doc << ": defaults break it";
    for (std::string_view p : r.keys) EXPECT_NE(find_key(p), nullptr) << r.doc << " names unknown " << p;
  }
}

}  // namespace
