// Checkpoints (docs/checkpoint-format.md): one directory per save,
//   RUN_DIR/checkpoints/step_00001200/
//     model.safetensors       parameters and model state under global names
//     optimizer.safetensors   "<param>.exp_avg", "<param>.exp_avg_sq" (fp32)
//     state.json              format version, step, tokens, loader cursor, rng, lr position,
//                             resolved config + hash, library version, per-file CRC32C
// or, when several ranks each write what they own, model-0000r-of-0000R.safetensors shards
// plus model.safetensors.index.json (the sharded safetensors convention; same for optimizer).
// Written into a temporary directory, fsynced, renamed into place; `latest` is replaced last,
// so a run killed at any moment leaves the previous checkpoint intact and loadable.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace bk {

inline constexpr int kCheckpointFormatVersion = 1;

struct CheckpointContents {
  int64_t step = 0;
  std::vector<NamedTensor> model;      // global names, never by rank or stage
  std::vector<NamedTensor> optimizer;  // "<param>.exp_avg", "<param>.exp_avg_sq"
  nlohmann::json state;                // the trainer's fields of state.json
};

struct RetentionPolicy {
  int keep_last = 0;   // newest k kept; 0 keeps all
  int keep_every = 0;  // steps that are multiples of m are kept too; 0 = none
};

// Writes the checkpoint of c.step under run_dir atomically, adds format_version,
// birkhoff_version and the files' CRC32C to state.json, replaces `latest`, then deletes the
// checkpoints the retention policy no longer keeps. Returns the checkpoint directory.
std::string save_checkpoint(const std::string& run_dir, const CheckpointContents& c,
                            RetentionPolicy keep = {});

// The same checkpoint written by `ranks` processes at once (collective: every rank calls it;
// `barrier` synchronises them all). Each rank passes the tensors it saves; every tensor of the
// model must be passed by exactly one rank (global names, so the layout is not in the files).
// Rank r writes MODEL/OPTIMIZER-0000(r+1)-of-0000R.safetensors; rank 0 writes the index files and
// state.json, then renames the directory into place as save_checkpoint does. Returns the
// checkpoint directory on every rank.
std::string save_checkpoint_sharded(const std::string& run_dir, const CheckpointContents& c, int rank, int ranks,
                                    const std::function<void()>& barrier, RetentionPolicy keep = {});

// RUN_DIR/checkpoints/step_00001200
std::string checkpoint_dir(const std::string& run_dir, int64_t step);
// The newest complete checkpoint under run_dir (what `latest` names, or a newer step directory
// a run killed before updating `latest` left), or "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);
// Steps of the complete checkpoints under run_dir, ascending.
std::vector<int64_t> checkpoint_steps(const std::string& run_dir);
// Removes temporary directories that a killed save left behind.
void remove_incomplete_checkpoints(const std::string& run_dir);

// An opened checkpoint: state.json parsed and checked (format version, files present,
// checksums), tensor headers indexed. Tensors are read on demand.
class Checkpoint {
 public:
  // path: a checkpoint directory, or a run directory (its `latest` checkpoint).
  static Checkpoint open(const std::string& path, bool verify_checksums = true);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& state() const { return state_; }
  int64_t step() const;

  struct TensorInfo {
    DType dtype;
    Shape shape;
    std::string file;     // the safetensors file (a shard when the checkpoint is sharded)
    uint64_t offset = 0;  // of the tensor's bytes in that file
    uint64_t nbytes = 0;
  };
  const std::map<std::string, TensorInfo>& model_tensors() const { return model_; }
  const std::map<std::string, TensorInfo>& optimizer_tensors() const { return optimizer_; }
  // Copies a tensor into dst; dtype and shape must match. Errors name the file and tensor.
  void read_model(const std::string& name, Tensor dst) const;
  void read_optimizer(const std::string& name, Tensor dst) const;
  // Reads every tensor of dst by name, and fails when the checkpoint holds a tensor that dst
  // lacks (saved from another model shape): a load is all or nothing.
  void read_model(const std::vector<NamedTensor>& dst) const;
  void read_optimizer(const std::vector<NamedTensor>& dst) const;

  // The files of state.json "files": name -> {bytes, crc32c}, and whether open() checked the
  // CRC32C of each (verify_checksums) or only its size.
  struct FileInfo {
    uint64_t bytes = 0;
    uint32_t crc32c = 0;
  };
  const std::map<std::string, FileInfo>& files() const { return files_; }
  bool checksums_verified() const { return verified_; }

 private:
  void index_kind(const std::string& kind, bool required);
  void read_tensor(const std::string& kind, const std::string& name, Tensor dst) const;
  void read_all(const std::string& kind, const std::vector<NamedTensor>& dst) const;

  std::string dir_;
  nlohmann::json state_;
  std::map<std::string, TensorInfo> model_, optimizer_;
  std::string model_source_, optimizer_source_;  // the file or index json named in messages
  std::map<std::string, FileInfo> files_;
  bool verified_ = false;
};

}  // namespace bk
