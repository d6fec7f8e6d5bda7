// The config schema: the one declaration of every key (dotted path, type, default, allowed
// values, doc, and where it lives in Config). Parsing, validation, to_yaml and docs/config.md
// are all driven by these tables, so adding a key is one line in schema.cpp.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.h"

namespace bk::schema {

// A pointer to one field of a Config; which alternative it holds is the key's type.
using FieldRef = std::variant<int*, int64_t*, uint64_t*, double*, bool*, std::string*, std::vector<double>*>;

struct Bound {
  double value;
  bool inclusive;
};

// What a key accepts beyond its type. Numeric bounds apply to each element of a list.
struct Allowed {
  std::optional<Bound> lo, hi;
  std::vector<std::string_view> choices;  // strings: the only accepted values
  bool required = false;                  // strings: "" (the default) is an error
};

struct Key {
  std::string_view path;        // "optimizer.schedule.kind"
  FieldRef (*field)(Config&);   // the member this key reads and writes
  Allowed allowed;
  std::string_view doc;         // one line, shown in docs/config.md

  std::string_view section() const;  // "optimizer.schedule"
  std::string_view name() const;     // "kind"
  FieldRef ref(Config& c) const { return field(c); }
  FieldRef ref(const Config& c) const { return field(const_cast<Config&>(c)); }  // read only
};

// A mapping that groups keys ("model", "optimizer.schedule"), in the order docs and to_yaml use.
struct Section {
  std::string_view path;
  std::string_view doc;
};

// A requirement that ties keys together, checked once every key has its final value.
struct Rule {
  std::vector<std::string_view> keys;  // named in the error, each with its value and origin
  std::string_view doc;                // the requirement, as errors and docs state it
  bool (*holds)(const Config&);
};

const std::vector<Section>& sections();
const std::vector<Key>& keys();
const std::vector<Rule>& rules();

// "optimizer.schedule.kind" -> "optimizer.schedule"; "run" -> "".
std::string_view parent(std::string_view path);
const Key* find_key(std::string_view path);
const Section* find_section(std::string_view path);
// Names directly inside a section ("" = top level): its keys and subsections, in schema order.
std::vector<std::string_view> children(std::string_view section);
// The closest existing key or section to a mistyped path, or "" when nothing is close.
std::string_view suggest(std::string_view path);

// Text shared by errors, to_yaml and the docs.
std::string type_name(const Key& k);     // docs: "int", "float", "bool", "string", "list of float"
std::string allowed_text(const Key& k);  // ">= 1", "in [0, 1)", "one of auto, cpu, cuda", "any"
std::string expected(const Key& k);      // errors: "an integer >= 1", "a list of numbers, each in (0, 1)"
std::string format_value(const FieldRef& f);  // YAML text that reads back to the same value
// "" when the key's value in cfg is allowed, else the reason ("training.steps must be >= 1, got 0").
std::string check_value(const Key& k, const Config& cfg);

}  // namespace bk::schema
