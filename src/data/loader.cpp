// Training and evaluation batches cut from a token stream: seeded per-epoch permutations shared
// out among workers, and a resumable cursor.
#include "loco/loader.h"

#include <spdlog/fmt/fmt.h>
#include <torch/torch.h>

#include <memory>
#include <stdexcept>

#include "loco/shard.h"

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

// A permutation of 0..n-1 that depends only on (seed, epoch): Fisher-Yates over splitmix64, so
// it is the same on every platform and LibTorch version. (The modulo bias is below n / 2^64.)
std::vector<int64_t> permutation(int64_t n, int64_t seed, int64_t epoch) {
  uint64_t state = static_cast<uint64_t>(seed);
  state = splitmix64(state) ^ static_cast<uint64_t>(epoch);
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(i + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

// Rows tokens[w * seq_len .. w * seq_len + seq_len] for each window index w, split into
// (input, target) int64 tensors of shape [B, seq_len].
Batch gather_windows(const torch::Tensor& tokens, const torch::Tensor& windows, int64_t seq_len) {
  auto offsets = torch::arange(seq_len + 1, torch::kInt64);
  auto index = windows.unsqueeze(1) * seq_len + offsets.unsqueeze(0);
  auto rows = tokens.index_select(0, index.flatten()).view({-1, seq_len + 1}).to(torch::kInt64);
  using torch::indexing::Slice;
  return {rows.index({Slice(), Slice(0, seq_len)}).contiguous(),
          rows.index({Slice(), Slice(1, seq_len + 1)}).contiguous()};
}

void check_stream(const torch::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 1, "token stream must be 1-D, got shape ", tokens.sizes());
  TORCH_CHECK(
      !tokens.is_floating_point() && !tokens.is_complex() && tokens.scalar_type() != torch::kBool,
      "token stream must hold integers, got ", tokens.scalar_type());
}

}  // namespace

DataLoader::DataLoader(torch::Tensor tokens, int64_t batch_size, int64_t seq_len, int64_t seed,
                       int64_t rank, int64_t world_size)
    : tokens_(std::move(tokens)),
      batch_size_(batch_size),
      seq_len_(seq_len),
      seed_(seed),
      rank_(rank),
      world_size_(world_size) {
  check_stream(tokens_);
  if (batch_size < 1) throw std::invalid_argument(fmt::format("batch_size {} < 1", batch_size));
  if (seq_len < 1) throw std::invalid_argument(fmt::format("seq_len {} < 1", seq_len));
  if (world_size < 1) throw std::invalid_argument(fmt::format("world_size {} < 1", world_size));
  if (rank < 0 || rank >= world_size) {
    throw std::invalid_argument(
        fmt::format("rank {} is outside 0..{} (world_size {})", rank, world_size - 1, world_size));
  }
  n_windows_ = count_windows(tokens_.numel(), seq_len) / world_size;
  if (n_windows_ < 1) {
    throw std::invalid_argument(
        fmt::format("seq_len {} needs at least {} tokens per worker ({} for {} workers); the shard "
                    "holds only {}",
                    seq_len, seq_len + 1, world_size * seq_len + 1, world_size, tokens_.numel()));
  }
}

Batch DataLoader::next() {
  std::vector<int64_t> windows(batch_size_);
  for (auto& window : windows) {
    if (cursor_.position == n_windows_) cursor_ = {cursor_.epoch + 1, 0};
    if (order_epoch_ != cursor_.epoch) shuffle_epoch();
    window = order_.data_ptr<int64_t>()[cursor_.position++];
  }
  return gather_windows(tokens_, torch::tensor(windows, torch::kInt64), seq_len_);
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

// This worker's share of the epoch's permutation: entries rank, rank + W, rank + 2W, ...
void DataLoader::shuffle_epoch() {
  std::vector<int64_t> perm =
      permutation(count_windows(tokens_.numel(), seq_len_), seed_, cursor_.epoch);
  order_ = torch::empty({n_windows_}, torch::kInt64);
  auto order = order_.accessor<int64_t, 1>();
  for (int64_t k = 0; k < n_windows_; ++k) order[k] = perm[rank_ + k * world_size_];
  order_epoch_ = cursor_.epoch;
}

Batch eval_batch(const torch::Tensor& tokens, int64_t index, int64_t batch_size, int64_t seq_len) {
  check_stream(tokens);
  if (batch_size < 1 || seq_len < 1 || index < 0) {
    throw std::invalid_argument(fmt::format(
        "eval batch {} with batch_size {} and seq_len {}: all must be positive (index >= 0)", index,
        batch_size, seq_len));
  }
  int64_t total = count_windows(tokens.numel(), seq_len);
  if (total < 1) {
    throw std::invalid_argument(
        fmt::format("seq_len {} needs at least {} tokens for evaluation; the shard holds only {}",
                    seq_len, seq_len + 1, tokens.numel()));
  }
  auto windows = (torch::arange(batch_size, torch::kInt64) + index * batch_size) % total;
  return gather_windows(tokens, windows, seq_len);
}

torch::Tensor load_tokens(const std::string& path) {
  // The tensor takes ownership of the vector's buffer: no copy of a large shard.
  auto tokens = std::make_unique<std::vector<int32_t>>(read_shard(path));
  void* data = tokens->data();
  auto size = static_cast<int64_t>(tokens->size());
  return torch::from_blob(
      data, {size}, [owner = tokens.release()](void*) { delete owner; }, torch::kInt32);
}

}  // namespace loco
