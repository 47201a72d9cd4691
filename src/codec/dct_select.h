// Which coefficients the dct codec keeps of each chunk (private to src/codec): the top-k by
// magnitude, or the fixed band of highest frequencies (band_indices in include/loco/codec.h).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <utility>

#include "loco/codec.h"

namespace loco::dct_impl {

// {indices int64 [chunks, k], values float32 [chunks, k]} of each chunk of a grid-layout tensor
// (dct_transform.h), on the grid's device.
using Kept = std::pair<torch::Tensor, torch::Tensor>;

// The k largest |coefficient| of every chunk, in no particular order (on the CPU, ties go to
// the lower index).
Kept select_topk(const torch::Tensor& grid, const ChunkPlan& p, int64_t k);
// The band_indices(p, k) of every chunk.
Kept select_band(const torch::Tensor& grid, const ChunkPlan& p, int64_t k);

}  // namespace loco::dct_impl
