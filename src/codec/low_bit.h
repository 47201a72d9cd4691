// The sparse codec's low-bit value formats (private to src/codec): int4 and int2 quantisers, one
// row per chunk, and the dense packing of their codes (two int4 or four int2 per byte).
//
//   int4  16 levels, symmetric, one float32 scale per chunk: scale = max|v| / 7.5,
//         q = clamp(round(v / scale + 7.5), 0, 15), v' = (q - 7.5) * scale. Its levels are
//         +-0.5 .. +-7.5 scales: no zero level (kept top-k values are away from zero), the largest
//         |v| exact, every error <= scale / 2.
//   int2  4 levels per chunk, SparseLoCo's quantiser (tplr-ai/templar src/tplr/compress.py,
//         TopKCompressor with 4 bins over 6 standard deviations), applied to each chunk: mu the
//         mean of the chunk's kept values, sigma their standard deviation (n - 1), step
//         6 sigma / 4 (1 where that is 0 or undefined: one value, or all equal),
//         q = clamp(round((v - mu) / step + 2), 0, 3); level[b] = mu + the mean of (v - mu) over
//         the values in bin b (mu for an empty bin). The wire carries the four levels.
#pragma once

#include <torch/types.h>

#include <string>

#include "wire.h"

namespace loco::wire {

// Codes (uint8, each < levels) and their per-row parameters (float32 [rows, 1] scales for int4,
// [rows, 4] levels for int2).
struct LowBit {
  torch::Tensor codes;
  torch::Tensor params;
};

LowBit quantize_int4(const torch::Tensor& rows);
torch::Tensor dequantize_int4(const torch::Tensor& codes, const torch::Tensor& scales);
LowBit quantize_int2(const torch::Tensor& rows);
torch::Tensor dequantize_int2(const torch::Tensor& codes, const torch::Tensor& levels);

// The number of bytes `count` codes of `bits` bits (4 or 2) take packed.
inline size_t packed_bytes(int64_t count, int bits) {
  const int64_t per = 8 / bits;
  return size_t((count + per - 1) / per);
}
// Appends the codes packed, the first in each byte's lowest bits; unused bits of the last byte 0.
void pack_codes(std::string& out, const torch::Tensor& codes, int bits);
// Reads `count` packed codes (uint8 [count]); refuses non-zero bits after the last.
torch::Tensor unpack_codes(Reader& in, int64_t count, int bits);

}  // namespace loco::wire
