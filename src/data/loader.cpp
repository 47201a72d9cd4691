// Training and evaluation batches cut from a token stream: seeded per-epoch permutations (a
// Feistel bijection, no array) shared out among workers, and a resumable cursor.
#include "loco/loader.h"

#include <spdlog/fmt/fmt.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace loco {
namespace {

// Windows of seq_len + 1 tokens that fit in a stream of n tokens (window i starts at i * seq_len).
int64_t count_windows(int64_t n, int64_t seq_len) {
  return n > seq_len ? (n - 1) / seq_len : 0;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Rows tokens[w * seq_len .. w * seq_len + seq_len] for each window index w, split into
// (input, target) int64 tensors of shape [B, seq_len].
Batch gather_windows(const TokenStream& tokens, const std::vector<int64_t>& windows,
                     int64_t seq_len) {
  auto rows = torch::empty({static_cast<int64_t>(windows.size()), seq_len + 1}, torch::kInt64);
  int64_t* out = rows.data_ptr<int64_t>();
  for (size_t i = 0; i < windows.size(); ++i) {
    tokens.read(windows[i] * seq_len, seq_len + 1, out + static_cast<int64_t>(i) * (seq_len + 1));
  }
  using torch::indexing::Slice;
  return {rows.index({Slice(), Slice(0, seq_len)}).contiguous(),
          rows.index({Slice(), Slice(1, seq_len + 1)}).contiguous()};
}

}  // namespace

Permutation::Permutation(uint64_t n, uint64_t seed) : n_(n) {
  int bits = 1;
  while (bits < 64 && (uint64_t(1) << bits) < n) ++bits;
  half_bits_ = (bits + 1) / 2;
  mask_ = (uint64_t(1) << half_bits_) - 1;
  uint64_t state = seed;
  for (auto& key : keys_) key = splitmix64(state);
}

uint64_t Permutation::feistel(uint64_t x) const {
  uint64_t left = x >> half_bits_, right = x & mask_;
  for (uint64_t key : keys_) {
    uint64_t mixed = key ^ right;
    uint64_t f = splitmix64(mixed) & mask_;
    uint64_t next = left ^ f;
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

// Cycle-walking: the network permutes 0..4^half_bits-1; following i's cycle until it lands
// below n gives a permutation of 0..n-1 (the cycle returns to i itself at worst).
uint64_t Permutation::operator()(uint64_t i) const {
  TORCH_CHECK(i < n_, "permutation index ", i, " is outside 0..", n_ - 1);
  do {
    i = feistel(i);
  } while (i >= n_);
  return i;
}

DataLoader::DataLoader(std::shared_ptr<const TokenStream> tokens, int64_t batch_size,
                       int64_t seq_len, int64_t seed, int64_t rank, int64_t world_size)
    : tokens_(std::move(tokens)),
      batch_size_(batch_size),
      seq_len_(seq_len),
      seed_(seed),
      rank_(rank),
      world_size_(world_size) {
  TORCH_CHECK(tokens_, "DataLoader: no token stream");
  if (batch_size < 1) throw std::invalid_argument(fmt::format("batch_size {} < 1", batch_size));
  if (seq_len < 1) throw std::invalid_argument(fmt::format("seq_len {} < 1", seq_len));
  if (world_size < 1) throw std::invalid_argument(fmt::format("world_size {} < 1", world_size));
  if (rank < 0 || rank >= world_size) {
    throw std::invalid_argument(
        fmt::format("rank {} is outside 0..{} (world_size {})", rank, world_size - 1, world_size));
  }
  n_windows_ = count_windows(tokens_->size(), seq_len) / world_size;
  if (n_windows_ < 1) {
    throw std::invalid_argument(fmt::format(
        "the corpus is too small: one window of seq_len {} + 1 tokens for each of {} worker(s) "
        "needs {} tokens, it holds {}",
        seq_len, world_size, world_size * seq_len + 1, tokens_->size()));
  }
  if (const char* log = std::getenv("LOCO_WINDOW_LOG")) window_log_ = log;
}

int64_t DataLoader::total_windows() const {
  return count_windows(tokens_->size(), seq_len_);
}

// The epoch's permutation depends only on (seed, epoch).
const Permutation& DataLoader::order_for(int64_t epoch) {
  if (!order_ || order_epoch_ != epoch) {
    uint64_t state = static_cast<uint64_t>(seed_);
    uint64_t key = splitmix64(state) ^ static_cast<uint64_t>(epoch);
    order_ = std::make_unique<Permutation>(total_windows(), key);
    order_epoch_ = epoch;
  }
  return *order_;
}

Batch DataLoader::next() {
  std::vector<int64_t> windows(batch_size_);
  if (leased_) {
    std::unique_lock<std::mutex> lock(*lease_mu_);
    const int64_t need = batch_size_ * lease_ranks_;  // the whole site's step
    for (int tries = 0; !stopped_ && lease_offset_ + need > lease_.size(); ++tries) {
      if (!refill_ || tries > 0)
        throw std::runtime_error(fmt::format(
            "the data lease {} is used up ({} of {} windows read, a step needs {}) and no next "
            "lease was claimed",
            lease_.id, lease_offset_, lease_.size(), need));
      lock.unlock();
      refill_(*this);
      lock.lock();
    }
    if (stopped_) never_->wait(lock, [] { return false; });  // leaving: the process exits
    std::vector<int64_t> epochs(batch_size_), positions(batch_size_);
    for (int64_t i = 0; i < batch_size_; ++i) {
      auto [epoch, position] = lease_.at(lease_offset_ + lease_rank_ + i * lease_ranks_);
      epochs[i] = epoch, positions[i] = position;
      windows[i] = static_cast<int64_t>(order_for(epoch)(static_cast<uint64_t>(position)));
    }
    lease_offset_ += need;
    if (!window_log_.empty()) log_windows(windows, epochs, positions);
    lock.unlock();
    return gather_windows(*tokens_, windows, seq_len_);
  }
  for (auto& window : windows) {
    if (cursor_.position == n_windows_) cursor_ = {cursor_.epoch + 1, 0};
    // This worker's share of the permutation: entries rank, rank + W, rank + 2W, ...
    window =
        static_cast<int64_t>(order_for(cursor_.epoch)(rank_ + cursor_.position++ * world_size_));
  }
  return gather_windows(*tokens_, windows, seq_len_);
}

void DataLoader::set_lease(const DataLease& lease, int64_t offset, int64_t rank, int64_t ranks) {
  if (ranks < 1 || rank < 0 || rank >= ranks || offset < 0 || offset > lease.size())
    throw std::invalid_argument(
        fmt::format("data lease {} of {} windows read from {} as rank {} of {}: out of range",
                    lease.id, lease.size(), offset, rank, ranks));
  std::lock_guard<std::mutex> lock(*lease_mu_);
  lease_ = lease, lease_offset_ = offset, lease_rank_ = rank, lease_ranks_ = ranks;
  leased_ = true;
}

DataLease DataLoader::lease() const {
  std::lock_guard<std::mutex> lock(*lease_mu_);
  return lease_;
}

int64_t DataLoader::lease_offset() const {
  std::lock_guard<std::mutex> lock(*lease_mu_);
  return lease_offset_;
}

std::pair<int64_t, int64_t> DataLoader::stop_reading() {
  std::lock_guard<std::mutex> lock(*lease_mu_);
  stopped_ = true;
  return {lease_.id, lease_offset_};
}

// LOCO_WINDOW_LOG=DIR: one line per window read, "epoch position window", in DIR/PID.log (a
// debugging and test aid: tests check that no window is read twice).
void DataLoader::log_windows(const std::vector<int64_t>& windows,
                             const std::vector<int64_t>& epochs,
                             const std::vector<int64_t>& positions) {
  std::string text;
  for (size_t i = 0; i < windows.size(); ++i)
    text += fmt::format("{} {} {}\n", epochs[i], positions[i], windows[i]);
  std::ofstream out(window_log_ + "/" + std::to_string(::getpid()) + ".log", std::ios::app);
  out << text << std::flush;
}

void DataLoader::set_cursor(const LoaderCursor& cursor) {
  if (cursor.epoch < 0 || cursor.position < 0 || cursor.position > n_windows_) {
    throw std::invalid_argument(
        fmt::format("loader cursor (epoch {}, position {}) is outside this stream's {} windows "
                    "per epoch",
                    cursor.epoch, cursor.position, n_windows_));
  }
  cursor_ = cursor;
}

Batch eval_batch(const TokenStream& tokens, int64_t index, int64_t batch_size, int64_t seq_len) {
  if (batch_size < 1 || seq_len < 1 || index < 0) {
    throw std::invalid_argument(fmt::format(
        "eval batch {} with batch_size {} and seq_len {}: all must be positive (index >= 0)", index,
        batch_size, seq_len));
  }
  int64_t total = count_windows(tokens.size(), seq_len);
  if (total < 1) {
    throw std::invalid_argument(
        fmt::format("seq_len {} needs at least {} tokens for evaluation; the stream holds only {}",
                    seq_len, seq_len + 1, tokens.size()));
  }
  std::vector<int64_t> windows(batch_size);
  for (int64_t i = 0; i < batch_size; ++i) windows[i] = (index * batch_size + i) % total;
  return gather_windows(tokens, windows, seq_len);
}

std::shared_ptr<const TokenStream> load_tokens(const std::string& path) {
  return TokenStream::open(path);
}

}  // namespace loco
