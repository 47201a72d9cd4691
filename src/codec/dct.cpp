// The dct codec (DESIGN.md "DCT, concretely" and "Wire encoding"): a chunked orthonormal DCT-II
// as batched matmuls, the top-k |coefficients| (or the highest band) of every chunk, values as
// fp32 / fp16 / bf16 / int8, indices packed in 12 bits; and the sparse merge the coordinator uses.
//
// Wire layout (little-endian). Bytes 0-3 are the prefix every codec writes (wire.h).
//   offset size
//   0      1    magic 0x4C
//   1      1    version 1
//   2      1    codec id 4 (dct)
//   3      1    value format: 0 fp32, 1 fp16, 2 bf16, 3 int8
//   4      1    selection: 0 top-k (indices sent), 1 band (indices implied by n1, n2, k; none sent)
//   5      1    reserved, 0
//   6      2    n1  \ blocks of n1 x n2 over the rows x cols view of the shape (ChunkPlan):
//   8      2    n2  / n1 divides rows, n2 divides cols, each 1..64 (sync.codec.chunk's range)
//   10     2    k   coefficients kept per chunk, 1 <= k <= n1 * n2
//   12     ...  int8 only: C float32 scales, one per chunk (C = number of chunks), finite, >= 0
//               C * k values of 4 (fp32), 2 (fp16, bf16) or 1 (int8) bytes, chunk by chunk;
//                 an int8 value stands for q * scale of its chunk, scale = max|v| / 127
//               top-k only: C * k indices of 12 bits, chunk by chunk, two in three bytes:
//                 (a, b) -> [a & 0xff, a >> 8 | (b & 0xf) << 4, b >> 4]; an odd last index
//                 takes two bytes, its top nibble 0. Each < n1 * n2.
// Total: 12 + 4C (int8) + Ck * value bytes + ceil(3Ck / 2) (top-k); decode checks it exactly.
// Decode refuses an index repeated within a chunk (the encoder never writes one), non-finite
// values, and scales that are non-finite or negative. fp16 values are clamped to +-65504.
//
// Speed (docs/codec.md): the forward transform works on the tensor's own layout (a bmm over
// bands of n1 rows, then one mm over n2-wide strips: no block copies); on the CPU the top-k reads
// that layout directly, with a threshold from the row maxima that lets few values through; the
// inverse of k < n1 + n2 kept coefficients is one batched [n1 x k] x [k x n2] matmul per chunk,
// fewer flops than the dense inverse.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>

#include "loco/codec.h"
#include "wire.h"

namespace loco {
namespace {

// A block's edge is at most make_codec's largest chunk, so a chunk's indices fit 12 bits. Decode
// refuses wider blocks, which no encoder writes: each new edge n would cost an n x n basis, kept
// in dct_basis's cache (a 17-byte payload with n = 4096 made the process grow by ~570 MB).
constexpr int64_t kMaxChunkEdge = 64;
constexpr float kHalfMax = 65504.0f;

enum class ValueFormat : uint8_t { kFp32 = 0, kFp16 = 1, kBf16 = 2, kInt8 = 3 };

ValueFormat value_format(const std::string& name) {
  if (name == "fp32") return ValueFormat::kFp32;
  if (name == "fp16") return ValueFormat::kFp16;
  if (name == "bf16") return ValueFormat::kBf16;
  TORCH_CHECK(name == "int8", "dct values: '", name, "' is not one of fp32 | fp16 | bf16 | int8");
  return ValueFormat::kInt8;
}

torch::ScalarType wire_dtype(ValueFormat f) {
  switch (f) {
    case ValueFormat::kFp32:
      return torch::kFloat;
    case ValueFormat::kFp16:
      return torch::kHalf;
    case ValueFormat::kBf16:
      return torch::kBFloat16;
    case ValueFormat::kInt8:
      return torch::kChar;
  }
  return torch::kFloat;
}

int64_t largest_divisor(int64_t n, int64_t chunk) {
  for (int64_t d = std::min(n, chunk); d > 1; --d)
    if (n % d == 0) return d;
  return 1;
}

// ---- the transform. "Grid" layout: the tensor as rows x cols, coefficient (k1, k2) of block
// (b1, b2) at row b1 * n1 + k1, column b2 * n2 + k2. "Chunk-major": [chunks, n1 * n2].

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

// m . band for every n1-row band of the grid: one bmm, m broadcast (torch::matmul would copy it
// per band and run ~5x slower here).
torch::Tensor left_multiply(const torch::Tensor& m, const torch::Tensor& grid, const ChunkPlan& p) {
  const int64_t bands = p.rows / p.n1;
  return torch::bmm(m.expand({bands, p.n1, p.n1}), grid.view({bands, p.n1, p.cols}));
}

// D1 . B . D2^T for every block: D1 over each n1-row band, then D2 over each n2-wide strip.
torch::Tensor block_dct(const torch::Tensor& x, const ChunkPlan& p) {
  auto y = x.reshape({p.rows, p.cols});
  if (p.n1 > 1) y = left_multiply(dct_basis(p.n1, y.device()), y, p);
  if (p.n2 > 1) y = y.reshape({-1, p.n2}).mm(dct_basis(p.n2, y.device()).t());
  return y.reshape({p.rows, p.cols});
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

// ---- slabs. CPU work goes a slab at a time, a slab being as many n1-row bands as fit in about
// kSlabValues values: its temporaries stay in cache and in the allocator's free lists instead of
// costing fresh pages on every call (a whole-tensor temporary of the tiny model's embedding is
// 4 MB, and page faults were a fifth of the time). Other devices take the tensor in one slab.

constexpr int64_t kSlabValues = int64_t(1) << 17;

int64_t bands_per_slab(const ChunkPlan& p, const torch::Device& device) {
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

// ---- selection: {indices int64 [chunks, k], values float32 [chunks, k]}

using Kept = std::pair<torch::Tensor, torch::Tensor>;

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

// ---- the wire form

void pack_indices(std::string& out, const torch::Tensor& indices) {
  auto cpu = indices.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t* idx = cpu.data_ptr<int64_t>();
  const int64_t count = cpu.numel();
  const size_t start = out.size();
  out.resize(start + size_t(3 * count + 1) / 2);
  auto* b = reinterpret_cast<uint8_t*>(&out[start]);
  for (int64_t i = 0; i + 1 < count; i += 2, b += 3) {
    b[0] = uint8_t(idx[i] & 0xff);
    b[1] = uint8_t(idx[i] >> 8 | (idx[i + 1] & 0xf) << 4);
    b[2] = uint8_t(idx[i + 1] >> 4);
  }
  if (count % 2) {
    b[0] = uint8_t(idx[count - 1] & 0xff);
    b[1] = uint8_t(idx[count - 1] >> 8);
  }
}

// Unpacks chunks * k indices and checks each is in range and not repeated within its chunk.
torch::Tensor unpack_indices(wire::Reader& in, int64_t chunks, int64_t k, int64_t chunk_size) {
  const int64_t count = chunks * k;
  const auto* b = reinterpret_cast<const uint8_t*>(in.take(size_t(3 * count + 1) / 2));
  auto indices = torch::empty({chunks, k}, torch::kLong);
  int64_t* idx = indices.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* t = b + (i / 2) * 3;
    idx[i] = i % 2 == 0 ? t[0] | (t[1] & 0xf) << 8 : t[1] >> 4 | t[2] << 4;
  }
  if (count % 2 && b[(count / 2) * 3 + 1] >> 4 != 0)
    in.fail("padding bits after the last index are not 0");
  std::vector<uint64_t> seen(size_t(chunk_size + 63) / 64);
  for (int64_t c = 0; c < chunks; ++c) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t v = idx[c * k + j];
      if (v >= chunk_size)
        in.fail("index " + std::to_string(v) + " out of range for a " + std::to_string(chunk_size) +
                "-coefficient chunk");
      uint64_t& word = seen[size_t(v / 64)];
      if (word >> (v % 64) & 1)
        in.fail("chunk " + std::to_string(c) + " holds index " + std::to_string(v) + " twice");
      word |= uint64_t(1) << (v % 64);
    }
  }
  return indices;
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

Encoded serialize(const SparseChunks& s, ValueFormat format, bool band) {
  check_sparse(s);
  const auto& p = s.plan;
  TORCH_CHECK(p.n1 <= kMaxChunkEdge && p.n2 <= kMaxChunkEdge, "dct: chunks of ", p.n1, "x", p.n2,
              " are wider than ", kMaxChunkEdge, " (sync.codec.chunk's range)");
  Encoded e{"dct", s.shape, {}};
  wire::put_prefix(e.payload, wire::CodecId::kDct, uint8_t(format));
  wire::put(e.payload, uint8_t(band));
  wire::put(e.payload, uint8_t(0));
  for (int64_t v : {p.n1, p.n2, s.indices.size(1)}) wire::put(e.payload, uint16_t(v));
  auto values = s.values.to(torch::kFloat);
  if (format == ValueFormat::kInt8) {
    auto [q, scales] = wire::quantize_int8(values);
    wire::put_tensor(e.payload, scales);
    wire::put_tensor(e.payload, q);
  } else {
    if (format == ValueFormat::kFp16) values = values.clamp(-kHalfMax, kHalfMax);
    wire::put_tensor(e.payload, values.to(wire_dtype(format)));
  }
  if (!band) pack_indices(e.payload, s.indices);
  return e;
}

// Reads the header's chunk plan and k, checked against the shape.
std::pair<ChunkPlan, int64_t> read_plan(wire::Reader& in, const std::vector<int64_t>& shape) {
  const int64_t n1 = in.get<uint16_t>(), n2 = in.get<uint16_t>(), k = in.get<uint16_t>();
  if (wire::checked_numel(shape, in) == 0) in.fail("the shape has no elements");
  ChunkPlan p = chunk_plan(shape, 1);
  const std::string blocks = std::to_string(n1) + "x" + std::to_string(n2);
  if (n1 < 1 || n2 < 1 || n1 > kMaxChunkEdge || n2 > kMaxChunkEdge)
    in.fail("chunks of " + blocks + ": each edge must be 1.." + std::to_string(kMaxChunkEdge));
  if (p.rows % n1 != 0 || p.cols % n2 != 0)
    in.fail("chunks of " + blocks + " do not tile the shape's " + std::to_string(p.rows) + "x" +
            std::to_string(p.cols));
  p.n1 = n1;
  p.n2 = n2;
  if (k < 1 || k > p.chunk_size())
    in.fail("k = " + std::to_string(k) + " is not in 1.." + std::to_string(p.chunk_size()));
  return {p, k};
}

class DctCodec : public Codec {
 public:
  explicit DctCodec(const CodecConfig& c)
      : chunk_(c.chunk),
        topk_(c.topk),
        format_(value_format(c.values)),
        band_(c.select == "band") {}

  std::string name() const override { return "dct"; }

  Encoded encode(const torch::Tensor& x) override {
    auto xf = wire::float_input(x, "dct");
    TORCH_CHECK(xf.numel() > 0, "dct codec: cannot encode an empty tensor of shape ", x.sizes());
    SparseChunks s{x.sizes().vec(), chunk_plan(x.sizes(), chunk_), {}, {}};
    const int64_t k = std::min(topk_, s.plan.chunk_size());
    auto rows = xf.view({s.plan.rows, s.plan.cols});
    std::vector<torch::Tensor> indices, values;
    for_each_slab(s.plan, xf.device(), [&](int64_t band, const ChunkPlan& slab) {
      auto grid = block_dct(rows.narrow(0, band * slab.n1, slab.rows), slab);
      auto kept = band_ ? select_band(grid, slab, k) : select_topk(grid, slab, k);
      indices.push_back(kept.first);
      values.push_back(kept.second);
    });
    s.indices = torch::cat(indices);
    s.values = torch::cat(values);
    return serialize(s, format_, band_);
  }

  torch::Tensor decode(const Encoded& e) const override {
    auto x = to_dense(parse_dct(e));
    if (!wire::all_finite(x))
      throw CodecError("dct payload: its coefficients decode to values beyond float32's range");
    return x;
  }

 private:
  int64_t chunk_, topk_;
  ValueFormat format_;
  bool band_;
};

}  // namespace

namespace wire {
std::unique_ptr<Codec> make_dct_codec(const CodecConfig& config) {
  return std::make_unique<DctCodec>(config);
}
}  // namespace wire

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
  p.n1 = largest_divisor(p.rows, chunk);
  p.n2 = largest_divisor(p.cols, chunk);
  return p;
}

torch::Tensor dct_chunks(const torch::Tensor& x, const ChunkPlan& plan) {
  TORCH_CHECK(x.numel() == plan.rows * plan.cols, "dct_chunks: tensor of shape ", x.sizes(),
              " does not match a ", plan.rows, "x", plan.cols, " plan");
  return grid_to_chunks(block_dct(x.to(torch::kFloat), plan), plan);
}

torch::Tensor idct_chunks(const torch::Tensor& coefficients, const ChunkPlan& plan) {
  TORCH_CHECK(coefficients.numel() == plan.rows * plan.cols, "idct_chunks: ", coefficients.sizes(),
              " coefficients do not match a ", plan.rows, "x", plan.cols, " plan");
  return block_idct(chunks_to_grid(coefficients.to(torch::kFloat), plan), plan);
}

torch::Tensor band_indices(const ChunkPlan& plan, int64_t k) {
  const int64_t size = plan.chunk_size();
  TORCH_CHECK(k >= 1 && k <= size, "band_indices: k = ", k, " must be in 1..", size);
  auto flat = torch::arange(size, torch::kLong);
  // k1 / n1 + k2 / n2 scaled by n1 n2 to stay integral, then the index itself breaks ties.
  auto frequency = flat.div(plan.n2, "floor") * plan.n2 + flat.remainder(plan.n2) * plan.n1;
  return std::get<1>((frequency * size + flat).topk(k)).contiguous();
}

SparseChunks parse_dct(const Encoded& e) {
  wire::Reader in(e.payload, "dct payload");
  const uint8_t format_byte = wire::read_prefix(in, e, "dct", wire::CodecId::kDct);
  if (format_byte > uint8_t(ValueFormat::kInt8))
    in.fail("unknown value format " + std::to_string(format_byte));
  const auto format = ValueFormat(format_byte);
  const uint8_t band = in.get<uint8_t>();
  if (band > 1) in.fail("selection " + std::to_string(band) + " is neither 0 (top-k) nor 1 (band)");
  if (in.get<uint8_t>() != 0) in.fail("reserved byte is not 0");
  auto [plan, k] = read_plan(in, e.shape);
  const int64_t chunks = plan.chunks(), count = chunks * k;
  const bool int8 = format == ValueFormat::kInt8;
  in.expect_remaining(size_t(int8 ? 4 * chunks : 0) +
                      size_t(count) * c10::elementSize(wire_dtype(format)) +
                      (band ? 0 : size_t(3 * count + 1) / 2));
  SparseChunks s{e.shape, plan, {}, {}};
  torch::Tensor scales = int8 ? in.floats(chunks, torch::kFloat) : torch::Tensor();
  if (int8) wire::check_scales(scales, in);
  s.values = in.floats(count, wire_dtype(format)).view({chunks, k});
  if (int8) s.values.mul_(scales.unsqueeze(1));
  wire::check_values(s.values.flatten(), in);
  s.indices = band ? band_indices(plan, k).expand({chunks, k}).contiguous()
                   : unpack_indices(in, chunks, k, plan.chunk_size());
  return s;
}

Encoded encode_sparse(const SparseChunks& s, const std::string& values) {
  return serialize(s, value_format(values), /*band=*/false);
}

torch::Tensor to_dense(const SparseChunks& s) {
  check_sparse(s);
  const auto& p = s.plan;
  const int64_t nb2 = p.cols / p.n2, k = s.indices.size(1);
  auto out = torch::empty({p.rows, p.cols}, s.values.options());
  for_each_slab(p, s.values.device(), [&](int64_t band, const ChunkPlan& slab) {
    auto part = out.narrow(0, band * p.n1, slab.rows);
    auto indices = s.indices.narrow(0, band * nb2, slab.chunks());
    auto values = s.values.narrow(0, band * nb2, slab.chunks());
    if (k < p.n1 + p.n2) {
      auto blocks = sparse_idct_chunks({{slab.rows, slab.cols}, slab, indices, values});
      part.view({-1, p.n1, nb2, p.n2})
          .copy_(blocks.view({-1, nb2, p.n1, p.n2}).permute({0, 2, 1, 3}));
    } else {
      auto dense = torch::zeros({slab.chunks(), slab.chunk_size()}, values.options());
      part.copy_(idct_chunks(dense.scatter_(1, indices, values), slab));
    }
  });
  return out.view(s.shape);
}

SparseChunks merge_sparse(const std::vector<Encoded>& payloads) {
  if (payloads.empty()) throw CodecError("dct merge: no payloads");
  SparseChunks first = parse_dct(payloads[0]);
  const auto& p = first.plan;
  // float64 sums: a mean of finite float32 values is finite even where their sum is not.
  auto sum = torch::zeros({p.chunks(), p.chunk_size()}, torch::kDouble);
  auto count = torch::zeros_like(sum);
  for (size_t i = 0; i < payloads.size(); ++i) {
    SparseChunks s = i == 0 ? first : parse_dct(payloads[i]);
    if (s.shape != first.shape || !(s.plan == p))
      throw CodecError("dct merge: payload " + std::to_string(i) + " (shape " + c10::str(s.shape) +
                       ", chunks " + std::to_string(s.plan.n1) + "x" + std::to_string(s.plan.n2) +
                       ") differs from payload 0 (shape " + c10::str(first.shape) + ", chunks " +
                       std::to_string(p.n1) + "x" + std::to_string(p.n2) + ")");
    sum.scatter_add_(1, s.indices, s.values.to(torch::kDouble));
    count.scatter_add_(1, s.indices, torch::ones_like(s.values, torch::kDouble));
  }
  auto carried = (count > 0).to(torch::kFloat);
  const int64_t k = carried.sum(1).max().item<int64_t>();
  // Carried coefficients first, in index order; then zero-valued padding.
  auto order = std::get<1>(carried.sort(/*stable=*/true, 1, /*descending=*/true));
  auto indices = order.narrow(1, 0, k).contiguous();
  auto mean = (sum / count.clamp_min(1)).to(torch::kFloat);
  return {first.shape, p, indices, mean.gather(1, indices)};
}

}  // namespace loco
