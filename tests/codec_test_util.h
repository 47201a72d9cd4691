// Helpers of the codec suites (test_codec, test_dct, test_codec_lowbit): codecs made from a few
// CodecConfig fields, the size of a dct payload's header, and decoding that reports refusals.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "loco/codec.h"

namespace loco::testing {

constexpr size_t kDctHeader = 12;  // bytes before the data of a dct payload (src/codec/dct.cpp)

inline std::unique_ptr<Codec> dct(int64_t topk, const std::string& values = "fp32",
                                  const std::string& select = "topk", int64_t chunk = 64,
                                  const std::string& transform = "dct") {
  CodecConfig c;
  c.type = "dct";
  c.topk = topk;
  c.values = values;
  c.select = select;
  c.chunk = chunk;
  c.transform = transform;
  return make_codec(c);
}

// The sparse codec without the DCT (transform: none): top-k of each chunk's raw values.
inline std::unique_ptr<Codec> raw_topk(int64_t topk, const std::string& values,
                                       int64_t chunk = 64) {
  return dct(topk, values, "topk", chunk, "none");
}

inline std::unique_ptr<Codec> simple(const std::string& type, int64_t chunk = 64) {
  CodecConfig c;
  c.type = type;
  c.chunk = chunk;
  return make_codec(c);
}

// Decodes e; true if it decoded to a finite tensor of its shape, false if refused with a
// CodecError. Anything else (another exception, a crash) fails the test.
inline bool decodes(const Codec& codec, const Encoded& e) {
  try {
    auto x = codec.decode(e);
    EXPECT_EQ(x.sizes(), c10::IntArrayRef(e.shape));
    EXPECT_TRUE(torch::isfinite(x).all().item<bool>());
    return true;
  } catch (const CodecError&) {
    return false;
  }
}

// The CodecError decode throws for e, or "(decoded)".
inline std::string refusal(const Codec& codec, const Encoded& e) {
  try {
    codec.decode(e);
  } catch (const CodecError& err) {
    return err.what();
  }
  return "(decoded)";
}

// Sorted indices of one chunk.
inline std::vector<int64_t> sorted_row(const torch::Tensor& indices, int64_t chunk) {
  auto row = indices[chunk].contiguous();
  std::vector<int64_t> v(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace loco::testing
