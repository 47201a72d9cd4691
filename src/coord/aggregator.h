// What the coordinator does with a round's pushes, one class per sync method behind one
// interface; free of networking and membership, so a test drives one with Updates alone.
//   DilocoAggregator (sync.mode diloco): the token-weighted average of the pseudo-gradients, the
//     outer Nesterov step on the global model, and with sync.download update the encoded
//     download (error feedback kept here) whose decoded form is exactly what the step used,
//     with the FNV-1a checksum of the new parameters.
//   DemoAggregator (sync.mode demo): the sparse merge of the workers' top-k momentum
//     coefficients (the mean over the workers that sent each), served as the round's aggregate;
//     it steps nothing. Replicas differ, so it also averages the full parameters the workers
//     push (Update::kState) into the consensus the coordinator evaluates and serves back.
//   StreamingAggregator (sync.mode streaming): DiLoCo's on one fragment of the parameters a round,
//     the fragments in turn (streaming_aggregator.h).
// A new method is one more subclass and one case in make_aggregator (docs/design.md).
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loco/codec.h"
#include "loco/config.h"
#include "loco/optim.h"
#include "loco/protocol.h"
#include "replicas.h"

namespace loco {

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  // The codec every tensor of a round's push (Update::kDelta) must carry.
  virtual std::string push_codec() const = 0;
  // The tensors a push for `round` carries and the round's aggregate holds, when not the whole
  // layout (streaming: the round's fragment); null: the whole layout.
  virtual const std::vector<TensorLayout>* round_layout(int64_t round) const { return nullptr; }
  // Validates and decodes a push's tensors, outside the coordinator's lock, before anything of
  // the round changes: throws CoordError (kInvalidArgument) naming the tensor.
  virtual std::vector<torch::Tensor> decode(const Update& u) const = 0;
  // Adds a decoded push to the round (under the coordinator's lock).
  virtual void add(const Update& u, const std::vector<torch::Tensor>& decoded) = 0;
  // Closes the round on what was added (`tokens` in all) and updates the global model.
  virtual void close(torch::Tensor& theta, OuterNesterov& outer, int64_t tokens) = 0;
  // What the encoded download did not send yet (its error feedback, by tensor or piece name),
  // kept in the coordinator's checkpoints so that a resumed run sends what it would have; null
  // when the method keeps none.
  virtual std::map<std::string, torch::Tensor>* residuals() { return nullptr; }
  // Whether workers pull the round's encoded aggregate (PullKind::kAggregate) after a round.
  virtual bool serves_aggregate() const = 0;
  // Whether the global parameters after a round are the run's model (evaluated and checkpointed
  // every round): false when the replicas differ and their consensus stands in for it.
  virtual bool steps_global_model() const = 0;
  // Whether the global model after closing `round` (1-based) of `total` is worth evaluating
  // (streaming: once every fragment synced since the last time, and at the end).
  virtual bool evaluates(int64_t round, int64_t total) const { return true; }
  // The replicas' average, for methods whose replicas differ; null otherwise.
  virtual ReplicaAverage* replicas() { return nullptr; }

  // The last closed round's encoded aggregate, one per tensor, and the checksum the workers
  // check their parameters against after replaying it (0: none).
  const std::vector<Encoded>& aggregate() const { return aggregate_; }
  uint64_t checksum() const { return checksum_; }

 protected:
  std::vector<Encoded> aggregate_;
  uint64_t checksum_ = 0;
};

// The aggregator of config.sync.mode (a coordinated mode); throws ConfigError otherwise.
std::unique_ptr<Aggregator> make_aggregator(const Config& config,
                                            const std::vector<TensorLayout>& layout);

// sum += tokens * x, with the product rounded before the addition (no fused multiply-add, which
// ATen's add_(x, alpha) uses): two pushes then add up to the same bits in either order, so a run
// of two workers does not depend on which push arrives first (docs/diloco.md). Chunked through a
// small scratch buffer.
void add_weighted(torch::Tensor sum, const torch::Tensor& x, int64_t tokens);

// Checks an update's tensors against the model's layout: count, names, shapes, dtype float32,
// and every payload encoded with `codec`. Throws CoordError (kInvalidArgument).
void check_tensors(const Update& u, const std::vector<TensorLayout>& layout,
                   const std::string& codec);
// Decodes every tensor of `u` with `codec`, checking each decodes to its layout's size; throws
// CoordError (kInvalidArgument) naming the tensor. Decoded tensors may alias u's payloads.
std::vector<torch::Tensor> decode_tensors(const Update& u, const Codec& codec,
                                          const std::vector<TensorLayout>& layout);

}  // namespace loco
