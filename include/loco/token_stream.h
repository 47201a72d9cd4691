// A token stream read in place: a stream's shard files, memory-mapped and seen as one
// concatenated stream of tokens. Nothing is read into memory up front, so a corpus far larger
// than the machine's memory trains in a few MB of resident pages.
//
// A stream is named by its first shard, DIR/train.bin (as `loco data prepare` writes it, see
// ShardWriter in shard.h). When DIR/train.index.json (the file's stem + ".index.json") exists, the
// stream is every shard it lists, in order:
//   train.index.json  {"format": "loco-shards", "version": 1, "vocab_size": V, "tokens": N,
//                      "shards": [{"file": "train.bin", "tokens": n0},
//                                 {"file": "train-000001.bin", "tokens": n1}, ...]}
// (the first must be the named file itself). Without an index the file alone is the stream: a
// one-shard corpus, as every train.bin written before shards is.
//
// Opening verifies everything before any training starts: the index (if any) well formed,
// every listed shard present (a missing one is named), every header and file size (a truncated
// shard is named), token counts and vocabularies agreeing with the index, and every shard's
// checksum (read in 1 MiB chunks through read(2), not the mapping, so it costs no resident
// memory). Errors are ShardError, one line naming the file.
//
// Reads copy tokens out of the mapping and then drop the pages they touched from this process
// (madvise MADV_DONTNEED; the kernel's page cache keeps them), so resident memory stays bounded
// however long the run.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loco {

class TokenStream {
 public:
  // Opens the stream whose first shard is `path` (see above). Throws ShardError naming the
  // file; a directory is refused (name DIR/train.bin).
  static std::shared_ptr<const TokenStream> open(const std::string& path);
  // Wraps a 1-D integer tensor (kept; converted to int32 if it is not already). For tests and
  // in-memory streams.
  static std::shared_ptr<const TokenStream> from_tensor(const torch::Tensor& tokens);

  ~TokenStream();
  TokenStream(const TokenStream&) = delete;
  TokenStream& operator=(const TokenStream&) = delete;

  int64_t size() const { return size_; }
  uint32_t vocab_size() const { return vocab_size_; }  // 0 for a tensor-backed stream
  int64_t num_shards() const { return static_cast<int64_t>(spans_.size()); }

  // Copies tokens [begin, begin + count) into `out`, across shard boundaries as needed.
  void read(int64_t begin, int64_t count, int64_t* out) const;
  // The whole stream as an int64 tensor (tests and small streams only: it reads everything).
  torch::Tensor to_tensor() const;

 private:
  struct Span {
    const char* data = nullptr;  // first token
    int64_t start = 0;           // position of the first token in the stream
    int64_t count = 0;
    uint32_t token_bytes = 4;
    void* map = nullptr;  // the mapping (nullptr when not mapped)
    size_t map_len = 0;
  };
  TokenStream() = default;
  void add_shard(const std::string& path, uint64_t count, uint32_t token_bytes);

  std::vector<Span> spans_;
  int64_t size_ = 0;
  uint32_t vocab_size_ = 0;
  torch::Tensor owner_;  // keeps a tensor-backed stream's memory alive
};

}  // namespace loco
