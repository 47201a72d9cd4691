// Batches of (input, target) token windows for training and evaluation.
//
// The token stream (a TokenStream: memory-mapped shards, seen as one concatenation) is cut into
// non-overlapping windows of seq_len + 1 tokens (window i starts at i * seq_len; a window may
// straddle two shards, so the windows do not depend on the shard size). Each epoch visits the
// windows in a permutation seeded by (seed, epoch): a Feistel bijection on the window indices,
// computed entry by entry, so no array proportional to the corpus is ever built. Worker w of W
// takes the permutation's entries w, w + W, w + 2W, ...: the W streams are disjoint within an
// epoch, deterministic, and their union over one step of W workers with batch b is exactly the
// batch of one worker with batch W * b. The cursor (epoch, position) is all the state there is,
// so a loader resumes exactly from a saved cursor.
//
// In a coordinated run (diloco, demo) the loader reads a lease instead (set_lease; data_lease.h,
// docs/data.md "Data in a coordinated run"): the coordinator hands out permutation positions, and
// each step of a site of R ranks (R = 1 for a plain worker) reads the lease's next R * B
// positions, rank r taking entries r, r + R, ..., as R DDP ranks of one lease would. Its state is
// the lease and the offset into it. When a step needs more than the lease holds, the refill hook
// (set by the worker's sync) claims the next lease; without one the read fails.
#pragma once

#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "loco/data_lease.h"
#include "loco/token_stream.h"

namespace loco {

struct LoaderCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // index into this worker's share of the epoch's permutation
};

struct Batch {
  torch::Tensor input;   // [B, T] int64
  torch::Tensor target;  // [B, T] int64
};

// A seeded bijection of 0..n-1: a balanced Feistel network (6 rounds, keys from splitmix64 of
// the seed) on the smallest even number of bits that covers n, cycle-walked back into range.
// Pure integer arithmetic: the same on every platform. O(1) state, about 4 networks per entry
// at worst.
class Permutation {
 public:
  Permutation(uint64_t n, uint64_t seed);
  uint64_t operator()(uint64_t i) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t feistel(uint64_t x) const;
  static constexpr int kRounds = 6;
  uint64_t n_, mask_;
  int half_bits_;
  uint64_t keys_[kRounds];
};

class DataLoader {
 public:
  // Throws std::invalid_argument when the stream is too short for one window per worker
  // (naming the tokens needed and the tokens the stream holds).
  DataLoader(std::shared_ptr<const TokenStream> tokens, int64_t batch_size, int64_t seq_len,
             int64_t seed, int64_t rank = 0, int64_t world_size = 1);
  // A 1-D integer tensor as the stream (kept, not copied when it is int32).
  DataLoader(const torch::Tensor& tokens, int64_t batch_size, int64_t seq_len, int64_t seed,
             int64_t rank = 0, int64_t world_size = 1)
      : DataLoader(TokenStream::from_tensor(tokens), batch_size, seq_len, seed, rank, world_size) {}

  Batch next();  // advances the cursor, wrapping into the next epoch as needed

  LoaderCursor cursor() const { return cursor_; }
  void set_cursor(const LoaderCursor& cursor);

  int64_t windows_per_epoch() const { return n_windows_; }  // for this worker
  int64_t total_windows() const;                            // of the whole stream, an epoch

  // --- leases (coordinated runs) ---
  // From now on reads `lease` from entry `offset` on, as rank `rank` of a site of `ranks`.
  void set_lease(const DataLease& lease, int64_t offset, int64_t rank, int64_t ranks);
  bool leased() const { return leased_; }
  DataLease lease() const;
  int64_t lease_offset() const;  // entries of the lease read (by the whole site)
  int64_t lease_rank() const { return lease_rank_; }
  int64_t lease_ranks() const { return lease_ranks_; }
  // Called (with the loader) when a step needs more than the lease holds left; must set_lease.
  void set_refill(std::function<void(DataLoader&)> refill) { refill_ = std::move(refill); }
  // No read after this one (the worker is leaving): returns (lease id, entries read); a later
  // next() blocks for good (the process is about to exit).
  std::pair<int64_t, int64_t> stop_reading();

 private:
  void log_windows(const std::vector<int64_t>& windows, const std::vector<int64_t>& epochs,
                   const std::vector<int64_t>& positions);

  std::shared_ptr<const TokenStream> tokens_;
  int64_t batch_size_, seq_len_, seed_, rank_, world_size_;
  int64_t n_windows_ = 0;               // windows this worker sees per epoch
  std::unique_ptr<Permutation> order_;  // the current epoch's permutation of all windows
  int64_t order_epoch_ = -1;
  LoaderCursor cursor_;
  const Permutation& order_for(int64_t epoch);

  // The lease against stop_reading() on the leave's thread (pointers: the loader stays movable).
  std::unique_ptr<std::mutex> lease_mu_ = std::make_unique<std::mutex>();
  std::unique_ptr<std::condition_variable> never_ = std::make_unique<std::condition_variable>();
  bool leased_ = false, stopped_ = false;
  DataLease lease_;
  int64_t lease_offset_ = 0, lease_rank_ = 0, lease_ranks_ = 1;
  std::function<void(DataLoader&)> refill_;
  std::string window_log_;  // LOCO_WINDOW_LOG: a directory; each window read goes to PID.log
};

// Fixed, sequential validation batches: batch i holds windows i*B .. i*B+B-1 of the stream
// (wrapping around). Same batches every call, so val losses are comparable across evaluations.
Batch eval_batch(const TokenStream& tokens, int64_t index, int64_t batch_size, int64_t seq_len);
inline Batch eval_batch(const torch::Tensor& tokens, int64_t index, int64_t batch_size,
                        int64_t seq_len) {
  return eval_batch(*TokenStream::from_tensor(tokens), index, batch_size, seq_len);
}

// Opens the token stream whose first shard is `path` (DIR/train.bin, with DIR/train.index.json
// listing the rest when there is one; TokenStream::open: verified, memory-mapped).
std::shared_ptr<const TokenStream> load_tokens(const std::string& path);

}  // namespace loco
