// The coordinated strategies' exact resume (see coordinated.h and docs/faults.md, "Pause and
// exact resume"): what a worker's checkpoint holds of its strategy, restoring it when the
// coordinator is at its round, and the unread rest of its data lease asked back.
#include <spdlog/spdlog.h>

#include <cstring>

#include "coordinated.h"
#include "loco/checkpoint.h"
#include "loco/trainer.h"

namespace loco {

void CoordinatedSync::save_state(Trainer& trainer, std::map<std::string, torch::Tensor>& out) {
  const bool exact = !elastic_ && site_ranks_ == 1 && resumable_now(trainer);
  out["sync.state"] = torch::tensor(
      std::vector<int64_t>{exact, round_, shard_, round_tokens_start_, loss_count_}, torch::kInt64);
  out["sync.loss_sum"] = torch::tensor(std::vector<double>{loss_sum_}, torch::kDouble);
  const uint64_t sum = param_checksum(theta_start_);
  int64_t bits = 0;
  std::memcpy(&bits, &sum, sizeof(bits));
  out["sync.global_checksum"] = torch::tensor(std::vector<int64_t>{bits}, torch::kInt64);
  if (auto* kept = residuals()) put_named(out, "sync.residual", *kept);
}

bool CoordinatedSync::resume_exactly(Trainer& trainer, const torch::Tensor& global) {
  const Checkpoint& c = *own_;
  auto state = c.tensors.find("sync.state");
  auto sum = c.tensors.find("sync.global_checksum");
  std::string why;
  if (state == c.tensors.end() || sum == c.tensors.end()) {
    why = "it was written by an older loco";
  } else {
    const auto v = state->second.contiguous();
    const int64_t* p = v.data_ptr<int64_t>();
    uint64_t want = 0;
    const int64_t bits = sum->second.item<int64_t>();
    std::memcpy(&want, &bits, sizeof(want));
    if (!p[0])
      why =
          "its method cannot go on exactly from the moment it was written (a sync in flight, "
          "a round under way, or state it does not checkpoint)";
    else if (p[1] != round_)
      why = "it is of round " + std::to_string(p[1]) + ", the coordinator is at round " +
            std::to_string(round_);
    else if (p[2] != shard_)
      why = "it read data slot " + std::to_string(p[2]) + ", this session has slot " +
            std::to_string(shard_);
    else if (param_checksum(global) != want)
      why =
          "the coordinator's state of round " + std::to_string(round_) + " is not the one it kept";
    if (why.empty()) {
      trainer.restore(c, own_path_);
      round_tokens_start_ = p[3];
      loss_count_ = p[4];
      loss_sum_ = c.tensors.at("sync.loss_sum").item<double>();
    }
  }
  if (!why.empty()) {
    spdlog::warn(
        "worker {}: not resuming exactly from its checkpoint of step {}: {}; rejoining "
        "with a fresh optimizer",
        client_->worker_id(), c.step, why);
    return false;
  }
  if (auto* kept = residuals()) *kept = get_named(c.tensors, "sync.residual");
  return true;
}

void CoordinatedSync::resume_data(DataLoader& loader) {
  if (!loader.leased()) return claim_data(loader);
  const DataLease& held = loader.lease();
  std::vector<LeaseRange> rest = held.slice(loader.lease_offset(), held.size());
  if (rest.empty()) return claim_data(loader);  // the claim it made after that step
  int64_t want = 0;
  for (const auto& r : rest) want += r.size();
  DataLease next =
      client_->claim_data(held.id, loader.lease_offset(), want, loader.total_windows(), rest);
  if (next.ranges != rest)
    spdlog::warn(
        "worker {}: the rest of its data lease was handed out meanwhile; it reads other "
        "windows (not exactly the run it resumes)",
        client_->worker_id());
  loader.set_lease(next, 0, 0, site_ranks_);
}

}  // namespace loco
