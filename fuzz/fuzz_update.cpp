// libFuzzer target: arbitrary bytes into what the coordinator does with a pushed payload. Every
// codec's decode_view (what CoordinatorCore::push decodes a diloco update with; the dct payload
// in every value format and transform, int4 / int2 and transform none included), parse_dct and
// to_dense (a demo push), and merge_sparse of several dct payloads (a demo round's close). The
// only acceptable outcomes are a result that keeps the codec's promises or a CodecError; any
// other exception, a crash, a hang or a sanitizer report is a bug. Input layout: fuzz_input.h.
//
//   build-fuzz/fuzz/fuzz_update -max_total_time=600 CORPUS_DIR build-fuzz/fuzz/seeds
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "fuzz_input.h"
#include "loco/codec.h"

namespace {

// Like assert, but also in release builds: a broken promise is a finding.
void expect(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_update: broken promise: %s\n", what);
  std::abort();
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const loco::Codec& codec(int target) {
  static const auto codecs = [] {
    std::vector<std::unique_ptr<loco::Codec>> all;
    for (const char* name : loco::fuzz::kCodecs) {
      loco::CodecConfig c;
      c.type = name;
      all.push_back(loco::make_codec(c));
    }
    return all;
  }();
  return *codecs[size_t(target)];
}

void check_sparse(const loco::SparseChunks& s, const std::vector<int64_t>& shape) {
  expect(s.shape == shape, "sparse shape is the payload's");
  expect(s.indices.size(0) == s.plan.chunks(), "one row of indices per chunk");
  if (s.indices.numel() > 0) {
    expect(s.indices.min().item<int64_t>() >= 0, "indices >= 0");
    expect(s.indices.max().item<int64_t>() < s.plan.chunk_size(), "indices < chunk size");
  }
  expect(torch::isfinite(s.values).all().item<bool>(), "sparse values are finite");
}

void decode_one(int target, const loco::Encoded& e) {
  auto x = codec(target).decode_view(e);
  expect(x.sizes().vec() == e.shape, "decoded shape is the payload's");
  expect(x.numel() == numel(e.shape), "decoded size is the shape's");
  expect(torch::isfinite(x).all().item<bool>(), "decoded values are finite");
  if (target == 4) check_sparse(loco::parse_dct(e), e.shape);
}

void merge(const std::vector<loco::Encoded>& payloads) {
  auto merged = loco::merge_sparse(payloads);
  check_sparse(merged, payloads[0].shape);
  // The coordinator sends the merge on: it must encode and decode again.
  auto again = loco::parse_dct(loco::encode_sparse(merged, "fp32"));
  expect(torch::equal(again.values, merged.values), "the merge round-trips");
  expect(again.dct == merged.dct, "the merge keeps the transform");
  // And in the low-bit formats the coordinator may serve: they must encode and parse.
  for (const char* values : {"int4", "int2"}) {
    auto low = loco::parse_dct(loco::encode_sparse(merged, values));
    expect(torch::isfinite(low.values).all().item<bool>(), "a low-bit merge decodes finite");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto in = loco::fuzz::parse_input(data, size);
  const bool merging = in.target == loco::fuzz::kMergeTarget;
  std::vector<loco::Encoded> payloads;
  for (const auto& p : in.payloads)
    payloads.push_back({merging ? "dct" : loco::fuzz::kCodecs[in.target], in.shape, p});
  try {
    if (merging)
      merge(payloads);
    else
      decode_one(in.target, payloads[0]);
  } catch (const loco::CodecError&) {
    // a clean refusal
  }
  return 0;
}
