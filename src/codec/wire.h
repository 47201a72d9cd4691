// Byte-level helpers shared by loco's codecs (private to src/codec): the common payload prefix,
// little-endian writes, and a bounds-checked reader whose every failure is a CodecError.
//
// Every payload starts with the same 4 bytes:
//   u8 magic 0x4C ('L') | u8 version 1 | u8 codec id (none 0, fp16 1, bf16 2, int8 3, dct 4)
//   | u8 a byte of the codec's own (dct: the value format; the others: 0)
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loco/codec.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "loco's payloads are little-endian");

namespace loco::wire {

constexpr uint8_t kMagic = 0x4C;
constexpr uint8_t kVersion = 1;
// The most elements a decoded tensor may have (8 GiB of float32); larger shapes are refused.
constexpr int64_t kMaxElements = int64_t(1) << 31;

enum class CodecId : uint8_t {
  kNone = 0,
  kFp16 = 1,
  kBf16 = 2,
  kInt8 = 3,
  kDct = 4,
  kInt4 = 5,
  kInt2 = 6
};

template <class T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

// Appends the bytes of a tensor (copied to the CPU, made contiguous).
void put_tensor(std::string& out, const torch::Tensor& t);

void put_prefix(std::string& out, CodecId id, uint8_t extra);

// Reads a payload front to back; never past its end.
class Reader {
 public:
  Reader(const std::string& payload, std::string what) : data_(payload), what_(std::move(what)) {}

  template <class T>
  T get() {
    T value;
    std::memcpy(&value, take(sizeof value), sizeof value);
    return value;
  }
  // The next n bytes; throws if fewer remain.
  const char* take(size_t n);
  // Throws unless exactly n bytes remain.
  void expect_remaining(size_t n) const;
  // A float32 CPU tensor of `count` values of `dtype` read from the payload.
  torch::Tensor floats(int64_t count, torch::ScalarType dtype);
  [[noreturn]] void fail(const std::string& message) const;

 private:
  const std::string& data_;
  std::string what_;  // "dct payload", used as the prefix of every message
  size_t pos_ = 0;
};

// x as a contiguous float32 tensor on its device; refuses non-float and non-finite tensors.
torch::Tensor float_input(const torch::Tensor& x, const std::string& codec);

// One int8 scale per row: scale = max|row| / 127, q = round(row / scale). Returns {q, scales}.
std::pair<torch::Tensor, torch::Tensor> quantize_int8(const torch::Tensor& rows);

// Checks e.codec and the prefix; returns the codec's own byte.
uint8_t read_prefix(Reader& in, const Encoded& e, const std::string& name, CodecId id);

// The element count of `shape`, refusing negative dims and more than kMaxElements.
int64_t checked_numel(const std::vector<int64_t>& shape, const Reader& in);

// Whether every value of x is finite. A finite sum proves it; only a non-finite sum (NaN, Inf,
// or an overflow of finite values) pays for the exact check, ~30x slower on the CPU here.
bool all_finite(const torch::Tensor& x);

// Throw unless every value is finite (scales: and >= 0).
void check_values(const torch::Tensor& values, const Reader& in);
void check_scales(const torch::Tensor& scales, const Reader& in);

// The dct codec (src/codec/dct.cpp); make_codec() has validated the config.
std::unique_ptr<Codec> make_dct_codec(const CodecConfig& config);

}  // namespace loco::wire
