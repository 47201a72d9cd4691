// Tests of tokens on disk and in batches: shards (round trips, token width, refused files) and
// the loader (deterministic windows, disjoint workers, resuming, epochs, eval batches). Reading
// documents, the tokenizer and `data prepare` are in test_prepare.cpp. Every test makes its own
// small data in a temporary directory.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <random>
#include <set>

#include "data_test_util.h"
#include "loco/loader.h"
#include "loco/shard.h"

namespace fs = std::filesystem;
using loco::Batch;
using loco::DataLoader;
using loco::testing::expect_error;
using loco::testing::make_temp_dir;
using loco::testing::random_tokens;
using loco::testing::read_file;
using loco::testing::write_file;

namespace {

// The stream 0, 1, 2, ...: a window's first input token is its start position.
torch::Tensor counting_stream(int64_t n) {
  return torch::arange(n, torch::kInt32);
}

std::vector<int64_t> window_starts(const Batch& batch) {
  auto first = batch.input.select(1, 0).contiguous();
  return {first.data_ptr<int64_t>(), first.data_ptr<int64_t>() + first.numel()};
}

}  // namespace

// ---------------------------------------------------------------- shards

TEST(Shard, RoundTrip) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "train.bin").string();
  auto tokens = random_tokens(1000, 300, 1);
  loco::write_shard(path, tokens, 300);

  loco::ShardInfo info;
  EXPECT_EQ(loco::read_shard(path, &info), tokens);
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(info.token_bytes, 2u);
  EXPECT_EQ(info.count, 1000u);
  EXPECT_EQ(info.vocab_size, 300u);
  EXPECT_EQ(loco::read_shard_info(path).checksum, info.checksum);
  EXPECT_EQ(fs::file_size(path), 64u + 2 * 1000);
  // The temporary file was renamed into place, not left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}

TEST(Shard, TokenWidthFollowsVocabSize) {
  fs::path dir = make_temp_dir();
  std::string narrow = (dir / "narrow.bin").string(), wide = (dir / "wide.bin").string();
  loco::write_shard(narrow, {0, 65535, 7}, 65536);
  loco::write_shard(wide, {0, 65536, 7}, 65537);
  EXPECT_EQ(loco::read_shard_info(narrow).token_bytes, 2u);
  EXPECT_EQ(loco::read_shard_info(wide).token_bytes, 4u);
  EXPECT_EQ(loco::read_shard(narrow), (std::vector<int32_t>{0, 65535, 7}));
  EXPECT_EQ(loco::read_shard(wide), (std::vector<int32_t>{0, 65536, 7}));
  expect_error<loco::ShardError>(
      [&] {
        loco::write_shard(narrow, {0, 300}, 300);
      },
      {narrow, "token 300", "vocabulary"});
}

TEST(Shard, RefusesTruncatedFile) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "train.bin").string();
  loco::write_shard(path, random_tokens(100, 300, 2), 300);
  fs::resize_file(path, 64 + 2 * 60 + 1);
  expect_error<loco::ShardError>([&] { loco::read_shard(path); },
                                 {path, "truncated: header says 100 tokens, file holds 60"});
  expect_error<loco::ShardError>([&] { loco::read_shard_info(path); }, {path, "truncated"});
  fs::resize_file(path, 40);
  expect_error<loco::ShardError>([&] { loco::read_shard(path); }, {path, "truncated"});
}

TEST(Shard, RefusesForeignFile) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "train.bin").string();
  loco::write_shard(path, random_tokens(100, 300, 3), 300);
  std::string bytes = read_file(path);
  bytes[0] = 'X';
  write_file(path, bytes);
  expect_error<loco::ShardError>([&] { loco::read_shard(path); }, {path, "bad magic"});
  write_file(path, "hello");
  expect_error<loco::ShardError>([&] { loco::read_shard_info(path); }, {path, "bad magic"});
  std::string missing = (dir / "missing.bin").string();
  expect_error<loco::ShardError>([&] { loco::read_shard(missing); }, {missing, "cannot open"});
}

TEST(Shard, DetectsFlippedByte) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "train.bin").string();
  loco::write_shard(path, random_tokens(100, 300, 4), 300);
  std::string bytes = read_file(path);
  bytes[64 + 77] ^= 0x10;
  write_file(path, bytes);
  expect_error<loco::ShardError>([&] { loco::read_shard(path); },
                                 {path, "checksum mismatch (header 0x", ", data 0x"});
  EXPECT_NO_THROW(loco::read_shard_info(path));  // the header alone is still consistent
}

// ---------------------------------------------------------------- loader

TEST(Loader, BatchesAreDeterministicShiftedWindows) {
  auto tokens = counting_stream(20 * 16 + 1);
  DataLoader a(tokens, 4, 16, /*seed=*/7), b(tokens, 4, 16, /*seed=*/7), c(tokens, 4, 16, 8);
  bool seeds_differ = false;
  for (int step = 0; step < 6; ++step) {
    Batch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x.input.dtype(), torch::kInt64);
    EXPECT_EQ(x.input.sizes(), (std::vector<int64_t>{4, 16}));
    EXPECT_TRUE(torch::equal(x.input, y.input));
    EXPECT_TRUE(torch::equal(x.target, y.target));
    EXPECT_TRUE(torch::equal(x.target, x.input + 1));  // target is input shifted by one
    for (int64_t start : window_starts(x)) EXPECT_EQ(start % 16, 0);
    seeds_differ |= !torch::equal(x.input, z.input);
  }
  EXPECT_TRUE(seeds_differ);
}

TEST(Loader, WorkersAreDisjointWithinAnEpoch) {
  const int64_t world = 3, seq_len = 8;
  auto tokens = counting_stream(31 * seq_len + 1);  // 31 windows: each worker gets 10
  std::set<int64_t> seen;
  for (int64_t rank = 0; rank < world; ++rank) {
    DataLoader loader(tokens, 2, seq_len, 11, rank, world);
    EXPECT_EQ(loader.windows_per_epoch(), 10);
    for (int step = 0; step < 5; ++step) {
      for (int64_t start : window_starts(loader.next())) {
        EXPECT_TRUE(seen.insert(start).second) << "window " << start << " seen twice";
      }
    }
    EXPECT_EQ(loader.cursor().epoch, 0);
  }
  EXPECT_EQ(seen.size(), 30u);
}

TEST(Loader, WorkersTogetherMatchOneWorkerWithTheWholeBatch) {
  const int64_t world = 4, batch = 2, seq_len = 8;
  auto tokens = counting_stream(32 * seq_len + 1);  // 32 windows: 4 steps per epoch
  DataLoader single(tokens, world * batch, seq_len, 5);
  std::vector<DataLoader> workers;
  for (int64_t rank = 0; rank < world; ++rank) {
    workers.emplace_back(tokens, batch, seq_len, 5, rank, world);
  }
  for (int step = 0; step < 10; ++step) {  // crosses two epoch boundaries
    auto expected = window_starts(single.next());
    std::multiset<int64_t> together;
    for (auto& worker : workers) {
      for (int64_t start : window_starts(worker.next())) together.insert(start);
    }
    EXPECT_EQ(together, std::multiset<int64_t>(expected.begin(), expected.end()))
        << "step " << step;
  }
}

TEST(Loader, ResumesFromCursor) {
  auto tokens = counting_stream(7 * 16 + 1);
  DataLoader first(tokens, 3, 16, 21);
  for (int step = 0; step < 3; ++step) first.next();
  loco::LoaderCursor saved = first.cursor();
  DataLoader resumed(tokens, 3, 16, 21);
  resumed.set_cursor(saved);
  for (int step = 0; step < 6; ++step) {  // runs into later epochs
    EXPECT_TRUE(torch::equal(first.next().input, resumed.next().input)) << "step " << step;
  }
  EXPECT_EQ(first.cursor().epoch, resumed.cursor().epoch);
  EXPECT_EQ(first.cursor().position, resumed.cursor().position);
  EXPECT_THROW(resumed.set_cursor({0, 8}), std::invalid_argument);
}

TEST(Loader, WrapsIntoTheNextEpoch) {
  auto tokens = counting_stream(6 * 10 + 1);  // 6 windows
  DataLoader loader(tokens, 4, 10, 3);
  std::vector<int64_t> starts;
  for (int step = 0; step < 3; ++step) {
    for (int64_t start : window_starts(loader.next())) starts.push_back(start);
  }
  EXPECT_EQ(loader.cursor().epoch, 1);
  EXPECT_EQ(loader.cursor().position, 6);
  std::set<int64_t> epoch0(starts.begin(), starts.begin() + 6);
  std::set<int64_t> epoch1(starts.begin() + 6, starts.end());
  EXPECT_EQ(epoch0, (std::set<int64_t>{0, 10, 20, 30, 40, 50}));
  EXPECT_EQ(epoch1, epoch0);
  loader.next();
  EXPECT_EQ(loader.cursor().epoch, 2);
}

TEST(Loader, ShortStreamIsRefused) {
  expect_error<std::invalid_argument>([] { DataLoader(counting_stream(256), 1, 256, 0); },
                                      {"seq_len 256", "needs 257 tokens, it holds 256"});
  // One window is not enough for two workers.
  expect_error<std::invalid_argument>([] { DataLoader(counting_stream(300), 1, 256, 0, 1, 2); },
                                      {"2 worker(s)", "needs 513 tokens, it holds 300"});
}

TEST(Loader, EvalBatchesAreSequentialAndWrap) {
  auto tokens = counting_stream(5 * 4 + 1);  // 5 windows
  EXPECT_EQ(window_starts(loco::eval_batch(tokens, 0, 2, 4)), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(window_starts(loco::eval_batch(tokens, 2, 2, 4)), (std::vector<int64_t>{16, 0}));
  Batch batch = loco::eval_batch(tokens, 1, 2, 4);
  EXPECT_TRUE(torch::equal(batch.input, loco::eval_batch(tokens, 1, 2, 4).input));
  EXPECT_TRUE(torch::equal(batch.target, batch.input + 1));
}

// A single shard file (the old train.bin layout) is a one-shard stream.
TEST(Loader, LoadTokensReadsASingleShardFile) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "val.bin").string();
  auto tokens = random_tokens(50, 300, 5);
  loco::write_shard(path, tokens, 300);
  auto loaded = loco::load_tokens(path);
  EXPECT_EQ(loaded->num_shards(), 1);
  EXPECT_EQ(loaded->vocab_size(), 300u);
  EXPECT_TRUE(torch::equal(loaded->to_tensor(), torch::tensor(tokens, torch::kInt64)));
}
