// loco's tokenizer interface, backed by SentencePiece through the shim library
// (src/data/sentencepiece_shim.cpp, which explains why it is loaded with dlopen).
#include "loco/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef LOCO_SENTENCEPIECE_SHIM
#define LOCO_SENTENCEPIECE_SHIM "libloco_sentencepiece.so"
#endif

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOCO_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LOCO_ASAN 1
#endif

namespace loco {
namespace {

// SentencePiece samples training sentences with its global generator; a fixed seed makes the
// trained model a function of the input file alone.
constexpr unsigned kTrainSeed = 1234;
constexpr size_t kErrLen = 512;

struct Api {
  void* (*load)(const char*, char*, size_t);
  void (*free_handle)(void*);
  void (*free_buffer)(void*);
  int (*train)(const char* const*, const char* const*, int, unsigned, char**, size_t*, char*,
               size_t);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char*, size_t);
  int (*decode)(void*, const int*, size_t, char**, size_t*, char*, size_t);
  int (*info)(void*, int);
  int (*token_bytes)(void*, int);
};

std::string executable_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, size_t(n));
  return path.substr(0, path.rfind('/'));
}

// The shim, isolated from the rest of the process (see sentencepiece_shim.cpp). AddressSanitizer
// refuses RTLD_DEEPBIND outright, so sanitizer builds (LOCO_SANITIZE) load it into a link-map
// namespace of its own instead: the same isolation, with private copies of its dependencies
// (the shim frees what it allocates, so the two heaps never mix).
void* open_shim(const std::string& path) {
#ifdef LOCO_ASAN
  return ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
  return ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
}

// Loads the shim once: $LOCO_SENTENCEPIECE_SHIM, next to the executable, then the build path.
const Api& api() {
  static Api table;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("LOCO_SENTENCEPIECE_SHIM")) candidates.push_back(env);
    candidates.push_back(executable_dir() + "/libloco_sentencepiece.so");
    candidates.push_back(executable_dir() + "/../libloco_sentencepiece.so");
    candidates.push_back(LOCO_SENTENCEPIECE_SHIM);
    void* lib = nullptr;
    std::string errors;
    for (const auto& c : candidates) {
      lib = open_shim(c);
      if (lib) break;
      errors += std::string("\n  ") + ::dlerror();
    }
    if (!lib) throw std::runtime_error("cannot load the SentencePiece shim:" + errors);
    auto sym = [lib](const char* name) {
      void* f = ::dlsym(lib, name);
      if (!f) throw std::runtime_error(std::string("SentencePiece shim lacks ") + name);
      return f;
    };
    table.load = reinterpret_cast<decltype(table.load)>(sym("loco_spm_load"));
    table.free_handle = reinterpret_cast<decltype(table.free_handle)>(sym("loco_spm_free"));
    table.free_buffer = reinterpret_cast<decltype(table.free_buffer)>(sym("loco_spm_free_buffer"));
    table.train = reinterpret_cast<decltype(table.train)>(sym("loco_spm_train"));
    table.encode = reinterpret_cast<decltype(table.encode)>(sym("loco_spm_encode"));
    table.decode = reinterpret_cast<decltype(table.decode)>(sym("loco_spm_decode"));
    table.info = reinterpret_cast<decltype(table.info)>(sym("loco_spm_info"));
    table.token_bytes = reinterpret_cast<decltype(table.token_bytes)>(sym("loco_spm_token_bytes"));
  });
  return table;
}

// Written atomically so that a crash never leaves a half-written model behind.
void write_file(const std::string& path, const char* bytes, size_t size) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes, static_cast<std::streamsize>(size));
    if (!out.flush()) throw std::runtime_error(tmp + ": cannot write the tokenizer model");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot move the tokenizer model into place");
  }
}

}  // namespace

struct Tokenizer::Impl {
  void* handle = nullptr;
  ~Impl() {
    if (handle) api().free_handle(handle);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  char err[kErrLen] = "";
  auto impl = std::make_unique<Impl>();
  impl->handle = api().load(path.c_str(), err, sizeof(err));
  if (!impl->handle) throw std::runtime_error(path + ": cannot load the tokenizer model: " + err);
  return Tokenizer(std::move(impl));
}

void Tokenizer::train(const std::string& text_file, const std::string& model_path,
                      const TokenizerTrainOptions& options) {
  // No dummy prefix: a document's first word keeps its bytes exact, so token_bytes() sums to the
  // decoded text's length (bits per byte stays exact).
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"input", text_file},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"character_coverage", "0.9995"},
      {"add_dummy_prefix", "false"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"input_sentence_size", std::to_string(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(options.num_threads)},
      {"minloglevel", "2"},
  };
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : flags) keys.push_back(k.c_str()), values.push_back(v.c_str());
  char err[kErrLen] = "";
  char* model = nullptr;
  size_t size = 0;
  if (api().train(keys.data(), values.data(), int(keys.size()), kTrainSeed, &model, &size, err,
                  sizeof(err)) != 0)
    throw std::runtime_error(text_file + ": tokenizer training failed: " + err);
  try {
    write_file(model_path, model, size);
  } catch (...) {
    api().free_buffer(model);
    throw;
  }
  api().free_buffer(model);
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  char err[kErrLen] = "";
  int* ids = nullptr;
  size_t n = 0;
  if (api().encode(impl_->handle, text.data(), text.size(), &ids, &n, err, sizeof(err)) != 0)
    throw std::runtime_error(std::string("tokenizer: encode failed: ") + err);
  std::vector<int32_t> out(ids, ids + n);
  api().free_buffer(ids);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  char err[kErrLen] = "";
  char* text = nullptr;
  size_t n = 0;
  std::vector<int> in(ids.begin(), ids.end());
  if (api().decode(impl_->handle, in.data(), in.size(), &text, &n, err, sizeof(err)) != 0)
    throw std::runtime_error(std::string("tokenizer: decode failed: ") + err);
  std::string out(text, n);
  api().free_buffer(text);
  return out;
}

int Tokenizer::vocab_size() const {
  return api().info(impl_->handle, 0);
}
int Tokenizer::bos_id() const {
  return api().info(impl_->handle, 1);
}
int Tokenizer::eos_id() const {
  return api().info(impl_->handle, 2);
}

std::vector<int32_t> Tokenizer::token_bytes() const {
  std::vector<int32_t> bytes(size_t(vocab_size()), 0);
  for (int id = 0; id < vocab_size(); ++id)
    bytes[size_t(id)] = api().token_bytes(impl_->handle, id);
  return bytes;
}

}  // namespace loco
