#include "io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "core/buffer.h"
#include "core/crc32c.h"
#include "core/error.h"

namespace bk {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStepPrefix = "step_";
constexpr const char* kTmpPrefix = ".tmp_";  // everything a save or a retention pass leaves behind

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  BK_CHECK(fd >= 0, "cannot open {} to sync it: {}", p.string(), std::strerror(errno));
  int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  BK_CHECK(rc == 0, "fsync of {} failed: {}", p.string(), std::strerror(err));
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::trunc);
  BK_CHECK(f.good(), "cannot write {}", p.string());
  f << text;
  f.flush();
  BK_CHECK(f.good(), "error writing {} (disk full?)", p.string());
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  BK_CHECK(f.good(), "cannot read {}", p.string());
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  BK_CHECK(!ec, "cannot rename {} to {}: {}", from.string(), to.string(), ec.message());
}

// "step_00001200" -> 1200; false for anything else (temporary directories, `latest`, ...).
bool parse_step_name(const std::string& name, int64_t* step) {
  const size_t p = std::strlen(kStepPrefix);
  if (name.size() <= p || name.compare(0, p, kStepPrefix) != 0 || name.size() > p + 18) return false;
  int64_t v = 0;
  for (size_t i = p; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

std::string hex32(uint32_t v) { return fmt::format("{:08x}", v); }

bool parse_hex32(const std::string& s, uint32_t* out) {
  if (s.size() != 8) return false;
  uint32_t v = 0;
  for (char c : s) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | uint32_t(d);
  }
  *out = v;
  return true;
}

// A plain file name inside the checkpoint directory (state.json and index files are data, so
// they must not reach outside it).
bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos && s.find('\\') == std::string::npos;
}

uint32_t crc32c_of_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  BK_CHECK(f.good(), "cannot open {} to check its checksum", p.string());
  std::vector<char> buf(size_t(4) << 20);
  uint32_t crc = 0;
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    crc = crc32c(buf.data(), size_t(f.gcount()), crc);
  }
  BK_CHECK(f.eof(), "error reading {}", p.string());
  return crc;
}

// Deletes the step directories the policy does not keep. A directory is first renamed to a
// temporary name (atomic), then removed, so a kill midway never leaves a half-deleted
// step_XXXXXXXX that looks like a checkpoint.
void apply_retention(const std::string& run_dir, int64_t just_written, RetentionPolicy keep) {
  if (keep.keep_last <= 0) return;  // keep everything
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::vector<int64_t> steps = checkpoint_steps(run_dir);
  std::reverse(steps.begin(), steps.end());  // newest first
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t s = steps[i];
    const bool kept = int(i) < keep.keep_last || (keep.keep_every > 0 && s % keep.keep_every == 0) ||
                      s == just_written;
    if (kept) continue;
    const fs::path dir = checkpoint_dir(run_dir, s);
    const fs::path doomed = root / fmt::format("{}delete_{}_{}", kTmpPrefix, dir.filename().string(), ::getpid());
    std::error_code ec;
    fs::remove_all(doomed, ec);  // a leftover of the same name from an earlier kill
    rename_or_fail(dir, doomed);
    fs::remove_all(doomed, ec);
    BK_CHECK(!ec, "cannot remove old checkpoint {}: {}", doomed.string(), ec.message());
  }
  fsync_path(root);
}

}  // namespace

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / "checkpoints" / fmt::format("{}{:08d}", kStepPrefix, step)).string();
}

namespace {

// The phases of a save. One process: all three in a row. Several ranks (save_checkpoint_sharded):
// rank 0 prepares, every rank writes its shard, rank 0 finishes, with barriers in between.

fs::path temp_dir_for(const fs::path& final_dir) {
  // The same name on every rank (a shared directory); a leftover of a killed save of the same
  // step is removed by prepare_save or by remove_incomplete_checkpoints at the next start.
  return final_dir.parent_path() / fmt::format("{}{}", kTmpPrefix, final_dir.filename().string());
}

void check_contents(const CheckpointContents& c) {
  BK_CHECK(c.step >= 0, "save_checkpoint: negative step {}", c.step);
  BK_CHECK(c.state.is_object() || c.state.is_null(), "save_checkpoint: state must be a JSON object");
}

fs::path prepare_save(const std::string& run_dir, int64_t step) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = checkpoint_dir(run_dir, step);
  std::error_code ec;
  fs::create_directories(root, ec);
  BK_CHECK(!ec, "cannot create {}: {}", root.string(), ec.message());
  // Never replace a finished checkpoint: between removing it and renaming a new one in, a kill
  // would leave `latest` pointing at nothing.
  BK_CHECK(!fs::exists(final_dir), "checkpoint {} already exists; refusing to overwrite it", final_dir.string());
  const fs::path tmp = temp_dir_for(final_dir);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  return tmp;
}

// Writes KIND.safetensors (shard < 0) or KIND-0000r-of-0000R.safetensors, fsynced; records its
// size and CRC32C in `files`.
void write_kind(const fs::path& tmp, const char* kind, int64_t step, const std::vector<NamedTensor>& tensors,
                int shard, int shards, nlohmann::json& files) {
  const std::string name = shard < 0 ? std::string(kind) + ".safetensors"
                                     : fmt::format("{}-{:05d}-of-{:05d}.safetensors", kind, shard + 1, shards);
  SafetensorsWritten w = write_safetensors((tmp / name).string(), tensors,
                                           {{"format", "birkhoff"}, {"kind", kind}, {"step", std::to_string(step)}});
  fsync_path(tmp / name);
  files[name] = {{"bytes", w.bytes}, {"crc32c", hex32(w.crc32c)}};
}

// state.json (with `files`), then the atomic rename, `latest`, and the retention pass.
std::string finish_save(const std::string& run_dir, const fs::path& tmp, const CheckpointContents& c,
                        nlohmann::json files, RetentionPolicy keep) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = checkpoint_dir(run_dir, c.step);
  nlohmann::json state = c.state.is_null() ? nlohmann::json::object() : c.state;
  if (state.contains("step"))
    BK_CHECK(state["step"].is_number_integer() && state["step"].get<int64_t>() == c.step,
             "save_checkpoint: state.step {} differs from the step {} being saved", state["step"].dump(), c.step);
  state["step"] = c.step;
  state["format_version"] = kCheckpointFormatVersion;
  state["birkhoff_version"] = BIRKHOFF_VERSION;
  state["files"] = std::move(files);
  write_text(tmp / "state.json", state.dump(2) + "\n");
  fsync_path(tmp / "state.json");
  fsync_path(tmp);

  rename_or_fail(tmp, final_dir);
  fsync_path(root);

  // `latest` last: until this rename lands, readers see the previous checkpoint.
  const fs::path latest_tmp = root / ".tmp_latest";
  write_text(latest_tmp, final_dir.filename().string() + "\n");
  fsync_path(latest_tmp);
  rename_or_fail(latest_tmp, root / "latest");
  fsync_path(root);

  apply_retention(run_dir, c.step, keep);
  return final_dir.string();
}

// KIND.safetensors.index.json over the shards of one kind that the ranks wrote into tmp; each
// tensor must be in exactly one shard.
void write_index(const fs::path& tmp, const std::string& kind, nlohmann::json& files) {
  nlohmann::json weight_map = nlohmann::json::object();
  const std::string prefix = kind + "-";
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(tmp)) {
    const std::string f = e.path().filename().string();
    if (f.rfind(prefix, 0) == 0 && f.size() > 12 && f.compare(f.size() - 12, 12, ".safetensors") == 0)
      shards.push_back(f);
  }
  if (shards.empty()) return;
  std::sort(shards.begin(), shards.end());
  for (const std::string& f : shards) {
    const SafetensorsHeader h = read_safetensors_header((tmp / f).string());
    for (const auto& [name, entry] : h.tensors) {
      BK_CHECK(!weight_map.contains(name), "checkpoint save: tensor {} was written by two ranks ({} and {})", name,
               weight_map[name].get<std::string>(), f);
      weight_map[name] = f;
    }
  }
  const std::string index = kind + ".safetensors.index.json";
  const nlohmann::json j = {{"metadata", {{"format", "birkhoff"}, {"shards", shards.size()}}},
                            {"weight_map", weight_map}};
  write_text(tmp / index, j.dump(2) + "\n");
  fsync_path(tmp / index);
  files[index] = {{"bytes", fs::file_size(tmp / index)}, {"crc32c", hex32(crc32c_of_file(tmp / index))}};
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, const CheckpointContents& c, RetentionPolicy keep) {
  check_contents(c);
  BK_CHECK(!c.model.empty(), "save_checkpoint: no model tensors to save");
  const fs::path tmp = prepare_save(run_dir, c.step);
  nlohmann::json files = nlohmann::json::object();
  try {
    write_kind(tmp, "model", c.step, c.model, -1, 1, files);
    if (!c.optimizer.empty()) write_kind(tmp, "optimizer", c.step, c.optimizer, -1, 1, files);
    return finish_save(run_dir, tmp, c, std::move(files), keep);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);  // best effort; remove_incomplete_checkpoints catches the rest
    throw;
  }
}

std::string save_checkpoint_sharded(const std::string& run_dir, const CheckpointContents& c, int rank, int ranks,
                                    const std::function<void()>& barrier, RetentionPolicy keep) {
  check_contents(c);
  const fs::path tmp = temp_dir_for(checkpoint_dir(run_dir, c.step));
  if (rank == 0) prepare_save(run_dir, c.step);
  barrier();
  // Each rank records its shards' sizes and checksums in a small sidecar that rank 0 folds into
  // state.json, so no file is read twice.
  nlohmann::json files = nlohmann::json::object();
  if (!c.model.empty()) write_kind(tmp, "model", c.step, c.model, rank, ranks, files);
  if (!c.optimizer.empty()) write_kind(tmp, "optimizer", c.step, c.optimizer, rank, ranks, files);
  const fs::path sidecar = tmp / fmt::format("{}files_rank{:05d}.json", kTmpPrefix, rank);
  write_text(sidecar, files.dump());
  fsync_path(sidecar);
  barrier();
  std::string dir = checkpoint_dir(run_dir, c.step);
  if (rank == 0) {
    nlohmann::json all = nlohmann::json::object();
    for (int r = 0; r < ranks; ++r) {
      const fs::path f = tmp / fmt::format("{}files_rank{:05d}.json", kTmpPrefix, r);
      const nlohmann::json part = nlohmann::json::parse(read_text(f));
      for (const auto& [name, e] : part.items()) all[name] = e;
      fs::remove(f);
    }
    BK_CHECK(!all.empty(), "checkpoint save: no rank wrote any tensor");
    write_index(tmp, "model", all);
    write_index(tmp, "optimizer", all);
    dir = finish_save(run_dir, tmp, c, std::move(all), keep);
  }
  barrier();  // nobody reads or saves again before the checkpoint is in place
  return dir;
}

std::string latest_checkpoint(const std::string& run_dir) {
  // The newest step directory. A step directory is renamed into place only when complete, so it
  // is loadable even when the run died before updating `latest` (which stays a pointer for
  // people and tools; it is not needed to find the newest checkpoint).
  const std::vector<int64_t> steps = checkpoint_steps(run_dir);
  return steps.empty() ? std::string() : checkpoint_dir(run_dir, steps.back());
}

std::vector<int64_t> checkpoint_steps(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return steps;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    int64_t step;
    if (e.is_directory() && parse_step_name(e.path().filename().string(), &step)) steps.push_back(step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

void remove_incomplete_checkpoints(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.path().filename().string().rfind(kTmpPrefix, 0) == 0) doomed.push_back(e.path());
  for (const fs::path& p : doomed) {
    fs::remove_all(p, ec);
    BK_CHECK(!ec, "cannot remove the incomplete checkpoint {}: {}", p.string(), ec.message());
  }
}

// ---- reading ------------------------------------------------------------------------------

Checkpoint Checkpoint::open(const std::string& path, bool verify_checksums) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty() && p.has_parent_path()) p = p.parent_path();  // "dir/" -> "dir"
  BK_CHECK(fs::exists(p), "checkpoint {} does not exist", path);
  BK_CHECK(fs::is_directory(p), "checkpoint {} is not a directory (give a checkpoint directory "
           "RUN_DIR/checkpoints/step_XXXXXXXX or a run directory)", path);
  fs::path dir;
  if (fs::exists(p / "state.json")) {
    dir = p;
  } else if (fs::is_directory(p / "checkpoints")) {
    const std::string latest = latest_checkpoint(p.string());
    BK_CHECK(!latest.empty(), "run directory {} has no checkpoint (no step_* directory under {})", path,
             (p / "checkpoints").string());
    dir = latest;
  } else if (p.filename() == "checkpoints" && !latest_checkpoint(p.parent_path().string()).empty()) {
    dir = latest_checkpoint(p.parent_path().string());
  } else {
    BK_FAIL("{} is neither a checkpoint directory (it has no state.json) nor a run directory (it has no "
            "checkpoints/)", path);
  }

  Checkpoint c;
  c.dir_ = dir.string();
  const fs::path sj = dir / "state.json";
  BK_CHECK(fs::exists(sj), "{}: missing: {} is not a complete checkpoint", sj.string(), dir.string());
  try {
    c.state_ = nlohmann::json::parse(read_text(sj));
  } catch (const nlohmann::json::exception& e) {
    BK_FAIL("{}: not valid JSON: {}", sj.string(), e.what());
  }
  const nlohmann::json& s = c.state_;
  BK_CHECK(s.is_object(), "{}: expected a JSON object", sj.string());
  BK_CHECK(s.contains("format_version") && s["format_version"].is_number_integer(),
           "{}: no integer format_version (not a Birkhoff checkpoint?)", sj.string());
  const int64_t version = s["format_version"].get<int64_t>();
  BK_CHECK(version <= kCheckpointFormatVersion,
           "{}: written by a newer Birkhoff (format {}, this build reads up to {}); read it with a newer build",
           sj.string(), version, kCheckpointFormatVersion);
  BK_CHECK(version >= 1, "{}: format_version {} is not a valid checkpoint format", sj.string(), version);
  BK_CHECK(s.contains("step") && s["step"].is_number_integer() && s["step"].get<int64_t>() >= 0,
           "{}: missing key step (a non-negative integer)", sj.string());
  BK_CHECK(s.contains("files") && s["files"].is_object(),
           "{}: missing key files (the checkpoint's files with their sizes and CRC32C)", sj.string());

  // Every listed file: present, the recorded size, and (verify_checksums) the recorded CRC32C.
  for (const auto& [name, e] : s["files"].items()) {
    BK_CHECK(plain_file_name(name), "{}: files: '{}' is not a file name in the checkpoint directory", sj.string(),
             name);
    FileInfo info;
    BK_CHECK(e.is_object() && e.contains("bytes") && e["bytes"].is_number_unsigned() && e.contains("crc32c") &&
                 e["crc32c"].is_string() && parse_hex32(e["crc32c"].get<std::string>(), &info.crc32c),
             "{}: files.{}: expected {{\"bytes\": N, \"crc32c\": \"8 hex digits\"}}, got {}", sj.string(), name,
             e.dump());
    info.bytes = e["bytes"].get<uint64_t>();
    const fs::path fp = dir / name;
    BK_CHECK(fs::is_regular_file(fp), "{}: missing (state.json lists it): the checkpoint is incomplete",
             fp.string());
    const uint64_t size = fs::file_size(fp);
    BK_CHECK(size == info.bytes, "{}: {} bytes, but state.json records {} ({}); the checkpoint is corrupt",
             fp.string(), size, info.bytes, size < info.bytes ? "truncated" : "modified");
    if (verify_checksums) {
      const uint32_t crc = crc32c_of_file(fp);
      BK_CHECK(crc == info.crc32c, "{}: checksum mismatch: CRC32C {} but state.json records {}; the file is corrupt",
               fp.string(), hex32(crc), hex32(info.crc32c));
    }
    c.files_[name] = info;
  }
  c.verified_ = verify_checksums;
  c.index_kind("model", true);
  c.index_kind("optimizer", false);
  return c;
}

// Indexes the tensors of one kind ("model", "optimizer") from KIND.safetensors, or from the
// shards that KIND.safetensors.index.json names.
void Checkpoint::index_kind(const std::string& kind, bool required) {
  const fs::path dir(dir_);
  const std::string single = kind + ".safetensors", index = kind + ".safetensors.index.json";
  const bool has_single = fs::exists(dir / single), has_index = fs::exists(dir / index);
  std::map<std::string, TensorInfo>& out = kind == "model" ? model_ : optimizer_;
  std::string& source = kind == "model" ? model_source_ : optimizer_source_;
  BK_CHECK(!(has_single && has_index), "{}: holds both {} and {}; a checkpoint has one or the other", dir_, single,
           index);
  if (!has_single && !has_index) {
    BK_CHECK(!required, "{}: no {} weights (neither {} nor {})", dir_, kind, single, index);
    source = (dir / single).string();
    return;
  }
  auto listed = [&](const std::string& name) {
    BK_CHECK(files_.count(name), "{}: not listed in {} files, so it cannot be checked; the checkpoint is "
             "inconsistent", (dir / name).string(), (dir / "state.json").string());
  };
  auto add = [&](const SafetensorsHeader& h, const std::string& name) {
    const auto& e = h.tensors.at(name);
    out[name] = TensorInfo{e.dtype, e.shape, h.path, h.data_start + e.begin, e.end - e.begin};
  };
  if (has_single) {
    listed(single);
    source = (dir / single).string();
    SafetensorsHeader h = read_safetensors_header(source);
    for (const auto& [name, e] : h.tensors) add(h, name);
    return;
  }

  listed(index);
  source = (dir / index).string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(dir / index));
  } catch (const nlohmann::json::exception& e) {
    BK_FAIL("{}: not valid JSON: {}", source, e.what());
  }
  BK_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
           "{}: expected {{\"metadata\": {{...}}, \"weight_map\": {{tensor: shard file}}}}", source);
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, f] : j["weight_map"].items()) {
    BK_CHECK(f.is_string() && plain_file_name(f.get<std::string>()),
             "{}: weight_map.{}: expected a shard file name in the checkpoint directory, got {}", source, name,
             f.dump());
    weight_map[name] = f.get<std::string>();
  }
  std::map<std::string, SafetensorsHeader> shards;
  for (const auto& [name, shard] : weight_map) {
    if (shards.count(shard)) continue;
    BK_CHECK(fs::is_regular_file(dir / shard), "{}: tensor {} is in shard {}, but {} does not exist", source, name,
             shard, (dir / shard).string());
    listed(shard);
    shards.emplace(shard, read_safetensors_header((dir / shard).string()));
  }
  for (const auto& [name, shard] : weight_map) {
    const SafetensorsHeader& h = shards.at(shard);
    BK_CHECK(h.tensors.count(name), "{}: tensor {} is in shard {} by the index, but that file has no such tensor",
             source, name, h.path);
    add(h, name);
  }
  for (const auto& [shard, h] : shards)
    for (const auto& [name, e] : h.tensors) {
      auto it = weight_map.find(name);
      BK_CHECK(it != weight_map.end() && it->second == shard,
               "{}: tensor {} is not mapped to this shard by {}; the index and the shards disagree", h.path, name,
               source);
    }
}

int64_t Checkpoint::step() const { return state_.at("step").get<int64_t>(); }

void Checkpoint::read_tensor(const std::string& kind, const std::string& name, Tensor dst) const {
  const auto& tensors = kind == "model" ? model_ : optimizer_;
  const std::string& source = kind == "model" ? model_source_ : optimizer_source_;
  auto it = tensors.find(name);
  BK_CHECK(it != tensors.end(), "{}: no tensor {} (the checkpoint has {} {} tensors; was it saved from another "
           "model shape?)", source, name, tensors.size(), kind);
  const TensorInfo& t = it->second;
  BK_CHECK(t.dtype == dst.dtype && t.shape == dst.shape, "{}: tensor {} is {} {}, the {} expects {} {}", t.file,
           name, dtype_name(t.dtype), t.shape.str(), kind, dtype_name(dst.dtype), dst.shape.str());
  // A GPU destination is filled through a host copy.
  Buffer staged;
  if (dst.device != Device::cpu) staged = Buffer(dst.shape, dst.dtype);
  std::ifstream f(t.file, std::ios::binary);
  BK_CHECK(f.good(), "{}: cannot open it to read tensor {}", t.file, name);
  f.seekg(std::streamoff(t.offset));
  f.read(static_cast<char*>(staged.empty() ? dst.data : staged.tensor().data), std::streamsize(t.nbytes));
  BK_CHECK(f.good() && uint64_t(f.gcount()) == t.nbytes,
           "{}: tensor {}: read {} of {} bytes (was the file truncated after the checkpoint was opened?)", t.file,
           name, f.gcount(), t.nbytes);
  if (!staged.empty()) staged.download(dst);
}

void Checkpoint::read_all(const std::string& kind, const std::vector<NamedTensor>& dst) const {
  const auto& tensors = kind == "model" ? model_ : optimizer_;
  std::set<std::string> wanted;
  for (const NamedTensor& t : dst) wanted.insert(t.name);
  for (const auto& [name, info] : tensors)
    BK_CHECK(wanted.count(name), "{}: tensor {} is not in this {} (the checkpoint has {} {} tensors, the {} {}; was "
             "it saved from another model shape?)", info.file, name, kind, tensors.size(), kind, kind, wanted.size());
  for (const NamedTensor& t : dst) read_tensor(kind, t.name, t.tensor);
}

void Checkpoint::read_model(const std::string& name, Tensor dst) const { read_tensor("model", name, dst); }
void Checkpoint::read_optimizer(const std::string& name, Tensor dst) const { read_tensor("optimizer", name, dst); }
void Checkpoint::read_model(const std::vector<NamedTensor>& dst) const { read_all("model", dst); }
void Checkpoint::read_optimizer(const std::vector<NamedTensor>& dst) const { read_all("optimizer", dst); }

}  // namespace bk
