// `loco data prepare`: documents -> train/val split -> BPE tokenizer -> token shards.
#include "loco/prepare.h"

#include <spdlog/spdlog.h>

#include <algorithm>
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

struct Split {
  std::vector<const std::string*> train, val;
};

// A document goes to val when FNV-1a(text) mod 1000 < val_permille; each side keeps at least one.
Split split_documents(const std::vector<std::string>& docs, int val_permille) {
  if (docs.size() < 2) {
    throw std::runtime_error(fmt::format(
        "data prepare: found {} document(s); need at least 2 (one for train, one for val)",
        docs.size()));
  }
  Split split;
  for (const auto& doc : docs) {
    bool val = fnv1a64(doc.data(), doc.size()) % 1000 < static_cast<uint64_t>(val_permille);
    (val ? split.val : split.train).push_back(&doc);
  }
  if (split.val.empty()) {
    split.val.push_back(split.train.back());
    split.train.pop_back();
  } else if (split.train.empty()) {
    split.train.push_back(split.val.back());
    split.val.pop_back();
  }
  return split;
}

// The tokenizer's training text: one document per line, its own newlines turned into spaces.
void write_training_text(const std::string& path, const std::vector<const std::string*>& docs) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const std::string* doc : docs) {
    std::string line = *doc;
    std::replace(line.begin(), line.end(), '\n', ' ');
    std::replace(line.begin(), line.end(), '\r', ' ');
    out << line << '\n';
  }
  if (!out.flush()) throw std::runtime_error(path + ": cannot write the tokenizer's training text");
}

// <bos> + tokens for every document, in order, encoded on `num_threads` threads a block of
// documents at a time (thread t takes documents t, t + threads, ...; SentencePiece's Encode is a
// const method, safe to call from several threads on one processor) and appended to `writer`.
// Returns the number of tokens.
int64_t encode_documents(const Tokenizer& tokenizer, const std::vector<const std::string*>& docs,
                         int num_threads, ShardWriter& writer, Progress& progress,
                         int64_t& bytes_done) {
  constexpr size_t kBlock = 4096;
  std::vector<std::vector<int32_t>> encoded(kBlock);
  std::vector<int32_t> block;
  for (size_t begin = 0; begin < docs.size(); begin += kBlock) {
    size_t count = std::min(kBlock, docs.size() - begin);
    size_t threads = std::max<size_t>(1, std::min<size_t>(num_threads, count));
    std::vector<std::thread> pool;
    for (size_t t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (size_t i = t; i < count; i += threads) encoded[i] = tokenizer.encode(*docs[begin + i]);
      });
    }
    for (auto& thread : pool) thread.join();
    block.clear();
    for (size_t i = 0; i < count; ++i) {
      block.push_back(tokenizer.bos_id());
      block.insert(block.end(), encoded[i].begin(), encoded[i].end());
      bytes_done += static_cast<int64_t>(docs[begin + i]->size());
    }
    writer.append(block);
    progress.update(bytes_done);
  }
  return writer.tokens();
}

int64_t total_bytes(const std::vector<const std::string*>& docs) {
  int64_t bytes = 0;
  for (const std::string* doc : docs) bytes += static_cast<int64_t>(doc->size());
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

  std::vector<std::string> docs = read_documents(options.inputs);
  Split split = split_documents(docs, options.val_permille);

  const std::string text_path = (out / ".tokenizer_train.txt").string();
  const std::string model_path = (out / "tokenizer.model").string();
  if (!options.tokenizer.empty()) {
    // Another corpus's tokenizer, copied in so that this corpus stays self-contained.
    spdlog::info("tokenizer: {} (not trained: --tokenizer)", options.tokenizer);
    Tokenizer::load(options.tokenizer);  // refused here, naming the file, if it is not one
    if (!fs::exists(model_path) || !fs::equivalent(options.tokenizer, model_path))
      fs::copy_file(options.tokenizer, model_path, fs::copy_options::overwrite_existing);
  } else {
    spdlog::info("tokenizer: training BPE, vocab {} on {} documents", options.vocab_size,
                 split.train.size());
    try {
      write_training_text(text_path, split.train);
      Tokenizer::train(text_path, model_path,
                       {options.vocab_size, options.num_threads, options.max_sentences});
    } catch (...) {
      fs::remove(text_path);
      throw;
    }
    fs::remove(text_path);
  }

  Tokenizer tokenizer = Tokenizer::load(model_path);
  for (const char* split : {"train", "val"}) remove_shard_directory(out / split);
  const int64_t text_bytes = total_bytes(split.train) + total_bytes(split.val);
  Progress progress(fmt::format("tokenize ({} threads)", options.num_threads), text_bytes, "bytes");
  int64_t bytes_done = 0;
  const auto vocab = static_cast<uint32_t>(tokenizer.vocab_size());
  ShardWriter train_writer((out / "train.bin").string(), vocab, options.shard_tokens);
  ShardWriter val_writer((out / "val.bin").string(), vocab, options.shard_tokens);
  const int64_t train_tokens = encode_documents(tokenizer, split.train, options.num_threads,
                                                train_writer, progress, bytes_done);
  const int64_t val_tokens =
      encode_documents(tokenizer, split.val, options.num_threads, val_writer, progress, bytes_done);
  train_writer.finish();
  val_writer.finish();
  progress.finish();
  const double seconds = progress.elapsed_s();
  spdlog::info("prepare: encoded {:.1f} MB of text in {} on {} threads ({:.2f} MB/s)",
               text_bytes / 1e6, format_duration(seconds), options.num_threads,
               text_bytes / 1e6 / std::max(seconds, 1e-9));

  PrepareResult result;
  result.train_docs = static_cast<int64_t>(split.train.size());
  result.val_docs = static_cast<int64_t>(split.val.size());
  result.train_tokens = train_tokens;
  result.val_tokens = val_tokens;
  result.train_shards = train_writer.shards();
  result.val_shards = val_writer.shards();
  result.encode_s = seconds;
  result.train_bytes = total_bytes(split.train);
  result.val_bytes = total_bytes(split.val);
  log_split("train", result.train_docs, result.train_tokens, result.train_bytes);
  log_split("val", result.val_docs, result.val_tokens, result.val_bytes);
  spdlog::info(
      "prepare: wrote {0}/tokenizer.model, {0}/train.bin ({1} shard(s)), {0}/val.bin ({2} "
      "shard(s)), with {0}/train.index.json and {0}/val.index.json",
      options.out_dir, result.train_shards, result.val_shards);
  return result;
}

}  // namespace loco
