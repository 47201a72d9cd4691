// The simple codecs (none, fp16, bf16, int8, int4, int2), make_codec, error feedback, and the byte
// helpers of wire.h that every codec shares. The dct codec is in dct.cpp (with dct_transform.cpp
// and dct_select.cpp).
//
// Layouts (little-endian), after the 4-byte prefix described in wire.h (its own byte is 0):
//   none        N float32 values                                    4 + 4N bytes
//   fp16, bf16  N half-precision values                             4 + 2N bytes
//   int8        u32 chunk | G = ceil(N / chunk) float32 scales | N int8 values
//               (value i = q_i * scale[i / chunk])                  8 + 4G + N bytes
//   int4        u32 chunk | G float32 scales | N 4-bit codes, two a byte (the first in the low
//               bits): value i = (code_i - 7) * scale[i / chunk], codes 0..14 (q in -7..7,
//               scale = max|v| / 7 of the chunk; code 15 is refused)   8 + 4G + ceil(N / 2)
//   int2        u32 chunk | G x 4 float32 levels | N 2-bit codes, four a byte: value i =
//               level[i / chunk][code_i], SparseLoCo's 4-level quantiser per chunk (low_bit.h)
//                                                                   8 + 16G + ceil(N / 4)
//   The last chunk of int4 / int2 holds the N mod chunk values left, quantised on their own.
// fp16 clamps to +-65504 (its largest finite value). Decoding refuses a payload whose length is
// not exactly the one its header and shape imply, and non-finite values or scales.
#include "loco/codec.h"

#include <cmath>

#include "low_bit.h"
#include "wire.h"

namespace loco {
namespace wire {

void put_tensor(std::string& out, const torch::Tensor& t) {
  auto c = t.cpu().contiguous();
  out.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

void put_prefix(std::string& out, CodecId id, uint8_t extra) {
  put(out, kMagic);
  put(out, kVersion);
  put(out, static_cast<uint8_t>(id));
  put(out, extra);
}

const char* Reader::take(size_t n) {
  if (n > data_.size() - pos_)
    fail("truncated: needs " + std::to_string(n) + " more bytes at offset " + std::to_string(pos_) +
         ", the payload has " + std::to_string(data_.size()));
  const char* p = data_.data() + pos_;
  pos_ += n;
  return p;
}

void Reader::expect_remaining(size_t n) const {
  if (data_.size() - pos_ != n)
    fail("length " + std::to_string(data_.size()) + " bytes, the header and shape imply " +
         std::to_string(pos_ + n));
}

torch::Tensor Reader::floats(int64_t count, torch::ScalarType dtype) {
  const size_t bytes = size_t(count) * c10::elementSize(dtype);
  const char* p = take(bytes);
  auto t = torch::empty({count}, dtype);
  if (bytes > 0) std::memcpy(t.data_ptr(), p, bytes);  // an empty tensor's data may be null
  return t.to(torch::kFloat);
}

void Reader::fail(const std::string& message) const {
  throw CodecError(what_ + ": " + message);
}

bool all_finite(const torch::Tensor& x) {
  return std::isfinite(x.sum().item<float>()) || torch::isfinite(x).all().item<bool>();
}

torch::Tensor float_input(const torch::Tensor& x, const std::string& codec) {
  TORCH_CHECK(x.defined() && x.is_floating_point(), codec,
              " codec: expected a floating-point tensor, got ",
              x.defined() ? std::string(x.dtype().name()) : "an undefined tensor");
  auto f = x.detach().to(torch::kFloat).contiguous();
  TORCH_CHECK(all_finite(f), codec, " codec: the tensor of shape ", x.sizes(), " holds NaN or Inf");
  return f;
}

std::pair<torch::Tensor, torch::Tensor> quantize_int8(const torch::Tensor& rows) {
  auto scales = rows.abs().amax(1) / 127.0;
  auto divisor = torch::where(scales > 0, scales, torch::ones_like(scales)).unsqueeze(1);
  auto q = (rows / divisor).round_().clamp_(-127, 127).to(torch::kChar);
  return {q, scales};
}

uint8_t read_prefix(Reader& in, const Encoded& e, const std::string& name, CodecId id) {
  if (e.codec != name) in.fail("written by codec '" + e.codec + "', expected '" + name + "'");
  auto magic = in.get<uint8_t>(), version = in.get<uint8_t>(), codec = in.get<uint8_t>();
  if (magic != kMagic) in.fail("bad magic byte " + std::to_string(magic));
  if (version != kVersion) in.fail("unsupported version " + std::to_string(version));
  if (codec != static_cast<uint8_t>(id))
    in.fail("codec id " + std::to_string(codec) + ", expected " +
            std::to_string(static_cast<int>(id)));
  return in.get<uint8_t>();
}

int64_t checked_numel(const std::vector<int64_t>& shape, const Reader& in) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) in.fail("negative dimension " + std::to_string(d) + " in the shape");
    if (d > 0 && n > kMaxElements / d)
      in.fail("shape has more than " + std::to_string(kMaxElements) + " elements");
    n *= d;
  }
  return n;
}

// The position and value of the first element of `bad` that is set, as a message.
static std::string first_bad(const torch::Tensor& values, const torch::Tensor& bad) {
  int64_t i = bad.nonzero()[0][0].item<int64_t>();
  return std::to_string(i) + " is " + std::to_string(values[i].item<float>());
}

void check_values(const torch::Tensor& values, const Reader& in) {
  if (all_finite(values)) return;
  in.fail("value " + first_bad(values, torch::isfinite(values).logical_not()) +
          " (must be finite)");
}

void check_scales(const torch::Tensor& scales, const Reader& in) {
  auto bad = torch::isfinite(scales).logical_not() | (scales < 0);
  if (bad.any().item<bool>())
    in.fail("scale " + first_bad(scales, bad) + " (must be finite and >= 0)");
}

}  // namespace wire

namespace {

constexpr float kHalfMax = 65504.0f;

// none, fp16 and bf16: the values cast to one dtype, as they are.
class CastCodec : public Codec {
 public:
  CastCodec(std::string name, wire::CodecId id, torch::ScalarType dtype)
      : name_(std::move(name)), id_(id), dtype_(dtype) {}

  std::string name() const override { return name_; }

  Encoded encode(const torch::Tensor& x) override {
    auto v = wire::float_input(x, name_);
    if (dtype_ == torch::kHalf) v = v.clamp(-kHalfMax, kHalfMax);
    Encoded e{name_, x.sizes().vec(), {}};
    wire::put_prefix(e.payload, id_, 0);
    wire::put_tensor(e.payload, v.to(dtype_));
    return e;
  }

  torch::Tensor decode(const Encoded& e) const override { return read(e, false); }
  torch::Tensor decode_view(const Encoded& e) const override { return read(e, true); }

 private:
  // `view`: float32 values are returned as a view of the payload, not copied.
  torch::Tensor read(const Encoded& e, bool view) const {
    wire::Reader in(e.payload, name_ + " payload");
    if (wire::read_prefix(in, e, name_, id_) != 0) in.fail("reserved byte is not 0");
    const int64_t n = wire::checked_numel(e.shape, in);
    in.expect_remaining(size_t(n) * c10::elementSize(dtype_));
    torch::Tensor values;
    if (view && dtype_ == torch::kFloat && n > 0)
      values = torch::from_blob(const_cast<char*>(in.take(size_t(n) * 4)), {n}, torch::kFloat);
    else
      values = in.floats(n, dtype_);
    wire::check_values(values, in);
    return values.view(e.shape);
  }

  std::string name_;
  wire::CodecId id_;
  torch::ScalarType dtype_;
};

// int8 values with one float32 scale per `chunk` consecutive values of the flattened tensor.
class Int8Codec : public Codec {
 public:
  explicit Int8Codec(int64_t chunk) : chunk_(chunk) {}

  std::string name() const override { return "int8"; }

  Encoded encode(const torch::Tensor& x) override {
    auto flat = wire::float_input(x, "int8").flatten();
    const int64_t n = flat.numel(), groups = (n + chunk_ - 1) / chunk_;
    auto rows = torch::constant_pad_nd(flat, {0, groups * chunk_ - n}).view({groups, chunk_});
    auto [q, scales] = wire::quantize_int8(rows);
    Encoded e{"int8", x.sizes().vec(), {}};
    wire::put_prefix(e.payload, wire::CodecId::kInt8, 0);
    wire::put(e.payload, static_cast<uint32_t>(chunk_));
    wire::put_tensor(e.payload, scales);
    wire::put_tensor(e.payload, q.flatten().narrow(0, 0, n));
    return e;
  }

  torch::Tensor decode(const Encoded& e) const override {
    wire::Reader in(e.payload, "int8 payload");
    if (wire::read_prefix(in, e, "int8", wire::CodecId::kInt8) != 0)
      in.fail("reserved byte is not 0");
    const int64_t chunk = in.get<uint32_t>();
    if (chunk == 0) in.fail("chunk is 0");
    const int64_t n = wire::checked_numel(e.shape, in), groups = (n + chunk - 1) / chunk;
    in.expect_remaining(size_t(groups) * 4 + size_t(n));
    auto scales = in.floats(groups, torch::kFloat);
    wire::check_scales(scales, in);
    auto q = in.floats(n, torch::kChar);
    auto group = torch::arange(n, torch::kLong).div_(chunk, "floor");
    auto values = q * scales.index_select(0, group);
    wire::check_values(values, in);
    return values.view(e.shape);
  }

 private:
  int64_t chunk_;
};

// int4 and int2 values of the dense tensor, `chunk` consecutive values sharing their parameters
// (layouts above): 4-bit outer gradients for DiLoCo and streaming DiLoCo.
class LowBitCodec : public Codec {
 public:
  LowBitCodec(int bits, int64_t chunk) : bits_(bits), chunk_(chunk) {}

  std::string name() const override { return bits_ == 4 ? "int4" : "int2"; }

  Encoded encode(const torch::Tensor& x) override {
    auto flat = wire::float_input(x, name()).flatten();
    const int64_t n = flat.numel(), full = n / chunk_;
    std::vector<torch::Tensor> codes, params;
    auto quantize = [&](const torch::Tensor& rows) {
      if (bits_ == 2) {
        wire::LowBit q = wire::quantize_int2(rows);
        codes.push_back(q.codes.flatten()), params.push_back(q.params.flatten());
        return;
      }
      auto scales = rows.abs().amax(1, /*keepdim=*/true) / 7.0;
      auto safe = torch::where(scales > 0, scales, torch::ones_like(scales));
      codes.push_back((rows / safe).round_().clamp_(-7, 7).add_(7).to(torch::kByte).flatten());
      params.push_back(scales.flatten());
    };
    if (full > 0) quantize(flat.narrow(0, 0, full * chunk_).view({full, chunk_}));
    if (n % chunk_) quantize(flat.narrow(0, full * chunk_, n % chunk_).view({1, n % chunk_}));
    Encoded e{name(), x.sizes().vec(), {}};
    wire::put_prefix(e.payload, id(), 0);
    wire::put(e.payload, static_cast<uint32_t>(chunk_));
    if (!params.empty()) wire::put_tensor(e.payload, torch::cat(params));
    if (!codes.empty()) wire::pack_codes(e.payload, torch::cat(codes), bits_);
    return e;
  }

  torch::Tensor decode(const Encoded& e) const override {
    const std::string what = name() + " payload";
    wire::Reader in(e.payload, what);
    if (wire::read_prefix(in, e, name(), id()) != 0) in.fail("reserved byte is not 0");
    const int64_t chunk = in.get<uint32_t>();
    if (chunk == 0) in.fail("chunk is 0");
    const int64_t n = wire::checked_numel(e.shape, in), groups = (n + chunk - 1) / chunk;
    const int64_t per_group = bits_ == 4 ? 1 : 4;
    in.expect_remaining(size_t(groups * per_group) * 4 + wire::packed_bytes(n, bits_));
    auto params = in.floats(groups * per_group, torch::kFloat);
    auto codes = wire::unpack_codes(in, n, bits_);
    auto group = torch::arange(n, torch::kLong).div_(chunk, "floor");
    torch::Tensor values;
    if (bits_ == 4) {
      wire::check_scales(params, in);
      if (n > 0 && codes.max().item<uint8_t>() > 14) in.fail("int4 code 15 (codes are 0..14)");
      values = (codes.to(torch::kFloat) - 7) * params.index_select(0, group);
    } else {
      wire::check_values(params, in);
      auto levels = params.view({groups, 4});
      values =
          levels.index_select(0, group).gather(1, codes.to(torch::kLong).unsqueeze(1)).flatten();
    }
    wire::check_values(values, in);
    return values.view(e.shape);
  }

 private:
  wire::CodecId id() const { return bits_ == 4 ? wire::CodecId::kInt4 : wire::CodecId::kInt2; }

  int bits_;
  int64_t chunk_;
};

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

bool one_of(const std::string& value, std::initializer_list<const char*> valid) {
  for (const char* v : valid)
    if (value == v) return true;
  return false;
}

}  // namespace

std::unique_ptr<Codec> make_codec(const CodecConfig& config) {
  const std::string& type = config.type;
  if (type == "none")
    return std::make_unique<CastCodec>("none", wire::CodecId::kNone, torch::kFloat);
  if (type == "fp16")
    return std::make_unique<CastCodec>("fp16", wire::CodecId::kFp16, torch::kHalf);
  if (type == "bf16")
    return std::make_unique<CastCodec>("bf16", wire::CodecId::kBf16, torch::kBFloat16);
  if (type == "int8") {
    require(config.chunk >= 1 && config.chunk <= 65536,
            "sync.codec.chunk: " + std::to_string(config.chunk) +
                " is not a valid int8 group size (1..65536 values per scale)");
    return std::make_unique<Int8Codec>(config.chunk);
  }
  if (type == "int4" || type == "int2") {
    require(config.chunk >= 1 && config.chunk <= 65536,
            "sync.codec.chunk: " + std::to_string(config.chunk) + " is not a valid " + type +
                " group size (1..65536 values per " + (type == "int4" ? "scale" : "4 levels") +
                ")");
    return std::make_unique<LowBitCodec>(type == "int4" ? 4 : 2, config.chunk);
  }
  if (type == "dct") {
    require(config.chunk >= 1 && config.chunk <= 64,
            "sync.codec.chunk: " + std::to_string(config.chunk) +
                " is not a valid dct chunk (1..64, so a 2-D chunk has at most 4096 coefficients)");
    require(config.topk >= 1, "sync.codec.topk: " + std::to_string(config.topk) + " must be >= 1");
    require(one_of(config.values, {"fp32", "fp16", "bf16", "int8", "int4", "int2"}),
            "sync.codec.values: '" + config.values +
                "' is not one of fp32 | fp16 | bf16 | int8 | int4 | int2");
    require(one_of(config.select, {"topk", "band"}),
            "sync.codec.select: '" + config.select + "' is not one of topk | band");
    require(one_of(config.transform, {"dct", "none"}),
            "sync.codec.transform: '" + config.transform + "' is not one of dct | none");
    require(!(config.transform == "none" && config.select == "band"),
            "sync.codec.select band needs sync.codec.transform dct (band = the highest DCT "
            "frequencies)");
    return wire::make_dct_codec(config);
  }
  throw ConfigError("sync.codec.type: '" + type +
                    "' is not one of none | fp16 | bf16 | int8 | int4 | int2 | dct");
}

Encoded ErrorFeedback::encode(const std::string& name, const torch::Tensor& x) {
  auto target = x.detach().to(torch::kFloat);
  auto it = residuals_.find(name);
  if (it != residuals_.end()) {
    TORCH_CHECK(it->second.sizes() == target.sizes(), "error feedback: tensor '", name,
                "' had shape ", it->second.sizes(), ", now ", target.sizes());
    target = decay_ == 1.0 ? target + it->second : target + decay_ * it->second;
  }
  Encoded e = codec_.encode(target);
  residuals_[name] = target - codec_.decode(e).to(target.device());
  return e;
}

}  // namespace loco
