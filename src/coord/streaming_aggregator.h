// Streaming DiLoCo at the coordinator (sync.mode streaming, docs/streaming.md): round r syncs
// fragment r mod P. Its pushes carry that fragment's pieces (include/loco/streaming.h); the
// close averages them by tokens, encodes the average for the download as DiLoCo's encoded
// download does (error feedback kept here), and steps the fragment with exactly what the workers
// decode: the outer velocity of the fragment's range is that fragment's outer momentum. The
// checksum is of all the global parameters, which every worker keeps as its fragments' anchors.
#pragma once

#include "aggregator.h"
#include "loco/streaming.h"

namespace loco {

class StreamingAggregator : public Aggregator {
 public:
  StreamingAggregator(const SyncConfig& sync, const std::vector<TensorLayout>& layout);
  std::string push_codec() const override { return codec_->name(); }
  const std::vector<TensorLayout>* round_layout(int64_t round) const override;
  std::vector<torch::Tensor> decode(const Update& u) const override;
  void add(const Update& u, const std::vector<torch::Tensor>& decoded) override;
  void close(torch::Tensor& theta, OuterNesterov& outer, int64_t tokens) override;
  bool serves_aggregate() const override { return true; }
  bool steps_global_model() const override { return true; }
  bool evaluates(int64_t round, int64_t total) const override {
    return round % int64_t(fragments_.size()) == 0 || round == total;
  }

  std::map<std::string, torch::Tensor>* residuals() override {
    return down_feedback_ ? &down_feedback_->residuals() : nullptr;
  }

 private:
  std::vector<Fragment> fragments_;
  std::unique_ptr<Codec> codec_, down_codec_;     // the pushes'; the download's
  std::unique_ptr<ErrorFeedback> down_feedback_;  // what the download did not send
  torch::Tensor sum_;    // token-weighted sum of this round's fragment deltas (largest fragment)
  int64_t adding_ = -1;  // the fragment of the pushes added since the last close (-1: none)
};

}  // namespace loco
