// Tests of the data pipeline: shards, the loader, reading documents, the tokenizer and
// `data prepare` end to end. Every test makes its own small data in a temporary directory.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sstream>

#include "loco/loader.h"
#include "loco/prepare.h"
#include "loco/progress.h"
#include "loco/shard.h"
#include "loco/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::Batch;
using loco::DataLoader;

namespace {

fs::path temp_root() {
  return fs::path(::testing::TempDir()) / ("loco_test_data_" + std::to_string(::getpid()));
}

// Removes every test's directory when the run ends.
struct RemoveTempRoot : ::testing::Environment {
  void TearDown() override { loco::testing::remove_tree(temp_root()); }
};
const auto* const kRemoveTempRoot = ::testing::AddGlobalTestEnvironment(new RemoveTempRoot);

// A fresh directory per test (or per suite, outside a test).
fs::path make_temp_dir() {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = test ? std::string(test->test_suite_name()) + "_" + test->name() : "suite";
  fs::path dir = temp_root() / name;
  loco::testing::remove_tree(dir);
  fs::create_directories(dir);
  return dir;
}

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Expects `fn` to throw E with a message that contains every one of `parts`.
template <typename E>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception thrown";
  } catch (const E& e) {
    for (const auto& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message: " << e.what() << "\nmissing: " << part;
    }
  }
}

std::vector<int32_t> random_tokens(size_t n, int32_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = dist(rng);
  return tokens;
}

// The stream 0, 1, 2, ...: a window's first input token is its start position.
torch::Tensor counting_stream(int64_t n) {
  return torch::arange(n, torch::kInt32);
}

std::vector<int64_t> window_starts(const Batch& batch) {
  auto first = batch.input.select(1, 0).contiguous();
  return {first.data_ptr<int64_t>(), first.data_ptr<int64_t>() + first.numel()};
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
                                      {"seq_len 256", "257", "only 256"});
  // One window is not enough for two workers.
  expect_error<std::invalid_argument>([] { DataLoader(counting_stream(300), 1, 256, 0, 1, 2); },
                                      {"seq_len 256", "only 300"});
}

TEST(Loader, EvalBatchesAreSequentialAndWrap) {
  auto tokens = counting_stream(5 * 4 + 1);  // 5 windows
  EXPECT_EQ(window_starts(loco::eval_batch(tokens, 0, 2, 4)), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(window_starts(loco::eval_batch(tokens, 2, 2, 4)), (std::vector<int64_t>{16, 0}));
  Batch batch = loco::eval_batch(tokens, 1, 2, 4);
  EXPECT_TRUE(torch::equal(batch.input, loco::eval_batch(tokens, 1, 2, 4).input));
  EXPECT_TRUE(torch::equal(batch.target, batch.input + 1));
}

TEST(Loader, LoadTokensGivesInt32) {
  fs::path dir = make_temp_dir();
  std::string path = (dir / "val.bin").string();
  auto tokens = random_tokens(50, 300, 5);
  loco::write_shard(path, tokens, 300);
  torch::Tensor loaded = loco::load_tokens(path);
  EXPECT_EQ(loaded.dtype(), torch::kInt32);
  EXPECT_EQ(loaded.dim(), 1);
  EXPECT_TRUE(torch::equal(loaded, torch::tensor(tokens, torch::kInt32)));
}

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
  loco::ShardInfo train, val;
  auto train_tokens = loco::read_shard(out("train.bin").string(), &train);
  loco::read_shard(out("val.bin").string(), &val);
  EXPECT_EQ(train.vocab_size, 300u);
  EXPECT_EQ(train.token_bytes, 2u);
  EXPECT_EQ(static_cast<int64_t>(train.count), result_.train_tokens);
  EXPECT_EQ(static_cast<int64_t>(val.count), result_.val_tokens);
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
  auto val = loco::read_shard(out("val.bin").string());
  std::vector<int32_t> doc;  // the first val document, without its <bos>
  for (size_t i = 1; i < val.size() && val[i] != tokenizer.bos_id(); ++i) doc.push_back(val[i]);
  int64_t sum = 0;
  for (int32_t id : doc) sum += bytes[id];
  EXPECT_EQ(sum, static_cast<int64_t>(tokenizer.decode(doc).size()));
}

TEST_F(Prepare, IsDeterministic) {
  loco::prepare_data(options("again"));
  for (const char* file : {"train.bin", "val.bin"}) {
    EXPECT_TRUE(read_file(out(file)) == read_file(*root_ / "again" / file)) << file;
  }
  // The model files differ only in the training-text path SentencePiece records in them.
  auto first = loco::Tokenizer::load(out("tokenizer.model").string());
  auto second = loco::Tokenizer::load((*root_ / "again" / "tokenizer.model").string());
  EXPECT_EQ(first.token_bytes(), second.token_bytes());
}

TEST_F(Prepare, KeepsAtLeastOneValDocument) {
  auto opts = options("no_val");
  opts.val_permille = 0;
  auto result = loco::prepare_data(opts);
  EXPECT_EQ(result.val_docs, 1);
  EXPECT_EQ(result.train_docs, 2999);
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(loco::format_duration(4.54), "4.5s");
  EXPECT_EQ(loco::format_duration(83), "1m23s");
  EXPECT_EQ(loco::format_duration(7500), "2h05m");
}
