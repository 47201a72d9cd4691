// What every aggregator shares: the layout checks, decoding, the replicas' average, and the
// choice of aggregator by sync.mode (see aggregator.h).
#include "aggregator.h"

#include <algorithm>

#include "demo_aggregator.h"
#include "diloco_aggregator.h"
#include "streaming_aggregator.h"
#include "loco/coordinator.h"

namespace loco {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

[[noreturn]] void refuse(const std::string& message) {
  throw CoordError(CoordError::kInvalidArgument, message);
}

}  // namespace

void check_tensors(const Update& u, const std::vector<TensorLayout>& layout,
                   const std::string& codec) {
  if (u.tensors.size() != layout.size())
    refuse("update has " + std::to_string(u.tensors.size()) + " tensors, the model has " +
           std::to_string(layout.size()));
  for (size_t i = 0; i < layout.size(); ++i) {
    const auto& t = u.tensors[i];
    const auto& l = layout[i];
    if (t.name != l.name)
      refuse("tensor " + std::to_string(i) + " is '" + t.name + "', expected '" + l.name + "'");
    if (t.encoded.shape != l.shape)
      refuse("tensor '" + t.name + "' has shape " + shape_str(t.encoded.shape) + ", expected " +
             shape_str(l.shape));
    if (t.dtype != "float32")
      refuse("tensor '" + t.name + "' has dtype '" + t.dtype + "', expected float32");
    if (t.encoded.codec != codec)
      refuse("tensor '" + t.name + "' is encoded with '" + t.encoded.codec + "', expected '" +
             codec + "'");
  }
}

void add_weighted(torch::Tensor sum, const torch::Tensor& x, int64_t tokens) {
  constexpr int64_t kChunk = 1 << 20;
  thread_local torch::Tensor scratch;
  if (!scratch.defined() || scratch.device() != sum.device())
    scratch = torch::empty({kChunk}, sum.options());
  const auto flat = x.reshape({-1});
  for (int64_t at = 0; at < flat.numel(); at += kChunk) {
    const int64_t n = std::min(kChunk, flat.numel() - at);
    auto product = scratch.narrow(0, 0, n);
    torch::mul_out(product, flat.narrow(0, at, n), double(tokens));
    sum.narrow(0, at, n).add_(product);
  }
}

std::vector<torch::Tensor> decode_tensors(const Update& u, const Codec& codec,
                                          const std::vector<TensorLayout>& layout) {
  std::vector<torch::Tensor> decoded(layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    try {
      decoded[i] = codec.decode_view(u.tensors[i].encoded);
    } catch (const CodecError& e) {
      refuse("tensor '" + layout[i].name + "': " + std::string(e.what()));
    }
    if (decoded[i].numel() != layout[i].numel)
      refuse("tensor '" + layout[i].name + "' decodes to " + std::to_string(decoded[i].numel()) +
             " values, expected " + std::to_string(layout[i].numel));
  }
  return decoded;
}

std::unique_ptr<Aggregator> make_aggregator(const Config& config,
                                            const std::vector<TensorLayout>& layout) {
  switch (config.sync.mode) {
    case Mode::kDiloco:
      return std::make_unique<DilocoAggregator>(config.sync, layout);
    case Mode::kDemo:
      return std::make_unique<DemoAggregator>(config.sync, layout);
    case Mode::kStreaming:
      return std::make_unique<StreamingAggregator>(config.sync, layout);
    case Mode::kSingle:
    case Mode::kDdp:
      break;
  }
  throw ConfigError("sync.mode is '" + std::string(mode_name(config.sync.mode)) +
                    "': the coordinator serves diloco, demo and streaming");
}

}  // namespace loco
