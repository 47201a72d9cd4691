// Which coefficients the dct codec keeps of each chunk: the top-k |coefficient| or the band of
// highest frequencies, read from the grid layout of the transform (dct_transform.h).
//
// Speed (docs/codec.md): on the CPU the top-k reads that layout directly, with a threshold from
// the row maxima that lets few values through; other devices gather chunks and call topk.
#include "dct_select.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "dct_transform.h"

namespace loco::dct_impl {
namespace {

// The order of top-k: by |v|, then lower index first, as one integer (larger = kept first). The
// bit pattern of |v| orders like |v| for finite v (encode refuses the rest).
uint32_t magnitude_bits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits & 0x7fffffffu;
}
int64_t rank_key(float v, int64_t index) {
  return int64_t(magnitude_bits(v)) << 32 | (0xffffffff - index);
}
int64_t key_index(int64_t key) {
  return 0xffffffff - (key & 0xffffffff);
}

// The keys of the k largest |v| of one chunk, left in top[0, k).
// Each row holds its maximum, so with n1 >= k rows the k-th largest row maximum is at most the
// k-th largest value: a safe first threshold that lets only a few dozen values through. Values
// above the threshold pile up in `top`; whenever 4k have, nth_element keeps the k largest and
// the threshold rises to the smallest of them.
void chunk_topk(const float* block, int64_t n1, int64_t n2, int64_t cols, int64_t k,
                std::vector<int64_t>& top, std::vector<uint32_t>& row_max) {
  const auto first = std::greater<>();
  int64_t threshold = -1;
  if (n1 >= k) {
    for (int64_t k1 = 0; k1 < n1; ++k1) {
      uint32_t m = 0;
      for (int64_t k2 = 0; k2 < n2; ++k2) m = std::max(m, magnitude_bits(block[k1 * cols + k2]));
      row_max[k1] = m;
    }
    std::nth_element(row_max.begin(), row_max.begin() + k - 1, row_max.begin() + n1, first);
    threshold = (int64_t(row_max[k - 1]) << 32) - 1;
  }
  const size_t keep = size_t(k), pile = 4 * keep;
  top.clear();
  for (int64_t k1 = 0; k1 < n1; ++k1) {
    const float* row = block + k1 * cols;
    for (int64_t k2 = 0; k2 < n2; ++k2) {
      const int64_t key = rank_key(row[k2], k1 * n2 + k2);
      if (key <= threshold) continue;
      top.push_back(key);
      if (top.size() == pile) {
        std::nth_element(top.begin(), top.begin() + k - 1, top.end(), first);
        top.resize(keep);
        threshold = top.back();
      }
    }
  }
  if (top.size() > keep) {
    std::nth_element(top.begin(), top.begin() + k - 1, top.end(), first);
    top.resize(keep);
  }
}

// Top-k |coefficient| of every chunk on the CPU, read straight from the grid layout.
Kept topk_cpu(const torch::Tensor& grid, const ChunkPlan& p, int64_t k) {
  const int64_t chunks = p.chunks(), nb2 = p.cols / p.n2, n1 = p.n1, n2 = p.n2, cols = p.cols;
  auto indices = torch::empty({chunks, k}, torch::kLong);
  auto values = torch::empty({chunks, k}, torch::kFloat);
  const float* g = grid.data_ptr<float>();
  int64_t* out_i = indices.data_ptr<int64_t>();
  float* out_v = values.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> top;
    top.reserve(size_t(4 * k));
    std::vector<uint32_t> row_max(static_cast<size_t>(n1));
    for (int64_t c = begin; c < end; ++c) {
      const float* block = g + (c / nb2) * n1 * cols + (c % nb2) * n2;
      chunk_topk(block, n1, n2, cols, k, top, row_max);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = key_index(top[j]);
        out_i[c * k + j] = i;
        out_v[c * k + j] = block[(i / n2) * cols + i % n2];
      }
    }
  });
  return {indices, values};
}

}  // namespace

Kept select_topk(const torch::Tensor& grid, const ChunkPlan& p, int64_t k) {
  if (grid.is_cpu()) return topk_cpu(grid.contiguous(), p, k);
  auto chunks = grid_to_chunks(grid, p);
  auto indices = std::get<1>(chunks.abs().topk(k, 1, /*largest=*/true, /*sorted=*/false));
  return {indices, chunks.gather(1, indices)};
}

Kept select_band(const torch::Tensor& grid, const ChunkPlan& p, int64_t k) {
  auto band = band_indices(p, k).to(grid.device());
  auto values = grid_to_chunks(grid, p).index_select(1, band);
  return {band.expand({p.chunks(), k}).contiguous(), values};
}

}  // namespace loco::dct_impl
