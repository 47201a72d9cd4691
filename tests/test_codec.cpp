// Tests of the codecs: the DCT basis and chunk plans, lossless and top-k round trips, band
// selection, error feedback, the sparse merge, payload sizes, malformed payloads, and a golden
// comparison with an independent PyTorch implementation (tests/golden/reference_dct.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "loco/codec.h"
#include "test_util.h"

using namespace loco;
using loco::testing::make_dict;
using loco::testing::run_python;
using loco::testing::save_dump;

namespace {

constexpr size_t kDctHeader = 12;  // bytes before the data of a dct payload (src/codec/dct.cpp)

std::unique_ptr<Codec> dct(int64_t topk, const std::string& values = "fp32",
                           const std::string& select = "topk", int64_t chunk = 64) {
  CodecConfig c;
  c.type = "dct";
  c.topk = topk;
  c.values = values;
  c.select = select;
  c.chunk = chunk;
  return make_codec(c);
}

std::unique_ptr<Codec> simple(const std::string& type, int64_t chunk = 64) {
  CodecConfig c;
  c.type = type;
  c.chunk = chunk;
  return make_codec(c);
}

// ||a - b|| / ||b||
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

// The 12-bit index i of a packed index section starting at `offset`.
void set_index(std::string& payload, size_t offset, int64_t i, int64_t value) {
  auto* b = reinterpret_cast<uint8_t*>(&payload[offset + size_t(i / 2) * 3]);
  if (i % 2 == 0) {
    b[0] = uint8_t(value & 0xff);
    b[1] = uint8_t((b[1] & 0xf0) | (value >> 8));
  } else {
    b[1] = uint8_t((b[1] & 0x0f) | (value & 0xf) << 4);
    b[2] = uint8_t(value >> 4);
  }
}

int64_t get_index(const std::string& payload, size_t offset, int64_t i) {
  const auto* b = reinterpret_cast<const uint8_t*>(&payload[offset + size_t(i / 2) * 3]);
  return i % 2 == 0 ? b[0] | (b[1] & 0xf) << 8 : b[1] >> 4 | b[2] << 4;
}

void put_float(std::string& payload, size_t offset, float value) {
  std::memcpy(&payload[offset], &value, sizeof value);
}

// Decodes e; true if it decoded to a finite tensor of its shape, false if refused with a
// CodecError. Anything else (another exception, a crash) fails the test.
bool decodes(const Codec& codec, const Encoded& e) {
  try {
    auto x = codec.decode(e);
    EXPECT_EQ(x.sizes(), c10::IntArrayRef(e.shape));
    EXPECT_TRUE(torch::isfinite(x).all().item<bool>());
    return true;
  } catch (const CodecError&) {
    return false;
  }
}

std::string refusal(const Codec& codec, const Encoded& e) {
  try {
    codec.decode(e);
  } catch (const CodecError& err) {
    return err.what();
  }
  return "(decoded)";
}

// Sorted indices of one chunk.
std::vector<int64_t> sorted_row(const torch::Tensor& indices, int64_t chunk) {
  auto row = indices[chunk].contiguous();
  std::vector<int64_t> v(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
  std::sort(v.begin(), v.end());
  return v;
}

// Divisible, non-square blocks, prime, 1-D, 3-D, tiny; the last two span several CPU slabs
// (src/codec/dct.cpp works 2^17 values at a time), the last one unevenly.
const std::vector<std::vector<int64_t>> kChunkingShapes = {
    {256, 192}, {100, 60}, {97},   {7, 13},   {4, 6, 10},  {3, 5, 7},    {128},
    {1},        {},        {2, 1}, {1, 1, 1}, {1024, 256}, {600, 16, 16}};

}  // namespace

TEST(DctBasis, IsOrthonormalForSeveralSizes) {
  for (int64_t n : {1, 2, 3, 7, 13, 16, 64}) {
    auto d = dct_basis(n);
    ASSERT_EQ(d.sizes(), (c10::IntArrayRef{n, n}));
    EXPECT_TRUE(torch::allclose(d.mm(d.t()), torch::eye(n), 1e-5, 1e-5)) << "n = " << n;
    EXPECT_TRUE(torch::allclose(d.t().mm(d), torch::eye(n), 1e-5, 1e-5)) << "n = " << n;
    EXPECT_NEAR(d[0][n - 1].item<double>(), std::sqrt(1.0 / n), 1e-6);
    if (n > 1)
      EXPECT_NEAR(d[1][0].item<double>(), std::sqrt(2.0 / n) * std::cos(M_PI / (2.0 * n)), 1e-6);
  }
  EXPECT_EQ(dct_basis(64).data_ptr(), dct_basis(64).data_ptr()) << "bases are cached";
}

TEST(ChunkPlan, TakesTheLargestDivisorAtMostChunk) {
  struct Case {
    std::vector<int64_t> shape;
    int64_t chunk, rows, cols, n1, n2;
  };
  for (const auto& c : std::vector<Case>{{{256, 192}, 64, 256, 192, 64, 64},
                                         {{100, 60}, 64, 100, 60, 50, 60},
                                         {{97}, 64, 1, 97, 1, 1},
                                         {{7, 13}, 64, 7, 13, 7, 13},
                                         {{4, 6, 10}, 64, 4, 60, 4, 60},
                                         {{}, 64, 1, 1, 1, 1},
                                         {{128}, 64, 1, 128, 1, 64},
                                         {{12}, 5, 1, 12, 1, 4}}) {
    auto p = chunk_plan(c.shape, c.chunk);
    EXPECT_EQ(std::vector<int64_t>({p.rows, p.cols, p.n1, p.n2}),
              std::vector<int64_t>({c.rows, c.cols, c.n1, c.n2}))
        << "shape " << c10::IntArrayRef(c.shape);
  }
}

TEST(Dct, ChunksAreTheBlockTransformAndInvert) {
  torch::manual_seed(1);
  auto x = torch::randn({128, 192});
  auto p = chunk_plan(x.sizes(), 64);
  auto coefficients = dct_chunks(x, p);
  ASSERT_EQ(coefficients.sizes(), (c10::IntArrayRef{6, 4096}));
  auto d = dct_basis(64);
  for (int64_t b1 = 0; b1 < 2; ++b1)
    for (int64_t b2 = 0; b2 < 3; ++b2) {
      auto block = x.slice(0, b1 * 64, b1 * 64 + 64).slice(1, b2 * 64, b2 * 64 + 64);
      auto want = d.mm(block).mm(d.t()).flatten();
      EXPECT_TRUE(torch::allclose(coefficients[b1 * 3 + b2], want, 1e-4, 1e-5)) << b1 << "," << b2;
    }
  EXPECT_TRUE(torch::allclose(idct_chunks(coefficients, p), x, 1e-5, 1e-5));
}

TEST(Dct, TopkOfAllIsLosslessForEveryChunking) {
  torch::manual_seed(2);
  auto codec = dct(4096);
  for (const auto& shape : kChunkingShapes) {
    auto x = torch::randn(shape);
    auto y = codec->decode(codec->encode(x));
    ASSERT_EQ(y.sizes(), x.sizes());
    EXPECT_TRUE(torch::allclose(y, x, 1e-5, 1e-5)) << "shape " << x.sizes();
  }
}

TEST(Dct, LowPrecisionValuesRoundTripWithinTheirPrecision) {
  torch::manual_seed(3);
  // Orthonormal transform: the relative error of the tensor is that of its coefficients.
  for (auto [values, bound] : std::vector<std::pair<std::string, double>>{
           {"fp16", 1e-3}, {"bf16", 8e-3}, {"int8", 2e-2}}) {
    auto codec = dct(4096, values);
    for (const auto& shape : kChunkingShapes) {
      auto x = torch::randn(shape);
      auto y = codec->decode(codec->encode(x));
      EXPECT_LE(relative_error(y, x), bound) << values << " shape " << x.sizes();
    }
  }
}

TEST(Dct, TopkKeepsExactlyTheKLargestMagnitudesPerChunk) {
  torch::manual_seed(4);
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{128, 192}, {320}, {7, 13}, {640, 256}}) {
    auto x = torch::randn(shape);
    auto s = parse_dct(dct(8)->encode(x));
    auto coefficients = dct_chunks(x, s.plan);
    auto want = std::get<1>(coefficients.abs().topk(8, 1));
    ASSERT_EQ(s.indices.sizes(), want.sizes());
    for (int64_t c = 0; c < want.size(0); ++c)
      EXPECT_EQ(sorted_row(s.indices, c), sorted_row(want, c)) << "chunk " << c;
    EXPECT_TRUE(torch::equal(s.values, coefficients.gather(1, s.indices)));
  }
}

TEST(Dct, DecodeIsTheInverseOfTheKeptCoefficients) {
  torch::manual_seed(5);
  auto x = torch::randn({640, 256});  // two slabs, of 8 and 2 bands
  // k < n1 + n2 decodes by the sparse product, k >= n1 + n2 by the dense inverse.
  for (int64_t k : {8, 200}) {
    auto e = dct(k)->encode(x);
    auto s = parse_dct(e);
    auto dense =
        torch::zeros({s.plan.chunks(), s.plan.chunk_size()}).scatter_(1, s.indices, s.values);
    EXPECT_TRUE(torch::allclose(dct(k)->decode(e), idct_chunks(dense, s.plan), 1e-5, 1e-6)) << k;
  }
}

TEST(Dct, BandKeepsTheHighestFrequencies) {
  auto square = band_indices(chunk_plan(std::vector<int64_t>{64, 64}, 64), 3);
  EXPECT_EQ(std::vector<int64_t>(square.data_ptr<int64_t>(), square.data_ptr<int64_t>() + 3),
            (std::vector<int64_t>{63 * 64 + 63, 63 * 64 + 62, 62 * 64 + 63}));
  auto line = band_indices(chunk_plan(std::vector<int64_t>{128}, 64), 4);
  EXPECT_EQ(std::vector<int64_t>(line.data_ptr<int64_t>(), line.data_ptr<int64_t>() + 4),
            (std::vector<int64_t>{63, 62, 61, 60}));
  // Non-square 7 x 13: ranked by k1 / 7 + k2 / 13, ties to the larger index.
  std::vector<int64_t> order(91);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [](int64_t a, int64_t b) {
    double fa = (a / 13) / 7.0 + (a % 13) / 13.0, fb = (b / 13) / 7.0 + (b % 13) / 13.0;
    return std::abs(fa - fb) > 1e-12 ? fa > fb : a > b;
  });
  auto odd = band_indices(chunk_plan(std::vector<int64_t>{7, 13}, 64), 20);
  EXPECT_EQ(std::vector<int64_t>(odd.data_ptr<int64_t>(), odd.data_ptr<int64_t>() + 20),
            std::vector<int64_t>(order.begin(), order.begin() + 20));

  torch::manual_seed(6);
  auto x = torch::randn({128, 192});
  auto codec = dct(16, "fp16", "band");
  auto e = codec->encode(x);
  EXPECT_EQ(e.payload.size(), kDctHeader + 6 * 16 * 2) << "band payloads carry no indices";
  auto s = parse_dct(e);
  auto band = band_indices(s.plan, 16);
  for (int64_t c = 0; c < 6; ++c) EXPECT_TRUE(torch::equal(s.indices[c], band));
  auto coefficients = dct_chunks(x, s.plan);
  auto kept =
      torch::zeros_like(coefficients).index_copy_(1, band, coefficients.index_select(1, band));
  EXPECT_TRUE(torch::allclose(codec->decode(e), idct_chunks(kept, s.plan), 1e-3, 1e-3));
}

TEST(Dct, ErrorFeedbackLosesNothing) {
  torch::manual_seed(7);
  for (auto& codec : {dct(8, "int8"), dct(8, "fp16", "band"), simple("int8"), simple("bf16")}) {
    ErrorFeedback feedback(*codec);
    auto x1 = torch::randn({128, 64}), x2 = torch::randn({128, 64});
    auto e1 = feedback.encode("w", x1);
    auto r1 = feedback.residuals().at("w").clone();
    EXPECT_TRUE(torch::allclose(r1 + codec->decode(e1), x1, 1e-5, 1e-6)) << codec->name();
    EXPECT_GT(r1.abs().max().item<double>(), 0.0);
    auto e2 = feedback.encode("w", x2);
    auto r2 = feedback.residuals().at("w");
    EXPECT_TRUE(torch::allclose(r2 + codec->decode(e2), x2 + r1, 1e-5, 1e-6)) << codec->name();
    EXPECT_THROW(feedback.encode("w", torch::randn({64, 128})), c10::Error);
  }
}

TEST(Dct, CompressionRatioAtChunk64Top32Int8) {
  torch::manual_seed(8);
  auto e = dct(32, "int8")->encode(torch::randn({256, 256}));
  // 16 chunks x (4-byte scale + 32 one-byte values + 32 12-bit indices), after the header.
  EXPECT_EQ(e.payload.size(), kDctHeader + 16 * (4 + 32 + 48));
  EXPECT_LT(e.payload.size(), 4 * 65536 / 100);
}

TEST(Dct, NonFiniteInputIsRefusedAtEncode) {
  auto x = torch::randn({64, 64});
  x[3][5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(dct(8)->encode(x), c10::Error);
  x[3][5] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(dct(8, "fp16", "band")->encode(x), c10::Error);
  EXPECT_THROW(simple("int8")->encode(x), c10::Error);
  EXPECT_THROW(dct(8)->encode(torch::zeros({0, 4})), c10::Error);
}

TEST(Codec, SimpleCodecsRoundTripWithinPrecisionAndReportSizes) {
  torch::manual_seed(9);
  const int64_t n = 1000;
  auto x = torch::randn({10, 100}) * 3;
  struct Case {
    std::string type;
    size_t bytes;
    double rtol;
  };
  // 4-byte prefix; int8 adds its u32 group size and ceil(1000 / 64) = 16 scales.
  for (const auto& c : std::vector<Case>{{"none", 4 + 4 * n, 0.0},
                                         {"fp16", 4 + 2 * n, 1.0 / 2048},
                                         {"bf16", 4 + 2 * n, 1.0 / 256},
                                         {"int8", 8 + n + 4 * 16, 0.0}}) {
    auto codec = simple(c.type);
    auto e = codec->encode(x);
    EXPECT_EQ(e.codec, c.type);
    EXPECT_EQ(e.payload.size(), c.bytes) << c.type;
    auto y = codec->decode(e);
    ASSERT_EQ(y.sizes(), x.sizes());
    if (c.type == "int8") {
      // Each value within half a step of its group's scale, max|group| / 127.
      auto groups = torch::constant_pad_nd(x.flatten(), {0, 24}).view({16, 64});
      auto step = (groups.abs().amax(1) / 127).repeat_interleave(64).narrow(0, 0, n);
      EXPECT_TRUE(((y.flatten() - x.flatten()).abs() <= step / 2 + 1e-6).all().item<bool>());
    } else {
      EXPECT_TRUE(((y - x).abs() <= x.abs() * c.rtol).all().item<bool>()) << c.type;
    }
  }
  EXPECT_EQ(simple("none")->decode(simple("none")->encode(torch::zeros({0}))).numel(), 0);
}

TEST(Merge, IsTheMeanOverContributorsOfEachCoefficient) {
  // One tensor of two 1 x 8 chunks, three workers. Coefficient 0 of chunk 0 comes from one worker
  // only, so its mean is its value, not a third of it.
  const std::vector<int64_t> shape{16};
  auto plan = chunk_plan(shape, 8);
  auto payload = [&](std::vector<int64_t> idx, std::vector<float> val) {
    SparseChunks s{shape, plan, torch::tensor(idx).view({2, -1}), torch::tensor(val).view({2, -1})};
    return encode_sparse(s, "fp32");
  };
  auto merged =
      merge_sparse({payload({0, 1, 3, 4}, {1, 2, 5, 5}), payload({1, 2, 3, 5}, {4, 6, 7, 1}),
                    payload({1, 5, 3, 4}, {10, 3, 9, 2})});
  // Chunk 0 received {0, 1, 2, 5}; chunk 1 only {3, 4, 5}: padded with one zero-valued index.
  ASSERT_EQ(merged.indices.sizes(), (c10::IntArrayRef{2, 4}));
  auto dense = torch::zeros({2, 8}).scatter_(1, merged.indices, merged.values);
  auto want = torch::tensor(std::vector<float>{1, 16 / 3.0f, 6, 0, 0, 3, 0, 0,  //
                                               0, 0, 0, 7, 3.5f, 1, 0, 0})
                  .view({2, 8});
  EXPECT_TRUE(torch::allclose(dense, want, 1e-6, 1e-6)) << dense;
  for (int64_t c = 0; c < 2; ++c) {
    auto row = sorted_row(merged.indices, c);
    EXPECT_EQ(std::adjacent_find(row.begin(), row.end()), row.end()) << "indices repeat";
  }
  // The merged set travels as a payload of its own.
  auto again = parse_dct(encode_sparse(merged, "fp32"));
  EXPECT_TRUE(torch::equal(again.indices, merged.indices));
  EXPECT_TRUE(torch::equal(again.values, merged.values));

  auto other = dct(8)->encode(torch::randn({4, 4}));
  EXPECT_THROW(merge_sparse({payload({0, 1, 3, 4}, {1, 2, 5, 5}), other}), CodecError);
  EXPECT_THROW(merge_sparse({}), CodecError);
}

TEST(Merge, OfRealPayloadsEqualsTheMeanOfTheirDenseCoefficients) {
  torch::manual_seed(10);
  std::vector<Encoded> payloads;
  torch::Tensor total = torch::zeros({4, 4096}), count = torch::zeros({4, 4096});
  for (int w = 0; w < 3; ++w) {
    payloads.push_back(dct(32)->encode(torch::randn({128, 128})));
    auto s = parse_dct(payloads.back());
    total.scatter_add_(1, s.indices, s.values);
    count.scatter_add_(1, s.indices, torch::ones_like(s.values));
  }
  auto merged = merge_sparse(payloads);
  auto dense = torch::zeros({4, 4096}).scatter_(1, merged.indices, merged.values);
  EXPECT_TRUE(torch::allclose(dense, total / count.clamp_min(1), 1e-6, 1e-6));
  EXPECT_EQ(merged.indices.size(1), (count > 0).sum(1).max().item<int64_t>());
  EXPECT_TRUE(torch::allclose(to_dense(merged), idct_chunks(dense, merged.plan).view({128, 128}),
                              1e-5, 1e-5));
}

TEST(Malformed, TruncatedOrExtendedPayloadsAreRefused) {
  torch::manual_seed(11);
  std::vector<std::unique_ptr<Codec>> codecs;
  codecs.push_back(dct(4, "int8"));
  codecs.push_back(dct(5, "fp16", "band"));
  codecs.push_back(dct(3, "fp32"));
  for (const char* type : {"none", "fp16", "bf16", "int8"}) codecs.push_back(simple(type, 16));
  for (const auto& codec : codecs) {
    auto e = codec->encode(torch::randn({7, 13}));
    for (size_t len = 0; len < e.payload.size(); ++len) {
      Encoded cut = e;
      cut.payload.resize(len);
      EXPECT_FALSE(decodes(*codec, cut)) << codec->name() << " cut to " << len;
    }
    Encoded longer = e;
    longer.payload.push_back('\0');
    EXPECT_FALSE(decodes(*codec, longer)) << codec->name();
    EXPECT_TRUE(decodes(*codec, e)) << codec->name();
  }
}

TEST(Malformed, BadIndicesAreRefused) {
  auto codec = dct(4);  // 7 x 13: one chunk of 91 coefficients; fp32 values
  auto e = codec->encode(torch::randn({7, 13}));
  const size_t indices = kDctHeader + 4 * 4;
  ASSERT_EQ(e.payload.size(), indices + 6);

  Encoded bad = e;
  set_index(bad.payload, indices, 0, 100);
  EXPECT_EQ(refusal(*codec, bad), "dct payload: index 100 out of range for a 91-coefficient chunk");
  bad = e;
  set_index(bad.payload, indices, 3, 4095);
  EXPECT_EQ(refusal(*codec, bad),
            "dct payload: index 4095 out of range for a 91-coefficient chunk");
  bad = e;
  set_index(bad.payload, indices, 1, get_index(bad.payload, indices, 2));
  EXPECT_NE(refusal(*codec, bad).find("twice"), std::string::npos) << refusal(*codec, bad);

  // An odd count leaves a padding nibble, which must be 0.
  auto odd = dct(3)->encode(torch::randn({7, 13}));
  odd.payload.back() = char(odd.payload.back() | 0x10);
  EXPECT_NE(refusal(*codec, odd).find("padding"), std::string::npos) << refusal(*codec, odd);
}

TEST(Malformed, BadScalesValuesAndCountsAreRefused) {
  auto x = torch::randn({7, 13});
  auto int8 = dct(4, "int8");
  auto e = int8->encode(x);
  for (float scale :
       {std::numeric_limits<float>::quiet_NaN(), -1.0f, std::numeric_limits<float>::infinity()}) {
    Encoded bad = e;
    put_float(bad.payload, kDctHeader, scale);
    EXPECT_NE(refusal(*int8, bad).find("scale 0 is"), std::string::npos) << refusal(*int8, bad);
  }
  auto fp32 = dct(4);
  Encoded value = fp32->encode(x);
  put_float(value.payload, kDctHeader + 4, std::numeric_limits<float>::infinity());
  EXPECT_NE(refusal(*fp32, value).find("value 1 is inf"), std::string::npos)
      << refusal(*fp32, value);
  Encoded scales = simple("int8")->encode(x);
  put_float(scales.payload, 8, -2.0f);
  EXPECT_NE(refusal(*simple("int8"), scales).find("scale 0"), std::string::npos);

  // Header fields: k one more than sent, k 0, chunks that do not tile, an unknown format, a
  // selection that is neither, a reserved byte, another codec's id, magic or version.
  auto patched = [&](size_t offset, std::vector<uint8_t> bytes) {
    Encoded bad = e;
    std::memcpy(&bad.payload[offset], bytes.data(), bytes.size());
    return bad;
  };
  for (const auto& bad :
       {patched(10, {5, 0}), patched(10, {0, 0}), patched(6, {3, 0}), patched(6, {0, 0}),
        patched(6, {7, 0, 13, 1}), patched(3, {9}), patched(4, {2}), patched(5, {1}),
        patched(2, {3}), patched(0, {0}), patched(1, {2})})
    EXPECT_FALSE(decodes(*int8, bad));

  // The shape that travels beside the payload must agree with it, and be sane.
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{13, 7}, {91, 2}, {-7, -13}, {0, 13}, {1LL << 40, 1LL << 40}}) {
    Encoded bad = e;
    bad.shape = shape;
    EXPECT_FALSE(decodes(*int8, bad)) << c10::IntArrayRef(shape);
  }
  Encoded renamed = e;
  renamed.codec = "int8";
  EXPECT_EQ(refusal(*int8, renamed), "dct payload: written by codec 'int8', expected 'dct'");
}

// Found by fuzz/fuzz_update.cpp (its memory grew): blocks wider than any encoder writes were
// accepted, and each new edge n made dct_basis build and keep an n x n basis: 17 bytes with
// n2 = 4096 cost ~570 MB. Block edges are now 1..64, sync.codec.chunk's range.
TEST(Malformed, BlocksWiderThanTheCodecsChunkAreRefused) {
  // 1 x 4096 blocks over a [1, 4096] tensor: band selection, k = 1, one int8 value and its scale.
  Encoded wide{"dct", {1, 4096}, std::string("\x4c\x01\x04\x03\x01\x00", 6)};
  for (uint16_t field : {uint16_t(1), uint16_t(4096), uint16_t(1)})
    wide.payload.append(reinterpret_cast<const char*>(&field), 2);
  const float scale = 1.0f;
  wide.payload.append(reinterpret_cast<const char*>(&scale), 4);
  wide.payload += '\x01';
  EXPECT_EQ(refusal(*dct(1), wide), "dct payload: chunks of 1x4096: each edge must be 1..64");
  Encoded fits = dct(1, "int8", "band")->encode(torch::randn({1, 64}));
  EXPECT_TRUE(decodes(*dct(1), fits));  // the same header at the widest legal edge decodes
  EXPECT_EQ(fits.payload.substr(0, 6), wide.payload.substr(0, 6));
}

TEST(Malformed, RandomBytesAndMutationsNeverCrash) {
  std::mt19937 rng(1234);
  auto byte = [&] { return char(rng() & 0xff); };
  torch::manual_seed(12);
  std::vector<std::unique_ptr<Codec>> codecs;
  codecs.push_back(dct(6, "int8"));
  codecs.push_back(dct(6, "bf16", "band"));
  for (const char* type : {"none", "fp16", "int8"}) codecs.push_back(simple(type, 16));
  for (const auto& codec : codecs) {
    auto valid = codec->encode(torch::randn({12, 20}));
    int refused = 0;
    for (int it = 0; it < 1000; ++it) {
      Encoded e = valid;
      if (it % 2 == 0) {  // pure noise of any length
        e.payload.resize(rng() % 300);
        for (auto& b : e.payload) b = byte();
        EXPECT_FALSE(decodes(*codec, e)) << codec->name() << " iteration " << it;
      } else {  // a valid payload with a few bytes changed, dropped or added
        for (int m = 0, n = 1 + rng() % 4; m < n; ++m) {
          size_t at = rng() % e.payload.size();
          switch (rng() % 3) {
            case 0:
              e.payload[at] = byte();
              break;
            case 1:
              e.payload.erase(at, 1);
              break;
            default:
              e.payload.insert(at, 1, byte());
          }
        }
        refused += !decodes(*codec, e);
      }
    }
    EXPECT_GT(refused, 0) << codec->name();
  }
}

TEST(MakeCodec, RefusesBadConfigs) {
  for (const char* type : {"none", "fp16", "bf16", "int8", "dct"})
    EXPECT_EQ(simple(type)->name(), type);
  auto bad = [](auto edit) {
    CodecConfig c;
    c.type = "dct";
    edit(c);
    EXPECT_THROW(make_codec(c), ConfigError);
  };
  bad([](CodecConfig& c) { c.type = "zip"; });
  bad([](CodecConfig& c) { c.chunk = 0; });
  bad([](CodecConfig& c) { c.chunk = 65; });
  bad([](CodecConfig& c) { c.topk = 0; });
  bad([](CodecConfig& c) { c.values = "fp8"; });
  bad([](CodecConfig& c) { c.select = "random"; });
  bad([](CodecConfig& c) { c.type = "int8", c.chunk = 0; });
}

TEST(Dct, GpuEncodeMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(13);
  auto x = torch::randn({256, 192});
  for (const auto& select : {"topk", "band"}) {
    auto codec = dct(32, "fp32", select);
    auto cpu = parse_dct(codec->encode(x)), gpu = parse_dct(codec->encode(x.cuda()));
    for (int64_t c = 0; c < cpu.plan.chunks(); ++c)
      EXPECT_EQ(sorted_row(cpu.indices, c), sorted_row(gpu.indices, c)) << select << " " << c;
    EXPECT_TRUE(torch::allclose(to_dense(cpu), to_dense(gpu), 1e-4, 1e-5)) << select;
  }
  auto codec = dct(32, "int8");
  ErrorFeedback feedback(*codec);
  auto e = feedback.encode("w", x.cuda());
  EXPECT_TRUE(feedback.residuals().at("w").is_cuda());
  EXPECT_TRUE(
      torch::allclose(feedback.residuals().at("w").cpu() + codec->decode(e), x, 1e-4, 1e-5));
}

// ---- golden: the same transform in an independent PyTorch implementation

namespace {

c10::impl::GenericDict golden_case(const std::string& name, const std::vector<int64_t>& shape,
                                   int64_t chunk, int64_t k, const std::string& values,
                                   const std::string& select) {
  auto x = torch::randn(shape);
  auto codec = dct(k, values, select, chunk);
  auto e = codec->encode(x);
  auto s = parse_dct(e);
  auto d = make_dict();
  d.insert("name", name);
  d.insert("x", x);
  d.insert("chunk", chunk);
  d.insert("k", k);
  d.insert("values", values);
  d.insert("select", select);
  d.insert("n1", s.plan.n1);
  d.insert("n2", s.plan.n2);
  d.insert("coefficients", dct_chunks(x, s.plan));
  d.insert("indices", s.indices);
  d.insert("kept", s.values);
  d.insert("decoded", codec->decode(e));
  return d;
}

c10::impl::GenericDict golden_merge() {
  c10::impl::GenericList indices(c10::AnyType::get()), values(c10::AnyType::get());
  std::vector<Encoded> payloads;
  for (int w = 0; w < 3; ++w) {
    payloads.push_back(dct(32)->encode(torch::randn({128, 128})));
    auto s = parse_dct(payloads.back());
    indices.push_back(s.indices);
    values.push_back(s.values);
  }
  auto merged = merge_sparse(payloads);
  auto d = make_dict();
  d.insert("chunks", merged.plan.chunks());
  d.insert("chunk_size", merged.plan.chunk_size());
  d.insert("payload_indices", indices);
  d.insert("payload_values", values);
  d.insert("merged_indices", merged.indices);
  d.insert("merged_values", merged.values);
  return d;
}

// Writes the golden dump; `perturb` nudges one decoded value so that the check must fail.
std::string golden_dump(bool perturb) {
  torch::manual_seed(14);
  c10::impl::GenericList cases(c10::AnyType::get());
  cases.push_back(golden_case("divisible", {256, 192}, 64, 32, "fp32", "topk"));
  cases.push_back(golden_case("50x60 blocks", {100, 60}, 64, 50, "int8", "topk"));
  cases.push_back(golden_case("prime 1-D", {97}, 64, 1, "fp16", "topk"));
  cases.push_back(golden_case("7x13 lossless", {7, 13}, 64, 91, "fp32", "topk"));
  cases.push_back(golden_case("3-D", {4, 6, 10}, 64, 20, "bf16", "topk"));
  cases.push_back(golden_case("band", {128, 64}, 64, 40, "fp16", "band"));
  cases.push_back(golden_case("1-D int8", {320}, 64, 8, "int8", "topk"));
  cases.push_back(golden_case("chunk 16", {48, 80}, 16, 12, "fp32", "topk"));
  cases.push_back(golden_case("two slabs", {640, 256}, 64, 32, "int8", "topk"));
  if (perturb) {
    auto decoded = cases.get(0).toGenericDict().at("decoded").toTensor();
    decoded[17][5] += 1e-3;
  }
  auto dump = make_dict();
  dump.insert("cases", cases);
  dump.insert("merge", golden_merge());
  std::string path = loco::testing::temp_dir(perturb ? "bad" : "") + "/dct.pt";
  save_dump(path, dump);
  return path;
}

}  // namespace

TEST(DctGolden, MatchesAnIndependentPyTorchImplementation) {
  auto result = run_python("tests/golden/reference_dct.py check " + golden_dump(false));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("golden: PASS"), std::string::npos) << result.output;
}

TEST(DctGolden, APerturbedDumpFails) {
  auto result = run_python("tests/golden/reference_dct.py check " + golden_dump(true));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("decoded"), std::string::npos) << result.output;
}

TEST(DctGolden, BadUsageExitsWithTwo) {
  EXPECT_EQ(run_python("tests/golden/reference_dct.py check /nonexistent.pt").exit_code, 2);
  EXPECT_EQ(run_python("tests/golden/reference_dct.py").exit_code, 2);
}
