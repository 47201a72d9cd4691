// Tests of the sparse codec's newer formats (docs/codec.md, "Value formats and transforms"):
// transform none (top-k of the raw chunks), int4 and int2 values (round trips within their step,
// SparseLoCo's bin means), their dense packing at odd lengths and exact sizes, error feedback
// with and without decay keeping the residual, the strict decoder on truncated, extended, mutated
// and random payloads of these formats, the merge, and the config errors that name the keys.
// The golden test against an independent PyTorch script is DctGolden in test_dct.cpp. One real
// launch (DilocoDct.SparseLoCo..., skipped under the sanitizers) runs SparseLoCo's combination of
// knobs with three worker processes and checks the replicas stay identical every round.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "codec_test_util.h"
#include "loco/codec.h"
#include "loco/config.h"
#include "loco/metrics.h"
#include "replica_checks.h"
#include "test_util.h"

using namespace loco;
using loco::testing::dct;
using loco::testing::decodes;
using loco::testing::kDctHeader;
using loco::testing::raw_topk;
using loco::testing::refusal;

namespace {

// The chunks of x as transform none sees them, [chunks, chunk_size].
torch::Tensor raw_chunks(const torch::Tensor& x, const ChunkPlan& p) {
  return x.reshape({p.rows / p.n1, p.n1, p.cols / p.n2, p.n2})
      .permute({0, 2, 1, 3})
      .reshape({p.chunks(), p.chunk_size()});
}

// Bytes of a top-k payload: header, per-chunk parameters, packed values, 12-bit indices.
size_t expected_size(int64_t chunks, int64_t k, int param_floats, int bits) {
  const int64_t count = chunks * k, per = 8 / bits;
  return kDctHeader + size_t(4 * param_floats * chunks) + size_t((count + per - 1) / per) +
         size_t(3 * count + 1) / 2;
}

std::string config_error(Config c) {
  return loco::testing::config_error([&] { validate(c); });
}

Config sparse_config() {
  Config c;
  c.sync.mode = Mode::kDiloco;
  c.sync.codec.type = "dct";
  c.sync.codec.transform = "none";
  c.sync.codec.values = "int2";
  return c;
}

}  // namespace

TEST(RawTopk, KeepsTheLargestRawValuesOfEachChunkAndNothingElse) {
  torch::manual_seed(1);
  auto x = torch::randn({48, 80});
  auto codec = raw_topk(12, "fp32", 16);  // 16 x 16 chunks: 3 x 5 of them
  auto e = codec->encode(x);
  auto s = parse_dct(e);
  EXPECT_FALSE(s.dct);
  ASSERT_EQ(s.plan.n1, 16);
  ASSERT_EQ(s.plan.n2, 16);
  auto chunks = raw_chunks(x, s.plan);
  EXPECT_TRUE(torch::equal(s.values, chunks.gather(1, s.indices)));  // fp32: the values themselves
  auto kept = torch::zeros_like(chunks, torch::kBool).scatter_(1, s.indices, true);
  auto mag = chunks.abs();
  auto smallest_kept = torch::where(kept, mag, torch::full_like(mag, 1e30)).amin(1);
  auto largest_dropped = torch::where(kept, torch::zeros_like(mag), mag).amax(1);
  EXPECT_TRUE((smallest_kept >= largest_dropped).all().item<bool>());
  auto decoded = codec->decode(e);
  // The decoded tensor is x where kept and 0 elsewhere, in x's own layout.
  auto want = torch::zeros_like(chunks).scatter_(1, s.indices, s.values);
  EXPECT_TRUE(torch::equal(raw_chunks(decoded, s.plan), want));
  EXPECT_EQ(int64_t(decoded.ne(0).sum().item<int64_t>()), 15 * 12);
}

TEST(LowBit, Int4IsWithinHalfAStepOfEachKeptValue) {
  torch::manual_seed(2);
  for (const std::string transform : {"none", "dct"}) {
    auto x = torch::randn({64, 96}) * 1e-3;
    auto s_fp = parse_dct(dct(20, "fp32", "topk", 64, transform)->encode(x));
    auto s = parse_dct(dct(20, "int4", "topk", 64, transform)->encode(x));
    ASSERT_TRUE(torch::equal(s.indices, s_fp.indices)) << transform;  // same selection
    auto step = s_fp.values.abs().amax(1, true) / 7.5;
    auto err = (s.values - s_fp.values).abs();
    EXPECT_TRUE((err <= step / 2 * (1 + 1e-5)).all().item<bool>()) << transform;
    // The largest |value| of each chunk is a level: exact up to rounding.
    EXPECT_TRUE(torch::allclose(s.values.abs().amax(1), s_fp.values.abs().amax(1), 1e-6, 0));
    EXPECT_GT(err.max().item<float>(), 0) << "int4 should lose something";
  }
}

TEST(LowBit, Int2KeepsOrderAndEachChunksSumWithFourLevels) {
  torch::manual_seed(3);
  auto x = torch::randn({128, 192});
  auto codec = raw_topk(64, "int2");  // SparseLoCo's 64 of 64 x 64
  auto s = parse_dct(codec->encode(x));
  auto raw = raw_chunks(x, s.plan).gather(1, s.indices);
  for (int64_t c = 0; c < s.plan.chunks(); ++c) {
    auto v = raw[c], q = s.values[c];
    EXPECT_LE(std::get<0>(at::_unique(q)).numel(), 4) << "chunk " << c;
    // Levels are bin means, so the chunk's sum survives and order is kept.
    EXPECT_NEAR(q.sum().item<double>(), v.sum().item<double>(), 1e-4) << "chunk " << c;
    auto order = v.argsort();
    auto sorted = q.index_select(0, order);
    EXPECT_TRUE((sorted.narrow(0, 1, 63) >= sorted.narrow(0, 0, 63)).all().item<bool>());
    // Each value within its bin's range of values: the error is at most the bin's width.
    for (int64_t i = 0; i < q.numel(); ++i) {
      auto same = q.eq(q[i]);
      auto lo = v.masked_select(same).min(), hi = v.masked_select(same).max();
      EXPECT_GE(q[i].item<float>(), lo.item<float>() - 1e-6);
      EXPECT_LE(q[i].item<float>(), hi.item<float>() + 1e-6);
    }
  }
  // One value per chunk is decoded exactly (its own bin).
  auto one = parse_dct(raw_topk(1, "int2", 8)->encode(x));
  EXPECT_TRUE(torch::equal(one.values, raw_chunks(x, one.plan).gather(1, one.indices)));
  // All values equal: every level is that value.
  auto flat = parse_dct(raw_topk(5, "int2", 8)->encode(torch::full({8, 8}, 0.25f)));
  EXPECT_TRUE(torch::allclose(flat.values, torch::full({1, 5}, 0.25f)));
}

TEST(LowBit, PackingAtOddLengthsHasExactSizesAndZeroPadding) {
  torch::manual_seed(4);
  // 98 = 2 chunks of 49; k = 3: 6 codes (int4: 3 bytes; int2: 2 bytes, 2 codes of padding).
  // 7 x 13: one chunk of 91; k = 5: int4 3 bytes (a nibble of padding), int2 2 bytes.
  struct Case {
    std::vector<int64_t> shape;
    int64_t k, chunks;
  };
  for (const Case& c :
       {Case{{98}, 3, 2}, Case{{7, 13}, 5, 1}, Case{{7, 13}, 7, 1}, Case{{64}, 1, 1}}) {
    for (const auto& [values, bits, params] :
         {std::tuple<std::string, int, int>{"int4", 4, 1}, {"int2", 2, 4}}) {
      auto codec = raw_topk(c.k, values);
      auto x = torch::randn(c.shape);
      auto e = codec->encode(x);
      EXPECT_EQ(e.payload.size(), expected_size(c.chunks, c.k, params, bits))
          << values << " " << c10::IntArrayRef(c.shape) << " k " << c.k;
      EXPECT_TRUE(decodes(*codec, e));
      const int64_t count = c.chunks * c.k, per = 8 / bits;
      if (count % per == 0) continue;
      // Set a padding bit of the last value byte: refused.
      const size_t last_value_byte =
          kDctHeader + size_t(4 * params * c.chunks) + size_t((count + per - 1) / per) - 1;
      Encoded bad = e;
      bad.payload[last_value_byte] = char(uint8_t(bad.payload[last_value_byte]) | 0x80);
      EXPECT_NE(refusal(*codec, bad).find("padding bits after the last " + values),
                std::string::npos)
          << refusal(*codec, bad);
    }
  }
}

TEST(LowBit, ErrorFeedbackKeepsWhatWasNotSent) {
  torch::manual_seed(5);
  for (const std::string values : {"int2", "int4", "int8"}) {
    auto codec = raw_topk(8, values, 16);
    for (double decay : {1.0, 0.95}) {
      ErrorFeedback feedback(*codec, decay);
      auto x1 = torch::randn({32, 48}), x2 = torch::randn({32, 48});
      auto e1 = feedback.encode("w", x1);
      auto r1 = feedback.residuals().at("w").clone();
      auto d1 = codec->decode(e1);
      // encoded + residual == input: exactly where nothing was sent, to rounding elsewhere.
      EXPECT_TRUE(torch::equal(torch::where(d1.eq(0), r1, x1), x1)) << values;
      EXPECT_TRUE(torch::allclose(d1 + r1, x1, 0, 1e-6)) << values;
      auto e2 = feedback.encode("w", x2);
      auto target = x2 + decay * r1;
      auto d2 = codec->decode(e2);
      EXPECT_TRUE(torch::allclose(d2 + feedback.residuals().at("w"), target, 0, 1e-6))
          << values << " decay " << decay;
      // The second round sends the top-k of x2 + decay * r1, not of x2.
      auto s = parse_dct(e2);
      auto want = raw_topk(8, "fp32", 16)->encode(target);
      EXPECT_TRUE(torch::equal(std::get<0>(s.indices.sort(1)),
                               std::get<0>(parse_dct(want).indices.sort(1))))
          << values << " decay " << decay;
    }
  }
}

TEST(LowBit, TruncatedExtendedAndMutatedPayloadsAreRefusedOrDecodeSafely) {
  torch::manual_seed(6);
  std::mt19937 rng(77);
  std::vector<std::unique_ptr<Codec>> codecs;
  for (const char* values : {"int4", "int2"}) {
    codecs.push_back(raw_topk(5, values, 8));
    codecs.push_back(dct(5, values, "topk", 8));
    codecs.push_back(dct(5, values, "band", 8));
  }
  codecs.push_back(raw_topk(5, "fp16", 8));
  for (const auto& codec : codecs) {
    auto e = codec->encode(torch::randn({12, 20}));
    for (size_t len = 0; len < e.payload.size(); ++len) {
      Encoded cut = e;
      cut.payload.resize(len);
      EXPECT_FALSE(decodes(*codec, cut)) << " cut to " << len;
    }
    Encoded longer = e;
    longer.payload.push_back('\0');
    EXPECT_FALSE(decodes(*codec, longer));
    int refused = 0;
    for (int it = 0; it < 500; ++it) {
      Encoded m = e;
      if (it % 2 == 0) {
        m.payload.resize(rng() % 200);
        for (auto& b : m.payload) b = char(rng() & 0xff);
        EXPECT_FALSE(decodes(*codec, m)) << "noise " << it;
      } else {
        for (int n = 0, count = 1 + rng() % 3; n < count; ++n)
          m.payload[rng() % m.payload.size()] = char(rng() & 0xff);
        refused += !decodes(*codec, m);
      }
    }
    EXPECT_GT(refused, 0);
  }
}

TEST(LowBit, BadParametersAndHeaderFieldsAreRefused) {
  torch::manual_seed(7);
  auto x = torch::randn({8, 8});
  auto put = [](Encoded e, size_t at, float v) {
    std::memcpy(&e.payload[at], &v, sizeof v);
    return e;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto int4 = raw_topk(5, "int4", 8);
  auto e4 = int4->encode(x);
  for (float scale : {nan, inf, -1.0f})
    EXPECT_NE(refusal(*int4, put(e4, kDctHeader, scale)).find("scale 0 is"), std::string::npos)
        << refusal(*int4, put(e4, kDctHeader, scale));
  // A finite scale whose levels overflow float32: refused as a non-finite value.
  EXPECT_NE(refusal(*int4, put(e4, kDctHeader, 3e38f)).find("inf"), std::string::npos)
      << refusal(*int4, put(e4, kDctHeader, 3e38f));
  auto int2 = raw_topk(5, "int2", 8);
  auto e2 = int2->encode(x);
  for (size_t level = 0; level < 4; ++level)
    for (float bad : {nan, inf, -inf})
      EXPECT_FALSE(decodes(*int2, put(e2, kDctHeader + 4 * level, bad))) << level << " " << bad;
  // Any finite level is a valid (if odd) payload.
  EXPECT_TRUE(decodes(*int2, put(e2, kDctHeader, -123.0f)));

  auto patched = [](Encoded e, size_t at, uint8_t byte) {
    e.payload[at] = char(byte);
    return e;
  };
  EXPECT_NE(refusal(*int2, patched(e2, 5, 2)).find("transform 2"), std::string::npos);
  EXPECT_NE(refusal(*int2, patched(e2, 3, 6)).find("unknown value format 6"), std::string::npos);
  // A band payload that claims transform none: no encoder writes it.
  auto band = dct(5, "int2", "band", 8)->encode(x);
  EXPECT_NE(refusal(*int2, patched(band, 5, 1)).find("band selection with transform none"),
            std::string::npos);
  // Switching the format byte between int4 and int2 changes the implied length: refused.
  EXPECT_NE(refusal(*int2, patched(e2, 3, 4)).find("length"), std::string::npos);
  // An index out of range for the chunk (64 values, indices < 64).
  Encoded idx = e2;
  const size_t indices = idx.payload.size() - 8;  // 5 indices: 8 bytes
  idx.payload[indices] = char(0xff);
  idx.payload[indices + 1] = char(uint8_t(idx.payload[indices + 1]) | 0x0f);
  EXPECT_NE(refusal(*int2, idx).find("out of range for a 64-coefficient chunk"), std::string::npos)
      << refusal(*int2, idx);
}

TEST(LowBit, MergeOfRawPayloadsIsTheMeanOverContributorsAndRefusesMixedTransforms) {
  torch::manual_seed(8);
  std::vector<Encoded> payloads;
  std::vector<torch::Tensor> dense;
  for (int w = 0; w < 3; ++w) {
    payloads.push_back(raw_topk(4, "int2", 8)->encode(torch::randn({16, 16})));
    dense.push_back(raw_topk(4, "int2", 8)->decode(payloads.back()));
  }
  auto merged = merge_sparse(payloads);
  EXPECT_FALSE(merged.dct);
  auto sum = dense[0] + dense[1] + dense[2];
  auto count = dense[0].ne(0).to(torch::kFloat) + dense[1].ne(0).to(torch::kFloat) +
               dense[2].ne(0).to(torch::kFloat);
  auto want = sum / count.clamp_min(1);
  EXPECT_TRUE(torch::allclose(to_dense(merged), want, 1e-6, 1e-7));
  // Served on in fp32: decodes to the same tensor.
  auto again = encode_sparse(merged, "fp32");
  EXPECT_TRUE(torch::allclose(raw_topk(4, "int2", 8)->decode(again), want, 1e-6, 1e-7));
  payloads.push_back(dct(4, "int2", "topk", 8)->encode(torch::randn({16, 16})));
  try {
    merge_sparse(payloads);
    ADD_FAILURE() << "a merge of dct and raw payloads was accepted";
  } catch (const CodecError& e) {
    EXPECT_NE(std::string(e.what()).find("transform"), std::string::npos) << e.what();
  }
}

TEST(LowBit, BytesPerKeptValue) {
  // 64 of a 64 x 64 chunk (SparseLoCo's 1.56%): 96 bytes of indices and, per value format,
  // int8 64 + 4, int4 32 + 4, int2 16 + 16 bytes per chunk.
  torch::manual_seed(9);
  auto x = torch::randn({256, 256});  // 16 chunks
  EXPECT_EQ(raw_topk(64, "int8")->encode(x).payload.size(), kDctHeader + 16 * (96 + 64 + 4));
  EXPECT_EQ(raw_topk(64, "int4")->encode(x).payload.size(), kDctHeader + 16 * (96 + 32 + 4));
  EXPECT_EQ(raw_topk(64, "int2")->encode(x).payload.size(), kDctHeader + 16 * (96 + 16 + 16));
}

TEST(CodecConfigErrors, NameTheKeys) {
  EXPECT_EQ(config_error(sparse_config()), "(no error)");
  Config c = sparse_config();
  c.sync.codec.select = "band";
  EXPECT_NE(config_error(c).find("sync.codec.select band"), std::string::npos) << config_error(c);
  EXPECT_NE(config_error(c).find("sync.codec.transform none"), std::string::npos);
  c = sparse_config();
  c.sync.codec.topk = 4097;
  EXPECT_EQ(config_error(c),
            "sync.codec.topk: 4097 is larger than a chunk (sync.codec.chunk 64: at most 4096 "
            "values)");
  c = sparse_config();
  c.sync.codec.chunk = 8, c.sync.codec.topk_down = 65;
  EXPECT_NE(config_error(c).find("sync.codec.topk_down: 65 is larger than a chunk"),
            std::string::npos)
      << config_error(c);
  c = sparse_config();
  c.sync.codec.values = "int3";
  EXPECT_NE(config_error(c).find("sync.codec.values: 'int3' is not one of"), std::string::npos);
  c = sparse_config();
  c.sync.codec.transform = "fft";
  EXPECT_NE(config_error(c).find("sync.codec.transform: 'fft'"), std::string::npos);
  c = sparse_config();
  c.sync.codec.type = "int8";
  EXPECT_NE(config_error(c).find("sync.codec.transform none is top-k of raw chunks: it needs "
                                 "sync.codec.type dct"),
            std::string::npos)
      << config_error(c);
  c = sparse_config();
  c.sync.codec.type = "int8", c.sync.codec.transform = "dct";
  EXPECT_NE(config_error(c).find("sync.codec.values int2"), std::string::npos) << config_error(c);
  c = sparse_config();
  c.sync.codec.values_down = "int1";
  EXPECT_NE(config_error(c).find("sync.codec.values_down: 'int1'"), std::string::npos);
  c = sparse_config();
  c.sync.codec.error_decay = 0;
  EXPECT_NE(config_error(c).find("sync.codec.error_decay: 0"), std::string::npos);
  c = sparse_config();
  c.sync.codec.error_decay = 0.95, c.sync.codec.error_feedback = false;
  EXPECT_NE(config_error(c).find("needs sync.codec.error_feedback true"), std::string::npos);
  c = sparse_config();
  c.sync.mode = Mode::kDemo, c.sync.codec.error_decay = 0.95;
  EXPECT_NE(config_error(c).find("sync.mode diloco"), std::string::npos);
  // int2 with the DCT's band selection is allowed (a fixed set of coefficients, quantised).
  c = sparse_config();
  c.sync.codec.transform = "dct", c.sync.codec.select = "band";
  EXPECT_EQ(config_error(c), "(no error)");
  // The defaults and an int8 codec with its default (unused) values key stay valid.
  EXPECT_EQ(config_error(Config{}), "(no error)");
  c = Config{};
  c.sync.codec.type = "int8";
  EXPECT_EQ(config_error(c), "(no error)");
}

TEST(CodecConfigErrors, MakeCodecRefusesBandWithoutTheDct) {
  CodecConfig c;
  c.type = "dct", c.transform = "none", c.select = "band";
  EXPECT_THROW(make_codec(c), ConfigError);
  c.select = "topk", c.transform = "wavelet";
  EXPECT_THROW(make_codec(c), ConfigError);
  c.transform = "none", c.values = "int1";
  EXPECT_THROW(make_codec(c), ConfigError);
}

// SparseLoCo as configs/sparseloco-tiny.yaml sets it (docs/codec.md): three real workers, the
// decayed error feedback, int2 top-k of raw chunks up, the lossless average down, outer momentum
// 0. Every worker replays the coordinator's step bit for bit: one checksum per round, no resync.
TEST(DilocoDct, SparseLoCoCombinationKeepsReplicasIdentical) {
  std::string dir = loco::testing::temp_dir();
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 3, 4);
  auto& cc = c.sync.codec;
  cc.type = "dct", cc.transform = "none", cc.values = "int2", cc.chunk = 64, cc.topk = 64;
  cc.topk_down = 3 * 64, cc.values_down = "fp32", cc.error_decay = 0.95;
  c.sync.outer.lr = 1.0, c.sync.outer.momentum = 0.0;
  c.train.max_steps = 16;
  c.train.eval_every = 0;
  c.train.optimizer.lr = 0.01;
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("resyncing"), std::string::npos) << r.output;
  auto checksums = loco::testing::checksums_by_round(dir + "/run", 3);
  ASSERT_EQ(checksums.size(), 4u);
  for (const auto& [round, set] : checksums) EXPECT_EQ(set.size(), 1u) << "round " << round;
  auto global = read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_EQ(global.size(), 4u);
  EXPECT_LT(global.back().at("val_loss").get<double>(),
            global.front().at("val_loss").get<double>());
  auto totals = nlohmann::json::parse(std::ifstream(dir + "/run/coordinator/summary.json"));
  EXPECT_GT(totals.at("ratio_vs_diloco_fp32").get<double>(), 8.0);
}
