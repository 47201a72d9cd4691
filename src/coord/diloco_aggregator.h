// DiLoCo at the coordinator: the token-weighted average of the round's pseudo-gradients and the
// outer Nesterov step; with sync.download update, the average is first encoded with the run's
// codec (the download keeps up to topk_down coefficients, or topk x workers, in values_down when
// set; error feedback kept here) and the step uses exactly what the workers will decode, so their
// replay is bit-exact and the FNV-1a checksum of the new parameters lets each check it.
#pragma once

#include "aggregator.h"

namespace loco {

class DilocoAggregator : public Aggregator {
 public:
  DilocoAggregator(const SyncConfig& sync, const std::vector<TensorLayout>& layout);
  std::string push_codec() const override { return codec_->name(); }
  std::vector<torch::Tensor> decode(const Update& u) const override;
  void add(const Update& u, const std::vector<torch::Tensor>& decoded) override;
  void close(torch::Tensor& theta, OuterNesterov& outer, int64_t tokens) override;
  bool serves_aggregate() const override { return download_update_; }
  bool steps_global_model() const override { return true; }

  std::map<std::string, torch::Tensor>* residuals() override {
    return down_feedback_ ? &down_feedback_->residuals() : nullptr;
  }

 private:
  // Encodes sum_ (the average) tensor by tensor into aggregate_ and replaces it with what the
  // encoding decodes to.
  void encode_aggregate();

  std::vector<TensorLayout> layout_;
  bool download_update_;
  std::unique_ptr<Codec> codec_, down_codec_;     // the pushes'; the download's
  std::unique_ptr<ErrorFeedback> down_feedback_;  // what the download did not send
  torch::Tensor sum_;                             // token-weighted sum of this round's deltas
};

}  // namespace loco
