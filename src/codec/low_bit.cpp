// The int4 and int2 value formats of the sparse codec: quantisers and bit packing (low_bit.h).
#include "low_bit.h"

#include <torch/torch.h>

#include <cmath>

namespace loco::wire {

LowBit quantize_int4(const torch::Tensor& rows) {
  auto v = rows.to(torch::kFloat);
  auto scales = v.abs().amax(1, /*keepdim=*/true) / 7.5;
  auto safe = torch::where(scales > 0, scales, torch::ones_like(scales));
  auto codes = (v / safe + 7.5).round().clamp(0, 15).to(torch::kByte);
  return {codes, scales};
}

torch::Tensor dequantize_int4(const torch::Tensor& codes, const torch::Tensor& scales) {
  return (codes.to(torch::kFloat) - 7.5) * scales;
}

LowBit quantize_int2(const torch::Tensor& rows) {
  auto v = rows.to(torch::kFloat);
  const int64_t k = v.size(1);
  auto mu = v.mean(1, /*keepdim=*/true);
  auto centered = v - mu;
  auto step = k > 1 ? centered.norm(2, 1, /*keepdim=*/true) / std::sqrt(double(k - 1)) * 6.0 / 4.0
                    : torch::zeros_like(mu);
  step = torch::where(torch::isfinite(step) & (step > 0), step, torch::ones_like(step));
  auto q = (centered / step + 2.0).round().clamp(0, 3).to(torch::kLong);
  auto sums = torch::zeros({v.size(0), 4}, v.options()).scatter_add_(1, q, centered);
  auto counts =
      torch::zeros({v.size(0), 4}, v.options()).scatter_add_(1, q, torch::ones_like(centered));
  auto levels = torch::where(counts > 0, sums / counts.clamp_min(1), torch::zeros_like(sums)) + mu;
  return {q.to(torch::kByte), levels};
}

torch::Tensor dequantize_int2(const torch::Tensor& codes, const torch::Tensor& levels) {
  return levels.gather(1, codes.to(torch::kLong));
}

void pack_codes(std::string& out, const torch::Tensor& codes, int bits) {
  auto cpu = codes.to(torch::kCPU, torch::kByte).contiguous();
  const uint8_t* c = cpu.data_ptr<uint8_t>();
  const int64_t count = cpu.numel(), per = 8 / bits;
  const size_t start = out.size();
  out.resize(start + packed_bytes(count, bits), '\0');
  auto* b = reinterpret_cast<uint8_t*>(&out[start]);
  const uint8_t mask = uint8_t((1 << bits) - 1);
  for (int64_t i = 0; i < count; ++i) b[i / per] |= uint8_t((c[i] & mask) << ((i % per) * bits));
}

torch::Tensor unpack_codes(Reader& in, int64_t count, int bits) {
  const int64_t per = 8 / bits;
  const auto* b = reinterpret_cast<const uint8_t*>(in.take(packed_bytes(count, bits)));
  auto codes = torch::empty({count}, torch::kByte);
  uint8_t* c = codes.data_ptr<uint8_t>();
  const int mask = (1 << bits) - 1;
  for (int64_t i = 0; i < count; ++i) c[i] = uint8_t((b[i / per] >> ((i % per) * bits)) & mask);
  if (count % per && (b[count / per] >> ((count % per) * bits)) != 0)
    in.fail("padding bits after the last int" + std::to_string(bits) + " value are not 0");
  return codes;
}

}  // namespace loco::wire
