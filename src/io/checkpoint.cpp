#include "io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace bk {

namespace fs = std::filesystem;

namespace {

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  BK_CHECK(fd >= 0, "cannot open {} to sync it", p.string());
  int rc = ::fsync(fd);
  ::close(fd);
  BK_CHECK(rc == 0, "fsync of {} failed", p.string());
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::trunc);
  BK_CHECK(f.good(), "cannot write {}", p.string());
  f << text;
  f.flush();
  BK_CHECK(f.good(), "error writing {} (disk full?)", p.string());
}

}  // namespace

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / "checkpoints" / fmt::format("step_{:08d}", step)).string();
}

std::string save_checkpoint(const std::string& run_dir, const CheckpointContents& ckpt) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = checkpoint_dir(run_dir, ckpt.step);
  const fs::path tmp = root / fmt::format(".tmp_step_{:08d}_{}", ckpt.step, ::getpid());
  fs::create_directories(root);
  // Never replace a finished checkpoint: between removing it and renaming a new one in, a kill
  // would leave `latest` pointing at nothing.
  BK_CHECK(!fs::exists(final_dir), "checkpoint {} already exists; refusing to overwrite it", final_dir.string());
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  write_safetensors((tmp / "model.safetensors").string(), ckpt.model, {{"format", "birkhoff"}});
  write_text(tmp / "state.json", ckpt.state.dump(2) + "\n");
  fsync_path(tmp / "model.safetensors");
  fsync_path(tmp / "state.json");
  fsync_path(tmp);

  fs::rename(tmp, final_dir);
  fsync_path(root);

  const fs::path latest_tmp = root / ".latest.tmp";
  write_text(latest_tmp, final_dir.filename().string() + "\n");
  fsync_path(latest_tmp);
  fs::rename(latest_tmp, root / "latest");
  fsync_path(root);
  return final_dir.string();
}

}  // namespace bk
