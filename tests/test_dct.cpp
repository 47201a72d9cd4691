// Tests of the DCT and the dct codec's round trips: the basis and chunk plans, the block
// transform, lossless and top-k round trips at every value format, band selection, error
// feedback, payload sizes, a GPU encode against the CPU, and a golden comparison with an
// independent PyTorch implementation (tests/golden/reference_dct.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "codec_test_util.h"
#include "loco/codec.h"
#include "test_util.h"

using namespace loco;
using loco::testing::dct;
using loco::testing::kDctHeader;
using loco::testing::make_dict;
using loco::testing::run_python;
using loco::testing::save_dump;
using loco::testing::simple;
using loco::testing::sorted_row;

namespace {

// ||a - b|| / ||b||
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

// Divisible, non-square blocks, prime, 1-D, 3-D, tiny; the last two span several CPU slabs
// (src/codec/dct_transform.h works 2^17 values at a time), the last one unevenly.
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
    // The codec's transform (slabs of bmm) and this reference (one einsum) round differently on
    // some CPUs' kernels: the kept values agree to float32 rounding, the indices exactly.
    auto kept = coefficients.gather(1, s.indices);
    EXPECT_TRUE(torch::allclose(s.values, kept, 1e-5, 1e-6))
        << (s.values - kept).abs().max().item<float>();
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
                                   const std::string& select,
                                   const std::string& transform = "dct") {
  auto x = torch::randn(shape);
  auto codec = dct(k, values, select, chunk, transform);
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
  d.insert("transform", transform);
  const auto& p = s.plan;
  d.insert("coefficients", transform == "dct"
                               ? dct_chunks(x, p)
                               : x.reshape({p.rows / p.n1, p.n1, p.cols / p.n2, p.n2})
                                     .permute({0, 2, 1, 3})
                                     .reshape({p.chunks(), p.chunk_size()}));
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
  cases.push_back(golden_case("raw int2", {128, 192}, 64, 64, "int2", "topk", "none"));
  cases.push_back(golden_case("raw int4", {100, 60}, 64, 37, "int4", "topk", "none"));
  cases.push_back(golden_case("raw int2 1-D odd", {98}, 64, 3, "int2", "topk", "none"));
  cases.push_back(golden_case("raw int2 k 1", {48, 80}, 16, 1, "int2", "topk", "none"));
  cases.push_back(golden_case("raw fp32", {48, 80}, 16, 12, "fp32", "topk", "none"));
  cases.push_back(golden_case("dct int4", {128, 64}, 64, 40, "int4", "topk"));
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
