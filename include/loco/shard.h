// Token shards: the on-disk format of one shard of a corpus (`train/000000.bin`, ...; an old
// single-file `train.bin` is the same format), and the writer of a shard directory.
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

// Writes a shard directory (layout in token_stream.h): the tokens appended, in order, are cut
// into shards of `shard_tokens` tokens (the last one shorter), each written atomically as soon as
// it fills, so memory stays bounded by one shard; finish() writes index.json last, so a directory
// without one is an interrupted write. The constructor creates `dir` and removes the shards and
// index an earlier write left there.
class ShardWriter {
 public:
  ShardWriter(std::string dir, uint32_t vocab_size, int64_t shard_tokens);
  void append(const std::vector<int32_t>& tokens);
  void finish();  // writes the last shard and index.json
  int64_t tokens() const { return tokens_; }
  int64_t shards() const { return static_cast<int64_t>(files_.size()); }

 private:
  void flush();
  std::string dir_;
  uint32_t vocab_size_;
  int64_t shard_tokens_, tokens_ = 0;
  std::vector<int32_t> buffer_;
  std::vector<std::pair<std::string, int64_t>> files_;  // (name, tokens)
};

// "000042.bin": the file name of shard `index` in a shard directory.
std::string shard_file_name(int64_t index);

uint64_t fnv1a64(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ULL);

}  // namespace loco
