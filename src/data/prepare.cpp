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

// <bos> + tokens for every document, in order, encoded on `num_threads` threads.
std::vector<int32_t> encode_documents(const Tokenizer& tokenizer,
                                      const std::vector<const std::string*>& docs, int num_threads,
                                      Progress& progress, int64_t& done) {
  constexpr size_t kBlock = 4096;
  std::vector<int32_t> tokens;
  std::vector<std::vector<int32_t>> encoded(kBlock);
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
    for (size_t i = 0; i < count; ++i) {
      tokens.push_back(tokenizer.bos_id());
      tokens.insert(tokens.end(), encoded[i].begin(), encoded[i].end());
    }
    done += static_cast<int64_t>(count);
    progress.update(done);
  }
  return tokens;
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
  if (options.num_threads < 1) {
    throw std::invalid_argument(
        fmt::format("data prepare: num_threads {} < 1", options.num_threads));
  }
}

}  // namespace

PrepareResult prepare_data(const PrepareOptions& options) {
  check_options(options);
  fs::create_directories(options.out_dir);
  const fs::path out(options.out_dir);

  std::vector<std::string> docs = read_documents(options.inputs);
  Split split = split_documents(docs, options.val_permille);

  const std::string text_path = (out / ".tokenizer_train.txt").string();
  const std::string model_path = (out / "tokenizer.model").string();
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

  Tokenizer tokenizer = Tokenizer::load(model_path);
  Progress progress("tokenize", static_cast<int64_t>(docs.size()), "docs");
  int64_t done = 0;
  auto train = encode_documents(tokenizer, split.train, options.num_threads, progress, done);
  auto val = encode_documents(tokenizer, split.val, options.num_threads, progress, done);
  progress.finish();
  write_shard((out / "train.bin").string(), train, tokenizer.vocab_size());
  write_shard((out / "val.bin").string(), val, tokenizer.vocab_size());

  PrepareResult result;
  result.train_docs = static_cast<int64_t>(split.train.size());
  result.val_docs = static_cast<int64_t>(split.val.size());
  result.train_tokens = static_cast<int64_t>(train.size());
  result.val_tokens = static_cast<int64_t>(val.size());
  result.train_bytes = total_bytes(split.train);
  result.val_bytes = total_bytes(split.val);
  log_split("train", result.train_docs, result.train_tokens, result.train_bytes);
  log_split("val", result.val_docs, result.val_tokens, result.val_bytes);
  spdlog::info("prepare: wrote {}/{{tokenizer.model,train.bin,val.bin}}", options.out_dir);
  return result;
}

}  // namespace loco
