// The decoupled method's replicas at the coordinator (sync.mode demo): on consensus rounds every
// worker pushes its full parameters (Update::kState) with its own val loss; ReplicaAverage sums
// them into the consensus and keeps what sync.report_model needs to report a replica instead:
// every replica's evaluation, and one replica's parameters ("replica:N": that member's; "best":
// the lowest val loss so far this round), so the coordinator holds at most one replica beside
// the sum, whatever the number of workers.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <string>
#include <vector>

#include "loco/codec.h"
#include "loco/config.h"
#include "loco/protocol.h"

namespace loco {

// A replica's own evaluation at a consensus round, as its worker pushed it.
struct ReplicaEval {
  std::string member;
  double loss = 0, bpb = 0;
};

// What a consensus round leaves for evaluation and checkpoints besides the consensus.
struct ReplicaReport {
  std::vector<ReplicaEval> evals;  // every replica that pushed an evaluation, in arrival order
  ReplicaEval kept;                // the replica whose parameters `theta` holds
  torch::Tensor theta;             // undefined: no replica kept (report_model consensus, or the
                                   // named member did not push)
};

// The mean, min and max of `evals`' losses as {"mean", "min", "max", "count"}; null when empty.
nlohmann::json replica_loss_stats(const std::vector<ReplicaEval>& evals);

class ReplicaAverage {
 public:
  ReplicaAverage(const std::vector<TensorLayout>& layout, const SyncConfig& sync);
  // Decodes a kState push (fp32 parameters) outside the lock; throws CoordError.
  std::vector<torch::Tensor> decode(const Update& u) const;
  // Adds a decoded push of u.worker_id to the sum; records its evaluation and, when
  // sync.report_model asks for it, keeps a copy of its parameters.
  void add(const Update& u, const std::vector<torch::Tensor>& decoded);
  int count() const { return count_; }
  // theta = the average of what was added; the round's evaluations and kept replica go into
  // `report`; starts over.
  void take(torch::Tensor& theta, ReplicaReport& report);

 private:
  std::vector<TensorLayout> layout_;
  std::string keep_member_;  // "replica:N": that member's replica
  bool keep_best_ = false;   // "best": the replica with the lowest val loss
  torch::Tensor sum_;
  int count_ = 0;
  ReplicaReport report_;
};

}  // namespace loco
