// Times loco's dct codec, encode then decode, over tensors of the tiny model's shapes (the same
// set bench/codec_bench.py times in eager PyTorch), and prints one JSON object.
//
//   codec_bench [--chunk 64] [--topk 32] [--values int8] [--select topk] [--repeats 20]
//               [--threads 1] [--device cpu]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/codec.h"

namespace {

std::vector<std::vector<int64_t>> tiny_shapes(int64_t n_layer = 4, int64_t n_embd = 256,
                                              int64_t vocab = 4096) {
  std::vector<std::vector<int64_t>> shapes{{vocab, n_embd}, {vocab, n_embd}};  // wte, lm_head
  for (int64_t l = 0; l < n_layer; ++l) {
    for (int i = 0; i < 4; ++i) shapes.push_back({n_embd, n_embd});
    shapes.push_back({4 * n_embd, n_embd});
    shapes.push_back({n_embd, 4 * n_embd});
  }
  return shapes;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double wall_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process: on a shared machine it is steadier than wall time.
double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

// --key value pairs over defaults; an unknown key or a missing value is an error.
std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> args{{"chunk", "64"},    {"topk", "32"},    {"values", "int8"},
                                          {"select", "topk"}, {"repeats", "20"}, {"threads", "1"},
                                          {"device", "cpu"}};
  for (int i = 1; i < argc; i += 2) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0 || !args.count(key.substr(2)) || i + 1 >= argc)
      throw std::invalid_argument(
          "usage: codec_bench [--chunk N] [--topk K] [--values F] "
          "[--select topk|band] [--repeats R] [--threads T] [--device D]");
    args[key.substr(2)] = argv[i + 1];
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) try {
  auto args = parse_args(argc, argv);
  torch::set_num_threads(std::stoi(args["threads"]));
  loco::CodecConfig config;
  config.type = "dct";
  config.chunk = std::stoll(args["chunk"]);
  config.topk = std::stoll(args["topk"]);
  config.values = args["values"];
  config.select = args["select"];
  auto codec = loco::make_codec(config);
  torch::Device device(args["device"]);

  torch::manual_seed(0);
  std::vector<torch::Tensor> tensors;
  int64_t elements = 0;
  for (const auto& shape : tiny_shapes()) {
    tensors.push_back(torch::randn(shape).to(device));
    elements += tensors.back().numel();
  }
  torch::NoGradGuard no_grad;
  std::vector<double> encode_cpu, decode_cpu, total_cpu, total_wall;
  size_t bytes = 0;
  const int repeats = std::stoi(args["repeats"]);
  for (int r = 0; r < repeats + 2; ++r) {  // two warm-up passes
    std::vector<loco::Encoded> encoded;
    const double w0 = wall_ms(), c0 = cpu_ms();
    for (const auto& x : tensors) encoded.push_back(codec->encode(x));
    const double c1 = cpu_ms();
    for (const auto& e : encoded) codec->decode(e);
    const double c2 = cpu_ms(), w2 = wall_ms();
    if (r < 2) continue;
    encode_cpu.push_back(c1 - c0);
    decode_cpu.push_back(c2 - c1);
    total_cpu.push_back(c2 - c0);
    total_wall.push_back(w2 - w0);
    bytes = 0;
    for (const auto& e : encoded) bytes += e.payload.size();
  }
  nlohmann::json out{{"impl", "loco"},
                     {"torch", TORCH_VERSION},
                     {"threads", torch::get_num_threads()},
                     {"device", device.str()},
                     {"chunk", config.chunk},
                     {"topk", config.topk},
                     {"values", config.values},
                     {"select", config.select},
                     {"tensors", tensors.size()},
                     {"elements", elements},
                     {"payload_bytes", bytes},
                     {"fp32_over_payload", 4.0 * double(elements) / double(bytes)},
                     {"encode_cpu_ms", median(encode_cpu)},
                     {"decode_cpu_ms", median(decode_cpu)},
                     {"encode_decode_cpu_ms", median(total_cpu)},
                     {"encode_decode_ms", median(total_wall)}};
  std::cout << out.dump() << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "codec_bench: " << e.what() << std::endl;
  return 2;
}
