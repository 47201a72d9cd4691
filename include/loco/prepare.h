// `loco data prepare`: raw text -> tokenizer + train/val token shards.
//
// Inputs, by file name: *.jsonl (one JSON object per line with a "text" field), *.json (a JSON
// array of strings, as the nlp-corpus package ships, or of objects with "text"), anything else
// plain text with one document per line. A directory is read recursively in sorted order.
// The split is deterministic and independent of input order: a document goes to val when
// FNV-1a(text) mod 1000 < val_permille. The tokenizer is trained on the train split only.
// Each document is encoded as <bos> + tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loco {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out_dir;
  int vocab_size = 4096;
  int val_permille = 10;            // 1% of documents go to val (at least one document)
  int64_t max_sentences = 2000000;  // tokenizer training sample cap
  int num_threads = 2;
};

struct PrepareResult {
  int64_t train_docs = 0, val_docs = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_bytes = 0, val_bytes = 0;  // UTF-8 bytes of the documents
};

// Reads every document of the inputs (throws std::runtime_error naming the file and line).
std::vector<std::string> read_documents(const std::vector<std::string>& inputs);

// Runs the whole preparation, logging progress. Writes out_dir/{tokenizer.model,train.bin,val.bin}.
PrepareResult prepare_data(const PrepareOptions& options);

}  // namespace loco
