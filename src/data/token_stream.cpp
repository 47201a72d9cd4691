// Memory-mapped token streams over one shard file or a sharded stream and its index (see
// token_stream.h).
#include "loco/token_stream.h"

#include <fcntl.h>
#include <spdlog/fmt/fmt.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loco/progress.h"
#include "loco/shard.h"

namespace loco {
namespace {

namespace fs = std::filesystem;

constexpr size_t kHeaderSize = 64;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw ShardError(path + ": " + what);
}

// FNV-1a of the shard's token bytes, read in 1 MiB chunks through read(2).
uint64_t checksum_file(const std::string& path, uint64_t bytes, Progress& progress, int64_t& done) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<char> buffer(1 << 20);
  uint64_t hash = 0xcbf29ce484222325ULL, offset = kHeaderSize, end = kHeaderSize + bytes;
  while (offset < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), end - offset));
    ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      fail(path, n < 0 ? std::string("read failed: ") + std::strerror(errno) : "truncated");
    }
    hash = fnv1a64(buffer.data(), static_cast<size_t>(n), hash);
    offset += static_cast<uint64_t>(n);
    done += n;
    progress.update(done);
  }
  ::close(fd);
  return hash;
}

struct IndexEntry {
  std::string file;
  uint64_t tokens = 0;
};

// The shards `index_path` lists (names relative to its directory), checked for form: the first
// must be `first` itself, and the counts must add up to the total.
std::vector<IndexEntry> read_index(const std::string& index_path, const std::string& first,
                                   uint32_t* vocab_size) {
  std::ifstream in(index_path);
  if (!in) fail(index_path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<IndexEntry> entries;
  uint64_t total = 0, sum = 0;
  try {
    auto index = nlohmann::json::parse(in);
    if (index.value("format", "") != "loco-shards") {
      fail(index_path, "not a loco shard index (format)");
    }
    *vocab_size = index.at("vocab_size").get<uint32_t>();
    total = index.at("tokens").get<uint64_t>();
    for (const auto& shard : index.at("shards")) {
      entries.push_back({shard.at("file").get<std::string>(), shard.at("tokens").get<uint64_t>()});
      sum += entries.back().tokens;
    }
  } catch (const nlohmann::json::exception& e) {
    fail(index_path, std::string("invalid shard index (") + e.what() + ")");
  }
  if (entries.empty()) fail(index_path, "lists no shards");
  const std::string name = fs::path(first).filename().string();
  if (entries[0].file != name) {
    fail(index_path, fmt::format("lists {} as the first shard, not {}", entries[0].file, name));
  }
  for (const auto& e : entries) {
    if (e.file.empty() || e.file.find('/') != std::string::npos || e.file == "..") {
      fail(index_path, fmt::format("shard file '{}' is not a file name in its directory", e.file));
    }
  }
  if (sum != total) {
    fail(index_path, fmt::format("its shards hold {} tokens but it says {}", sum, total));
  }
  return entries;
}

}  // namespace

TokenStream::~TokenStream() {
  for (auto& span : spans_) {
    if (span.map) ::munmap(span.map, span.map_len);
  }
}

std::shared_ptr<const TokenStream> TokenStream::open(const std::string& path) {
  std::shared_ptr<TokenStream> stream(new TokenStream());
  std::error_code ec;
  std::vector<std::pair<std::string, uint64_t>> shards;  // (path, tokens the index promises)
  if (fs::is_directory(path, ec)) {
    fail(path,
         "is a directory: name the stream's first shard file (DIR/train.bin, as `loco data "
         "prepare` writes it; its further shards are listed in DIR/train.index.json)");
  }
  if (!fs::exists(path, ec)) fail(path, "no such file");
  const std::string index_path = shard_index_path(path);
  if (fs::exists(index_path, ec)) {
    const fs::path dir = fs::path(path).parent_path();
    for (const auto& e : read_index(index_path, path, &stream->vocab_size_)) {
      shards.emplace_back(
          e.file == fs::path(path).filename().string() ? path : (dir / e.file).string(), e.tokens);
    }
  } else {
    shards.emplace_back(path, UINT64_MAX);  // a one-shard stream: no index
  }
  // Headers and sizes first (cheap): a missing or truncated shard is refused before any reading.
  uint64_t total_bytes = 0;
  std::vector<ShardInfo> infos;
  for (const auto& [file, expected] : shards) {
    if (!fs::exists(file, ec)) fail(file, "missing shard (listed in " + index_path + ")");
    ShardInfo info = read_shard_info(file);
    if (expected != UINT64_MAX && info.count != expected) {
      fail(file, fmt::format("holds {} tokens but {} lists {}", info.count, index_path, expected));
    }
    if (expected != UINT64_MAX && info.vocab_size != stream->vocab_size_) {
      fail(file, fmt::format("vocabulary {} but {} says {}", info.vocab_size, index_path,
                             stream->vocab_size_));
    }
    stream->vocab_size_ = info.vocab_size;
    total_bytes += info.count * info.token_bytes;
    infos.push_back(info);
  }
  Progress progress("verify " + path, static_cast<int64_t>(total_bytes), "bytes", 5.0);
  int64_t done = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string& file = shards[i].first;
    const ShardInfo& info = infos[i];
    uint64_t checksum = checksum_file(file, info.count * info.token_bytes, progress, done);
    if (checksum != info.checksum) {
      fail(file, fmt::format("checksum mismatch (header {:#018x}, data {:#018x})", info.checksum,
                             checksum));
    }
    stream->add_shard(file, info.count, info.token_bytes);
  }
  if (total_bytes > (64ull << 20)) progress.finish();
  return stream;
}

void TokenStream::add_shard(const std::string& path, uint64_t count, uint32_t token_bytes) {
  Span span;
  span.start = size_;
  span.count = static_cast<int64_t>(count);
  span.token_bytes = token_bytes;
  if (count > 0) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
    span.map_len = static_cast<size_t>(fs::file_size(path));
    span.map = ::mmap(nullptr, span.map_len, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (span.map == MAP_FAILED) {
      span.map = nullptr;
      fail(path, std::string("mmap failed: ") + std::strerror(errno));
    }
    ::madvise(span.map, span.map_len, MADV_RANDOM);  // windows are read in a shuffled order
    span.data = static_cast<const char*>(span.map) + kHeaderSize;
  }
  spans_.push_back(span);
  size_ += span.count;
}

std::shared_ptr<const TokenStream> TokenStream::from_tensor(const torch::Tensor& tokens) {
  TORCH_CHECK(tokens.dim() == 1, "token stream must be 1-D, got shape ", tokens.sizes());
  TORCH_CHECK(
      !tokens.is_floating_point() && !tokens.is_complex() && tokens.scalar_type() != torch::kBool,
      "token stream must hold integers, got ", tokens.scalar_type());
  std::shared_ptr<TokenStream> stream(new TokenStream());
  stream->owner_ = tokens.to(torch::kCPU, torch::kInt32).contiguous();
  Span span;
  span.data = static_cast<const char*>(stream->owner_.data_ptr());
  span.count = stream->owner_.numel();
  stream->spans_.push_back(span);
  stream->size_ = span.count;
  return stream;
}

void TokenStream::read(int64_t begin, int64_t count, int64_t* out) const {
  TORCH_CHECK(begin >= 0 && count >= 0 && begin + count <= size_, "tokens [", begin, ", ",
              begin + count, ") are outside the stream of ", size_);
  auto it = std::upper_bound(spans_.begin(), spans_.end(), begin,
                             [](int64_t pos, const Span& s) { return pos < s.start; });
  const long page = ::sysconf(_SC_PAGESIZE);
  for (--it; count > 0; ++it) {
    const Span& s = *it;
    int64_t offset = begin - s.start;
    int64_t n = std::min(count, s.count - offset);
    const char* p = s.data + offset * s.token_bytes;
    if (s.token_bytes == 2) {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = v;
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        out[i] = v;
      }
    }
    if (s.map && n > 0) {  // drop the touched pages from this process; the page cache keeps them
      auto first = reinterpret_cast<uintptr_t>(p) / page * page;
      auto last = reinterpret_cast<uintptr_t>(p + n * s.token_bytes);
      ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
    }
    out += n, begin += n, count -= n;
  }
}

torch::Tensor TokenStream::to_tensor() const {
  auto all = torch::empty({size_}, torch::kInt64);
  read(0, size_, all.data_ptr<int64_t>());
  return all;
}

}  // namespace loco
