// YAML text -> Config: walk the document along the schema, convert each value strictly to its
// key's type, apply --set overrides, then check ranges and cross-key rules on the final values.
// Where each value came from is remembered, so every error can point at its line or --set.
#include "config/load.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "config/schema.h"
#include "core/error.h"

namespace bk {
namespace {

using schema::Key;

// Where a key's value came from ("configs/x.yaml:12" or "--set a.b=c"); order says which came last.
struct Origin {
  std::string where;
  int order;
};
using Origins = std::map<std::string, Origin, std::less<>>;

// A source of values: a file (messages say file:line) or one --set argument.
struct Place {
  std::string name;
  bool has_lines;
  std::string at(const YAML::Mark& m) const {
    return has_lines && m.line >= 0 ? fmt::format("{}:{}", name, m.line + 1) : name;
  }
};

std::string describe(const YAML::Node& n) {
  if (n.IsNull()) return "no value";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  if (n.Tag() == "!") return fmt::format("\"{}\" (quoted, so a string: drop the quotes)", n.Scalar());
  return fmt::format("\"{}\"", n.Scalar());
}

// Quoted scalars are strings in YAML; numbers and booleans must be written plain.
const std::string* plain(const YAML::Node& n) {
  return n.IsScalar() && n.Tag() != "!" ? &n.Scalar() : nullptr;
}

// The whole text as a T, or nothing: "3.5" is not an int, "1e3" is not an int, "inf" is no double.
template <typename T>
std::optional<T> parse_number(const std::string* text) {
  if (!text) return std::nullopt;
  std::string_view s = *text;
  if (s.size() > 1 && s[0] == '+' && s[1] != '-' && s[1] != '+') s.remove_prefix(1);  // from_chars rejects '+'
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  if constexpr (std::is_floating_point_v<T>)
    if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::string join(const std::vector<std::string_view>& parts) { return fmt::format("{}", fmt::join(parts, ", ")); }

std::string unknown_key(std::string_view path) {
  std::string msg = fmt::format("unknown key '{}'", path);
  if (std::string_view s = schema::suggest(path); !s.empty()) msg += fmt::format(" (did you mean '{}'?)", s);
  // List what the innermost existing section allows.
  std::string_view sec = schema::parent(path);
  while (!sec.empty() && !schema::find_section(sec) && !schema::find_key(sec)) sec = schema::parent(sec);
  if (schema::find_key(sec)) return msg + fmt::format("; '{}' takes a value and has no keys", sec);
  if (sec.empty()) return msg + fmt::format("; allowed top-level sections: {}", join(schema::children("")));
  return msg + fmt::format("; allowed keys in '{}': {}", sec, join(schema::children(sec)));
}

// Convert node into key's field of cfg, or throw naming the place, the key and the type wanted.
void assign(const Key& key, const YAML::Node& node, const Place& place, const YAML::Mark& mark, Config& cfg) {
  auto wrong_type = [&](const YAML::Node& got, std::string_view hint = "") {
    return Error(fmt::format("{}: {}: expected {}, got {}{}", place.at(mark), key.path, schema::expected(key),
                             describe(got), hint),
                 __FILE__, __LINE__);
  };
  std::visit(
      [&]<typename T>(T* field) {
        if constexpr (std::is_same_v<T, std::string>) {
          if (node.IsNull()) *field = "";  // `val:` with nothing after it means empty
          else if (node.IsScalar()) *field = node.Scalar();
          else throw wrong_type(node);
        } else if constexpr (std::is_same_v<T, bool>) {
          const std::string* s = plain(node);
          if (!s || (*s != "true" && *s != "false")) throw wrong_type(node);
          *field = *s == "true";
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          if (!node.IsSequence()) throw wrong_type(node);
          std::vector<double> values;
          for (const YAML::Node& item : node) {
            std::optional<double> x = parse_number<double>(plain(item));
            if (!x)
              BK_FAIL("{}: {}[{}]: expected a number, got {}", place.at(item.Mark().line >= 0 ? item.Mark() : mark),
                      key.path, values.size(), describe(item));
            values.push_back(*x);
          }
          *field = std::move(values);
        } else {  // int, int64_t, uint64_t, double
          const std::string* text = plain(node);
          std::optional<T> x = parse_number<T>(text);
          if (!x && std::is_integral_v<T> && text && parse_number<double>(text) &&
              text->find_first_not_of("+-0123456789") == std::string::npos &&
              (std::is_signed_v<T> || text->front() != '-'))  // "-1" for a seed: the range says why
            throw wrong_type(node, fmt::format(" (out of range of a {}-bit integer)", 8 * sizeof(T)));
          if (!x) throw wrong_type(node);
          *field = *x;
        }
      },
      key.ref(cfg));
}

struct Loader {
  Config cfg;
  Origins origins;
  int sets = 0;  // values assigned so far, to order origins

  void set(const Key& key, const YAML::Node& value, const Place& place, const YAML::Mark& mark) {
    assign(key, value, place, mark, cfg);
    origins[std::string(key.path)] = {place.at(mark), ++sets};
  }

  // node holds the keys of section `prefix` ("" = the whole document).
  void read_section(const YAML::Node& node, const std::string& prefix, const Place& place) {
    if (node.IsNull()) return;  // an empty file, or `model:` with nothing under it: all defaults
    if (!node.IsMap()) {
      if (prefix.empty())
        BK_FAIL("{}: expected a mapping of sections ({}) at the top level, got {}", place.at(node.Mark()),
                join(schema::children("")), describe(node));
      BK_FAIL("{}: {}: expected a mapping with keys {}, got {}", place.at(node.Mark()), prefix,
              join(schema::children(prefix)), describe(node));
    }
    std::map<std::string, int> seen;  // name -> line; yaml-cpp keeps duplicate keys silently
    for (const auto& kv : node) {
      const YAML::Node& k = kv.first;
      const std::string at = place.at(k.Mark());
      BK_CHECK(k.IsScalar(), "{}: expected a key name{}, got {}", at, prefix.empty() ? "" : " in '" + prefix + "'",
               describe(k));
      const std::string path = prefix.empty() ? k.Scalar() : prefix + "." + k.Scalar();
      auto [first, fresh] = seen.emplace(k.Scalar(), k.Mark().line + 1);
      BK_CHECK(fresh, "{}: duplicate key '{}' (first set on line {})", at, path, first->second);
      if (const Key* key = schema::find_key(path)) set(*key, kv.second, place, k.Mark());
      else if (schema::find_section(path)) read_section(kv.second, path, place);
      else BK_FAIL("{}: {}", at, unknown_key(path));
    }
  }

  // "a.b=c": the value is a YAML scalar or flow list, checked exactly like a file value.
  void apply_override(const std::string& arg) {
    const Place place{"--set " + arg, false};
    const size_t eq = arg.find('=');
    BK_CHECK(eq != std::string::npos, "{}: expected KEY=VALUE, e.g. --set training.steps=1000", place.name);
    std::string path = arg.substr(0, eq);
    path.erase(0, path.find_first_not_of(" \t"));
    path.erase(path.find_last_not_of(" \t") + 1);
    const Key* key = schema::find_key(path);
    if (!key && schema::find_section(path))
      BK_FAIL("{}: '{}' is a section; set its keys one at a time, e.g. --set {}.{}=...", place.name, path, path,
              schema::children(path).front());
    if (!key) BK_FAIL("{}: {}", place.name, unknown_key(path));
    YAML::Node value;
    try {
      value = YAML::Load(arg.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      BK_FAIL("{}: {}: the value is not valid YAML ({}); expected {}", place.name, path, e.msg, schema::expected(*key));
    }
    set(*key, value, place, YAML::Mark::null_mark());
  }
};

// Ranges and choices of every key, then the cross-key rules. Each error points at the origin
// of the value at fault; for a rule, at the key set last (the one that broke the combination).
void validate(const Config& cfg, const Origins& origins) {
  const std::string source = cfg.source.empty() ? "config" : cfg.source;
  auto origin = [&](std::string_view path) -> const Origin* {
    auto it = origins.find(path);
    return it == origins.end() ? nullptr : &it->second;
  };
  for (const Key& k : schema::keys()) {
    const std::string why = schema::check_value(k, cfg);
    if (why.empty()) continue;
    const Origin* o = origin(k.path);
    BK_FAIL("{}: {}", o ? o->where : source, why);
  }
  for (const schema::Rule& rule : schema::rules()) {
    if (rule.holds(cfg)) continue;
    const Origin* last = nullptr;
    std::vector<std::string> got;
    for (std::string_view path : rule.keys) {
      const Origin* o = origin(path);
      if (o && (!last || o->order > last->order)) last = o;
      got.push_back(fmt::format("{} = {} ({})", path, schema::format_value(schema::find_key(path)->ref(cfg)),
                                o ? o->where : "default"));
    }
    BK_FAIL("{}: {}; got {}", last ? last->where : source, rule.doc, fmt::join(got, ", "));
  }
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  const Place file{source_name, true};
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml_text);
  } catch (const YAML::Exception& e) {
    BK_FAIL("{}: YAML syntax error: {}", file.at(e.mark), e.msg);
  }
  BK_CHECK(docs.size() <= 1, "{}: expected one YAML document, found {}", file.at(docs[1].Mark()), docs.size());
  Loader loader;
  if (!docs.empty()) loader.read_section(docs[0], "", file);
  for (const std::string& o : overrides) loader.apply_override(o);
  loader.cfg.source = source_name;
  validate(loader.cfg, loader.origins);
  return loader.cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  namespace fs = std::filesystem;
  std::error_code ec;
  BK_CHECK(fs::exists(path, ec), "config file '{}' not found", path);
  BK_CHECK(fs::is_regular_file(path, ec), "config file '{}' is not a regular file", path);
  std::ifstream f(path, std::ios::binary);
  BK_CHECK(f.good(), "cannot read config file '{}'", path);
  std::ostringstream text;
  text << f.rdbuf();
  return parse_config(text.str(), path, overrides);
}

void validate_config(const Config& cfg) { validate(cfg, {}); }

std::string to_yaml(const Config& cfg) {
  std::string out;
  std::vector<std::string_view> open;  // components of the section written last
  for (const Key& k : schema::keys()) {
    std::vector<std::string_view> sec;
    for (std::string_view s = k.section(); !s.empty(); s = schema::parent(s)) sec.insert(sec.begin(), s);
    size_t common = 0;
    while (common < open.size() && common < sec.size() && open[common] == sec[common]) ++common;
    for (size_t depth = common; depth < sec.size(); ++depth) {
      if (depth == 0 && !out.empty()) out += '\n';  // a blank line between top-level sections
      const std::string_view name = sec[depth].substr(depth ? sec[depth - 1].size() + 1 : 0);
      out += fmt::format("{:{}}{}:\n", "", 2 * depth, name);
    }
    open = sec;
    out += fmt::format("{:{}}{}: {}\n", "", 2 * sec.size(), k.name(), schema::format_value(k.ref(cfg)));
  }
  return out;
}

}  // namespace bk

namespace bk {

std::vector<ConfigDifference> diff_configs(const Config& before, const Config& after) {
  std::vector<ConfigDifference> out;
  for (const schema::Key& k : schema::keys()) {
    std::string a = schema::format_value(k.ref(before)), b = schema::format_value(k.ref(after));
    if (a != b) out.push_back({std::string(k.path), std::move(a), std::move(b)});
  }
  return out;
}

}  // namespace bk
