// Multi-site runs: DDP inside a site, the outer strategy between sites (see include/loco/hybrid.h).
#include "loco/hybrid.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <optional>
#include <sstream>

#include "loco/c10d_compat.h"
#include "loco/checkpoint.h"
#include "loco/ddp.h"
#include "loco/dist_env.h"
#include "loco/model.h"
#include "loco/progress.h"

namespace loco {
namespace {

// How long a site's other ranks wait for rank 0 to join the coordinator or finish a sync.
std::chrono::milliseconds rank0_wait(const Config& config) {
  const auto& co = config.sync.coordinator;
  double s = config.sync.timeout_s + co.connect_timeout_s + 2 * co.round_timeout_s + 60;
  return std::chrono::milliseconds(std::llround(s * 1e3));
}

class HybridSync : public Sync {
 public:
  HybridSync(const Config& config, std::shared_ptr<ProcessGroup> group, std::unique_ptr<Sync> outer,
             std::string site)
      : group_(group),
        ddp_(make_ddp_sync(config, group)),
        outer_(std::move(outer)),
        site_(std::move(site)),
        inner_steps_(config.sync.inner_steps),
        round_steps_(round_steps(config.sync)),
        delay_steps_(config.sync.mode == Mode::kStreaming ? config.sync.streaming.delay_steps : 0),
        elastic_(elastic_rounds(config.sync)),
        step_windows_(config.train.batch_size * config.train.grad_accum),
        wait_(rank0_wait(config)) {
    TORCH_CHECK(bool(outer_) == (group_->rank() == 0),
                "hybrid: the outer strategy belongs to the site's rank 0, and to it alone");
  }

  // Rank 0 pulls the global state (and, joining midway, moves to the run's step) and claims the
  // site's data lease; every rank takes its parameters, step and share of the lease.
  void start(Trainer& trainer) override {
    ddp_->start(trainer);
    std::string position;
    if (outer_) {
      outer_->start(trainer);
      position = std::to_string(trainer.step()) + " " + trainer.loader().lease().to_text();
    }
    std::istringstream shared(group_->share(0, "start", position, wait_));
    int64_t step = 0;
    shared >> step;
    if (!outer_) {
      trainer.set_position(step, std::nullopt);
      take_lease(trainer, std::string(std::istreambuf_iterator<char>(shared), {}));
    }
    torch::NoGradGuard no_grad;
    group_->broadcast(trainer.params().data(), 0);
    spdlog::info("site {}: rank {} of {} from step {}, outer sync every {} steps on rank 0", site_,
                 group_->rank(), group_->size(), trainer.step(), inner_steps_);
  }

  void after_backward(Trainer& trainer) override { ddp_->after_backward(trainer); }

  void after_step(Trainer& trainer, nlohmann::json& record) override {
    ddp_->after_step(trainer, record);  // record["loss"] is now the site's mean
    record["site_bytes_up"] = record.at("bytes_up");
    record["site_bytes_down"] = record.at("bytes_down");
    record.erase("bytes_up");
    record.erase("bytes_down");
    const int64_t step_done = trainer.step();  // rank 0's sync may move it (elastic rounds)
    if (outer_) outer_->after_step(trainer, record);
    // Elastic rounds end when rank 0 says so (a sync may move the step, a round may last
    // seconds): it tells its ranks after every step.
    // Otherwise at the steps where rank 0 may have synced: the end of a round, and for streaming
    // DiLoCo also its delayed result (sync.streaming.delay_steps later).
    const int64_t k = step_done % round_steps_;
    if (!elastic_ && k != 0 && k != delay_steps_) return;

    // Rank 0 synced with the other sites (its round; -1: no sync, e.g. a lone site training on):
    // every rank takes its parameters, its step (elastic rounds move it), whether the run is
    // over and rank 0's next data lease (the coordinator gave it one for the whole site).
    std::string said;
    if (outer_) {
      // Elastic rounds may run more steps than a round's lease holds (a lone site, rounds by
      // seconds): rank 0 claims the next one before its ranks need it, and they take it below.
      DataLoader& loader = trainer.loader();
      if (elastic_ && loader.leased() &&
          loader.lease().size() - loader.lease_offset() < group_->size() * step_windows_)
        outer_->refill_data(trainer);
      said = (record.contains("round") && !record.contains("lone") ? record.at("round").dump()
                                                                   : std::string("-1")) +
             " " + std::to_string(trainer.step()) + " " + (outer_->run_over() ? "1" : "0") + "\n" +
             trainer.loader().lease().to_text();
    }
    const std::string shared = group_->share(0, "sync/" + std::to_string(++shares_), said, wait_);
    const size_t cut = shared.find('\n');
    std::istringstream head(shared.substr(0, cut));
    int64_t round = -1, step = trainer.step(), over = 0;
    head >> round >> step >> over;
    run_over_ = over != 0;
    if (!outer_ && cut != std::string::npos) {  // a new lease: rank 0 synced or refilled
      DataLease lease = DataLease::from_text(shared.substr(cut + 1));
      if (lease.id != trainer.loader().lease().id)
        trainer.loader().set_lease(lease, 0, group_->rank(), group_->size());
    }
    if (round < 0) return;
    if (!outer_) trainer.set_position(step, std::nullopt);
    auto& params = trainer.params().data();
    double start = now_s();
    {
      torch::NoGradGuard no_grad;
      group_->broadcast(params, 0);
    }
    record["bcast_s"] = now_s() - start;
    record["bcast_bytes"] = params.numel() * int64_t(params.element_size());
    record["round"] = round;
    record["worker"] = site_;
    record["param_checksum"] = param_checksum(params);
  }

  void finish(Trainer& trainer) override {
    if (outer_) outer_->finish(trainer);
  }

  bool is_primary() const override { return group_->rank() == 0; }
  bool elastic() const override { return elastic_; }
  bool run_over() const override { return run_over_; }

 private:
  // This rank's share of the site's lease, from its start (rank 0 has just claimed it).
  void take_lease(Trainer& trainer, const std::string& text) {
    trainer.loader().set_lease(DataLease::from_text(text), 0, group_->rank(), group_->size());
  }

  std::shared_ptr<ProcessGroup> group_;
  std::unique_ptr<Sync> ddp_, outer_;
  std::string site_;
  int64_t inner_steps_;
  int64_t round_steps_, delay_steps_;  // steps between rank 0's rounds; streaming's delay
  const bool elastic_;
  const int64_t step_windows_;  // windows one rank reads per step
  bool run_over_ = false;
  int64_t shares_ = 0;  // the store keys of the syncs' shares, the same sequence on every rank
  std::chrono::milliseconds wait_;
};

const SiteConfig& find_site(const Config& config, const std::string& name) {
  const auto& sites = config.sync.sites;
  if (sites.empty())
    throw ConfigError(
        "--site " + name +
        ": sync.sites is empty; list the sites there (e.g. --set sync.sites=a:2,b:2)");
  auto it =
      std::find_if(sites.begin(), sites.end(), [&](const SiteConfig& s) { return s.name == name; });
  if (it != sites.end()) return *it;
  std::string names;
  for (const auto& s : sites) names += (names.empty() ? "" : ", ") + s.name;
  throw ConfigError("--site " + name + " is not in sync.sites (" + names + ")");
}

}  // namespace

std::unique_ptr<Sync> make_hybrid_sync(const Config& config, std::shared_ptr<ProcessGroup> group,
                                       std::unique_ptr<Sync> outer, const std::string& site) {
  return std::make_unique<HybridSync>(config, std::move(group), std::move(outer), site);
}

SiteRun run_site(const Config& config, const std::string& name, const OuterFactory& make_outer,
                 bool rejoin) {
  const SiteConfig& site = find_site(config, name);
  DistEnv env = read_dist_env(site.ranks, std::getenv, "sync.sites[" + name + "].ranks");
  SiteRun out;
  out.rank = env.rank, out.ranks = env.world_size;
  if (config.sync.sites.size() == 1) {  // nothing between sites: plain DDP, no coordinator
    auto sync = make_ddp_sync(config, env);
    Trainer trainer(ddp_rank_config(config, env), rejoin ? RunStart::kResume : RunStart::kFresh,
                    env.rank, env.world_size, std::move(sync));
    out.summary = trainer.run();
    return out;
  }
  // The process group first, so that a bad variable or a taken port fails before the coordinator.
  std::shared_ptr<ProcessGroup> group = site.ranks > 1 ? open_process_group(config, env) : nullptr;
  JoinInfo join;
  std::unique_ptr<Sync> outer;
  if (env.rank == 0) {
    auto client = std::make_shared<CoordinatorClient>(config.sync.coordinator.address,
                                                      config.sync.coordinator, config.sync.link);
    join = client->join(name, GPT(config.model)->num_params());
    join.site_ranks = site.ranks;
    spdlog::info("site {}: joined at round {}, data shard {} of {}", name, join.round, join.shard,
                 join.num_shards);
    outer = make_outer(config, client, join);
  }
  const RunStart start = rejoin ? RunStart::kRejoin : RunStart::kFresh;
  if (!group) {  // a site of one rank: a plain DiLoCo worker
    Trainer trainer(config, start, join.shard, join.num_shards, std::move(outer));
    out.summary = trainer.run();
    return out;
  }
  std::istringstream shared(
      group->share(0, "join", std::to_string(join.shard) + " " + std::to_string(join.num_shards),
                   rank0_wait(config)));
  int64_t shard = 0, num_shards = 1;
  shared >> shard >> num_shards;
  Trainer trainer(ddp_rank_config(config, env), start, shard + num_shards * env.rank,
                  num_shards * env.world_size,
                  make_hybrid_sync(config, group, std::move(outer), name));
  out.summary = trainer.run();
  return out;
}

}  // namespace loco
