// Checkpoints (docs/checkpoint-format.md): CRC32C, the on-disk layout, round trips, retention,
// crash leftovers, sharded checkpoints, and every kind of corruption as a clear error.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/buffer.h"
#include "core/crc32c.h"
#include "io/checkpoint.h"
#include "unit/io/io_test_util.h"

namespace fs = std::filesystem;
using bk::test::expect_error;
using nlohmann::json;

namespace {

std::vector<unsigned char> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_bytes(const fs::path& p, const std::vector<unsigned char>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
json read_json(const fs::path& p) { return json::parse(read_bytes(p)); }
void write_json(const fs::path& p, const json& j) {
  std::ofstream f(p, std::ios::trunc);
  f << j.dump(2);
}
std::string crc_hex(const fs::path& p) {
  auto b = read_bytes(p);
  return fmt::format("{:08x}", bk::crc32c(b.data(), b.size()));
}
// Records `name`'s current size and CRC in state.json, so that only the checks after the
// checksum can catch what the test did to the file.
void fix_listing(const fs::path& dir, const std::string& name) {
  json s = read_json(dir / "state.json");
  s["files"][name] = {{"bytes", fs::file_size(dir / name)}, {"crc32c", crc_hex(dir / name)}};
  write_json(dir / "state.json", s);
}

// A small model and optimizer: a few f32 tensors of distinct shapes, plus a bf16 and an i64 one
// (the format is not f32-only), filled from a fixed seed.
struct Fixture {
  std::vector<std::pair<std::string, bk::Buffer>> model, optimizer;

  Fixture(uint32_t seed = 1) {
    std::mt19937 g(seed);
    std::normal_distribution<float> n(0.f, 1.f);
    auto add = [&](auto& list, std::string name, bk::Shape s, bk::DType t = bk::DType::f32) {
      bk::Buffer b(s, t);
      auto* bytes = static_cast<unsigned char*>(b.tensor().data);
      if (t == bk::DType::f32) {
        for (int64_t i = 0; i < b.numel(); ++i) b.ptr<float>()[i] = n(g);
      } else {
        for (size_t i = 0; i < b.nbytes(); ++i) bytes[i] = static_cast<unsigned char>(g());
      }
      list.emplace_back(std::move(name), std::move(b));
    };
    add(model, "embed.weight", {50, 8});
    add(model, "layers.0.attn.wq.weight", {8, 8});
    add(model, "layers.0.attn_conn.phi", {8, 3, 2});
    add(model, "layers.1.ffn.norm.weight", {8});
    add(model, "head.bf16", {4, 4}, bk::DType::bf16);
    add(model, "counter", {2}, bk::DType::i64);
    for (const auto& [name, b] : model)
      if (b.dtype() == bk::DType::f32) {
        add(optimizer, name + ".exp_avg", b.shape());
        add(optimizer, name + ".exp_avg_sq", b.shape());
      }
  }
  static std::vector<bk::NamedTensor> named(const std::vector<std::pair<std::string, bk::Buffer>>& list) {
    std::vector<bk::NamedTensor> out;
    for (const auto& [name, b] : list) out.push_back({name, b.tensor()});
    return out;
  }
  bk::CheckpointContents contents(int64_t step) const {
    bk::CheckpointContents c;
    c.step = step;
    c.model = named(model);
    c.optimizer = named(optimizer);
    c.state = {{"tokens", step * 1000}, {"cursor", {{"epoch", 0}, {"position", step * 16}}},
               {"rng", {{"seed", 7}}}, {"lr", {{"step", step}, {"value", 1e-3}}}, {"config", "model:\n  dim: 8\n"},
               {"config_hash", "abc"}};
    return c;
  }
  const bk::Buffer& find(const std::string& name) const {
    for (const auto* list : {&model, &optimizer})
      for (const auto& [n, b] : *list)
        if (n == name) return b;
    throw std::runtime_error("no " + name);
  }
};

bool equal_bytes(const bk::Buffer& a, const bk::Buffer& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.tensor().data, b.tensor().data, a.nbytes()) == 0;
}

std::set<int64_t> step_dirs(const fs::path& run) {
  std::set<int64_t> out;
  for (const auto& e : fs::directory_iterator(run / "checkpoints")) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step_", 0) == 0) out.insert(std::stoll(n.substr(5)));
  }
  return out;
}

// A saved checkpoint of the fixture, its directory.
fs::path saved(const fs::path& run, const Fixture& f, int64_t step = 3) {
  return bk::save_checkpoint(run.string(), f.contents(step));
}

}  // namespace

// ---- CRC32C -----------------------------------------------------------------------------

TEST(Crc32c, KnownVectors) {
  const char* digits = "123456789";
  EXPECT_EQ(bk::crc32c(digits, 9), 0xE3069283u);
  // RFC 3720 B.4.
  std::vector<unsigned char> b(32, 0);
  EXPECT_EQ(bk::crc32c(b.data(), b.size()), 0x8A9136AAu);
  std::fill(b.begin(), b.end(), 0xFF);
  EXPECT_EQ(bk::crc32c(b.data(), b.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) b[i] = uint8_t(i);
  EXPECT_EQ(bk::crc32c(b.data(), b.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) b[i] = uint8_t(31 - i);
  EXPECT_EQ(bk::crc32c(b.data(), b.size()), 0x113FDB5Cu);
  EXPECT_EQ(bk::crc32c(nullptr, 0), 0u);
  EXPECT_EQ(bk::detail::crc32c_portable(digits, 9), 0xE3069283u);
}

TEST(Crc32c, IncrementalAndPortableAgree) {
  std::mt19937 g(3);
  std::vector<unsigned char> b(1000);
  for (auto& x : b) x = uint8_t(g());
  const uint32_t whole = bk::crc32c(b.data(), b.size());
  for (size_t cut : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(13), size_t(500), size_t(999), size_t(1000)})
    EXPECT_EQ(bk::crc32c(b.data() + cut, b.size() - cut, bk::crc32c(b.data(), cut)), whole) << "cut " << cut;
  // Every length and misalignment against the table-driven version.
  for (size_t off = 0; off < 9; ++off)
    for (size_t n = 0; n + off <= 80; ++n)
      ASSERT_EQ(bk::crc32c(b.data() + off, n, 0x1234567u), bk::detail::crc32c_portable(b.data() + off, n, 0x1234567u))
          << "offset " << off << " length " << n;
}

TEST(Crc32c, TfRecordMask) {
  const uint32_t c = bk::crc32c("123456789", 9);
  EXPECT_EQ(bk::mask_crc32c(c), ((c >> 15) | (c << 17)) + 0xa282ead8u);
  EXPECT_EQ(bk::masked_crc32c("123456789", 9), bk::mask_crc32c(c));
  const uint32_t rot = bk::mask_crc32c(c) - 0xa282ead8u;  // unmask
  EXPECT_EQ((rot >> 17) | (rot << 15), c);
}

// ---- layout and round trip ----------------------------------------------------------------

TEST(Checkpoint, LayoutAndRoundTrip) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const Fixture f;
  const fs::path dir = saved(run, f, 1200);
  EXPECT_EQ(dir, run / "checkpoints" / "step_00001200");
  EXPECT_EQ(bk::checkpoint_dir(run.string(), 1200), dir.string());
  EXPECT_EQ(bk::latest_checkpoint(run.string()), dir.string());
  auto latest = read_bytes(run / "checkpoints" / "latest");
  EXPECT_EQ(std::string(latest.begin(), latest.end()), "step_00001200\n");
  for (const auto& e : fs::directory_iterator(run / "checkpoints"))
    EXPECT_NE(e.path().filename().string().rfind(".tmp", 0), 0u) << "leftover " << e.path();

  // state.json: the trainer's fields plus format, version and the files' sizes and CRC32C.
  const json s = read_json(dir / "state.json");
  EXPECT_EQ(s["format_version"], bk::kCheckpointFormatVersion);
  EXPECT_EQ(s["birkhoff_version"], BIRKHOFF_VERSION);
  EXPECT_EQ(s["step"], 1200);
  EXPECT_EQ(s["tokens"], 1200000);
  EXPECT_EQ(s["cursor"]["position"], 1200 * 16);
  for (const char* name : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_EQ(s["files"][name]["bytes"], fs::file_size(dir / name)) << name;
    EXPECT_EQ(s["files"][name]["crc32c"], crc_hex(dir / name)) << name;
  }

  // The safetensors layout, byte by byte: u64 LE header length, JSON, 8-byte aligned data.
  auto b = read_bytes(dir / "model.safetensors");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(b[i]) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);
  const json h = json::parse(std::string(b.begin() + 8, b.begin() + 8 + long(n)));
  EXPECT_EQ(h["__metadata__"]["format"], "birkhoff");
  EXPECT_EQ(h["layers.0.attn.wq.weight"]["dtype"], "F32");
  EXPECT_EQ(h["layers.0.attn.wq.weight"]["shape"], json({8, 8}));
  EXPECT_EQ(h["head.bf16"]["dtype"], "BF16");
  EXPECT_EQ(h["counter"]["dtype"], "I64");
  const auto& off = h["layers.0.attn_conn.phi"]["data_offsets"];
  const bk::Buffer& phi = f.find("layers.0.attn_conn.phi");
  EXPECT_EQ(std::memcmp(b.data() + 8 + n + off[0].get<uint64_t>(), phi.tensor().data, phi.nbytes()), 0);

  // Read back: every tensor bitwise equal, whether opened by checkpoint, run or checkpoints dir.
  for (const fs::path& p : {dir, run, run / "checkpoints", fs::path(dir.string() + "/")}) {
    const bk::Checkpoint ck = bk::Checkpoint::open(p.string());
    EXPECT_EQ(ck.dir(), dir.string());
    EXPECT_EQ(ck.step(), 1200);
    EXPECT_TRUE(ck.checksums_verified());
    EXPECT_EQ(ck.state()["rng"]["seed"], 7);
    ASSERT_EQ(ck.model_tensors().size(), f.model.size());
    ASSERT_EQ(ck.optimizer_tensors().size(), f.optimizer.size());
    for (const auto& [name, buf] : f.model) {
      const auto& info = ck.model_tensors().at(name);
      EXPECT_EQ(info.dtype, buf.dtype());
      EXPECT_EQ(info.shape, buf.shape());
      EXPECT_EQ(info.file, (dir / "model.safetensors").string());
      bk::Buffer got(buf.shape(), buf.dtype());
      ck.read_model(name, got);
      EXPECT_TRUE(equal_bytes(got, buf)) << name;
    }
    for (const auto& [name, buf] : f.optimizer) {
      bk::Buffer got(buf.shape(), buf.dtype());
      ck.read_optimizer(name, got);
      EXPECT_TRUE(equal_bytes(got, buf)) << name;
    }
  }
  // The all-or-nothing form.
  const bk::Checkpoint ck = bk::Checkpoint::open(dir.string(), false);
  EXPECT_FALSE(ck.checksums_verified());
  Fixture g(99);  // other values, same names and shapes
  ck.read_model(Fixture::named(g.model));
  ck.read_optimizer(Fixture::named(g.optimizer));
  for (const auto& [name, buf] : g.model) EXPECT_TRUE(equal_bytes(buf, f.find(name))) << name;
  for (const auto& [name, buf] : g.optimizer) EXPECT_TRUE(equal_bytes(buf, f.find(name))) << name;
}

TEST(Checkpoint, ModelOnlyAndNoCheckpointYet) {
  const fs::path run = bk::test::scratch_dir() / "run";
  EXPECT_EQ(bk::latest_checkpoint(run.string()), "");
  bk::remove_incomplete_checkpoints(run.string());  // nothing there: no error
  Fixture f;
  bk::CheckpointContents c = f.contents(2);
  c.optimizer.clear();
  bk::save_checkpoint(run.string(), c);
  const bk::Checkpoint ck = bk::Checkpoint::open(run.string());
  EXPECT_TRUE(ck.optimizer_tensors().empty());
  EXPECT_FALSE(fs::exists(fs::path(ck.dir()) / "optimizer.safetensors"));
  bk::Buffer b({8}, bk::DType::f32);
  expect_error([&] { ck.read_optimizer("layers.1.ffn.norm.weight.exp_avg", b); },
               {"optimizer.safetensors", "no tensor layers.1.ffn.norm.weight.exp_avg", "0 optimizer tensors"});
}

TEST(Checkpoint, StateStepMustMatch) {
  const fs::path run = bk::test::scratch_dir() / "run";
  Fixture f;
  bk::CheckpointContents c = f.contents(4);
  c.state["step"] = 5;
  expect_error([&] { bk::save_checkpoint(run.string(), c); }, {"state.step 5", "step 4"});
  EXPECT_EQ(bk::latest_checkpoint(run.string()), "");
  EXPECT_FALSE(fs::exists(bk::checkpoint_dir(run.string(), 4)));
  bk::remove_incomplete_checkpoints(run.string());
  for (const auto& e : fs::directory_iterator(run / "checkpoints")) ADD_FAILURE() << "leftover " << e.path();
}

// ---- retention, overwrite, crash leftovers --------------------------------------------------

TEST(Checkpoint, Retention) {
  for (auto [keep_last, keep_every] : {std::pair{2, 3}, std::pair{1, 0}, std::pair{0, 0}, std::pair{3, 2}}) {
    const fs::path run = bk::test::scratch_dir() / fmt::format("run_{}_{}", keep_last, keep_every);
    Fixture f;
    for (int64_t step = 1; step <= 7; ++step) {
      bk::save_checkpoint(run.string(), f.contents(step), {keep_last, keep_every});
      // The rule: the newest keep_last (all when 0), every multiple of keep_every, the new one.
      std::set<int64_t> expected;
      for (int64_t s = 1; s <= step; ++s)
        if (keep_last == 0 || s > step - keep_last || (keep_every > 0 && s % keep_every == 0)) expected.insert(s);
      EXPECT_EQ(step_dirs(run), expected) << "keep_last " << keep_last << " keep_every " << keep_every
                                          << " after step " << step;
      EXPECT_EQ(bk::latest_checkpoint(run.string()), bk::checkpoint_dir(run.string(), step));
    }
    for (const auto& e : fs::directory_iterator(run / "checkpoints"))
      EXPECT_NE(e.path().filename().string().rfind(".tmp", 0), 0u) << "leftover " << e.path();
    if (keep_last == 2 && keep_every == 3) EXPECT_EQ(step_dirs(run), (std::set<int64_t>{3, 6, 7}));
  }
}

TEST(Checkpoint, RefusesToOverwrite) {
  const fs::path run = bk::test::scratch_dir() / "run";
  Fixture f;
  const fs::path dir = saved(run, f, 5);
  const auto before = read_bytes(dir / "model.safetensors");
  Fixture g(2);
  expect_error([&] { bk::save_checkpoint(run.string(), g.contents(5)); },
               {"step_00000005", "already exists", "refusing to overwrite"});
  EXPECT_EQ(read_bytes(dir / "model.safetensors"), before);
  EXPECT_EQ(bk::Checkpoint::open(run.string()).step(), 5);
}

TEST(Checkpoint, LeftoversOfAKilledSave) {
  const fs::path run = bk::test::scratch_dir() / "run";
  Fixture f;
  const fs::path dir = saved(run, f, 3);
  // A save of step 4 killed before its rename, and a `latest` replacement killed before its own.
  const fs::path tmp = run / "checkpoints" / ".tmp_step_00000004_12345";
  fs::create_directories(tmp);
  write_bytes(tmp / "model.safetensors", {1, 2, 3});
  write_bytes(run / "checkpoints" / ".tmp_latest", {'s'});
  EXPECT_EQ(bk::latest_checkpoint(run.string()), dir.string());
  EXPECT_EQ(bk::Checkpoint::open(run.string()).step(), 3);
  bk::remove_incomplete_checkpoints(run.string());
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_FALSE(fs::exists(run / "checkpoints" / ".tmp_latest"));
  EXPECT_TRUE(fs::exists(dir / "state.json"));
  bk::save_checkpoint(run.string(), f.contents(4));  // the step can be saved again
  EXPECT_EQ(bk::Checkpoint::open(run.string()).step(), 4);
}

// ---- corruption ------------------------------------------------------------------------------

TEST(CheckpointCorruption, TruncatedFile) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const fs::path dir = saved(run, Fixture());
  const fs::path model = dir / "model.safetensors";
  auto b = read_bytes(model);
  b.resize(b.size() - 100);
  write_bytes(model, b);
  // The size recorded in state.json catches it even without the CRC pass.
  for (bool verify : {true, false})
    expect_error([&] { bk::Checkpoint::open(dir.string(), verify); }, {model.string(), "truncated"});
  // With the listing "fixed", the header's offsets catch it, naming the tensor cut short.
  fix_listing(dir, "model.safetensors");
  expect_error([&] { bk::Checkpoint::open(dir.string()); },
               {model.string(), "tensor counter", "truncated file?"});
  // Cut inside the header.
  b.resize(20);
  write_bytes(model, b);
  fix_listing(dir, "model.safetensors");
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {model.string(), "header length"});
}

TEST(CheckpointCorruption, FlippedByte) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const Fixture f;
  const fs::path dir = saved(run, f);
  const fs::path opt = dir / "optimizer.safetensors";
  auto b = read_bytes(opt);
  b[b.size() - 3] ^= 0x10;  // in the data section: the header still parses
  write_bytes(opt, b);
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {opt.string(), "checksum mismatch"});
  expect_error([&] { bk::Checkpoint::open(run.string(), true); }, {opt.string(), "checksum mismatch"});
  // Documented: without verification only sizes and headers are checked, so the flipped value
  // loads. (inspect --verify, eval and resume verify.)
  const bk::Checkpoint ck = bk::Checkpoint::open(dir.string(), false);
  const auto& [name, want] = f.optimizer.back();
  bk::Buffer got(want.shape(), want.dtype());
  ck.read_optimizer(name, got);
  EXPECT_FALSE(equal_bytes(got, want));
}

TEST(CheckpointCorruption, BadStateJson) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const fs::path dir = saved(run, Fixture());
  const fs::path sj = dir / "state.json";
  const json good = read_json(sj);
  write_bytes(sj, {'{', '"', 's', 't', 'e', 'p', '"', ':', ' ', '3', ','});
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {sj.string(), "not valid JSON"});
  expect_error([&] { bk::Checkpoint::open(run.string()); }, {sj.string(), "not valid JSON"});

  for (const char* key : {"format_version", "step", "files"}) {
    json s = good;
    s.erase(key);
    write_json(sj, s);
    expect_error([&] { bk::Checkpoint::open(dir.string()); }, {sj.string(), key});
  }
  json s = good;
  s["files"]["model.safetensors"]["crc32c"] = "xyz";
  write_json(sj, s);
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {sj.string(), "files.model.safetensors"});
  s = good;
  s["files"]["../../etc/passwd"] = good["files"]["model.safetensors"];
  write_json(sj, s);
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {sj.string(), "../../etc/passwd"});

  fs::remove(sj);
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {dir.string(), "no state.json"});
}

TEST(CheckpointCorruption, NewerFormatVersion) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const fs::path dir = saved(run, Fixture());
  json s = read_json(dir / "state.json");
  s["format_version"] = bk::kCheckpointFormatVersion + 1;
  write_json(dir / "state.json", s);
  expect_error([&] { bk::Checkpoint::open(dir.string()); },
               {(dir / "state.json").string(), "newer Birkhoff",
                fmt::format("format {}, this build reads up to {}", bk::kCheckpointFormatVersion + 1,
                            bk::kCheckpointFormatVersion)});
}

TEST(CheckpointCorruption, MissingTensor) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const Fixture f;
  const fs::path dir = saved(run, f);
  // The model file rewritten without one tensor, its listing fixed: only the name check is left.
  auto tensors = Fixture::named(f.model);
  tensors.erase(tensors.begin() + 1);  // layers.0.attn.wq.weight
  bk::write_safetensors((dir / "model.safetensors").string(), tensors);
  fix_listing(dir, "model.safetensors");
  const bk::Checkpoint ck = bk::Checkpoint::open(dir.string());
  bk::Buffer b({8, 8});
  const std::string file = (dir / "model.safetensors").string();
  expect_error([&] { ck.read_model("layers.0.attn.wq.weight", b); },
               {file, "no tensor layers.0.attn.wq.weight", "the checkpoint has 5 model tensors",
                "another model shape"});
  Fixture g;
  expect_error([&] { ck.read_model(Fixture::named(g.model)); }, {file, "layers.0.attn.wq.weight"});
  // And the other way round: the checkpoint holds a tensor the model lacks.
  auto fewer = Fixture::named(g.model);
  fewer.erase(fewer.begin() + 2);
  const bk::Checkpoint full = bk::Checkpoint::open(saved(run, f, 4).string());
  expect_error([&] { full.read_model(fewer); },
               {"step_00000004/model.safetensors", "tensor layers.0.attn_conn.phi is not in this model"});
}

TEST(CheckpointCorruption, WrongDtypeOrShape) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const Fixture f;
  const fs::path dir = saved(run, f);
  const std::string file = (dir / "model.safetensors").string();
  {
    const bk::Checkpoint ck = bk::Checkpoint::open(dir.string());
    bk::Buffer wrong_shape({8, 9}), wrong_dtype({8, 8}, bk::DType::f64);
    expect_error([&] { ck.read_model("layers.0.attn.wq.weight", wrong_shape); },
                 {file, "tensor layers.0.attn.wq.weight is f32 [8, 8], the model expects f32 [8, 9]"});
    expect_error([&] { ck.read_model("layers.0.attn.wq.weight", wrong_dtype); },
                 {file, "tensor layers.0.attn.wq.weight is f32 [8, 8], the model expects f64 [8, 8]"});
    bk::Buffer opt({7});
    expect_error([&] { ck.read_optimizer("layers.1.ffn.norm.weight.exp_avg", opt); },
                 {(dir / "optimizer.safetensors").string(), "layers.1.ffn.norm.weight.exp_avg is f32 [8]",
                  "the optimizer expects f32 [7]"});
  }
  // A file whose tensor was stored as f64 (checksums fixed): the model's f32 does not load.
  auto tensors = Fixture::named(f.model);
  bk::Buffer as_f64({8, 8}, bk::DType::f64);
  tensors[1].tensor = as_f64;
  bk::write_safetensors(file, tensors);
  fix_listing(dir, "model.safetensors");
  const bk::Checkpoint ck = bk::Checkpoint::open(dir.string());
  Fixture g;
  expect_error([&] { ck.read_model(Fixture::named(g.model)); },
               {file, "tensor layers.0.attn.wq.weight is f64 [8, 8], the model expects f32 [8, 8]"});
  // A dtype the format has but Birkhoff does not read, and a header that lies about the size.
  auto b = read_bytes(file);
  std::string text(b.begin(), b.end());
  const size_t at = text.find("\"F64\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 5, "\"F16\"");
  write_bytes(file, std::vector<unsigned char>(text.begin(), text.end()));
  fix_listing(dir, "model.safetensors");
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {file, "layers.0.attn.wq.weight", "unsupported dtype"});
  text.replace(at, 5, "\"F32\"");
  write_bytes(file, std::vector<unsigned char>(text.begin(), text.end()));
  fix_listing(dir, "model.safetensors");
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {file, "layers.0.attn.wq.weight", "512 bytes for shape [8, 8]"});
}

TEST(CheckpointCorruption, MissingOrUnlistedFiles) {
  const fs::path run = bk::test::scratch_dir() / "run";
  const fs::path dir = saved(run, Fixture());
  const json good = read_json(dir / "state.json");
  // Extra bytes at the end of a file (listing fixed): the data section is no longer covered exactly.
  auto b = read_bytes(dir / "model.safetensors");
  auto longer = b;
  longer.insert(longer.end(), 8, 0);
  write_bytes(dir / "model.safetensors", longer);
  fix_listing(dir, "model.safetensors");
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {"model.safetensors", "bytes after the last tensor"});
  write_bytes(dir / "model.safetensors", b);
  write_json(dir / "state.json", good);

  json s = good;
  s["files"].erase("model.safetensors");
  write_json(dir / "state.json", s);
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {(dir / "model.safetensors").string(), "not listed"});
  write_json(dir / "state.json", good);

  fs::rename(dir / "optimizer.safetensors", dir / "moved");
  expect_error([&] { bk::Checkpoint::open(dir.string()); },
               {(dir / "optimizer.safetensors").string(), "missing (state.json lists it)"});
  fs::rename(dir / "moved", dir / "optimizer.safetensors");
  EXPECT_EQ(bk::Checkpoint::open(dir.string()).step(), 3);
}

TEST(CheckpointCorruption, BadPaths) {
  const fs::path root = bk::test::scratch_dir();
  expect_error([&] { bk::Checkpoint::open((root / "nope").string()); }, {(root / "nope").string(), "does not exist"});
  fs::create_directories(root / "empty");
  expect_error([&] { bk::Checkpoint::open((root / "empty").string()); },
               {(root / "empty").string(), "neither a checkpoint directory"});
  // A run directory without any step directory has no checkpoint, whatever `latest` says: the
  // newest complete step directory is what counts (a stale pointer is not an error).
  fs::create_directories(root / "run" / "checkpoints");
  expect_error([&] { bk::Checkpoint::open((root / "run").string()); }, {"has no checkpoint", "step_*"});
  write_bytes(root / "run" / "checkpoints" / "latest", {'s', 't', 'e', 'p', '_', '9', '\n'});
  expect_error([&] { bk::Checkpoint::open((root / "run").string()); }, {"has no checkpoint"});
  EXPECT_EQ(bk::latest_checkpoint((root / "run").string()), "");
  // Step directories win over the pointer, and temporary ones are ignored.
  fs::create_directories(root / "run" / "checkpoints" / "step_00000003");
  fs::create_directories(root / "run" / "checkpoints" / "step_00000012");
  fs::create_directories(root / "run" / "checkpoints" / ".tmp_step_00000020_1");
  EXPECT_EQ(bk::latest_checkpoint((root / "run").string()), bk::checkpoint_dir((root / "run").string(), 12));
}

// ---- sharded checkpoints ----------------------------------------------------------------------

namespace {

// What several ranks would write: KIND-0000i-of-0000n.safetensors shards plus the index, and a
// state.json listing every file with its CRC32C. Tensor i goes to shard i % n.
void write_sharded(const fs::path& dir, const std::string& kind, const std::vector<bk::NamedTensor>& tensors, int n,
                   json& files) {
  std::vector<std::vector<bk::NamedTensor>> shards(static_cast<size_t>(n));
  json weight_map = json::object();
  uint64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string shard = fmt::format("{}-{:05d}-of-{:05d}.safetensors", kind, int(i) % n + 1, n);
    shards[i % size_t(n)].push_back(tensors[i]);
    weight_map[tensors[i].name] = shard;
    total += tensors[i].tensor.nbytes();
  }
  for (int r = 0; r < n; ++r) {
    const std::string shard = fmt::format("{}-{:05d}-of-{:05d}.safetensors", kind, r + 1, n);
    bk::write_safetensors((dir / shard).string(), shards[size_t(r)]);
    files[shard] = {{"bytes", fs::file_size(dir / shard)}, {"crc32c", crc_hex(dir / shard)}};
  }
  const std::string index = kind + ".safetensors.index.json";
  write_json(dir / index, {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
  files[index] = {{"bytes", fs::file_size(dir / index)}, {"crc32c", crc_hex(dir / index)}};
}

fs::path sharded_checkpoint(const fs::path& root, const Fixture& f) {
  const fs::path dir = root / "checkpoints" / "step_00000010";
  fs::create_directories(dir);
  json files = json::object();
  write_sharded(dir, "model", Fixture::named(f.model), 4, files);
  write_sharded(dir, "optimizer", Fixture::named(f.optimizer), 2, files);
  write_json(dir / "state.json", {{"format_version", 1}, {"step", 10}, {"files", files}});
  write_bytes(root / "checkpoints" / "latest", {'s', 't', 'e', 'p', '_', '0', '0', '0', '0', '0', '0', '1', '0'});
  return dir;
}

}  // namespace

TEST(CheckpointSharded, ReadsEveryTensor) {
  const fs::path root = bk::test::scratch_dir();
  const Fixture f;
  const fs::path dir = sharded_checkpoint(root, f);
  const bk::Checkpoint ck = bk::Checkpoint::open(root.string());
  EXPECT_EQ(ck.dir(), dir.string());
  EXPECT_EQ(ck.step(), 10);
  ASSERT_EQ(ck.model_tensors().size(), f.model.size());
  ASSERT_EQ(ck.optimizer_tensors().size(), f.optimizer.size());
  EXPECT_EQ(ck.model_tensors().at("layers.0.attn.wq.weight").file,
            (dir / "model-00002-of-00004.safetensors").string());
  Fixture g(5);
  ck.read_model(Fixture::named(g.model));
  ck.read_optimizer(Fixture::named(g.optimizer));
  for (const auto* list : {&g.model, &g.optimizer})
    for (const auto& [name, buf] : *list) EXPECT_TRUE(equal_bytes(buf, f.find(name))) << name;
  bk::Buffer b({8, 8});
  expect_error([&] { ck.read_model("nope", b); }, {(dir / "model.safetensors.index.json").string(), "no tensor nope"});
}

TEST(CheckpointSharded, InconsistentIndex) {
  const fs::path root = bk::test::scratch_dir();
  const Fixture f;
  const fs::path dir = sharded_checkpoint(root, f);
  const fs::path index = dir / "model.safetensors.index.json";
  const json good = read_json(index);

  // The index names a shard that is not there.
  json j = good;
  j["weight_map"]["embed.weight"] = "model-00009-of-00009.safetensors";
  write_json(index, j);
  fix_listing(dir, "model.safetensors.index.json");
  expect_error([&] { bk::Checkpoint::open(dir.string()); },
               {index.string(), "embed.weight", "model-00009-of-00009.safetensors", "does not exist"});
  // A listed shard deleted.
  write_json(index, good);
  fix_listing(dir, "model.safetensors.index.json");
  fs::remove(dir / "model-00003-of-00004.safetensors");
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {"model-00003-of-00004.safetensors", "missing"});
  // The index and the shards disagree about where a tensor is.
  sharded_checkpoint(root, f);
  j = good;
  j["weight_map"]["embed.weight"] = "model-00002-of-00004.safetensors";
  write_json(index, j);
  fix_listing(dir, "model.safetensors.index.json");
  expect_error([&] { bk::Checkpoint::open(dir.string()); },
               {index.string(), "embed.weight", "model-00002-of-00004.safetensors", "no such tensor"});
  // A tensor in a shard that the index does not list.
  j = good;
  j["weight_map"].erase("embed.weight");
  write_json(index, j);
  fix_listing(dir, "model.safetensors.index.json");
  expect_error([&] { bk::Checkpoint::open(dir.string()); },
               {"model-00001-of-00004.safetensors", "embed.weight", "not mapped"});
  // Not JSON; both layouts at once.
  write_bytes(index, {'{', '['});
  fix_listing(dir, "model.safetensors.index.json");
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {index.string(), "not valid JSON"});
  write_json(index, good);
  fix_listing(dir, "model.safetensors.index.json");
  bk::write_safetensors((dir / "model.safetensors").string(), Fixture::named(f.model));
  fix_listing(dir, "model.safetensors");
  expect_error([&] { bk::Checkpoint::open(dir.string()); }, {"both model.safetensors and model.safetensors.index.json"});
  fs::remove(dir / "model.safetensors");
  json s = read_json(dir / "state.json");
  s["files"].erase("model.safetensors");
  write_json(dir / "state.json", s);
  EXPECT_EQ(bk::Checkpoint::open(dir.string()).model_tensors().size(), f.model.size());
}
