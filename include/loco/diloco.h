// The DiLoCo worker's Sync strategy: every sync.inner_steps steps, send the pseudo-gradient
// delta = theta_start - theta (encoded with sync.codec, with error feedback when the codec is
// lossy and sync.codec.error_feedback is set), then replace the parameters with the new global
// state the coordinator serves. Inner optimizer state stays local. Each sync adds to the step's
// metrics: round, bytes_up / bytes_down (serialized message bytes), sync_s (push + pull) and
// idle_s (the part of the pull spent waiting for the slowest worker).
#pragma once

#include <memory>

#include "loco/coord_client.h"
#include "loco/sync.h"

namespace loco {

std::unique_ptr<Sync> make_diloco_sync(const Config& config,
                                       std::shared_ptr<CoordinatorClient> client,
                                       const JoinInfo& join);

}  // namespace loco
