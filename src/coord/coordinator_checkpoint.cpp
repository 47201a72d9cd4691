// The coordinator's checkpoints (see include/loco/coordinator.h): writing one at a round's close,
// restoring the newest on --resume, logging again the rounds a crash checkpointed but did not
// log, and the pause that ends a run at a round's boundary for an exact resume.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "aggregator.h"
#include "evaluator.h"
#include "loco/checkpoint.h"
#include "loco/coordinator.h"
#include "loco/energy.h"
#include "loco/optim.h"
#include "loco/progress.h"
#include "membership.h"

namespace loco {

void CoordinatorCore::restore(const std::string& path) {
  Checkpoint c = load_checkpoint(path);
  TORCH_CHECK(c.tensors.at("params").numel() == theta_.numel(), path,
              ": parameter count differs from the model config");
  // A demo run reporting a replica checkpoints it as "params", the consensus (its state) apart.
  auto consensus = c.tensors.find("consensus");
  theta_.copy_(consensus != c.tensors.end() ? consensus->second : c.tensors.at("params"));
  outer_->velocity().copy_(c.tensors.at("outer_velocity"));
  round_ = c.step;
  tokens_total_ = c.tokens;
  auto shards = c.tensors.find("shard_tokens");  // absent in checkpoints of older versions
  if (shards != c.tensors.end()) members_->restore_shard_tokens(shards->second);
  auto energy = c.tensors.find("energy");  // a trace schedule's accounting so far
  if (energy_ && energy != c.tensors.end()) {
    torch::Tensor e = energy->second.to(torch::kDouble).contiguous();
    energy_->restore(std::vector<double>(e.data_ptr<double>(), e.data_ptr<double>() + e.numel()));
    trace_offset_ = energy_->now();
  }
  if (auto* kept = aggregator_->residuals()) *kept = get_named(c.tensors, "download_residual");
  end_at_budget();
  spdlog::info("coordinator: resumed from {} at round {}", path, round_);
}

void CoordinatorCore::relog_lost_rounds() {
  if (!aggregator_->steps_global_model()) return;  // demo logs its consensus rounds instead
  int64_t last_round = 0, last_tokens = 0;
  std::ifstream in(std::filesystem::path(config_.run.dir) / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto r = nlohmann::json::parse(line, nullptr, false);
    if (r.is_discarded() || !r.contains("round") || !r.contains("tokens")) continue;
    last_round = r["round"].get<int64_t>(), last_tokens = r["tokens"].get<int64_t>();
  }
  const std::string dir = (std::filesystem::path(config_.run.dir) / "checkpoints").string();
  for (const auto& file : list_checkpoints(dir)) {
    Checkpoint c = load_checkpoint(file);
    if (c.step <= last_round) continue;
    if (c.step != last_round + 1) break;  // a round between them is gone: log none after it
    ClosedRound r;
    r.relogged = true;
    r.round = c.step, r.tokens_total = c.tokens, r.tokens = c.tokens - last_tokens;
    r.wall_s = c.wall_s;
    r.theta = c.tensors.at("params");
    spdlog::warn("coordinator: round {} was checkpointed but not logged; evaluating it again",
                 r.round);
    evaluator_->submit(std::move(r));
    last_round = c.step, last_tokens = c.tokens;
  }
}

void CoordinatorCore::save_checkpoint() {
  drain();
  int64_t round, tokens;
  torch::Tensor theta, velocity, shards, energy;
  std::map<std::string, torch::Tensor> residuals;
  {
    std::lock_guard<std::mutex> lock(mu_);
    round = round_, tokens = tokens_total_;
    theta = theta_;  // shared: a close meanwhile steps a copy (own())
    velocity = outer_->velocity();
    shards = members_->shard_tokens();
    account_energy_locked();
    energy = energy_state_locked();
    residuals = download_residuals_locked();
  }
  // demo: the replica this round's consensus reported stays the checkpoint's model
  torch::Tensor replica = evaluator_->reported_replica(round);
  write_coordinator_checkpoint(config_, round, tokens, replica.defined() ? replica : theta,
                               velocity, shards, now_s() - start_time_, energy,
                               replica.defined() ? theta : torch::Tensor(), residuals);
}

bool CoordinatorCore::checkpoint_due(int64_t round) const {
  return round % config_.sync.coordinator.checkpoint_every == 0 || round == total_rounds_;
}

std::map<std::string, torch::Tensor> CoordinatorCore::download_residuals_locked() const {
  std::map<std::string, torch::Tensor> out;
  if (auto* kept = aggregator_->residuals())
    for (const auto& [name, r] : *kept) out[name] = r.clone();  // the next close updates them
  return out;
}

void CoordinatorCore::pause() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pause_asked_) return;
  pause_asked_ = true;
  if (round_ + 1 >= total_rounds_) {  // nothing to pause: the run ends at the next close anyway
    spdlog::info("coordinator: pause asked; the run ends when its last round closes anyway");
    return;
  }
  paused_ = true;
  paused_from_ = total_rounds_;
  spdlog::info(
      "coordinator: pausing: the run stops when round {} closes (of {}); `loco launch "
      "--resume` goes on from there",
      round_ + 1, total_rounds_);
  end_run_at_locked(round_ + 1);
}

int64_t CoordinatorCore::paused_from() const {
  std::lock_guard<std::mutex> lock(mu_);
  return paused_from_;
}

}  // namespace loco
