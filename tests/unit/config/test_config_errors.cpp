// Malformed configs, one per row: each must fail with a message that starts at the value's
// origin (file:line, or the --set argument) and names the key and what is allowed.
#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

#include "config/load.h"
#include "core/error.h"

namespace {

// Every row starts from a config that is valid on its own; lines 1-2.
const std::string D = "data:\n  train: data/train.bin\n";

struct BadCase {
  std::string name;
  std::string yaml;
  std::vector<std::string> sets;
  std::string at;  // the message starts with "<at>: "; "bad.yaml:" = any line; "bad.yaml" only
                   // where no line holds the fault (a required key that is absent)
  std::string key;                // named in the message ("" for syntax errors)
  std::vector<std::string> also;  // further text the message must hold
};
// The printed parameter becomes part of the ctest name (gtest_discover_tests): keep it short.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

const std::vector<BadCase> kCases = {
    // unknown keys
    {"unknown_key", D + "model:\n  dimm: 256\n", {}, "bad.yaml:4", "model.dimm",
     {"unknown key 'model.dimm'", "did you mean 'model.dim'", "allowed keys in 'model': vocab_size, dim,"}},
    {"unknown_section", D + "modle:\n  dim: 256\n", {}, "bad.yaml:3", "modle",
     {"did you mean 'model'", "allowed top-level sections: run, model, data"}},
    {"key_in_wrong_section", D + "training:\n  lr: 0.1\n", {}, "bad.yaml:4", "training.lr",
     {"did you mean 'optimizer.lr'"}},
    {"unknown_nested_key", D + "optimizer:\n  schedule:\n    warmup: 10\n", {}, "bad.yaml:5",
     "optimizer.schedule.warmup", {"allowed keys in 'optimizer.schedule': kind, warmup_steps"}},
    {"duplicate_key", D + "model:\n  dim: 64\n  dim: 128\n", {}, "bad.yaml:5", "model.dim",
     {"duplicate key", "first set on line 4"}},
    // wrong types
    {"int_word", D + "model:\n  n_heads: four\n", {}, "bad.yaml:4", "model.n_heads",
     {"expected an integer >= 1, got \"four\""}},
    {"int_fraction", D + "model:\n  dim: 3.5\n", {}, "bad.yaml:4", "model.dim", {"expected an integer >= 1, got \"3.5\""}},
    {"int_exponent", D + "training:\n  steps: 1e3\n", {}, "bad.yaml:4", "training.steps", {"expected an integer"}},
    {"int_overflow", D + "model:\n  dim: 99999999999\n", {}, "bad.yaml:4", "model.dim", {"expected an integer"}},
    {"int_quoted", D + "training:\n  steps: \"100\"\n", {}, "bad.yaml:4", "training.steps", {"quoted"}},
    {"int_null", D + "model:\n  dim:\n", {}, "bad.yaml:4", "model.dim", {"got no value"}},
    {"bool_yes", D + "logging:\n  jsonl: yes\n", {}, "bad.yaml:4", "logging.jsonl", {"expected true or false, got \"yes\""}},
    {"double_word", D + "optimizer:\n  lr: fast\n", {}, "bad.yaml:4", "optimizer.lr", {"expected a number > 0"}},
    {"double_inf", D + "optimizer:\n  lr: .inf\n", {}, "bad.yaml:4", "optimizer.lr", {"expected a number"}},
    {"string_list", D + "run:\n  name: [a, b]\n", {}, "bad.yaml:4", "run.name", {"got a list"}},
    {"section_scalar", D + "model: 5\n", {}, "bad.yaml:3", "model", {"expected a mapping with keys vocab_size, dim"}},
    {"leaf_mapping", D + "model:\n  dim: {x: 1}\n", {}, "bad.yaml:4", "model.dim", {"got a mapping"}},
    {"list_scalar", D + "optimizer:\n  schedule:\n    decay_at: 0.5\n", {}, "bad.yaml:5", "optimizer.schedule.decay_at",
     {"expected a list of numbers, each in (0, 1)"}},
    {"list_element", D + "optimizer:\n  schedule:\n    decay_at:\n      - 0.5\n      - half\n", {}, "bad.yaml:7",
     "optimizer.schedule.decay_at[1]", {"expected a number, got \"half\""}},
    // out of range
    {"lr_zero", D + "optimizer:\n  lr: 0\n", {}, "bad.yaml:4", "optimizer.lr", {"must be > 0, got 0.0"}},
    {"beta1_one", D + "optimizer:\n  beta1: 1.0\n", {}, "bad.yaml:4", "optimizer.beta1", {"must be in [0, 1), got 1.0"}},
    {"beta2_negative", D + "optimizer:\n  beta2: -0.5\n", {}, "bad.yaml:4", "optimizer.beta2", {"in [0, 1)"}},
    {"eps_negative", D + "optimizer:\n  eps: -1e-8\n", {}, "bad.yaml:4", "optimizer.eps", {"must be > 0"}},
    {"weight_decay_negative", D + "optimizer:\n  weight_decay: -0.1\n", {}, "bad.yaml:4", "optimizer.weight_decay",
     {"must be >= 0"}},
    {"min_lr_ratio_above_one", D + "optimizer:\n  schedule:\n    min_lr_ratio: 1.5\n", {}, "bad.yaml:5",
     "optimizer.schedule.min_lr_ratio", {"must be in [0, 1], got 1.5"}},
    {"decay_factor_zero", D + "optimizer:\n  schedule:\n    decay_factors: [0.5, 0]\n", {}, "bad.yaml:5",
     "optimizer.schedule.decay_factors[1]", {"must be in (0, 1], got 0.0"}},
    {"decay_at_one", D + "optimizer:\n  schedule:\n    decay_at: [0.5, 1]\n", {}, "bad.yaml:5",
     "optimizer.schedule.decay_at[1]", {"must be in (0, 1)"}},
    {"init_std_zero", D + "model:\n  init_std: 0\n", {}, "bad.yaml:4", "model.init_std", {"must be > 0"}},
    {"norm_eps_zero", D + "model:\n  norm_eps: 0.0\n", {}, "bad.yaml:4", "model.norm_eps", {"must be > 0"}},
    {"rope_theta_negative", D + "model:\n  rope_theta: -1\n", {}, "bad.yaml:4", "model.rope_theta", {"must be > 0"}},
    {"seed_negative", D + "run:\n  seed: -1\n", {}, "bad.yaml:4", "run.seed", {"expected an integer >= 0"}},
    {"threads_negative", D + "run:\n  threads: -2\n", {}, "bad.yaml:4", "run.threads", {"must be >= 0, got -2"}},
    {"dp_zero", D + "parallel:\n  dp: 0\n", {}, "bad.yaml:4", "parallel.dp", {"must be >= 1, got 0"}},
    {"pp_zero", D + "parallel:\n  pp: 0\n", {}, "bad.yaml:4", "parallel.pp", {"must be >= 1"}},
    {"steps_zero", D + "training:\n  steps: 0\n", {}, "bad.yaml:4", "training.steps", {"must be >= 1, got 0"}},
    {"micro_batch_zero", D + "training:\n  micro_batch_size: 0\n", {}, "bad.yaml:4", "training.micro_batch_size",
     {"must be >= 1"}},
    {"vocab_zero", D + "model:\n  vocab_size: 0\n", {}, "bad.yaml:4", "model.vocab_size", {"must be >= 1"}},
    // choices
    {"device_choice", D + "run:\n  device: gpu\n", {}, "bad.yaml:4", "run.device",
     {"must be one of auto, cpu, cuda, got \"gpu\""}},
    {"schedule_choice", D + "optimizer:\n  schedule:\n    kind: linear\n", {}, "bad.yaml:5", "optimizer.schedule.kind",
     {"one of cosine, step, constant"}},
    {"log_level_choice", D + "logging:\n  level: verbose\n", {}, "bad.yaml:4", "logging.level",
     {"one of trace, debug, info, warn, error"}},
    // required
    {"train_missing", "model:\n  dim: 64\n", {}, "bad.yaml", "data.train", {"required"}},
    {"train_empty", "data:\n  train: \"\"\n", {}, "bad.yaml:2", "data.train", {"required"}},
    // rules between keys: the error points at the key set last and names every key involved
    {"dim_not_divisible", D + "model:\n  dim: 130\n  n_heads: 4\n", {}, "bad.yaml:5", "model.dim",
     {"model.n_heads", "divisible", "model.dim = 130 (bad.yaml:4)"}},
    {"head_dim_odd", D + "model:\n  dim: 12\n  n_heads: 4\n", {}, "bad.yaml:5", "model.dim", {"model.n_heads", "even"}},
    {"global_batch", D + "training:\n  micro_batch_size: 8\n  global_batch_size: 20\n", {}, "bad.yaml:5",
     "training.global_batch_size", {"training.micro_batch_size", "parallel.dp = 1 (default)"}},
    {"global_batch_dp", D + "parallel:\n  dp: 3\ntraining:\n  micro_batch_size: 4\n  global_batch_size: 16\n", {},
     "bad.yaml:7", "training.global_batch_size", {"parallel.dp = 3 (bad.yaml:4)"}},
    {"global_batch_ep", D + "parallel:\n  ep: 3\nmodel:\n  ffn: moe\n  moe:\n    routed_experts: 6\n"
     "training:\n  micro_batch_size: 4\n  global_batch_size: 16\n", {}, "bad.yaml:11", "training.global_batch_size",
     {"parallel.ep = 3 (bad.yaml:4)"}},
    {"eval_batches_ranks", D + "parallel:\n  dp: 2\n  ep: 1\ntraining:\n  global_batch_size: 32\n  eval_batches: 3\n",
     {}, "bad.yaml:8", "training.eval_batches", {"multiple of parallel.dp * parallel.ep", "parallel.dp = 2"}},
    {"experts_ep", D + "parallel:\n  ep: 4\nmodel:\n  ffn: moe\n  moe:\n    routed_experts: 6\n    n_groups: 1\n"
     "training:\n  global_batch_size: 64\n  eval_batches: 8\n", {}, "bad.yaml:8", "model.moe.routed_experts",
     {"multiple of parallel.ep", "parallel.ep = 4 (bad.yaml:4)"}},
    {"ep_dense", D + "parallel:\n  ep: 2\ntraining:\n  global_batch_size: 32\n", {}, "bad.yaml:4", "parallel.ep",
     {"needs a MoE model"}},
    {"schedule_kind", D + "parallel:\n  schedule: gpipe\n", {}, "bad.yaml:4", "parallel.schedule",
     {"one of 1f1b, dualpipe, dualpipev"}},
    {"recompute_mode", D + "training:\n  recompute: some\n", {}, "bad.yaml:4", "training.recompute",
     {"one of none, mhc, full"}},
    {"zero_two", D + "parallel:\n  zero: 2\n", {}, "bad.yaml:4", "parallel.zero", {"must be in [0, 1], got 2"}},
    {"timeout_zero", D + "parallel:\n  timeout_s: 0\n", {}, "bad.yaml:4", "parallel.timeout_s", {"must be > 0"}},
    {"decay_lengths", D + "optimizer:\n  schedule:\n    decay_at: [0.5]\n", {}, "bad.yaml:5",
     "optimizer.schedule.decay_at", {"optimizer.schedule.decay_factors", "same length"}},
    {"decay_not_increasing", D + "optimizer:\n  schedule:\n    decay_at: [0.9, 0.8]\n", {}, "bad.yaml:5",
     "optimizer.schedule.decay_at", {"strictly increasing"}},
    {"warmup_too_long", D + "training:\n  steps: 10\n", {}, "bad.yaml:4", "optimizer.schedule.warmup_steps",
     {"training.steps = 10", "less than"}},
    {"eval_batches_zero", D + "training:\n  eval_batches: 0\n", {}, "bad.yaml:4", "training.eval_batches",
     {"training.eval_interval"}},
    // document structure
    {"syntax_error", D + "model: [1,\n  dim: 3\n", {}, "bad.yaml:", "", {"YAML syntax error"}},
    {"tab_indent", D + "model:\n\tdim: 3\n", {}, "bad.yaml:", "", {"YAML syntax error"}},
    {"top_level_list", "- 1\n- 2\n", {}, "bad.yaml:1", "", {"top level", "run, model"}},
    {"two_documents", D + "---\nmodel: {}\n", {}, "bad.yaml:", "", {"one YAML document"}},
    // overrides
    {"set_out_of_range", D, {"training.steps=-1"}, "--set training.steps=-1", "training.steps",
     {"training.steps must be >= 1, got -1"}},
    {"set_unknown_key", D, {"model.dimm=3"}, "--set model.dimm=3", "model.dimm", {"did you mean 'model.dim'"}},
    {"set_unknown_section", D, {"modle.dim=3"}, "--set modle.dim=3", "modle.dim",
     {"did you mean 'model.dim'", "allowed top-level sections"}},
    {"set_section", D, {"model=3"}, "--set model=3", "model", {"is a section", "model.vocab_size="}},
    {"set_under_leaf", D, {"model.dim.x=3"}, "--set model.dim.x=3", "model.dim", {"takes a value"}},
    {"set_no_equals", D, {"model.dim"}, "--set model.dim", "model.dim", {"KEY=VALUE"}},
    {"set_wrong_type", D, {"model.dim=abc"}, "--set model.dim=abc", "model.dim", {"expected an integer >= 1, got \"abc\""}},
    {"set_bool", D, {"logging.jsonl=1"}, "--set logging.jsonl=1", "logging.jsonl", {"expected true or false"}},
    {"set_bad_yaml", D, {"optimizer.schedule.decay_at=[0.5,"}, "--set optimizer.schedule.decay_at=[0.5,",
     "optimizer.schedule.decay_at", {"not valid YAML"}},
    {"set_list_element", D, {"optimizer.schedule.decay_factors=[0.5, 2]"},
     "--set optimizer.schedule.decay_factors=[0.5, 2]", "optimizer.schedule.decay_factors[1]", {"got 2.0"}},
    {"set_breaks_rule", D, {"model.n_heads=3"}, "--set model.n_heads=3", "model.dim",
     {"model.n_heads = 3 (--set model.n_heads=3)", "model.dim = 128 (default)"}},
    {"set_later_wins_then_fails", D + "training:\n  steps: 100\n", {"training.steps=50", "training.steps=20"},
     "--set training.steps=20", "optimizer.schedule.warmup_steps", {"training.steps = 20"}},
};

class BadConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, ErrorNamesOriginAndKey) {
  const BadCase& c = GetParam();
  std::string msg;
  try {
    bk::parse_config(c.yaml, "bad.yaml", c.sets);
  } catch (const bk::Error& e) {
    msg = e.what();
  }
  ASSERT_FALSE(msg.empty()) << "parsed without error:\n" << c.yaml;
  if (c.at.back() == ':') {  // some line of the file: the parser's, for syntax errors
    EXPECT_TRUE(msg.rfind(c.at, 0) == 0 && isdigit(msg[c.at.size()])) << "no file:line at the start: " << msg;
  } else {
    EXPECT_EQ(msg.rfind(c.at + ": ", 0), 0u) << "message does not start with '" << c.at << ": ': " << msg;
  }
  if (!c.key.empty()) {
    EXPECT_NE(msg.find(c.key), std::string::npos) << "key '" << c.key << "' not named: " << msg;
  }
  for (const std::string& s : c.also) EXPECT_NE(msg.find(s), std::string::npos) << "'" << s << "' missing: " << msg;
}

INSTANTIATE_TEST_SUITE_P(Table, BadConfig, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param.name; });

}  // namespace
