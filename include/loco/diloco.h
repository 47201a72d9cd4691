// The worker's strategies for the methods that meet through the coordinator, one class per
// method, chosen once from sync.mode by make_coordinated_sync:
//
// diloco (src/sync/diloco_sync.cpp): every sync.inner_steps steps, send the pseudo-gradient
//   delta = theta_start - theta (encoded with sync.codec, with error feedback when the codec is
//   lossy and sync.codec.error_feedback is set). Then either replace the parameters with the new
//   global state (sync.download state), or fetch the round's encoded average and replay the
//   coordinator's outer step from theta_start (sync.download update); a checksum of the result
//   against the coordinator's triggers a full resync.
// demo (src/sync/demo_sync.cpp): the decoupled DCT momentum of docs/dct.md: m = beta m + delta,
//   send the top-k of DCT(m) and keep the rest (m -= what was sent), fetch the merged set Q,
//   m += IDCT(Q), theta = theta_start - lr (delta + beta m), with beta = sync.outer.momentum and
//   lr = sync.outer.lr. On evaluation rounds (train.eval_every), the last round and every
//   sync.resync_every rounds, push the full parameters for the coordinator's consensus average;
//   on resync rounds adopt that average.
//
// What they share (src/sync/coordinated.*): heartbeats, recovery after a late push, a coordinator
// restart or a drop, and the metrics. Inner optimizer state stays local. Each sync adds to the
// step's metrics: round, bytes_up / bytes_down (serialized message bytes), sync_s (push + pull),
// idle_s (the part of the pull spent waiting for the slowest worker), pull_s, codec_s (encoding
// and decoding), worker, param_checksum, link / link_s on a slow link; diloco adds resynced,
// demo consensus_bytes_up / resync_bytes; a recovery writes recovered instead.
#pragma once

#include <memory>

#include "loco/codec.h"
#include "loco/coord_client.h"
#include "loco/sync.h"

namespace loco {

// The decoupled method's maths for one tensor, on any device (docs/dct.md).
// Compress: m <- beta m + delta; returns the dct payload of m's top-k coefficients and removes
// what it carries from m (error feedback: m <- m - decode(payload)).
Encoded demo_compress(torch::Tensor& m, const torch::Tensor& delta, double beta, Codec& dct);
// Apply: m <- m + decode(merged); returns theta_start - lr (delta + beta m).
torch::Tensor demo_apply(torch::Tensor& m, const torch::Tensor& theta_start,
                         const torch::Tensor& delta, const Encoded& merged, double beta, double lr,
                         const Codec& dct);

// The strategy of config.sync.mode for a worker (or a site's rank 0) that joined the coordinator
// as `join` says. Throws ConfigError naming sync.mode for a mode without a coordinator (single,
// ddp).
std::unique_ptr<Sync> make_coordinated_sync(const Config& config,
                                            std::shared_ptr<CoordinatorClient> client,
                                            const JoinInfo& join);

}  // namespace loco
