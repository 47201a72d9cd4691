// DiLoCo at the coordinator (see diloco_aggregator.h).
#include "diloco_aggregator.h"

#include <torch/torch.h>

#include "loco/checkpoint.h"

namespace loco {

DilocoAggregator::DilocoAggregator(const SyncConfig& sync, const std::vector<TensorLayout>& layout)
    : layout_(layout), download_update_(downloads_update(sync)), codec_(make_codec(sync.codec)) {
  CodecConfig down = sync.codec;  // the download keeps up to what all uploads together carried
  down.topk = down.topk_down > 0 ? down.topk_down : down.topk * sync.workers;
  if (!down.values_down.empty()) down.values = down.values_down;
  down_codec_ = make_codec(down);
  if (download_update_ && sync.codec.error_feedback && sync.codec.type != "none")
    down_feedback_ = std::make_unique<ErrorFeedback>(*down_codec_);
  const auto& last = layout_.back();
  sum_ = torch::zeros({last.offset + last.numel}, torch::kFloat32);
  aggregate_.resize(layout_.size());
}

std::vector<torch::Tensor> DilocoAggregator::decode(const Update& u) const {
  // Decoding checks that every value is finite; `decode_view` may alias the payload.
  return decode_tensors(u, *codec_, layout_);
}

void DilocoAggregator::add(const Update& u, const std::vector<torch::Tensor>& decoded) {
  for (size_t i = 0; i < layout_.size(); ++i)
    add_weighted(sum_.narrow(0, layout_[i].offset, layout_[i].numel), decoded[i], u.tokens);
}

void DilocoAggregator::close(torch::Tensor& theta, OuterNesterov& outer, int64_t tokens) {
  sum_.div_(double(tokens));
  if (download_update_) encode_aggregate();
  outer.step(theta, sum_);
  sum_.zero_();
  if (download_update_) checksum_ = param_checksum(theta);
}

void DilocoAggregator::encode_aggregate() {
  for (size_t i = 0; i < layout_.size(); ++i) {
    const auto& l = layout_[i];
    auto x = sum_.narrow(0, l.offset, l.numel).view(l.shape);
    aggregate_[i] = down_feedback_ ? down_feedback_->encode(l.name, x) : down_codec_->encode(x);
    x.copy_(down_codec_->decode(aggregate_[i]));  // step with exactly what the workers decode
  }
}

}  // namespace loco
