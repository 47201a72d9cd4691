// The byte layout fuzz_update.cpp reads and make_seeds.cpp writes: which decoder to feed, the
// shape the payload claims, and the payload(s). Any byte string parses to something.
//
//   u8 target       % 8: 0 none | 1 fp16 | 2 bf16 | 3 int8 | 4 dct | 5 int4 | 6 int2: decode
//                   one payload; 7: merge_sparse of dct payloads
//   u8 rank         % 4 dims, each a u8 % 65 (0..64: empty and 1-element dims included)
//   target < 7      the rest is the payload
//   target 7        u8 count % 4 payloads (0 included); each but the last is u16 length + bytes,
//                   the last takes the rest
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace loco::fuzz {

constexpr int kMergeTarget = 7;
inline const char* const kCodecs[] = {"none", "fp16", "bf16", "int8", "dct", "int4", "int2"};

struct Input {
  int target = 0;
  std::vector<int64_t> shape;
  std::vector<std::string> payloads;
};

inline Input parse_input(const uint8_t* data, size_t size) {
  size_t pos = 0;
  auto byte = [&]() -> uint8_t { return pos < size ? data[pos++] : 0; };
  auto bytes = [&](size_t n) {
    n = std::min(n, size - pos);
    std::string s(reinterpret_cast<const char*>(data) + pos, n);
    pos += n;
    return s;
  };
  Input in;
  in.target = byte() % 8;
  const int rank = byte() % 4;
  for (int i = 0; i < rank; ++i) in.shape.push_back(byte() % 65);
  const int count = in.target == kMergeTarget ? byte() % 4 : 1;
  for (int i = 0; i + 1 < count; ++i) {
    const size_t length = byte() | size_t(byte()) << 8;
    in.payloads.push_back(bytes(length));
  }
  if (count > 0) in.payloads.push_back(bytes(size - pos));
  return in;
}

inline std::string write_input(const Input& in) {
  std::string out;
  out += char(in.target);
  out += char(in.shape.size());
  for (int64_t d : in.shape) out += char(d);
  if (in.target == kMergeTarget) {
    out += char(in.payloads.size());
    for (size_t i = 0; i + 1 < in.payloads.size(); ++i) {
      out += char(in.payloads[i].size() & 0xff);
      out += char(in.payloads[i].size() >> 8);
      out += in.payloads[i];
    }
  }
  if (!in.payloads.empty()) out += in.payloads.back();
  return out;
}

}  // namespace loco::fuzz
