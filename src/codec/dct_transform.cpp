// The DCT of the dct codec (docs/design.md "DCT, concretely"): the orthonormal basis, how a tensor
// is cut into chunks, the batched forward and inverse transforms, the band of highest frequencies,
// and the inverse of a sparse set of kept coefficients (to_dense).
//
// Speed (docs/codec.md): the forward transform works on the tensor's own layout (a bmm over
// bands of n1 rows, then one mm over n2-wide strips: no block copies); the inverse of k < n1 + n2
// kept coefficients is one batched [n1 x k] x [k x n2] matmul per chunk, fewer flops than the
// dense inverse.
#include "dct_transform.h"

#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace loco {
namespace dct_impl {

torch::Tensor grid_to_chunks(const torch::Tensor& grid, const ChunkPlan& p) {
  return grid.reshape({p.rows / p.n1, p.n1, p.cols / p.n2, p.n2})
      .permute({0, 2, 1, 3})
      .reshape({p.chunks(), p.chunk_size()});
}

torch::Tensor chunks_to_grid(const torch::Tensor& chunks, const ChunkPlan& p) {
  return chunks.reshape({p.rows / p.n1, p.cols / p.n2, p.n1, p.n2})
      .permute({0, 2, 1, 3})
      .reshape({p.rows, p.cols});
}

namespace {

// m . band for every n1-row band of the grid: one bmm, m broadcast (torch::matmul would copy it
// per band and run ~5x slower here).
torch::Tensor left_multiply(const torch::Tensor& m, const torch::Tensor& grid, const ChunkPlan& p) {
  const int64_t bands = p.rows / p.n1;
  return torch::bmm(m.expand({bands, p.n1, p.n1}), grid.view({bands, p.n1, p.cols}));
}

// D1^T . C . D2 for every block.
torch::Tensor block_idct(const torch::Tensor& grid, const ChunkPlan& p) {
  auto y = grid.contiguous();
  if (p.n2 > 1) y = y.view({-1, p.n2}).mm(dct_basis(p.n2, y.device()));
  if (p.n1 > 1) y = left_multiply(dct_basis(p.n1, y.device()).t(), y, p);
  return y.reshape({p.rows, p.cols});
}

// Block (b1, b2) = sum_i v_i D1[k1_i]^T D2[k2_i]: a batched [n1 x k] x [k x n2] matmul, 2k n1 n2
// flops per chunk where the dense inverse takes 2 n1 n2 (n1 + n2). Returns [chunks, n1, n2].
torch::Tensor sparse_idct_chunks(const SparseChunks& s) {
  const auto& p = s.plan;
  const int64_t k = s.indices.size(1);
  auto dev = s.values.device();
  auto rows = dct_basis(p.n1, dev).index_select(0, s.indices.div(p.n2, "floor").flatten());
  auto cols = dct_basis(p.n2, dev).index_select(0, s.indices.remainder(p.n2).flatten());
  rows.mul_(s.values.reshape({-1, 1}));
  return torch::bmm(rows.view({-1, k, p.n1}).transpose(1, 2), cols.view({-1, k, p.n2}));
}

int64_t largest_divisor(int64_t n, int64_t chunk) {
  for (int64_t d = std::min(n, chunk); d > 1; --d)
    if (n % d == 0) return d;
  return 1;
}

}  // namespace

torch::Tensor block_dct(const torch::Tensor& x, const ChunkPlan& p) {
  auto y = x.reshape({p.rows, p.cols});
  if (p.n1 > 1) y = left_multiply(dct_basis(p.n1, y.device()), y, p);
  if (p.n2 > 1) y = y.reshape({-1, p.n2}).mm(dct_basis(p.n2, y.device()).t());
  return y.reshape({p.rows, p.cols});
}

void check_sparse(const SparseChunks& s) {
  const auto& p = s.plan;
  TORCH_CHECK(p.n1 >= 1 && p.n2 >= 1 && p.rows % p.n1 == 0 && p.cols % p.n2 == 0 &&
                  p.rows * p.cols == c10::multiply_integers(s.shape),
              "dct: chunk plan ", p.n1, "x", p.n2, " over ", p.rows, "x", p.cols,
              " does not fit shape ", s.shape);
  TORCH_CHECK(s.indices.dim() == 2 && s.indices.size(0) == p.chunks() &&
                  s.values.sizes() == s.indices.sizes(),
              "dct: expected indices and values of [", p.chunks(), ", k], got ", s.indices.sizes(),
              " and ", s.values.sizes());
  TORCH_CHECK(s.indices.size(1) >= 1 && s.indices.size(1) <= p.chunk_size(),
              "dct: k = ", s.indices.size(1), " must be in 1..", p.chunk_size());
}

}  // namespace dct_impl

torch::Tensor dct_basis(int64_t n, const torch::Device& device) {
  TORCH_CHECK(n >= 1, "dct_basis: size must be >= 1, got ", n);
  static std::mutex mutex;
  static std::map<std::pair<int64_t, std::string>, torch::Tensor> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& basis = cache[{n, device.str()}];
  if (!basis.defined()) {
    auto k = torch::arange(n, torch::kDouble).unsqueeze(1);
    auto j = torch::arange(n, torch::kDouble).unsqueeze(0);
    auto d = torch::cos(M_PI * (2 * j + 1) * k / (2.0 * n)) * std::sqrt(2.0 / n);
    d[0].mul_(std::sqrt(0.5));
    basis = d.to(torch::kFloat).to(device);
  }
  return basis;
}

ChunkPlan chunk_plan(c10::IntArrayRef shape, int64_t chunk) {
  TORCH_CHECK(chunk >= 1, "chunk_plan: chunk must be >= 1, got ", chunk);
  ChunkPlan p;
  if (shape.size() == 1) p.cols = shape[0];
  if (shape.size() >= 2) {
    p.rows = shape[0];
    p.cols = c10::multiply_integers(shape.begin() + 1, shape.end());
  }
  p.n1 = dct_impl::largest_divisor(p.rows, chunk);
  p.n2 = dct_impl::largest_divisor(p.cols, chunk);
  return p;
}

torch::Tensor dct_chunks(const torch::Tensor& x, const ChunkPlan& plan) {
  TORCH_CHECK(x.numel() == plan.rows * plan.cols, "dct_chunks: tensor of shape ", x.sizes(),
              " does not match a ", plan.rows, "x", plan.cols, " plan");
  return dct_impl::grid_to_chunks(dct_impl::block_dct(x.to(torch::kFloat), plan), plan);
}

torch::Tensor idct_chunks(const torch::Tensor& coefficients, const ChunkPlan& plan) {
  TORCH_CHECK(coefficients.numel() == plan.rows * plan.cols, "idct_chunks: ", coefficients.sizes(),
              " coefficients do not match a ", plan.rows, "x", plan.cols, " plan");
  return dct_impl::block_idct(dct_impl::chunks_to_grid(coefficients.to(torch::kFloat), plan), plan);
}

torch::Tensor band_indices(const ChunkPlan& plan, int64_t k) {
  const int64_t size = plan.chunk_size();
  TORCH_CHECK(k >= 1 && k <= size, "band_indices: k = ", k, " must be in 1..", size);
  auto flat = torch::arange(size, torch::kLong);
  // k1 / n1 + k2 / n2 scaled by n1 n2 to stay integral, then the index itself breaks ties.
  auto frequency = flat.div(plan.n2, "floor") * plan.n2 + flat.remainder(plan.n2) * plan.n1;
  return std::get<1>((frequency * size + flat).topk(k)).contiguous();
}

torch::Tensor to_dense(const SparseChunks& s) {
  dct_impl::check_sparse(s);
  const auto& p = s.plan;
  const int64_t nb2 = p.cols / p.n2, k = s.indices.size(1);
  if (!s.dct) {  // transform none: the kept values in place, zeros elsewhere
    auto dense = torch::zeros({p.chunks(), p.chunk_size()}, s.values.options());
    dense.scatter_(1, s.indices.to(s.values.device()), s.values);
    return dct_impl::chunks_to_grid(dense, p).reshape(s.shape);
  }
  auto out = torch::empty({p.rows, p.cols}, s.values.options());
  dct_impl::for_each_slab(p, s.values.device(), [&](int64_t band, const ChunkPlan& slab) {
    auto part = out.narrow(0, band * p.n1, slab.rows);
    auto indices = s.indices.narrow(0, band * nb2, slab.chunks());
    auto values = s.values.narrow(0, band * nb2, slab.chunks());
    if (k < p.n1 + p.n2) {
      auto blocks = dct_impl::sparse_idct_chunks({{slab.rows, slab.cols}, slab, indices, values});
      part.view({-1, p.n1, nb2, p.n2})
          .copy_(blocks.view({-1, nb2, p.n1, p.n2}).permute({0, 2, 1, 3}));
    } else {
      auto dense = torch::zeros({slab.chunks(), slab.chunk_size()}, values.options());
      part.copy_(idct_chunks(dense.scatter_(1, indices, values), slab));
    }
  });
  return out.view(s.shape);
}

}  // namespace loco
