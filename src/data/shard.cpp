// Token shards (train.bin, train-000001.bin, ...): atomic writing of a sharded stream and its
// index, and reading with every field verified.
#include "loco/shard.h"

#include <fcntl.h>
#include <spdlog/fmt/fmt.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shards are little-endian");

namespace loco {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'L', 'O', 'C', 'O', 'T', 'O', 'K', '1'};
constexpr size_t kHeaderSize = 64;
constexpr uint32_t kVersion = 1;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw ShardError(path + ": " + what);
}

std::vector<char> encode_header(const ShardInfo& info) {
  std::vector<char> header(kHeaderSize, 0);
  std::memcpy(header.data(), kMagic, sizeof kMagic);
  std::memcpy(header.data() + 8, &info.version, 4);
  std::memcpy(header.data() + 12, &info.token_bytes, 4);
  std::memcpy(header.data() + 16, &info.count, 8);
  std::memcpy(header.data() + 24, &info.checksum, 8);
  std::memcpy(header.data() + 32, &info.vocab_size, 4);
  return header;
}

// Packs tokens into `token_bytes`-wide little-endian integers, checking each against the vocab.
std::vector<char> pack_tokens(const std::string& path, const std::vector<int32_t>& tokens,
                              uint32_t token_bytes, uint32_t vocab_size) {
  std::vector<char> data(tokens.size() * token_bytes);
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t t = tokens[i];
    if (t < 0 || static_cast<uint32_t>(t) >= vocab_size) {
      fail(path, fmt::format("token {} at index {} is outside the vocabulary (size {})", t, i,
                             vocab_size));
    }
    if (token_bytes == 2) {
      auto v = static_cast<uint16_t>(t);
      std::memcpy(data.data() + 2 * i, &v, 2);
    } else {
      std::memcpy(data.data() + 4 * i, &t, 4);
    }
  }
  return data;
}

void write_all(int fd, const std::string& path, const std::vector<char>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, std::string("write failed: ") + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

// Flushes the directory entry so that a rename survives a crash.
void fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Reads the header and checks it against the file's size; `file` is left after the header.
ShardInfo read_header(const std::string& path, std::ifstream& file) {
  std::error_code ec;
  uint64_t size = fs::file_size(path, ec);
  if (ec) fail(path, "cannot open: " + ec.message());
  if (!file) fail(path, std::string("cannot open: ") + std::strerror(errno));
  char header[kHeaderSize] = {};
  file.read(header, kHeaderSize);
  if (size < sizeof kMagic || std::memcmp(header, kMagic, sizeof kMagic) != 0) {
    fail(path, "not a loco token shard (bad magic)");
  }
  if (size < kHeaderSize) {
    fail(path,
         fmt::format("truncated: {} bytes, shorter than the {}-byte header", size, kHeaderSize));
  }
  ShardInfo info;
  std::memcpy(&info.version, header + 8, 4);
  std::memcpy(&info.token_bytes, header + 12, 4);
  std::memcpy(&info.count, header + 16, 8);
  std::memcpy(&info.checksum, header + 24, 8);
  std::memcpy(&info.vocab_size, header + 32, 4);
  if (info.version != kVersion) {
    fail(path, fmt::format("unsupported version {} (expected {})", info.version, kVersion));
  }
  if (info.token_bytes != 2 && info.token_bytes != 4) {
    fail(path, fmt::format("bad bytes per token {} (expected 2 or 4)", info.token_bytes));
  }
  uint64_t payload = size - kHeaderSize;
  uint64_t held = payload / info.token_bytes;
  if (held < info.count) {
    fail(path, fmt::format("truncated: header says {} tokens, file holds {}", info.count, held));
  }
  if (payload != info.count * info.token_bytes) {
    fail(path, fmt::format("{} bytes of trailing data after the {} tokens the header declares",
                           payload - info.count * info.token_bytes, info.count));
  }
  return info;
}

// "<prefix>NNNNNN.bin" (six digits): a numbered shard after shard 0.
bool is_numbered_shard(const std::string& name, const std::string& prefix) {
  if (name.size() != prefix.size() + 10 || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - 4, 4, ".bin") != 0) {
    return false;
  }
  return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end() - 4,
                     [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t size, uint64_t seed) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint64_t hash = seed;
  for (size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

void write_shard(const std::string& path, const std::vector<int32_t>& tokens, uint32_t vocab_size) {
  ShardInfo info;
  info.token_bytes = vocab_size <= 65536 ? 2 : 4;
  info.count = tokens.size();
  info.vocab_size = vocab_size;
  std::vector<char> data = pack_tokens(path, tokens, info.token_bytes, vocab_size);
  info.checksum = fnv1a64(data.data(), data.size());

  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create " + tmp + ": " + std::strerror(errno));
  try {
    write_all(fd, tmp, encode_header(info));
    write_all(fd, tmp, data);
    if (::fsync(fd) != 0) fail(tmp, std::string("fsync failed: ") + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail(path, std::string("cannot rename from ") + tmp + ": " + std::strerror(err));
  }
  fsync_dir(fs::path(path).parent_path());
}

std::vector<int32_t> read_shard(const std::string& path, ShardInfo* info_out) {
  std::ifstream file(path, std::ios::binary);
  ShardInfo info = read_header(path, file);
  std::vector<char> data(info.count * info.token_bytes);
  if (!file.read(data.data(), static_cast<std::streamsize>(data.size()))) {
    fail(path, "read failed");
  }
  uint64_t checksum = fnv1a64(data.data(), data.size());
  if (checksum != info.checksum) {
    fail(path, fmt::format("checksum mismatch (header {:#018x}, data {:#018x})", info.checksum,
                           checksum));
  }
  std::vector<int32_t> tokens(info.count);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (info.token_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, data.data() + 2 * i, 2);
      tokens[i] = v;
    } else {
      std::memcpy(&tokens[i], data.data() + 4 * i, 4);
    }
  }
  if (info_out) *info_out = info;
  return tokens;
}

ShardInfo read_shard_info(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return read_header(path, file);
}

std::string shard_path(const std::string& first, int64_t index) {
  if (index == 0) return first;
  const fs::path p(first);
  return (p.parent_path() / fmt::format("{}-{:06d}.bin", p.stem().string(), index)).string();
}

std::string shard_index_path(const std::string& first) {
  const fs::path p(first);
  return (p.parent_path() / (p.stem().string() + ".index.json")).string();
}

ShardWriter::ShardWriter(std::string first, uint32_t vocab_size, int64_t shard_tokens)
    : first_(std::move(first)), vocab_size_(vocab_size), shard_tokens_(shard_tokens) {
  if (shard_tokens < 1) fail(first_, fmt::format("shard size {} tokens < 1", shard_tokens));
  const fs::path p(first_);
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  fs::create_directories(dir);
  // The earlier stream goes first, shard 0 (`first`) before the rest: from here until finish()
  // there is no `first`, so nothing reads a mix of two streams.
  fs::remove(first_);
  fs::remove(first_ + ".partial");
  fs::remove(shard_index_path(first_));
  const std::string prefix = p.stem().string() + "-";
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (is_numbered_shard(entry.path().filename().string(), prefix)) fs::remove(entry.path());
  }
}

void ShardWriter::append(const std::vector<int32_t>& tokens) {
  size_t at = 0;
  while (at < tokens.size()) {
    size_t room = static_cast<size_t>(shard_tokens_) - buffer_.size();
    size_t n = std::min(room, tokens.size() - at);
    buffer_.insert(buffer_.end(), tokens.begin() + at, tokens.begin() + at + n);
    at += n;
    if (buffer_.size() == static_cast<size_t>(shard_tokens_)) flush();
  }
  tokens_ += static_cast<int64_t>(tokens.size());
}

void ShardWriter::flush() {
  const std::string path = shard_path(first_, shards());
  write_shard(shards() == 0 ? first_ + ".partial" : path, buffer_, vocab_size_);
  files_.emplace_back(fs::path(path).filename().string(), static_cast<int64_t>(buffer_.size()));
  buffer_.clear();
}

void ShardWriter::finish() {
  if (!buffer_.empty() || files_.empty()) flush();
  nlohmann::json index = {{"format", "loco-shards"},
                          {"version", 1},
                          {"vocab_size", vocab_size_},
                          {"tokens", tokens_},
                          {"shards", nlohmann::json::array()}};
  for (const auto& [name, count] : files_) {
    index["shards"].push_back({{"file", name}, {"tokens", count}});
  }
  const std::string path = shard_index_path(first_);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << index.dump(1) << "\n";
    if (!out.flush()) fail(tmp, "cannot write");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    fail(path, std::string("cannot rename from ") + tmp + ": " + std::strerror(errno));
  }
  // Last: shard 0 under its own name, the sign that the stream is complete.
  const std::string partial = first_ + ".partial";
  if (std::rename(partial.c_str(), first_.c_str()) != 0) {
    fail(first_, std::string("cannot rename from ") + partial + ": " + std::strerror(errno));
  }
  fsync_dir(fs::path(first_).parent_path());
}

}  // namespace loco
