// A small tokenizer interface over SentencePiece (BPE).
//
// SentencePiece's header declares its own absl::string_view, which clashes with the real Abseil
// that gRPC pulls in; so SentencePiece is included by src/data/tokenizer.cpp only, and the rest
// of loco sees this interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loco {

struct TokenizerTrainOptions {
  int vocab_size = 4096;
  int num_threads = 2;
  // Cap on sentences SentencePiece samples for training (0: all). Sampling is seeded, so the
  // result is deterministic for the same input file.
  int64_t max_sentences = 2000000;
};

class Tokenizer {
 public:
  // Loads a SentencePiece model. Throws std::runtime_error naming the file on failure.
  static Tokenizer load(const std::string& path);

  // Trains a BPE model on `text_file` (one sentence per line) and writes `model_path`.
  // Adds <bos>/<eos> as control symbols (ids 1 and 2), <unk> is 0, no padding symbol.
  static void train(const std::string& text_file, const std::string& model_path,
                    const TokenizerTrainOptions& options);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;

  // UTF-8 bytes each token stands for when decoded inside running text (0 for control and
  // unknown tokens); used for bits per byte.
  std::vector<int32_t> token_bytes() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loco
