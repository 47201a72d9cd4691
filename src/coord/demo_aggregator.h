// The decoupled DCT momentum method at the coordinator: a push carries each worker's top-k DCT
// coefficients of its momentum; closing merges them per tensor (merge_sparse: the mean over the
// workers that sent a coefficient) into the round's aggregate, served to every worker, and steps
// nothing. Replicas differ: in the rounds the workers push their full parameters (kState), their
// average is the consensus the coordinator evaluates, checkpoints and, for sync.resync_every,
// serves back.
#pragma once

#include "aggregator.h"

namespace loco {

class DemoAggregator : public Aggregator {
 public:
  DemoAggregator(const SyncConfig& sync, const std::vector<TensorLayout>& layout);
  std::string push_codec() const override { return codec_->name(); }
  // Parses every dct payload and refuses a chunking other than the run's (what every worker's
  // codec writes): the merge needs one chunking per tensor. The values are not decoded here.
  std::vector<torch::Tensor> decode(const Update& u) const override;
  void add(const Update& u, const std::vector<torch::Tensor>& decoded) override;
  void close(torch::Tensor& theta, OuterNesterov& outer, int64_t tokens) override;
  bool serves_aggregate() const override { return true; }
  bool steps_global_model() const override { return false; }
  ReplicaAverage* replicas() override { return &replicas_; }

 private:
  std::vector<TensorLayout> layout_;
  CodecConfig codec_config_;
  std::unique_ptr<Codec> codec_;
  std::vector<std::vector<Encoded>> payloads_;  // this round's pushes, per tensor
  ReplicaAverage replicas_;
};

}  // namespace loco
