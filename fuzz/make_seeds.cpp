// Writes fuzz_update's seed corpus into the directory given: a valid input for every codec (a
// 2-D and a 1-D tensor), dct with each value format (int4 and int2 included), selection and
// transform (none: the raw chunks) and with every coefficient kept, and merges of two workers'
// dct payloads. Deterministic; run by CTest before the short fuzz
// run.
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "fuzz_input.h"
#include "loco/codec.h"

namespace {

loco::Encoded encode(const loco::CodecConfig& c, const torch::Tensor& x) {
  return loco::make_codec(c)->encode(x);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds DIR\n";
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  int written = 0;
  auto write = [&](const loco::fuzz::Input& in) {
    std::ofstream(dir / ("seed_" + std::to_string(written++)), std::ios::binary)
        << loco::fuzz::write_input(in);
  };
  torch::manual_seed(0);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{8, 12}, {10}}) {
    auto x = torch::randn(shape);
    for (int t = 0; t < loco::fuzz::kMergeTarget; ++t) {
      loco::CodecConfig c;
      c.type = loco::fuzz::kCodecs[t];
      c.chunk = t == 4 ? 4 : 16 - 2 * t;  // int8 / int4 / int2: values per group (not
                                          // dividing 10: a short last group); dct: block edge
      c.topk = 3;
      write({t, shape, {encode(c, x).payload}});
    }
  }
  loco::CodecConfig dct;
  dct.type = "dct", dct.chunk = 4, dct.topk = 5;
  for (const char* values : {"fp16", "bf16", "int8", "int4", "int2"}) {
    dct.values = values;
    write({4, {8, 12}, {encode(dct, torch::randn({8, 12})).payload}});
    dct.transform = "none";  // top-k of the raw chunks
    write({4, {8, 12}, {encode(dct, torch::randn({8, 12})).payload}});
    dct.transform = "dct";
  }
  dct.values = "int2", dct.topk = 3;  // an odd count of codes: padding bits in the last byte
  write({4, {7, 13}, {encode(dct, torch::randn({7, 13})).payload}});
  dct.transform = "none";
  write({loco::fuzz::kMergeTarget,
         {8, 12},
         {encode(dct, torch::randn({8, 12})).payload, encode(dct, torch::randn({8, 12})).payload}});
  dct.transform = "dct";
  dct.values = "fp32", dct.select = "band";
  write({4, {8, 12}, {encode(dct, torch::randn({8, 12})).payload}});
  dct.topk = 16;  // k >= n1 + n2: the dense inverse
  write({4, {8, 12}, {encode(dct, torch::randn({8, 12})).payload}});
  dct.topk = 5;
  dct.select = "topk";
  write({loco::fuzz::kMergeTarget,
         {8, 12},
         {encode(dct, torch::randn({8, 12})).payload, encode(dct, torch::randn({8, 12})).payload}});
  std::cout << "make_seeds: " << written << " inputs in " << dir.string() << "\n";
  return 0;
}
