// Token shards: the on-disk format of one shard of a token stream (`train.bin`, the first, and
// `train-000001.bin`, ... after it), and the writer of a sharded stream.
//
// Layout (little-endian), 64-byte header then the tokens:
//   0  char[8]  magic "LOCOTOK1"
//   8  uint32   version (1)
//   12 uint32   bytes per token (2 = uint16, 4 = uint32; uint16 when vocab_size <= 65536)
//   16 uint64   token count
//   24 uint64   checksum: FNV-1a 64 over the token bytes
//   32 uint32   vocab size of the tokenizer that produced it
//   36 ...      zero padding to 64
// A truncated, foreign or corrupted file is refused with an error naming the file and the field.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace loco {

struct ShardError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ShardInfo {
  uint32_t version = 1;
  uint32_t token_bytes = 2;
  uint64_t count = 0;
  uint64_t checksum = 0;
  uint32_t vocab_size = 0;
};

// Writes tokens atomically (temporary file, fsync, rename). Throws ShardError.
void write_shard(const std::string& path, const std::vector<int32_t>& tokens, uint32_t vocab_size);

// Reads and verifies a shard (magic, version, size, checksum). Throws ShardError naming `path`.
std::vector<int32_t> read_shard(const std::string& path, ShardInfo* info = nullptr);

// Reads only the header (cheap); verifies magic, version and that the file size matches.
ShardInfo read_shard_info(const std::string& path);

// Writes a token stream as shards beside `first` (normally DIR/train.bin; names from
// shard_path / shard_index_path): the tokens appended, in order, are cut into shards of
// `shard_tokens` tokens (the last one shorter). Shard 0 is `first` itself, so a stream of one
// shard is exactly the single train.bin of before shards. Each shard is written atomically as
// soon as it fills, so memory stays bounded by one shard; shard 0 under a temporary name
// (`first` + ".partial"). finish() writes the last shard, then the index, then renames shard 0 to
// `first`: `first` appears only when the whole stream is on disk. The constructor creates the
// directory and removes what an earlier write of the same stream left there (`first`, its
// numbered shards, its index, a `.partial`).
class ShardWriter {
 public:
  ShardWriter(std::string first, uint32_t vocab_size, int64_t shard_tokens);
  void append(const std::vector<int32_t>& tokens);
  void finish();  // writes the last shard and the index, then makes `first` visible
  int64_t tokens() const { return tokens_; }
  int64_t shards() const { return static_cast<int64_t>(files_.size()); }

 private:
  void flush();
  std::string first_;
  uint32_t vocab_size_;
  int64_t shard_tokens_, tokens_ = 0;
  std::vector<int32_t> buffer_;
  std::vector<std::pair<std::string, int64_t>> files_;  // (file name, tokens)
};

// The file of shard `index` of the stream whose shard 0 is `first`: `first` itself for 0, else
// `first`'s directory / "<stem>-000042.bin" (DIR/train.bin -> DIR/train-000042.bin).
std::string shard_path(const std::string& first, int64_t index);

// The stream's index: `first`'s directory / "<stem>.index.json" (DIR/train.index.json):
//   {"format": "loco-shards", "version": 1, "vocab_size": V, "tokens": N,
//    "shards": [{"file": "train.bin", "tokens": n0}, {"file": "train-000001.bin", ...}, ...]}
// File names are relative to the index's directory; the first is `first`'s own name.
std::string shard_index_path(const std::string& first);

uint64_t fnv1a64(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ULL);

}  // namespace loco
