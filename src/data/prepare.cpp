// `loco data prepare`: documents -> train/val split -> BPE tokenizer -> token shards.
#include "loco/prepare.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "loco/progress.h"
#include "loco/shard.h"
#include "loco/tokenizer.h"

namespace loco {
namespace {

namespace fs = std::filesystem;

// A document goes to val when FNV-1a(text) mod 1000 < val_permille.
bool goes_to_val(const std::string& doc, int val_permille) {
  return fnv1a64(doc.data(), doc.size()) % 1000 < static_cast<uint64_t>(val_permille);
}

// The split's sizes, from a first pass over the documents. Each side keeps at least one: when
// one is empty, the other's last document moves to it (`moved`: its index on its own side).
struct Split {
  int64_t train = 0, val = 0;
  int64_t train_bytes = 0, val_bytes = 0;
  bool train_to_val = false, val_to_train = false;
};

// The tokenizer's training text: one document per line, its own newlines turned into spaces.
// A train document is written once the next one is seen, so that the last one can stay out when
// it moves to val (DocumentSplit below).
class TrainingText {
 public:
  explicit TrainingText(const std::string& path) : path_(path) {
    if (!path.empty()) out_.open(path, std::ios::binary | std::ios::trunc);
  }
  void add(const std::string& doc) {
    if (path_.empty()) return;
    write_held();
    held_ = doc;
    holding_ = true;
  }
  // Writes the last document unless it moved to val.
  void finish(bool drop_last) {
    if (path_.empty()) return;
    if (!drop_last) write_held();
    if (!out_.flush())
      throw std::runtime_error(path_ + ": cannot write the tokenizer's training text");
  }

 private:
  void write_held() {
    if (!holding_) return;
    std::replace(held_.begin(), held_.end(), '\n', ' ');
    std::replace(held_.begin(), held_.end(), '\r', ' ');
    out_ << held_ << '\n';
    holding_ = false;
  }
  std::string path_, held_;
  bool holding_ = false;
  std::ofstream out_;
};

// The first pass: the split's sizes and the tokenizer's training text (when text_path is set).
Split split_documents(const std::vector<std::string>& inputs, int val_permille,
                      const std::string& text_path) {
  DocumentReader reader(inputs);
  Progress progress("read", reader.total_bytes(), "bytes");
  TrainingText text(text_path);
  Split split;
  std::string last_val;  // trains the tokenizer when it is the only document to (no train side)
  for (std::string doc; reader.next(doc);) {
    const auto bytes = static_cast<int64_t>(doc.size());
    if (goes_to_val(doc, val_permille)) {
      ++split.val, split.val_bytes += bytes;
      if (split.train == 0) last_val = doc;
    } else {
      ++split.train, split.train_bytes += bytes;
      text.add(doc);
    }
    progress.update(reader.bytes_read());
  }
  progress.update(reader.bytes_read());  // a .json file counts once it is read whole
  progress.finish();
  if (split.train + split.val < 2) {
    throw std::runtime_error(fmt::format(
        "data prepare: found {} document(s); need at least 2 (one for train, one for val)",
        split.train + split.val));
  }
  split.train_to_val = split.val == 0;
  split.val_to_train = split.train == 0;
  if (split.val_to_train) text.add(last_val);
  text.finish(split.train_to_val);
  return split;
}

// <bos> + tokens of a block of documents, encoded on `num_threads` threads (thread t takes
// documents t, t + threads, ...; SentencePiece's Encode is a const method, safe to call from
// several threads on one processor), appended to `writer` in order.
void encode_block(const Tokenizer& tokenizer, const std::vector<std::string>& docs, int num_threads,
                  ShardWriter& writer) {
  std::vector<std::vector<int32_t>> encoded(docs.size());
  const size_t threads = std::max<size_t>(1, std::min<size_t>(num_threads, docs.size()));
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = t; i < docs.size(); i += threads) encoded[i] = tokenizer.encode(docs[i]);
    });
  }
  for (auto& thread : pool) thread.join();
  std::vector<int32_t> block;
  for (const auto& e : encoded) {
    block.push_back(tokenizer.bos_id());
    block.insert(block.end(), e.begin(), e.end());
  }
  writer.append(block);
}

// The second pass: every document encoded into its side's shards, a block of kBlock documents
// per side at a time, in the order they were read. Returns the text bytes of each side.
std::array<int64_t, 2> encode_documents(const std::vector<std::string>& inputs, const Split& split,
                                        int val_permille, const Tokenizer& tokenizer,
                                        int num_threads, ShardWriter& train, ShardWriter& val,
                                        Progress& progress) {
  constexpr size_t kBlock = 4096;
  DocumentReader reader(inputs);
  std::vector<std::string> blocks[2];  // train, val
  ShardWriter* writers[2] = {&train, &val};
  int64_t seen[2] = {0, 0}, bytes_done = 0;
  std::array<int64_t, 2> bytes = {0, 0};
  for (std::string doc; reader.next(doc);) {
    int side = goes_to_val(doc, val_permille) ? 1 : 0;
    const bool last_of_its_side = ++seen[side] == (side ? split.val : split.train);
    if (last_of_its_side && (side ? split.val_to_train : split.train_to_val)) side = 1 - side;
    bytes_done += static_cast<int64_t>(doc.size());
    bytes[side] += static_cast<int64_t>(doc.size());
    blocks[side].push_back(std::move(doc));
    if (blocks[side].size() == kBlock) {
      encode_block(tokenizer, blocks[side], num_threads, *writers[side]);
      blocks[side].clear();
      progress.update(bytes_done);
    }
  }
  for (int side : {0, 1})
    if (!blocks[side].empty()) encode_block(tokenizer, blocks[side], num_threads, *writers[side]);
  progress.update(bytes_done);
  return bytes;
}

void log_split(const char* name, int64_t docs, int64_t tokens, int64_t bytes) {
  spdlog::info("prepare: {} {} docs, {} tokens, {} bytes ({:.2f} bytes/token)", name, docs, tokens,
               bytes, static_cast<double>(bytes) / std::max<int64_t>(tokens, 1));
}

// Removes a shard directory of the layout this branch wrote before (DIR/train/000000.bin, ...,
// DIR/train/index.json): its shards and index, then the directory if that left it empty.
void remove_shard_directory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool shard =
        name.size() == 10 && name.substr(6) == ".bin" &&
        std::all_of(name.begin(), name.begin() + 6, [](char c) { return c >= '0' && c <= '9'; });
    if (shard || name == "index.json") fs::remove(entry.path());
  }
  fs::remove(dir, ec);  // only when empty: anything else in it is not ours
}

void check_options(const PrepareOptions& options) {
  if (options.inputs.empty()) throw std::invalid_argument("data prepare: no --input given");
  if (options.out_dir.empty()) throw std::invalid_argument("data prepare: no --out given");
  if (options.vocab_size < 16 || options.vocab_size > (1 << 30)) {
    throw std::invalid_argument(
        fmt::format("data prepare: vocab_size {} is outside 16..{}", options.vocab_size, 1 << 30));
  }
  if (options.val_permille < 0 || options.val_permille > 1000) {
    throw std::invalid_argument(
        fmt::format("data prepare: val_permille {} is outside 0..1000", options.val_permille));
  }
  if (options.num_threads < 0) {
    throw std::invalid_argument(
        fmt::format("data prepare: --threads {} < 0 (0: all cores)", options.num_threads));
  }
  if (options.shard_tokens < 1) {
    throw std::invalid_argument(
        fmt::format("data prepare: --shard-tokens {} < 1", options.shard_tokens));
  }
}

}  // namespace

PrepareResult prepare_data(const PrepareOptions& given) {
  check_options(given);
  PrepareOptions options = given;
  if (options.num_threads == 0) {
    options.num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  fs::create_directories(options.out_dir);
  const fs::path out(options.out_dir);

  const std::string text_path = (out / ".tokenizer_train.txt").string();
  const std::string model_path = (out / "tokenizer.model").string();
  const bool train_tokenizer = options.tokenizer.empty();
  Split split;
  try {
    split = split_documents(options.inputs, options.val_permille,
                            train_tokenizer ? text_path : std::string());
    if (!train_tokenizer) {
      // Another corpus's tokenizer, copied in so that this corpus stays self-contained.
      spdlog::info("tokenizer: {} (not trained: --tokenizer)", options.tokenizer);
      Tokenizer::load(options.tokenizer);  // refused here, naming the file, if it is not one
      if (!fs::exists(model_path) || !fs::equivalent(options.tokenizer, model_path))
        fs::copy_file(options.tokenizer, model_path, fs::copy_options::overwrite_existing);
    } else {
      const int64_t docs = split.train - split.train_to_val + split.val_to_train;
      spdlog::info("tokenizer: training BPE, vocab {} on {} documents", options.vocab_size, docs);
      Tokenizer::train(text_path, model_path,
                       {options.vocab_size, options.num_threads, options.max_sentences});
    }
  } catch (...) {
    fs::remove(text_path);
    throw;
  }
  fs::remove(text_path);

  Tokenizer tokenizer = Tokenizer::load(model_path);
  for (const char* split : {"train", "val"}) remove_shard_directory(out / split);
  const int64_t text_bytes = split.train_bytes + split.val_bytes;
  Progress progress(fmt::format("tokenize ({} threads)", options.num_threads), text_bytes, "bytes");
  const auto vocab = static_cast<uint32_t>(tokenizer.vocab_size());
  ShardWriter train_writer((out / "train.bin").string(), vocab, options.shard_tokens);
  ShardWriter val_writer((out / "val.bin").string(), vocab, options.shard_tokens);
  const auto side_bytes = encode_documents(options.inputs, split, options.val_permille, tokenizer,
                                           options.num_threads, train_writer, val_writer, progress);
  const int64_t train_tokens = train_writer.tokens(), val_tokens = val_writer.tokens();
  train_writer.finish();
  val_writer.finish();
  progress.finish();
  const double seconds = progress.elapsed_s();
  spdlog::info("prepare: encoded {:.1f} MB of text in {} on {} threads ({:.2f} MB/s)",
               text_bytes / 1e6, format_duration(seconds), options.num_threads,
               text_bytes / 1e6 / std::max(seconds, 1e-9));

  PrepareResult result;
  result.train_docs = split.train - split.train_to_val + split.val_to_train;
  result.val_docs = split.val + split.train_to_val - split.val_to_train;
  result.train_tokens = train_tokens;
  result.val_tokens = val_tokens;
  result.train_shards = train_writer.shards();
  result.val_shards = val_writer.shards();
  result.encode_s = seconds;
  result.train_bytes = side_bytes[0];
  result.val_bytes = side_bytes[1];
  log_split("train", result.train_docs, result.train_tokens, result.train_bytes);
  log_split("val", result.val_docs, result.val_tokens, result.val_bytes);
  spdlog::info(
      "prepare: wrote {0}/tokenizer.model, {0}/train.bin ({1} shard(s)), {0}/val.bin ({2} "
      "shard(s)), with {0}/train.index.json and {0}/val.index.json",
      options.out_dir, result.train_shards, result.val_shards);
  return result;
}

}  // namespace loco
