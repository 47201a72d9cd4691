// Tests of the codec contract and the dct wire format: the simple codecs' round trips and sizes,
// the sparse merge, malformed payloads of every codec (truncated, extended, bad indices, scales,
// values and header fields, random bytes), and make_codec's refusals. The DCT itself and the dct
// codec's round trips are in test_dct.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>

#include "codec_test_util.h"
#include "loco/codec.h"

using namespace loco;
using loco::testing::dct;
using loco::testing::decodes;
using loco::testing::kDctHeader;
using loco::testing::refusal;
using loco::testing::simple;
using loco::testing::sorted_row;

namespace {

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

}  // namespace

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
        patched(6, {7, 0, 13, 1}), patched(3, {9}), patched(4, {2}), patched(5, {2}),
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
