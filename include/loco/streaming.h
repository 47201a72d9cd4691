// Streaming DiLoCo's parts that the coordinator and the workers share (docs/streaming.md): the
// fragments of the flat parameters and the outer step and mix on one of them. Both sides build
// the same fragments from the same layout, so a fragment's pieces are the push's tensors.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loco/codec.h"
#include "loco/config.h"
#include "loco/optim.h"
#include "loco/protocol.h"

namespace loco {

// One fragment: a contiguous range of the flat parameters, and the pieces a push of it carries
// (whole tensors, or row ranges of a tensor cut between two fragments, named "NAME[a:b]" for its
// rows a .. b - 1), with offsets into the flat parameters.
struct Fragment {
  int64_t offset = 0, numel = 0;
  std::vector<TensorLayout> pieces;
};

// Splits the flat parameters laid out as `layout` (in order, contiguous) into `count` contiguous
// fragments of near-equal size: fragment p ends at the first row boundary at or after
// (p + 1) / count of the parameters. Each fragment is non-empty when count <= the rows in all
// (throws std::invalid_argument otherwise).
std::vector<Fragment> plan_fragments(const std::vector<TensorLayout>& layout, int64_t count);

// The fragment that round `round` syncs: fragments take turns, 0, 1, ..., count - 1, 0, ...
inline int64_t fragment_of_round(int64_t round, int64_t count) {
  return round % count;
}

// The outer Nesterov step on one fragment: `theta` and the outer velocity are the whole flat
// parameters; `delta` the fragment's averaged pseudo-gradient (f.numel values).
void outer_step_fragment(OuterNesterov& outer, torch::Tensor& theta, const torch::Tensor& delta,
                         const Fragment& f);

// The fragment's mix: params_f <- alpha params_f + (1 - alpha) global_f (alpha 0: the global).
void mix_fragment(torch::Tensor& params, const torch::Tensor& global, const Fragment& f,
                  double alpha);

// A worker's side of streaming DiLoCo without the network (src/sync/streaming_sync.cpp adds the
// exchange): the schedule, the fragment's encoded update, the replay of the coordinator's outer
// step on the worker's copy of the global parameters (every fragment's anchor, theta_start) and
// the mix. Holds the outer velocity it replays and the error feedback of its pushes.
class StreamingWorker {
 public:
  StreamingWorker(const SyncConfig& sync, const std::vector<TensorLayout>& layout,
                  const torch::Tensor& like);
  // After inner step `step` (1-based): whether it ends a round (the round's fragment is pushed),
  // and whether it applies the round in flight (delay_steps after the round's end).
  bool ends_round(int64_t step) const { return step % every_ == 0; }
  bool applies(int64_t step) const { return step % every_ == delay_; }
  int64_t delay_steps() const { return delay_; }
  const Fragment& fragment(int64_t round) const;
  // Round `round`'s push: global_p - params_p piece by piece, encoded with sync.codec (error
  // feedback when the codec is lossy and sync.codec.error_feedback is set).
  std::vector<TensorPayload> encode(int64_t round, const torch::Tensor& global,
                                    const torch::Tensor& params);
  // The coordinator's outer step of round `round`, replayed on `global`'s fragment from the
  // round's encoded average (one payload per piece). Throws std::runtime_error naming a piece
  // that does not decode.
  void replay(int64_t round, const std::vector<Encoded>& aggregate, torch::Tensor& global);
  // params_p <- alpha params_p + (1 - alpha) global_p for round `round`'s fragment.
  void mix(int64_t round, const torch::Tensor& global, torch::Tensor& params) const;
  torch::Tensor& velocity() { return outer_.velocity(); }
  // The error-feedback residuals by piece name (null without error feedback).
  std::map<std::string, torch::Tensor>* residuals() {
    return feedback_ ? &feedback_->residuals() : nullptr;
  }
  // Drops the error feedback of discarded work (a recovery).
  void discard();

 private:
  int64_t every_, delay_;
  double alpha_;
  std::vector<Fragment> fragments_;
  std::unique_ptr<Codec> codec_;
  std::unique_ptr<ErrorFeedback> feedback_;
  OuterNesterov outer_;
};

}  // namespace loco
