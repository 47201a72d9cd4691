// Tests of turning text into training data: reading documents (plain text, JSONL, JSON arrays,
// directories), the tokenizer and `data prepare` end to end, and the progress line's durations.
// Shards and the loader are in test_data.cpp and test_shards.cpp. Every test makes its own small
// data in a temporary directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <random>

#include "data_test_util.h"
#include "loco/prepare.h"
#include "loco/progress.h"
#include "loco/shard.h"
#include "loco/token_stream.h"
#include "loco/tokenizer.h"

namespace fs = std::filesystem;
using loco::testing::expect_error;
using loco::testing::make_temp_dir;
using loco::testing::read_file;
using loco::testing::write_file;

namespace {

// Every token of the stream whose first shard is `first` (OUT/train.bin), in order.
std::vector<int32_t> stream_tokens(const fs::path& first) {
  auto all = loco::TokenStream::open(first.string())->to_tensor().to(torch::kInt32);
  return {all.data_ptr<int32_t>(), all.data_ptr<int32_t>() + all.numel()};
}

// Synthetic English-like sentences from a fixed word list and seed.
std::string synthetic_corpus(int sentences, unsigned seed) {
  static const std::vector<std::string> kWords = {
      "the",    "a",      "river",  "stone",   "light",  "quiet", "city",   "runs",  "falls",
      "green",  "old",    "new",    "morning", "winter", "over",  "under",  "and",   "but",
      "slowly", "bright", "market", "garden",  "window", "song",  "travel", "north", "south",
      "people", "speak",  "listen", "paper",   "number", "seven", "twelve", "house", "bridge"};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> word(0, kWords.size() - 1);
  std::uniform_int_distribution<int> length(4, 14);
  std::string text;
  for (int s = 0; s < sentences; ++s) {
    std::string sentence;
    for (int w = length(rng); w > 0; --w) {
      sentence += (sentence.empty() ? "" : " ") + kWords[word(rng)];
    }
    sentence[0] = static_cast<char>(std::toupper(sentence[0]));
    text += sentence + ".\n";
  }
  return text;
}

}  // namespace

// ---------------------------------------------------------------- reading documents

TEST(ReadDocuments, PlainTextSkipsBlankLines) {
  fs::path dir = make_temp_dir();
  write_file(dir / "a.txt", "first doc\r\n\n   \nsecond doc\nthird doc");
  EXPECT_EQ(loco::read_documents({(dir / "a.txt").string()}),
            (std::vector<std::string>{"first doc", "second doc", "third doc"}));
}

TEST(ReadDocuments, Jsonl) {
  fs::path dir = make_temp_dir();
  std::string good = (dir / "good.jsonl").string();
  write_file(good, R"({"text": "one\ntwo", "id": 1})"
                   "\n\n"
                   R"({"text": "three"})"
                   "\r\n"
                   R"({"text": " "})"
                   "\n");
  EXPECT_EQ(loco::read_documents({good}), (std::vector<std::string>{"one\ntwo", "three"}));

  std::string bad = (dir / "bad.jsonl").string();
  write_file(bad, "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \n");
  expect_error<std::runtime_error>([&] { loco::read_documents({bad}); },
                                   {bad + ":3", "invalid JSON"});
  std::string missing = (dir / "missing.jsonl").string();
  write_file(missing, "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n");
  expect_error<std::runtime_error>([&] { loco::read_documents({missing}); },
                                   {missing + ":2", "\"text\""});
}

TEST(ReadDocuments, JsonArray) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "docs.json").string();
  write_file(path, R"(["alpha", {"text": "beta"}, "", "gamma"])");
  EXPECT_EQ(loco::read_documents({path}), (std::vector<std::string>{"alpha", "beta", "gamma"}));
  write_file(path, R"({"text": "not an array"})");
  expect_error<std::runtime_error>([&] { loco::read_documents({path}); }, {path, "array"});
  write_file(path, R"(["ok", 3])");
  expect_error<std::runtime_error>([&] { loco::read_documents({path}); }, {path, "element 1"});
}

TEST(ReadDocuments, DirectoryIsReadInSortedOrder) {
  fs::path dir = make_temp_dir();
  fs::create_directories(dir / "sub");
  write_file(dir / "b.txt", "from b\n");
  write_file(dir / "sub" / "c.jsonl", "{\"text\": \"from c\"}\n");
  write_file(dir / "a.json", R"(["from a"])");
  write_file(dir / ".hidden.txt", "hidden\n");
  EXPECT_EQ(loco::read_documents({dir.string()}),
            (std::vector<std::string>{"from a", "from b", "from c"}));
  std::string missing = (dir / "nope.txt").string();
  expect_error<std::runtime_error>([&] { loco::read_documents({missing}); }, {missing});
}

// `loco data prepare` reads its inputs twice, a document at a time, never the whole corpus.
TEST(ReadDocuments, TheReaderStreamsLineByLine) {
  fs::path dir = make_temp_dir();
  write_file(dir / "a.txt", "first\nsecond doc\n");
  write_file(dir / "b.jsonl", R"({"text": "third"})"
                              "\n");
  loco::DocumentReader reader({dir.string()});
  EXPECT_EQ(reader.total_bytes(), 17 + 18);
  std::string doc;
  ASSERT_TRUE(reader.next(doc));
  EXPECT_EQ(doc, "first");
  EXPECT_EQ(reader.bytes_read(), 6);  // one line of a.txt read so far
  ASSERT_TRUE(reader.next(doc));
  ASSERT_TRUE(reader.next(doc));
  EXPECT_EQ(doc, "third");
  EXPECT_EQ(reader.bytes_read(), 17 + 18);
  EXPECT_FALSE(reader.next(doc));
}

TEST(ReadDocuments, SampleCorpus) {
  auto docs = loco::read_documents({std::string(LOCO_SOURCE_DIR) + "/tests/data/sample.json"});
  EXPECT_EQ(docs.size(), 1500u);
}

// ---------------------------------------------------------------- prepare and tokenizer

// One `data prepare` run on a synthetic corpus, shared by the tests below.
class Prepare : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(make_temp_dir());
    write_file(*root_ / "corpus.txt", synthetic_corpus(3000, 42));
    result_ = loco::prepare_data(options("out"));
  }
  static void TearDownTestSuite() {
    loco::testing::remove_tree(*root_);
    delete root_;
  }
  static loco::PrepareOptions options(const std::string& out) {
    loco::PrepareOptions options;
    options.inputs = {(*root_ / "corpus.txt").string()};
    options.out_dir = (*root_ / out).string();
    options.vocab_size = 300;
    options.val_permille = 50;
    options.num_threads = 2;
    return options;
  }
  static fs::path out(const std::string& file) { return *root_ / "out" / file; }

  static fs::path* root_;
  static loco::PrepareResult result_;
};
fs::path* Prepare::root_ = nullptr;
loco::PrepareResult Prepare::result_;

TEST_F(Prepare, WritesTokenizerAndShards) {
  EXPECT_EQ(result_.train_docs + result_.val_docs, 3000);
  EXPECT_GT(result_.val_docs, 50);
  EXPECT_LT(result_.val_docs, 300);
  EXPECT_FALSE(fs::exists(out(".tokenizer_train.txt")));
  EXPECT_EQ(result_.train_shards, 1);  // the default shard holds 64 Mi tokens
  EXPECT_EQ(result_.val_shards, 1);
  // One shard: train.bin and val.bin are the single files of before shards, each holding its whole
  // stream (what a checker reading train.bin alone sees), with an index beside them.
  loco::ShardInfo train, val;
  auto train_tokens = loco::read_shard(out("train.bin").string(), &train);
  loco::read_shard(out("val.bin").string(), &val);
  EXPECT_EQ(train.vocab_size, 300u);
  EXPECT_EQ(train.token_bytes, 2u);
  EXPECT_EQ(static_cast<int64_t>(train.count), result_.train_tokens);
  EXPECT_EQ(static_cast<int64_t>(val.count), result_.val_tokens);
  EXPECT_TRUE(fs::exists(out("train.index.json")));
  EXPECT_TRUE(fs::exists(out("val.index.json")));
  EXPECT_FALSE(fs::exists(out("train-000001.bin")));
  EXPECT_EQ(stream_tokens(out("train.bin")), train_tokens);
  EXPECT_EQ(loco::TokenStream::open(out("val.bin").string())->size(), result_.val_tokens);
  EXPECT_EQ(train_tokens[0], 1);  // every document starts with <bos>
  EXPECT_EQ(std::count(train_tokens.begin(), train_tokens.end(), 1), result_.train_docs);
  EXPECT_GT(result_.train_bytes, result_.train_tokens);  // BPE merges: more than a byte a token
}

TEST_F(Prepare, TokenizerRoundTrip) {
  auto tokenizer = loco::Tokenizer::load(out("tokenizer.model").string());
  EXPECT_EQ(tokenizer.vocab_size(), 300);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  const std::string text = "The old river runs slowly under the bridge and people listen.";
  auto ids = tokenizer.encode(text);
  EXPECT_LT(ids.size(), text.size());
  EXPECT_EQ(tokenizer.decode(ids), text);
  expect_error<std::runtime_error>([&] { loco::Tokenizer::load(out("nope.model").string()); },
                                   {"nope.model"});
}

TEST_F(Prepare, TokenBytesSumToDecodedLength) {
  auto tokenizer = loco::Tokenizer::load(out("tokenizer.model").string());
  auto bytes = tokenizer.token_bytes();
  ASSERT_EQ(bytes.size(), 300u);
  EXPECT_EQ(bytes[0], 0);  // <unk>
  EXPECT_EQ(bytes[1], 0);  // <bos>
  EXPECT_EQ(bytes[2], 0);  // <eos>
  auto val = stream_tokens(out("val.bin"));
  std::vector<int32_t> doc;  // the first val document, without its <bos>
  for (size_t i = 1; i < val.size() && val[i] != tokenizer.bos_id(); ++i) doc.push_back(val[i]);
  int64_t sum = 0;
  for (int32_t id : doc) sum += bytes[id];
  EXPECT_EQ(sum, static_cast<int64_t>(tokenizer.decode(doc).size()));
}

TEST_F(Prepare, IsDeterministic) {
  loco::prepare_data(options("again"));
  for (const char* file : {"train.bin", "val.bin", "train.index.json", "val.index.json"}) {
    EXPECT_TRUE(read_file(out(file)) == read_file(*root_ / "again" / file)) << file;
  }
  // The model files differ only in the training-text path SentencePiece records in them.
  auto first = loco::Tokenizer::load(out("tokenizer.model").string());
  auto second = loco::Tokenizer::load((*root_ / "again" / "tokenizer.model").string());
  EXPECT_EQ(first.token_bytes(), second.token_bytes());
}

// Small shards and one encoding thread give the same token stream as one shard encoded on two
// threads: sharding and threading change nothing in the tokens.
TEST_F(Prepare, ShardsHoldTheSameTokensAsOneShard) {
  const fs::path dir = *root_ / "sharded";
  // What the shard directories of an earlier layout left there is removed.
  write_file(dir / "train" / "000000.bin", "old");
  write_file(dir / "train" / "index.json", "{}");
  auto opts = options("sharded");
  opts.shard_tokens = 1000;
  opts.num_threads = 1;
  auto result = loco::prepare_data(opts);
  EXPECT_FALSE(fs::exists(dir / "train"));
  EXPECT_EQ(result.train_shards, (result_.train_tokens + 999) / 1000);
  EXPECT_GT(result.train_shards, 2);
  EXPECT_EQ(result.train_tokens, result_.train_tokens);
  for (const char* first : {"train.bin", "val.bin"}) {
    EXPECT_EQ(stream_tokens(dir / first), stream_tokens(out(first))) << first;
  }
  // train.bin is shard 0: the first 1000 tokens, under the 64-byte header of a one-shard corpus.
  auto shard0 = loco::read_shard((dir / "train.bin").string());
  EXPECT_EQ(shard0.size(), 1000u);
  EXPECT_TRUE(std::equal(shard0.begin(), shard0.end(), stream_tokens(out("train.bin")).begin()));
  EXPECT_TRUE(fs::exists(dir / "train-000002.bin"));
  EXPECT_FALSE(fs::exists(dir / "train.bin.partial"));
  // Preparing again into the same directory with bigger shards leaves no stale shard behind, and
  // train.bin is again the whole stream, byte for byte the unsharded preparation's.
  opts.shard_tokens = 1 << 20;
  loco::prepare_data(opts);
  EXPECT_FALSE(fs::exists(dir / "train-000001.bin"));
  EXPECT_TRUE(read_file(dir / "train.bin") == read_file(out("train.bin")));
  EXPECT_EQ(stream_tokens(dir / "train.bin"), stream_tokens(out("train.bin")));
}

TEST_F(Prepare, KeepsAtLeastOneValDocument) {
  auto opts = options("no_val");
  opts.val_permille = 0;
  auto result = loco::prepare_data(opts);
  EXPECT_EQ(result.val_docs, 1);
  EXPECT_EQ(result.train_docs, 2999);
  // val holds the last document read (the two passes over the input agree on which it is).
  auto docs = loco::read_documents(opts.inputs);
  auto tokenizer = loco::Tokenizer::load((*root_ / "no_val" / "tokenizer.model").string());
  std::vector<int32_t> expected = {tokenizer.bos_id()};
  auto last = tokenizer.encode(docs.back());
  expected.insert(expected.end(), last.begin(), last.end());
  auto val = loco::read_shard((*root_ / "no_val" / "val.bin").string());
  EXPECT_EQ(val, expected);
  EXPECT_EQ(result.val_bytes, static_cast<int64_t>(docs.back().size()));
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(loco::format_duration(4.54), "4.5s");
  EXPECT_EQ(loco::format_duration(83), "1m23s");
  EXPECT_EQ(loco::format_duration(7500), "2h05m");
}
