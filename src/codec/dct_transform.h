// The dct codec's transform on a tensor's own layout (private to src/codec; the public building
// blocks, dct_basis, chunk_plan, dct_chunks, idct_chunks, band_indices and to_dense, are in
// include/loco/codec.h and dct_transform.cpp).
//
// "Grid" layout: the tensor as rows x cols, coefficient (k1, k2) of block (b1, b2) at row
// b1 * n1 + k1, column b2 * n2 + k2. "Chunk-major": [chunks, n1 * n2].
#pragma once

#include <torch/types.h>

#include <algorithm>
#include <cstdint>

#include "loco/codec.h"

namespace loco::dct_impl {

// The grid layout of p to chunk-major, [chunks, chunk_size], and back.
torch::Tensor grid_to_chunks(const torch::Tensor& grid, const ChunkPlan& p);
torch::Tensor chunks_to_grid(const torch::Tensor& chunks, const ChunkPlan& p);

// D1 . B . D2^T for every block B of x (any shape of p.rows * p.cols values): the coefficients in
// the grid layout, [rows, cols]. A bmm over bands of n1 rows, then one mm over n2-wide strips: no
// block copies.
torch::Tensor block_dct(const torch::Tensor& x, const ChunkPlan& p);

// Throws unless s's plan fits its shape and its indices and values are [chunks, k], 1 <= k <=
// chunk_size.
void check_sparse(const SparseChunks& s);

// ---- slabs. CPU work goes a slab at a time, a slab being as many n1-row bands as fit in about
// kSlabValues values: its temporaries stay in cache and in the allocator's free lists instead of
// costing fresh pages on every call (a whole-tensor temporary of the tiny model's embedding is
// 4 MB, and page faults were a fifth of the time). Other devices take the tensor in one slab.

constexpr int64_t kSlabValues = int64_t(1) << 17;

inline int64_t bands_per_slab(const ChunkPlan& p, const torch::Device& device) {
  const int64_t bands = p.rows / p.n1;
  if (!device.is_cpu()) return bands;
  return std::max<int64_t>(1, std::min(bands, kSlabValues / (p.n1 * p.cols)));
}

// Calls fn(first band, plan of the slab) for each slab of p.
template <class Fn>
void for_each_slab(const ChunkPlan& p, const torch::Device& device, Fn fn) {
  const int64_t bands = p.rows / p.n1, per = bands_per_slab(p, device);
  for (int64_t b = 0; b < bands; b += per) {
    ChunkPlan slab = p;
    slab.rows = std::min(per, bands - b) * p.n1;
    fn(b, slab);
  }
}

}  // namespace loco::dct_impl
