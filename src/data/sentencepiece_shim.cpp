// A C interface over SentencePiece, built as its own shared library and loaded by tokenizer.cpp
// with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece embeds a private protobuf 3.14 and exports its symbols, while
// LibTorch links the system protobuf 3.21. Linked into one executable, the two copies interpose
// on each other and the process crashes during static initialisation. Loaded locally with deep
// binding, SentencePiece resolves to its own copy and nothing else sees it. This is the only file
// that includes SentencePiece's headers (they also clash with Abseil, see docs/design.md "Pitfalls
// on this machine").
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#define LOCO_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

void set_error(char* err, size_t len, const std::string& message) {
  if (err && len) std::snprintf(err, len, "%s", message.c_str());
}

char* copy_out(const std::string& s, size_t* len) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  *len = s.size();
  return out;
}

// UTF-8 bytes of a piece when decoded: the word-boundary mark U+2581 stands for one space.
int piece_bytes(const std::string& piece) {
  static const std::string kSpace = "\xE2\x96\x81";
  int bytes = static_cast<int>(piece.size());
  for (size_t i = piece.find(kSpace); i != std::string::npos;
       i = piece.find(kSpace, i + kSpace.size()))
    bytes -= 2;
  return bytes;
}

}  // namespace

LOCO_EXPORT void* loco_spm_load(const char* path, char* err, size_t err_len) {
  auto* p = new sentencepiece::SentencePieceProcessor();
  auto status = p->Load(path);
  if (status.ok()) return p;
  set_error(err, err_len, status.ToString());
  delete p;
  return nullptr;
}

LOCO_EXPORT void loco_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

LOCO_EXPORT void loco_spm_free_buffer(void* buffer) {
  std::free(buffer);
}

// Trains with the given flags (n key/value pairs) and a fixed sampling seed; returns the model
// bytes in *model (free with loco_spm_free_buffer). 0 on success.
LOCO_EXPORT int loco_spm_train(const char* const* keys, const char* const* values, int n,
                               unsigned seed, char** model, size_t* model_len, char* err,
                               size_t err_len) {
  std::unordered_map<std::string, std::string> flags;
  for (int i = 0; i < n; ++i) flags[keys[i]] = values[i];
  sentencepiece::SetRandomGeneratorSeed(seed);
  std::string bytes;
  auto status = sentencepiece::SentencePieceTrainer::Train(flags, nullptr, &bytes);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  *model = copy_out(bytes, model_len);
  return 0;
}

LOCO_EXPORT int loco_spm_encode(void* handle, const char* text, size_t len, int** ids, size_t* n,
                                char* err, size_t err_len) {
  std::vector<int> out;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(
      std::string(text, len), &out);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.size() + 1)));
  std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  *n = out.size();
  return 0;
}

LOCO_EXPORT int loco_spm_decode(void* handle, const int* ids, size_t n, char** text, size_t* len,
                                char* err, size_t err_len) {
  std::string out;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(
      std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  *text = copy_out(out, len);
  return 0;
}

// which: 0 vocabulary size, 1 bos id, 2 eos id.
LOCO_EXPORT int loco_spm_info(void* handle, int which) {
  auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  return which == 0 ? p->GetPieceSize() : which == 1 ? p->bos_id() : p->eos_id();
}

// UTF-8 bytes token `id` stands for inside running text; 0 for control/unknown/unused.
LOCO_EXPORT int loco_spm_token_bytes(void* handle, int id) {
  auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  if (p->IsControl(id) || p->IsUnknown(id) || p->IsUnused(id)) return 0;
  return p->IsByte(id) ? 1 : piece_bytes(p->IdToPiece(id));
}
