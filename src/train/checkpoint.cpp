// Atomic, checksummed checkpoints (see include/loco/checkpoint.h).
#include "loco/checkpoint.h"

#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <regex>
#include <sstream>

#include "loco/shard.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

// FNV-1a over every tensor's name and bytes, in key order, and the scalar fields.
int64_t checksum_of(const Checkpoint& c) {
  uint64_t h = fnv1a64(c.config_yaml.data(), c.config_yaml.size());
  int64_t scalars[] = {c.step, c.tokens, c.cursor.epoch, c.cursor.position};
  h = fnv1a64(scalars, sizeof(scalars), h);
  for (const auto& [name, tensor] : c.tensors) {
    h = fnv1a64(name.data(), name.size(), h);
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    h = fnv1a64(t.data_ptr(), t.numel() * t.element_size(), h);
  }
  return int64_t(h & 0x7fffffffffffffffULL);
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw CheckpointError(path + ": cannot open to sync");
  ::fsync(fd);
  ::close(fd);
}

int64_t step_of(const fs::path& p) {
  static const std::regex pattern(R"(step_(\d+)\.pt)");
  std::smatch m;
  std::string name = p.filename().string();
  return std::regex_match(name, m, pattern) ? std::stoll(m[1]) : -1;
}

}  // namespace

void put_named(std::map<std::string, torch::Tensor>& out, const std::string& prefix,
               const std::map<std::string, torch::Tensor>& named) {
  if (named.empty()) return;
  std::string names;
  int64_t i = 0;
  for (const auto& [name, t] : named) {
    names += name + "\n";
    out[prefix + "." + std::to_string(i++)] = t;
  }
  out[prefix + ".names"] =
      torch::from_blob(names.data(), {int64_t(names.size())}, torch::kUInt8).clone();
}

std::map<std::string, torch::Tensor> get_named(const std::map<std::string, torch::Tensor>& in,
                                               const std::string& prefix) {
  std::map<std::string, torch::Tensor> out;
  auto names = in.find(prefix + ".names");
  if (names == in.end()) return out;
  const auto bytes = names->second.contiguous();
  std::istringstream text(
      std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), size_t(bytes.numel())));
  int64_t i = 0;
  for (std::string name; std::getline(text, name); ++i) {
    auto t = in.find(prefix + "." + std::to_string(i));
    if (t == in.end()) throw CheckpointError(prefix + ": tensor " + name + " is missing");
    out[name] = t->second.clone();
  }
  return out;
}

std::string checkpoint_path(const std::string& dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld.pt", static_cast<long long>(step));
  return (fs::path(dir) / name).string();
}

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string("loco-checkpoint-1")));
  archive.write("config_yaml", c10::IValue(c.config_yaml));
  archive.write("step", c10::IValue(c.step));
  archive.write("tokens", c10::IValue(c.tokens));
  archive.write("wall_s", c10::IValue(c.wall_s));
  archive.write("cursor_epoch", c10::IValue(c.cursor.epoch));
  archive.write("cursor_position", c10::IValue(c.cursor.position));
  std::vector<std::string> names;
  for (const auto& [name, tensor] : c.tensors) {
    archive.write("tensor." + name, tensor.detach().to(torch::kCPU), /*is_buffer=*/true);
    names.push_back(name);
  }
  archive.write("tensor_names", c10::IValue(names));
  archive.write("checksum", c10::IValue(checksum_of(c)));

  fs::path target(path);
  fs::create_directories(target.parent_path());
  std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
    fsync_path(tmp, false);
    fs::rename(tmp, target);
    fsync_path(target.parent_path().string(), true);
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw CheckpointError(path + ": cannot write checkpoint: " + e.what());
  }
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!fs::exists(path)) throw CheckpointError(path + ": no such checkpoint");
  Checkpoint c;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    c10::IValue v;
    archive.read("format", v);
    if (v.toStringRef() != "loco-checkpoint-1")
      throw CheckpointError(path + ": unknown checkpoint format '" + v.toStringRef() + "'");
    archive.read("config_yaml", v), c.config_yaml = v.toStringRef();
    archive.read("step", v), c.step = v.toInt();
    archive.read("tokens", v), c.tokens = v.toInt();
    archive.read("wall_s", v), c.wall_s = v.toDouble();
    archive.read("cursor_epoch", v), c.cursor.epoch = v.toInt();
    archive.read("cursor_position", v), c.cursor.position = v.toInt();
    archive.read("tensor_names", v);
    for (const auto& name : v.toListRef()) {
      torch::Tensor t;
      archive.read("tensor." + name.toStringRef(), t, /*is_buffer=*/true);
      c.tensors[name.toStringRef()] = t;
    }
    archive.read("checksum", v);
    if (v.toInt() != checksum_of(c))
      throw CheckpointError(path + ": checksum mismatch (corrupted checkpoint)");
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw CheckpointError(path + ": unreadable checkpoint: " + what.substr(0, what.find('\n')));
  }
  return c;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (fs::is_directory(dir))
    for (const auto& entry : fs::directory_iterator(dir))
      if (int64_t step = step_of(entry.path()); step >= 0) found.emplace_back(step, entry.path());
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [step, path] : found) paths.push_back(path);
  return paths;
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  auto paths = list_checkpoints(dir);
  for (size_t i = 0; i + keep < paths.size(); ++i) fs::remove(paths[i]);
}

uint64_t param_checksum(const torch::Tensor& flat) {
  TORCH_CHECK(flat.scalar_type() == torch::kFloat,
              "param_checksum: expected float32 parameters, got ", flat.scalar_type());
  auto host = flat.detach().to(torch::kCPU).contiguous();
  // FNV-1a over 64-bit words rather than bytes: the same mixing, 8x fewer serial multiplies,
  // so DDP can afford it every step (a byte-wise pass cost tens of ms a step on the tiny model).
  const auto* p = static_cast<const unsigned char*>(host.data_ptr());
  const size_t bytes = size_t(host.numel()) * sizeof(float);
  uint64_t h = 0xcbf29ce484222325ULL, word = 0;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    std::memcpy(&word, p + i, 8);
    h = (h ^ word) * 0x100000001b3ULL;
  }
  if (i < bytes) {  // an odd number of floats: the last one alone
    word = 0;
    std::memcpy(&word, p + i, bytes - i);
    h = (h ^ word) * 0x100000001b3ULL;
  }
  return h;
}

}  // namespace loco
