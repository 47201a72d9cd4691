// Batches of (input, target) token windows for training and evaluation.
//
// The token stream is cut into non-overlapping windows of seq_len + 1 tokens (window i starts at
// i * seq_len). Each epoch visits the windows in a permutation seeded by (seed, epoch). Worker w
// of W takes the permutation's entries w, w + W, w + 2W, ...: the W streams are disjoint within an
// epoch, deterministic, and their union over one step of W workers with batch b is exactly the
// batch of one worker with batch W * b. The cursor (epoch, position) is all the state there is, so
// a loader resumes exactly from a saved cursor.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace loco {

struct LoaderCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // index into this worker's share of the epoch's permutation
};

struct Batch {
  torch::Tensor input;   // [B, T] int64
  torch::Tensor target;  // [B, T] int64
};

class DataLoader {
 public:
  // `tokens` is a 1-D integer tensor (kept, not copied). Throws std::invalid_argument when the
  // stream is too short for one window per worker (names seq_len and the token count).
  DataLoader(torch::Tensor tokens, int64_t batch_size, int64_t seq_len, int64_t seed,
             int64_t rank = 0, int64_t world_size = 1);

  Batch next();  // advances the cursor, wrapping into the next epoch as needed

  LoaderCursor cursor() const { return cursor_; }
  void set_cursor(const LoaderCursor& cursor);

  int64_t windows_per_epoch() const { return n_windows_; }  // for this worker

 private:
  void shuffle_epoch();

  torch::Tensor tokens_;
  int64_t batch_size_, seq_len_, seed_, rank_, world_size_;
  int64_t n_windows_ = 0;  // windows this worker sees per epoch
  torch::Tensor order_;    // this worker's window indices for the current epoch
  int64_t order_epoch_ = -1;
  LoaderCursor cursor_;
};

// Fixed, sequential validation batches: batch i holds windows i*B .. i*B+B-1 of the stream
// (wrapping around). Same batches every call, so val losses are comparable across evaluations.
Batch eval_batch(const torch::Tensor& tokens, int64_t index, int64_t batch_size, int64_t seq_len);

// Loads a shard as a 1-D int32 tensor (read_shard + verification).
torch::Tensor load_tokens(const std::string& path);

}  // namespace loco
