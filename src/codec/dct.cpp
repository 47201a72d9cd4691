// The dct codec (docs/design.md "DCT, concretely" and "Wire encoding and byte accounting"): its
// wire format, encode and decode, and the sparse merge the coordinator uses. The transform is in
// dct_transform.cpp (skipped with transform: none, the raw chunks), the choice of the top-k
// |coefficients| (or the highest band) of every chunk in dct_select.cpp, the int4 / int2
// quantisers in low_bit.cpp; this file writes the kept values as fp32 / fp16 / bf16 / int8 / int4 /
// int2 and their indices packed in 12 bits.
//
// Wire layout (little-endian). Bytes 0-3 are the prefix every codec writes (wire.h).
//   offset size
//   0      1    magic 0x4C
//   1      1    version 1
//   2      1    codec id 4 (dct)
//   3      1    value format: 0 fp32, 1 fp16, 2 bf16, 3 int8, 4 int4, 5 int2
//   4      1    selection: 0 top-k (indices sent), 1 band (indices implied by n1, n2, k; none sent)
//   5      1    transform: 0 dct (the values are DCT coefficients), 1 none (raw values of the
//               chunks; only with selection 0)
//   6      2    n1  \ blocks of n1 x n2 over the rows x cols view of the shape (ChunkPlan):
//   8      2    n2  / n1 divides rows, n2 divides cols, each 1..64 (sync.codec.chunk's range)
//   10     2    k   coefficients kept per chunk, 1 <= k <= n1 * n2
//   12     ...  int8, int4: C float32 scales, one per chunk (C = number of chunks), finite, >= 0
//               int2: C x 4 float32 levels, four per chunk, finite
//               C * k values of 4 (fp32), 2 (fp16, bf16) or 1 (int8) bytes, chunk by chunk;
//                 an int8 value stands for q * scale of its chunk, scale = max|v| / 127;
//                 int4, int2: C * k codes packed densely across chunks, two (int4) or four
//                 (int2) per byte, the first in the lowest bits, the last byte's unused bits 0;
//                 an int4 code q stands for (q - 7.5) * scale, an int2 code for level[q] of its
//                 chunk (low_bit.h)
//               top-k only: C * k indices of 12 bits, chunk by chunk, two in three bytes:
//                 (a, b) -> [a & 0xff, a >> 8 | (b & 0xf) << 4, b >> 4]; an odd last index
//                 takes two bytes, its top nibble 0. Each < n1 * n2.
// Total: 12 + 4C (int8, int4) or 16C (int2) + Ck * value bytes (int4: ceil(Ck / 2); int2:
// ceil(Ck / 4)) + ceil(3Ck / 2) (top-k); decode checks it exactly.
// Decode refuses an index repeated within a chunk (the encoder never writes one), non-finite
// values, and scales that are non-finite or negative. fp16 values are clamped to +-65504.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "dct_select.h"
#include "dct_transform.h"
#include "loco/codec.h"
#include "low_bit.h"
#include "wire.h"

namespace loco {
namespace {

using dct_impl::check_sparse;
using dct_impl::Kept;

// A block's edge is at most make_codec's largest chunk, so a chunk's indices fit 12 bits. Decode
// refuses wider blocks, which no encoder writes: each new edge n would cost an n x n basis, kept
// in dct_basis's cache (a 17-byte payload with n = 4096 made the process grow by ~570 MB).
constexpr int64_t kMaxChunkEdge = 64;
constexpr float kHalfMax = 65504.0f;

enum class ValueFormat : uint8_t {
  kFp32 = 0,
  kFp16 = 1,
  kBf16 = 2,
  kInt8 = 3,
  kInt4 = 4,
  kInt2 = 5,
};

ValueFormat value_format(const std::string& name) {
  if (name == "fp32") return ValueFormat::kFp32;
  if (name == "fp16") return ValueFormat::kFp16;
  if (name == "bf16") return ValueFormat::kBf16;
  if (name == "int4") return ValueFormat::kInt4;
  if (name == "int2") return ValueFormat::kInt2;
  TORCH_CHECK(name == "int8", "dct values: '", name,
              "' is not one of fp32 | fp16 | bf16 | int8 | int4 | int2");
  return ValueFormat::kInt8;
}

// Bits per packed code of a low-bit format, 0 for the others.
int low_bits(ValueFormat f) {
  return f == ValueFormat::kInt4 ? 4 : f == ValueFormat::kInt2 ? 2 : 0;
}

// Float32 parameters per chunk before the values: int8 and int4 a scale, int2 four levels.
int64_t params_per_chunk(ValueFormat f) {
  return f == ValueFormat::kInt2 ? 4 : f == ValueFormat::kInt8 || f == ValueFormat::kInt4 ? 1 : 0;
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
    case ValueFormat::kInt4:
    case ValueFormat::kInt2:
      return torch::kByte;
  }
  return torch::kFloat;
}

// The bytes of C * k values in format f, after their parameters.
size_t value_bytes(ValueFormat f, int64_t count) {
  if (const int bits = low_bits(f)) return wire::packed_bytes(count, bits);
  return size_t(count) * c10::elementSize(wire_dtype(f));
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

Encoded serialize(const SparseChunks& s, ValueFormat format, bool band) {
  check_sparse(s);
  TORCH_CHECK(s.dct || !band, "dct: band selection needs the DCT transform");
  const auto& p = s.plan;
  TORCH_CHECK(p.n1 <= kMaxChunkEdge && p.n2 <= kMaxChunkEdge, "dct: chunks of ", p.n1, "x", p.n2,
              " are wider than ", kMaxChunkEdge, " (sync.codec.chunk's range)");
  Encoded e{"dct", s.shape, {}};
  wire::put_prefix(e.payload, wire::CodecId::kDct, uint8_t(format));
  wire::put(e.payload, uint8_t(band));
  wire::put(e.payload, uint8_t(s.dct ? 0 : 1));
  for (int64_t v : {p.n1, p.n2, s.indices.size(1)}) wire::put(e.payload, uint16_t(v));
  auto values = s.values.to(torch::kFloat);
  if (format == ValueFormat::kInt8) {
    auto [q, scales] = wire::quantize_int8(values);
    wire::put_tensor(e.payload, scales);
    wire::put_tensor(e.payload, q);
  } else if (const int bits = low_bits(format)) {
    auto q = bits == 4 ? wire::quantize_int4(values) : wire::quantize_int2(values);
    wire::put_tensor(e.payload, q.params);
    wire::pack_codes(e.payload, q.codes, bits);
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
        band_(c.select == "band"),
        transform_(c.transform != "none") {}

  std::string name() const override { return "dct"; }

  Encoded encode(const torch::Tensor& x) override {
    auto xf = wire::float_input(x, "dct");
    TORCH_CHECK(xf.numel() > 0, "dct codec: cannot encode an empty tensor of shape ", x.sizes());
    SparseChunks s{x.sizes().vec(), chunk_plan(x.sizes(), chunk_), {}, {}, transform_};
    const int64_t k = std::min(topk_, s.plan.chunk_size());
    auto rows = xf.view({s.plan.rows, s.plan.cols});
    std::vector<torch::Tensor> indices, values;
    dct_impl::for_each_slab(s.plan, xf.device(), [&](int64_t band, const ChunkPlan& slab) {
      auto slab_rows = rows.narrow(0, band * slab.n1, slab.rows);
      auto grid = transform_ ? dct_impl::block_dct(slab_rows, slab) : slab_rows;
      Kept kept =
          band_ ? dct_impl::select_band(grid, slab, k) : dct_impl::select_topk(grid, slab, k);
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
  bool transform_;  // false: top-k of the raw chunks (transform: none)
};

}  // namespace

namespace wire {
std::unique_ptr<Codec> make_dct_codec(const CodecConfig& config) {
  return std::make_unique<DctCodec>(config);
}
}  // namespace wire

SparseChunks parse_dct(const Encoded& e) {
  wire::Reader in(e.payload, "dct payload");
  const uint8_t format_byte = wire::read_prefix(in, e, "dct", wire::CodecId::kDct);
  if (format_byte > uint8_t(ValueFormat::kInt2))
    in.fail("unknown value format " + std::to_string(format_byte));
  const auto format = ValueFormat(format_byte);
  const uint8_t band = in.get<uint8_t>();
  if (band > 1) in.fail("selection " + std::to_string(band) + " is neither 0 (top-k) nor 1 (band)");
  const uint8_t transform = in.get<uint8_t>();
  if (transform > 1)
    in.fail("transform " + std::to_string(transform) + " is neither 0 (dct) nor 1 (none)");
  if (transform == 1 && band) in.fail("band selection with transform none (no encoder writes it)");
  auto [plan, k] = read_plan(in, e.shape);
  const int64_t chunks = plan.chunks(), count = chunks * k, per_chunk = params_per_chunk(format);
  in.expect_remaining(size_t(4 * per_chunk * chunks) + value_bytes(format, count) +
                      (band ? 0 : size_t(3 * count + 1) / 2));
  SparseChunks s{e.shape, plan, {}, {}, transform == 0};
  torch::Tensor params =
      per_chunk ? in.floats(chunks * per_chunk, torch::kFloat).view({chunks, per_chunk})
                : torch::Tensor();
  if (format == ValueFormat::kInt2)
    wire::check_values(params.flatten(), in);  // levels: any finite value
  else if (per_chunk)
    wire::check_scales(params.flatten(), in);
  if (format == ValueFormat::kInt4) {
    s.values = wire::dequantize_int4(wire::unpack_codes(in, count, 4).view({chunks, k}), params);
  } else if (format == ValueFormat::kInt2) {
    s.values = wire::dequantize_int2(wire::unpack_codes(in, count, 2).view({chunks, k}), params);
  } else {
    s.values = in.floats(count, wire_dtype(format)).view({chunks, k});
    if (format == ValueFormat::kInt8) s.values.mul_(params);
  }
  wire::check_values(s.values.flatten(), in);
  s.indices = band ? band_indices(plan, k).expand({chunks, k}).contiguous()
                   : unpack_indices(in, chunks, k, plan.chunk_size());
  return s;
}

Encoded encode_sparse(const SparseChunks& s, const std::string& values) {
  return serialize(s, value_format(values), /*band=*/false);
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
    if (s.dct != first.dct)
      throw CodecError("dct merge: payload " + std::to_string(i) + " has transform " +
                       (s.dct ? "dct" : "none") + ", payload 0 " + (first.dct ? "dct" : "none"));
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
  return {first.shape, p, indices, mean.gather(1, indices), first.dct};
}

}  // namespace loco
