// Memory-mapped token streams over one shard or a directory of shards (see token_stream.h).
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

std::vector<IndexEntry> read_index(const fs::path& dir, uint32_t* vocab_size) {
  const std::string path = (dir / "index.json").string();
  std::ifstream in(path);
  if (!in) {
    fail(path, "missing: a shard directory needs the index.json that `loco data prepare` writes "
               "last (an interrupted prepare leaves none)");
  }
  std::vector<IndexEntry> entries;
  try {
    auto index = nlohmann::json::parse(in);
    if (index.value("format", "") != "loco-shards") fail(path, "not a loco shard index (format)");
    *vocab_size = index.at("vocab_size").get<uint32_t>();
    for (const auto& shard : index.at("shards")) {
      entries.push_back({shard.at("file").get<std::string>(), shard.at("tokens").get<uint64_t>()});
    }
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("invalid shard index (") + e.what() + ")");
  }
  if (entries.empty()) fail(path, "lists no shards");
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
  std::string index_path;
  if (fs::is_directory(path, ec)) {
    index_path = (fs::path(path) / "index.json").string();
    for (const auto& e : read_index(path, &stream->vocab_size_)) {
      shards.emplace_back((fs::path(path) / e.file).string(), e.tokens);
    }
  } else {
    if (!fs::exists(path, ec)) fail(path, "no such file or shard directory");
    shards.emplace_back(path, UINT64_MAX);
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
    if (!index_path.empty() && info.vocab_size != stream->vocab_size_) {
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
