// Checkpoints: everything needed to resume a run exactly, written atomically.
//
// A checkpoint is one file, `checkpoints/step_NNNNNNNN.pt` (a LibTorch archive) holding the
// resolved config, the step, the data cursor, the tokens seen, the RNG state, the flat
// parameters and every optimizer state tensor, plus a checksum over all of it. It is written to a
// temporary file, fsynced and renamed, so a crash leaves either the old set or the new one.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "loco/loader.h"

namespace loco {

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Checkpoint {
  int64_t step = 0;                              // optimizer steps completed
  int64_t tokens = 0;                            // training tokens consumed
  double wall_s = 0;                             // training wall-clock so far
  std::string config_yaml;                       // the resolved config of the run
  LoaderCursor cursor;                           // where the training stream continues
  std::map<std::string, torch::Tensor> tensors;  // "params", "rng", optimizer state, ...
};

// Writes `ckpt` to `path` atomically. Throws CheckpointError naming the path.
void save_checkpoint(const std::string& path, const Checkpoint& ckpt);

// Reads and verifies a checkpoint (tensors on CPU). Throws CheckpointError naming the path.
Checkpoint load_checkpoint(const std::string& path);

// Tensors keyed by names a checkpoint's keys cannot carry (any string: "wte[0:12]"), stored as
// PREFIX.0, PREFIX.1, ... with the names in PREFIX.names; read back by get_named (empty when
// absent). Error-feedback residuals, keyed by tensor or fragment piece.
void put_named(std::map<std::string, torch::Tensor>& out, const std::string& prefix,
               const std::map<std::string, torch::Tensor>& named);
std::map<std::string, torch::Tensor> get_named(const std::map<std::string, torch::Tensor>& in,
                                               const std::string& prefix);

// "DIR/step_00000100.pt" for step 100.
std::string checkpoint_path(const std::string& dir, int64_t step);

// Checkpoint files in `dir`, oldest first (by step). Empty when there are none.
std::vector<std::string> list_checkpoints(const std::string& dir);

// Removes all but the newest `keep` checkpoints in `dir`.
void prune_checkpoints(const std::string& dir, int64_t keep);

// FNV-1a 64 over the 64-bit words of flat float32 parameters (copied to the host first; an odd
// last float is its own word, zero-padded): equal on two
// replicas exactly when their parameters are, up to a collision. Every mode logs it as
// metrics.jsonl's `param_checksum` (a uint64), and a DiLoCo worker replaying an encoded download
// checks it against the coordinator's.
uint64_t param_checksum(const torch::Tensor& flat);

}  // namespace loco
