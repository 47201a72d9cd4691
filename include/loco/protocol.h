// The coordinator protocol's plain types, shared by the worker's client (coord_client.h) and the
// coordinator (coordinator.h, the gRPC service): what a push carries, what a pull asks for, what a
// join returns, how the model's tensors are laid out, and the size of a streamed chunk. Nothing
// here knows gRPC; proto/loco.proto is the wire form and src/coord/stream.* maps between them.
#pragma once

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "loco/codec.h"

namespace loco {

// Bytes per DataChunk of a streamed update or state; gRPC messages stay below 4x this.
constexpr size_t kChunkBytes = 1 << 20;

// One parameter tensor of the model: name and shape, and where it sits in the flat buffer. Both
// sides build it from the same model config, in the model's parameter order.
struct TensorLayout {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
};

struct TensorPayload {
  std::string name;
  std::string dtype = "float32";  // of the decoded tensor
  Encoded encoded;                // codec, shape, payload
};

// One push: a worker's update for a round, one payload per tensor of the layout.
struct Update {
  enum Kind { kDelta, kState };  // the round's encoded update, or full fp32 parameters (demo)
  Kind kind = kDelta;
  std::string worker_id;
  int64_t round = 0;
  int64_t tokens = 0;  // tokens behind the update: the averaging weight
  double loss = 0;     // the worker's mean training loss this round (metrics)
  // kState (demo): the replica's own evaluation just before the push; NaN: not evaluated.
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  double val_bpb = std::numeric_limits<double>::quiet_NaN();
  std::vector<TensorPayload> tensors;
};

// What a pull fetches (PullKind in proto/loco.proto): the global parameters, the closed round's
// encoded aggregate, or (demo) the average of the replicas pushed as kState.
enum class PullKind { kParams, kAggregate, kConsensus };

struct JoinInfo {
  std::string worker_id;
  int64_t round = 0;
  int32_t shard = 0, num_shards = 1;
  // Tokens the shard contributed in closed rounds (a count; the data itself comes in leases:
  // data_lease.h).
  int64_t cursor_tokens = 0;
  // Set by the member itself, not the coordinator: the DDP ranks that train its replica (a
  // site's rank count, docs/multisite.md). Its pushes count their tokens, which the average
  // weighs by.
  int64_t site_ranks = 1;
};

// One live member as `Status` reports it.
struct MemberInfo {
  std::string worker_id, name;
  int32_t shard = 0;
  // reported: pushed this round's update (else it is training); reported_state: pushed its
  // full parameters for the round's consensus (demo).
  bool reported = false, reported_state = false;
  double last_loss = 0;
  uint64_t bytes_up = 0, bytes_down = 0;
  double seen_s_ago = 0;  // since its last call (heartbeat, push, pull): filled in by status()
};

// One point of a loss curve: the round that closed and its loss.
struct LossPoint {
  int64_t round = 0;
  double loss = 0;
};

struct CoordinatorStatus {
  int64_t round = 0, total_rounds = 0;
  std::vector<MemberInfo> members;
  uint64_t bytes_up = 0, bytes_down = 0;
  double last_val_loss = 0;
  int64_t tokens = 0;  // in closed rounds
  std::string mode;    // sync.mode
  double wall_s = 0;   // since the coordinator started
  // The curves of closed rounds: the token-weighted training loss of the pushes, and the
  // coordinator's val loss where it evaluated. Long runs keep every other point once a curve
  // passes kMaxCurvePoints, so each stays short and spans the whole run.
  std::vector<LossPoint> train_losses, val_losses;
};
constexpr size_t kMaxCurvePoints = 1000;

// Appends `p` to a status curve, keeping every other point once it passes kMaxCurvePoints.
inline void append_loss_point(std::vector<LossPoint>& curve, LossPoint p) {
  curve.push_back(p);
  if (curve.size() <= kMaxCurvePoints) return;
  size_t kept = 0;
  for (size_t i = 0; i < curve.size(); i += 2) curve[kept++] = curve[i];
  if (curve[kept - 1].round != p.round) curve[kept++] = p;  // the newest point stays
  curve.resize(kept);
}

}  // namespace loco
