// docs/config.md, generated from the schema: a short guide, error examples produced by the
// real parser, the cross-key rules, and one table per section. tests/unit/config keeps the
// checked-in file equal to this text.
#include <fmt/format.h>

#include "config/load.h"
#include "config/schema.h"
#include "core/error.h"

namespace bk {
namespace {

// Table cells: '|' would end the cell and, outside code spans, '<' open an HTML tag.
std::string cell(std::string_view s, bool code = false) {
  std::string out;
  for (char ch : s) {
    if (ch == '|') out += "\\|";
    else if (ch == '<' && !code) out += "&lt;";
    else out += ch;
  }
  return out;
}

// The message parse_config gives for a bad config, so the examples cannot go stale.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, "configs/example.yaml", overrides);
  } catch (const Error& e) {
    return e.what();
  }
  BK_FAIL("config reference: example expected to fail parses cleanly:\n{}", yaml);
}

const char* kIntro = R"(# Configuration reference

A run is described by one YAML file with the sections below; `configs/` holds examples. Every
key is optional except `data.train`: a missing key takes the default shown. The whole config is
checked before anything runs, and unknown keys, values of the wrong type, values outside their
allowed range and inconsistent combinations of keys are all errors.

Values: integers are written without a decimal point (`steps: 1000`); floats may use exponents
(`lr: 3e-3`); booleans are `true` or `false`; lists are YAML lists (`decay_at: [0.8, 0.9]`).
A quoted value is a string, so `lr: "3e-3"` is an error.

## Overrides

Any key can be set on the command line, after the file is read; later overrides win:

    birkhoff train configs/tiny-cpu-baseline.yaml --set training.steps=1000 \
        --set optimizer.schedule.kind=step --set 'optimizer.schedule.decay_at=[0.5,0.75]'

The value is read as a YAML scalar or flow list and checked like a value in the file (quote
lists for the shell, whose globbing would otherwise read the brackets).
`birkhoff config CONFIG [--set ...]` checks a config and prints it resolved: every key, with
defaults and overrides applied. Training writes the same text to `RUN_DIR/config.yaml`, which is
itself a valid config that reproduces the run.

## Errors

An error names where the value came from (file and line, or the `--set` argument), the key, and
what is allowed. For example:

)";

}  // namespace

std::string config_reference_markdown() {
  const std::string data = "data:\n  train: data/train.bin\n";
  std::string md = "<!-- Generated from src/config/schema.cpp by `birkhoff config --reference > docs/config.md`. "
                   "Do not edit by hand. -->\n";
  md += kIntro;
  for (const std::string& e : {error_of(data + "model:\n  n_heads: four\n"),
                               error_of(data + "model:\n  dimm: 256\n"),
                               error_of(data, {"training.steps=-1"}),
                               error_of(data + "model:\n  dim: 96\n  n_heads: 5\n")})
    md += "    " + e + "\n";

  md += "\n## Rules between keys\n\nChecked after overrides, on the final values:\n\n";
  for (const schema::Rule& r : schema::rules()) md += fmt::format("- {}\n", r.doc);

  const Config defaults;
  for (const schema::Section& s : schema::sections()) {
    md += fmt::format("\n## `{}`\n\n{}\n\n", s.path, s.doc);
    md += "| Key | Type | Default | Allowed | Description |\n";
    md += "|-----|------|---------|---------|-------------|\n";
    for (const schema::Key& k : schema::keys())
      if (k.section() == s.path)
        md += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", k.path, schema::type_name(k),
                          cell(schema::format_value(k.ref(defaults)), true), cell(schema::allowed_text(k)), cell(k.doc));
  }
  return md;
}

}  // namespace bk
