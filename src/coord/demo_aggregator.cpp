// The decoupled DCT momentum method at the coordinator (see demo_aggregator.h).
#include "demo_aggregator.h"

#include "loco/coordinator.h"

namespace loco {

DemoAggregator::DemoAggregator(const SyncConfig& sync, const std::vector<TensorLayout>& layout)
    : layout_(layout),
      codec_config_(sync.codec),
      codec_(make_codec(sync.codec)),
      payloads_(layout.size()),
      replicas_(layout, sync) {
  aggregate_.resize(layout_.size());
}

std::vector<torch::Tensor> DemoAggregator::decode(const Update& u) const {
  const int64_t chunk = codec_config_.chunk;
  for (size_t i = 0; i < layout_.size(); ++i) {
    try {
      const ChunkPlan plan = parse_dct(u.tensors[i].encoded).plan;
      if (!(plan == chunk_plan(layout_[i].shape, chunk)))
        throw CodecError("chunks of " + std::to_string(plan.n1) + "x" + std::to_string(plan.n2) +
                         ", this run's codec (sync.codec.chunk " + std::to_string(chunk) +
                         ") cuts this tensor differently");
    } catch (const CodecError& e) {
      throw CoordError(CoordError::kInvalidArgument,
                       "tensor '" + layout_[i].name + "': " + std::string(e.what()));
    }
  }
  return {};
}

void DemoAggregator::add(const Update& u, const std::vector<torch::Tensor>&) {
  for (size_t i = 0; i < layout_.size(); ++i) payloads_[i].push_back(u.tensors[i].encoded);
}

void DemoAggregator::close(torch::Tensor&, OuterNesterov&, int64_t) {
  for (size_t i = 0; i < layout_.size(); ++i) {
    aggregate_[i] = encode_sparse(merge_sparse(payloads_[i]), codec_config_.values);
    payloads_[i].clear();
  }
}

}  // namespace loco
