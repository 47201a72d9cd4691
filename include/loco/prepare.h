// `loco data prepare`: raw text -> tokenizer + train/val token shards.
//
// Inputs, by file name: *.jsonl (one JSON object per line with a "text" field), *.json (a JSON
// array of strings, as the nlp-corpus package ships, or of objects with "text"), anything else
// plain text with one document per line. A directory is read recursively in sorted order.
// The split is deterministic and independent of input order: a document goes to val when
// FNV-1a(text) mod 1000 < val_permille. The tokenizer is trained on the train split only (or
// given: PrepareOptions::tokenizer).
// Each document is encoded as <bos> + tokens, on all cores (blocks of documents, order kept), and
// each token stream is written as shards of at most shard_tokens tokens: out_dir/train.bin (shard
// 0, the whole stream when it fits in one), out_dir/train-000001.bin, ..., and
// out_dir/train.index.json listing them (the same for val; see ShardWriter in shard.h), written as
// the encoding goes so memory holds one shard of tokens, not the corpus's. The documents are read
// twice, streamed (DocumentReader): once to split them and write the tokenizer's training text,
// once to encode them, so memory holds a block of documents, not the corpus's text. train.bin and
// val.bin appear last, once their streams are complete.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loco {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out_dir;
  int vocab_size = 4096;
  int val_permille = 10;                    // 1% of documents go to val (at least one document)
  int64_t max_sentences = 2000000;          // tokenizer training sample cap
  int num_threads = 0;                      // tokenizer training and encoding threads; 0: all cores
  int64_t shard_tokens = int64_t(1) << 26;  // tokens per shard: 64 Mi (128 MiB at 2 bytes/token)
  // An existing SentencePiece model to encode with instead of training one (a second corpus
  // in the first one's vocabulary, for a second training stage); copied to out_dir.
  std::string tokenizer;
};

struct PrepareResult {
  int64_t train_docs = 0, val_docs = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_bytes = 0, val_bytes = 0;  // UTF-8 bytes of the documents
  int64_t train_shards = 0, val_shards = 0;
  double encode_s = 0;  // seconds spent encoding (and writing shards)
};

// The documents of the inputs one at a time, so that preparing a corpus holds a block of them,
// not the corpus: text and JSONL files are read line by line; a JSON array is parsed whole, one
// file at a time. Throws std::runtime_error naming the file (and line) of a malformed document,
// or an input that is missing.
class DocumentReader {
 public:
  explicit DocumentReader(const std::vector<std::string>& inputs);
  ~DocumentReader();
  // The next non-blank document into `doc`; false after the last.
  bool next(std::string& doc);
  int64_t total_bytes() const;  // of the input files
  int64_t bytes_read() const;   // of the input files, so far

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Every document of the inputs (DocumentReader's, into memory: for tests and small inputs).
std::vector<std::string> read_documents(const std::vector<std::string>& inputs);

// Runs the whole preparation, logging progress and an ETA. Writes out_dir/tokenizer.model,
// out_dir/train.bin and out_dir/val.bin (with their further shards and indexes). Removes the
// train/ and val/ shard directories of an earlier layout, if any.
PrepareResult prepare_data(const PrepareOptions& options);

}  // namespace loco
