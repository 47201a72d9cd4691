// Helpers of the codec suites (test_codec, test_dct): codecs made from a few CodecConfig fields,
// and the size of a dct payload's header.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "loco/codec.h"

namespace loco::testing {

constexpr size_t kDctHeader = 12;  // bytes before the data of a dct payload (src/codec/dct.cpp)

inline std::unique_ptr<Codec> dct(int64_t topk, const std::string& values = "fp32",
                                  const std::string& select = "topk", int64_t chunk = 64) {
  CodecConfig c;
  c.type = "dct";
  c.topk = topk;
  c.values = values;
  c.select = select;
  c.chunk = chunk;
  return make_codec(c);
}

inline std::unique_ptr<Codec> simple(const std::string& type, int64_t chunk = 64) {
  CodecConfig c;
  c.type = type;
  c.chunk = chunk;
  return make_codec(c);
}

// Sorted indices of one chunk.
inline std::vector<int64_t> sorted_row(const torch::Tensor& indices, int64_t chunk) {
  auto row = indices[chunk].contiguous();
  std::vector<int64_t> v(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace loco::testing
