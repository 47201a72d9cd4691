// Tests of corpora larger than memory: sharded streams (train.bin, train-000001.bin, ...,
// train.index.json) written by ShardWriter and read back through memory-mapped TokenStreams
// (across shard boundaries), missing and truncated shards refused by name, train.bin appearing
// only when the stream is complete, the Feistel permutation, and a loader resumed in the middle of
// the second shard continuing exactly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "data_test_util.h"
#include "loco/loader.h"
#include "loco/shard.h"
#include "loco/token_stream.h"

namespace fs = std::filesystem;
using loco::DataLoader;
using loco::ShardError;
using loco::TokenStream;
using loco::testing::expect_error;
using loco::testing::make_temp_dir;
using loco::testing::random_tokens;

namespace {

// Writes `tokens` as a stream of `shard_tokens`-token shards whose first is `first`, appended in
// uneven pieces. Returns `first`.
fs::path write_corpus(const fs::path& first, const std::vector<int32_t>& tokens,
                      int64_t shard_tokens, uint32_t vocab) {
  loco::ShardWriter writer(first.string(), vocab, shard_tokens);
  size_t at = 0, piece = 1;
  while (at < tokens.size()) {
    size_t n = std::min(piece, tokens.size() - at);
    writer.append({tokens.begin() + at, tokens.begin() + at + n});
    at += n, piece = piece * 3 + 1;
  }
  writer.finish();
  return first;
}

torch::Tensor as_tensor(const std::vector<int32_t>& tokens) {
  return torch::tensor(tokens, torch::kInt64);
}

}  // namespace

TEST(Shards, WrittenAndReadBackAcrossBoundaries) {
  auto tokens = random_tokens(10000, 70000, 1);  // vocab above 65,536: 4 bytes a token
  fs::path first = write_corpus(make_temp_dir() / "train.bin", tokens, 3000, 70000);
  fs::path dir = first.parent_path();
  for (const char* file : {"train.bin", "train-000001.bin", "train-000002.bin", "train-000003.bin",
                           "train.index.json"}) {
    EXPECT_TRUE(fs::exists(dir / file)) << file;
  }
  EXPECT_FALSE(fs::exists(dir / "train-000004.bin"));
  EXPECT_FALSE(fs::exists(dir / "train.bin.partial"));
  EXPECT_EQ(loco::read_shard_info((dir / "train-000003.bin").string()).count, 1000u);
  // train.bin is shard 0 with its own header: a reader of the header alone sees a valid shard.
  auto head = loco::read_shard_info(first.string());
  EXPECT_EQ(head.count, 3000u);
  EXPECT_EQ(head.vocab_size, 70000u);
  EXPECT_EQ(head.token_bytes, 4u);

  auto stream = TokenStream::open(first.string());
  EXPECT_EQ(stream->size(), 10000);
  EXPECT_EQ(stream->num_shards(), 4);
  EXPECT_EQ(stream->vocab_size(), 70000u);
  EXPECT_TRUE(torch::equal(stream->to_tensor(), as_tensor(tokens)));
  std::vector<int64_t> piece(7000);  // from shard 0 through shard 3
  stream->read(2995, 7000, piece.data());
  for (size_t i = 0; i < piece.size(); ++i) ASSERT_EQ(piece[i], tokens[2995 + i]) << i;
  EXPECT_THROW(stream->read(9990, 11, piece.data()), c10::Error);
}

TEST(Shards, MissingShardIsRefusedByName) {
  fs::path first =
      write_corpus(make_temp_dir() / "train.bin", random_tokens(5000, 300, 2), 1000, 300);
  fs::path dir = first.parent_path();
  fs::remove(dir / "train-000004.bin");  // the last one: no gap in the numbering gives it away
  expect_error<ShardError>(
      [&] { TokenStream::open(first.string()); },
      {(dir / "train-000004.bin").string(), "missing shard", (dir / "train.index.json").string()});
}

TEST(Shards, TruncatedShardIsRefusedByName) {
  fs::path first =
      write_corpus(make_temp_dir() / "train.bin", random_tokens(5000, 300, 3), 1000, 300);
  fs::path shard = first.parent_path() / "train-000001.bin";
  fs::resize_file(shard, fs::file_size(shard) - 10);
  expect_error<ShardError>([&] { TokenStream::open(first.string()); },
                           {shard.string(), "truncated", "1000 tokens"});
}

TEST(Shards, CorruptShardAndMismatchedIndexAreRefusedByName) {
  fs::path first =
      write_corpus(make_temp_dir() / "train.bin", random_tokens(3000, 300, 4), 1000, 300);
  fs::path dir = first.parent_path(), index = dir / "train.index.json";
  const std::string good_index = loco::testing::read_file(index);
  {
    std::fstream f(dir / "train-000002.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  expect_error<ShardError>([&] { TokenStream::open(first.string()); },
                           {(dir / "train-000002.bin").string(), "checksum mismatch"});
  // An index whose count or vocabulary disagrees with a shard's header, or that does not start
  // with the named file.
  auto edit_index = [&](const std::string& from, const std::string& to) {
    std::string text = good_index;
    ASSERT_NE(text.find(from), std::string::npos) << from;
    text.replace(text.find(from), from.size(), to);
    loco::testing::write_file(index, text);
  };
  edit_index("\"tokens\": 3000", "\"tokens\": 2999");
  expect_error<ShardError>([&] { TokenStream::open(first.string()); },
                           {index.string(), "hold 3000 tokens but it says 2999"});
  edit_index("\"vocab_size\": 300", "\"vocab_size\": 301");
  expect_error<ShardError>([&] { TokenStream::open(first.string()); },
                           {first.string(), "vocabulary 300", "says 301"});
  edit_index("\"file\": \"train.bin\"", "\"file\": \"other.bin\"");
  expect_error<ShardError>([&] { TokenStream::open(first.string()); },
                           {index.string(), "other.bin as the first shard, not train.bin"});
  // Without its index, train.bin alone is a one-shard corpus (the layout before shards).
  fs::remove(index);
  auto alone = TokenStream::open(first.string());
  EXPECT_EQ(alone->size(), 1000);
  EXPECT_EQ(alone->num_shards(), 1);
  // A directory is not a stream: the error says what to name.
  expect_error<ShardError>([&] { TokenStream::open(dir.string()); },
                           {dir.string(), "is a directory", "train.bin"});
}

// train.bin becomes visible last: a stream cut off before finish() leaves no train.bin (its shard
// 0 is still under a temporary name), so nothing can read a partial corpus; writing the same
// stream again removes what the earlier one left.
TEST(Shards, TrainBinAppearsOnlyWhenTheStreamIsComplete) {
  fs::path dir = make_temp_dir(), first = dir / "train.bin";
  write_corpus(first, random_tokens(5000, 300, 8), 1000, 300);
  {
    loco::ShardWriter writer(first.string(), 300, 1000);
    EXPECT_FALSE(fs::exists(first));  // the earlier stream is gone
    EXPECT_FALSE(fs::exists(dir / "train.index.json"));
    EXPECT_FALSE(fs::exists(dir / "train-000004.bin"));
    writer.append(random_tokens(2500, 300, 9));
    EXPECT_TRUE(fs::exists(dir / "train.bin.partial"));
    EXPECT_TRUE(fs::exists(dir / "train-000001.bin"));
    EXPECT_FALSE(fs::exists(first));
    writer.finish();
  }
  EXPECT_TRUE(fs::exists(first));
  EXPECT_FALSE(fs::exists(dir / "train.bin.partial"));
  EXPECT_FALSE(fs::exists(dir / "train-000003.bin"));
  auto stream = TokenStream::open(first.string());
  EXPECT_EQ(stream->size(), 2500);
  EXPECT_EQ(stream->num_shards(), 3);
}

TEST(Shards, CorpusTooSmallForOneWindowPerWorkerIsRefused) {
  fs::path first =
      write_corpus(make_temp_dir() / "train.bin", random_tokens(600, 300, 5), 256, 300);
  auto stream = TokenStream::open(first.string());
  EXPECT_NO_THROW(DataLoader(stream, 1, 256, 0, 0, 2));
  expect_error<std::invalid_argument>([&] { DataLoader(stream, 1, 256, 0, 3, 4); },
                                      {"4 worker(s)", "needs 1025 tokens, it holds 600"});
}

TEST(Permutation, IsABijectionThatDependsOnTheSeed) {
  for (uint64_t n : {1, 2, 3, 5, 64, 1000, 4097}) {
    loco::Permutation perm(n, 99);
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t j = perm(i);
      EXPECT_LT(j, n);
      seen.insert(j);
    }
    EXPECT_EQ(seen.size(), n) << "n = " << n;
  }
  loco::Permutation a(1000, 1), b(1000, 2);
  int same = 0, fixed = 0;
  for (uint64_t i = 0; i < 1000; ++i) same += a(i) == b(i), fixed += a(i) == i;
  EXPECT_LT(same, 20);   // two seeds: about 1 agreement expected
  EXPECT_LT(fixed, 20);  // and it does shuffle
}

// A worker resumed from a cursor saved in the middle of the second shard reads exactly the
// batches the uninterrupted worker reads, through the next epoch, from a freshly opened stream.
TEST(Shards, ResumeInTheSecondShardContinuesExactly) {
  const int64_t seq_len = 16, batch = 2, shard = 1000, world = 2, rank = 1;
  auto tokens = random_tokens(4 * shard, 300, 6);
  fs::path first = write_corpus(make_temp_dir() / "train.bin", tokens, shard, 300);
  auto reference = as_tensor(tokens);

  DataLoader whole(TokenStream::open(first.string()), batch, seq_len, 17, rank, world);
  std::vector<loco::Batch> batches;
  std::vector<loco::LoaderCursor> cursors;
  int64_t resume_at = -1;
  for (int step = 0; step < 3 * whole.windows_per_epoch() / batch; ++step) {
    cursors.push_back(whole.cursor());
    batches.push_back(whole.next());
  }
  // The first step after step 0 whose first window starts inside shard 1 (tokens 1000..1999).
  for (size_t step = 1; step < batches.size() && resume_at < 0; ++step) {
    auto first = batches[step].input[0];
    for (int64_t w = 0; w * seq_len + seq_len < 4 * shard; ++w) {
      using torch::indexing::Slice;
      if (torch::equal(reference.index({Slice(w * seq_len, w * seq_len + seq_len)}), first)) {
        if (w * seq_len >= shard && w * seq_len < 2 * shard) resume_at = int64_t(step);
        break;
      }
    }
  }
  ASSERT_GT(resume_at, 0) << "no step starts in the second shard";

  DataLoader resumed(TokenStream::open(first.string()), batch, seq_len, 17, rank, world);
  resumed.set_cursor(cursors[resume_at]);
  for (size_t step = resume_at; step < batches.size(); ++step) {
    auto b = resumed.next();
    ASSERT_TRUE(torch::equal(b.input, batches[step].input)) << "step " << step;
    ASSERT_TRUE(torch::equal(b.target, batches[step].target)) << "step " << step;
  }
  EXPECT_GE(resumed.cursor().epoch, 2);
}

// The loader sees the same windows whatever the shard size: a sharded corpus is the
// concatenation of its shards.
TEST(Shards, LoaderBatchesDoNotDependOnTheShardSize) {
  auto tokens = random_tokens(5000, 300, 7);
  fs::path root = make_temp_dir();
  DataLoader small(TokenStream::open(write_corpus(root / "a.bin", tokens, 333, 300).string()), 4,
                   32, 3);
  DataLoader one(TokenStream::from_tensor(torch::tensor(tokens, torch::kInt32)), 4, 32, 3);
  for (int step = 0; step < 60; ++step) {  // several epochs of 156 windows
    ASSERT_TRUE(torch::equal(small.next().input, one.next().input)) << "step " << step;
  }
}
