// Streaming DiLoCo at the coordinator (see streaming_aggregator.h).
#include "streaming_aggregator.h"

#include <torch/torch.h>

#include <algorithm>

#include "loco/checkpoint.h"

namespace loco {

StreamingAggregator::StreamingAggregator(const SyncConfig& sync,
                                         const std::vector<TensorLayout>& layout)
    : fragments_(plan_fragments(layout, sync.streaming.fragments)), codec_(make_codec(sync.codec)) {
  CodecConfig down = sync.codec;  // as DiLoCo's encoded download
  down.topk = down.topk_down > 0 ? down.topk_down : down.topk * sync.workers;
  if (!down.values_down.empty()) down.values = down.values_down;
  down_codec_ = make_codec(down);
  if (sync.codec.error_feedback && sync.codec.type != "none")
    down_feedback_ = std::make_unique<ErrorFeedback>(*down_codec_);
  int64_t largest = 0;
  for (const auto& f : fragments_) largest = std::max(largest, f.numel);
  sum_ = torch::zeros({largest}, torch::kFloat32);
}

const std::vector<TensorLayout>* StreamingAggregator::round_layout(int64_t round) const {
  return &fragments_[size_t(fragment_of_round(round, int64_t(fragments_.size())))].pieces;
}

std::vector<torch::Tensor> StreamingAggregator::decode(const Update& u) const {
  return decode_tensors(u, *codec_, *round_layout(u.round));
}

void StreamingAggregator::add(const Update& u, const std::vector<torch::Tensor>& decoded) {
  adding_ = fragment_of_round(u.round, int64_t(fragments_.size()));
  const Fragment& f = fragments_[size_t(adding_)];
  for (size_t i = 0; i < f.pieces.size(); ++i)
    add_weighted(sum_.narrow(0, f.pieces[i].offset - f.offset, f.pieces[i].numel), decoded[i],
                 u.tokens);
}

void StreamingAggregator::close(torch::Tensor& theta, OuterNesterov& outer, int64_t tokens) {
  if (adding_ < 0) return;
  const Fragment& f = fragments_[size_t(adding_)];
  auto avg = sum_.narrow(0, 0, f.numel);
  avg.div_(double(tokens));
  aggregate_.assign(f.pieces.size(), Encoded{});
  for (size_t i = 0; i < f.pieces.size(); ++i) {
    const auto& p = f.pieces[i];
    auto x = avg.narrow(0, p.offset - f.offset, p.numel).view(p.shape);
    aggregate_[i] = down_feedback_ ? down_feedback_->encode(p.name, x) : down_codec_->encode(x);
    x.copy_(down_codec_->decode(aggregate_[i]));  // step with exactly what the workers decode
  }
  outer_step_fragment(outer, theta, avg, f);
  sum_.zero_();
  adding_ = -1;
  checksum_ = param_checksum(theta);
}

}  // namespace loco
