// `loco coordinator` and `loco worker`: the processes of a coordinated run, and how they stop.
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#include "commands.h"
#include "loco/checkpoint.h"
#include "loco/coord_client.h"
#include "loco/coord_service.h"
#include "loco/diloco.h"
#include "loco/hybrid.h"
#include "loco/run_dir.h"
#include "loco/trainer.h"

using loco::cli::load_config;

namespace {

std::atomic<bool> g_stop{false};
void request_stop(int) {
  g_stop = true;
}
std::atomic<bool> g_pause{false};  // SIGUSR1 to the coordinator: the run ends after this round
void request_pause(int) {
  g_pause = true;
}

// SIGTERM or SIGINT (a schedule stopping this worker or site, Ctrl-C) makes a DiLoCo worker, or
// a site's rank 0, leave the coordinator at once, so its round closes without waiting for the
// lease to lapse; every such process then exits with 128 + the signal. The handler only posts a
// semaphore (whichever thread the signal lands on: libraries start threads before main that
// block nothing); a thread of its own waits on it, leaves, and exits.
// A lone member (sync.lone train, training alone) first hands over its work since its anchor
// (loco::StopRequest): its training thread pushes it at the next step and ends the run; this
// thread waits up to kHandOverWaitS for that before leaving and exiting anyway. The other ranks
// of a site with sync.lone train wait as long for their rank 0 to end the site's training.
constexpr int kHandOverWaitS = 30;
sem_t g_stop_sem;
volatile sig_atomic_t g_stop_signal = 0;
std::mutex g_leave_mu;
std::shared_ptr<loco::CoordinatorClient> g_leave_client;  // null until it joined (or never)
std::shared_ptr<loco::StopRequest> g_stop_request;        // null: nothing to hand over
bool g_wait_for_rank0 = false;                            // a site rank, sync.lone train

void post_stop(int sig) {
  g_stop_signal = sig;
  ::sem_post(&g_stop_sem);
}

// The coordinator this process leaves on a stop signal.
void leave_on_stop(std::shared_ptr<loco::CoordinatorClient> client) {
  std::lock_guard<std::mutex> lock(g_leave_mu);
  g_leave_client = std::move(client);
}

// The strategy of a member that may hand over its work on a stop signal (loco::StopRequest).
std::unique_ptr<loco::Sync> hand_over_on_stop(std::unique_ptr<loco::Sync> sync) {
  auto stop = std::make_shared<loco::StopRequest>();
  sync->watch_stop(stop);
  std::lock_guard<std::mutex> lock(g_leave_mu);
  g_stop_request = std::move(stop);
  return sync;
}

// Installs the handler and starts the waiting thread; `who` names the process in its last line.
void exit_cleanly_on_stop_signals(const std::string& who) {
  ::sem_init(&g_stop_sem, 0, 0);
  struct sigaction sa {};
  sa.sa_handler = post_stop;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  std::thread([who] {
    while (::sem_wait(&g_stop_sem) != 0) {
    }
    const int sig = g_stop_signal;
    std::shared_ptr<loco::CoordinatorClient> client;
    std::shared_ptr<loco::StopRequest> stop;
    bool wait_for_rank0;
    {
      std::lock_guard<std::mutex> lock(g_leave_mu);
      client = g_leave_client, stop = g_stop_request, wait_for_rank0 = g_wait_for_rank0;
    }
    std::string id = client ? client->worker_id() : "";
    const bool hand_over = stop && stop->can_hand_over;
    if (hand_over) stop->requested = true;
    spdlog::info("{}{}: stopping on {}{}", who, who == "worker" && !id.empty() ? " " + id : "",
                 ::strsignal(sig),
                 hand_over        ? "; handing over the work trained alone first"
                 : client         ? "; leaving the coordinator"
                 : wait_for_rank0 ? "; waiting for the site's rank 0"
                                  : "");
    // The training thread ends the process (exit status 0) once it has handed over; a site's
    // rank 0 that joins after the signal leaves at once (run_site_worker).
    if (hand_over || wait_for_rank0)
      std::this_thread::sleep_for(std::chrono::seconds(kHandOverWaitS));
    if (client) client->leave();
    std::_Exit(128 + sig);
  }).detach();
}

// One process of a multi-site run (include/loco/hybrid.h); its rank 0 leaves the coordinator on
// a stop signal.
int run_site_worker(const loco::Config& config, const std::string& site, bool rejoin) {
  exit_cleanly_on_stop_signals("site " + site);
  {
    std::lock_guard<std::mutex> lock(g_leave_mu);
    g_wait_for_rank0 = config.sync.lone == "train";  // rank 0 (below) may hand over first
  }
  auto make_outer = [](const loco::Config& c, std::shared_ptr<loco::CoordinatorClient> client,
                       const loco::JoinInfo& join) {
    {
      std::lock_guard<std::mutex> lock(g_leave_mu);
      // A stop that came while rank 0 was joining (the coordinator slow to come up): it has
      // trained nothing, so it leaves now rather than train alone until the signal's thread
      // gives up and the work is lost with the process.
      if (g_stop_signal != 0) {
        client->leave();
        std::_Exit(128 + g_stop_signal);
      }
      g_leave_client = client;
      g_wait_for_rank0 = false;  // this is rank 0
    }
    return hand_over_on_stop(loco::make_coordinated_sync(c, std::move(client), join));
  };
  auto r = loco::run_site(config, site, make_outer, rejoin);
  const auto& s = r.summary;
  std::cout << "done: site " << site << " rank " << r.rank << " of " << r.ranks << ", " << s.steps
            << " steps, " << s.tokens << " tokens";
  if (r.rank == 0) std::cout << "; final val loss " << s.final_eval.loss;
  std::cout << "\nmetrics:    " << s.metrics_path << "\n";
  return 0;
}

}  // namespace

int loco::cli::run_coordinator(const std::string& config_path,
                               const std::vector<std::string>& overrides, bool resume) {
  auto config = load_config(config_path, overrides);
  struct sigaction sa {};
  sa.sa_handler = request_stop;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  sa.sa_handler = request_pause;
  ::sigaction(SIGUSR1, &sa, nullptr);
  return loco::run_coordinator(config, resume, g_stop, &g_pause);
}

namespace {

// A worker restarted with --resume: its newest checkpoint, which it resumes from exactly when it
// can (Sync::resume_from); none when it has none or it does not load (it rejoins as before).
struct OwnCheckpoint {
  std::shared_ptr<const loco::Checkpoint> checkpoint;
  std::string path;
};

OwnCheckpoint own_checkpoint(const std::string& run_dir) {
  auto all = loco::list_checkpoints((std::filesystem::path(run_dir) / "checkpoints").string());
  if (all.empty()) return {};
  try {
    return {std::make_shared<const loco::Checkpoint>(loco::load_checkpoint(all.back())),
            all.back()};
  } catch (const loco::CheckpointError& e) {
    spdlog::warn("worker: {}; rejoining without it", e.what());
    return {};
  }
}

// The data slot the checkpoint's session read, asked for again (-1: none recorded).
int32_t own_shard(const loco::Checkpoint* c) {
  if (!c) return -1;
  auto state = c->tensors.find("sync.state");
  return state == c->tensors.end() ? -1 : int32_t(state->second[2].item<int64_t>());
}

}  // namespace

// `rejoin` (--resume): this worker took part in the run before (restarted after a crash, or by
// the launcher for sync.schedule); its run.dir may hold its own checkpoints and goes on.
int loco::cli::run_worker(const std::string& config_path, std::vector<std::string> overrides,
                          const std::string& address, std::string name, const std::string& site,
                          bool rejoin) {
  if (!address.empty()) overrides.push_back("sync.coordinator.address=" + address);
  auto config = load_config(config_path, overrides);
  if (!loco::coordinated(config.sync.mode))
    throw loco::ConfigError(
        "sync.mode is '" + std::string(loco::mode_name(config.sync.mode)) +
        "'; `loco worker` runs sync.mode diloco, demo or streaming (use `loco train` "
        "otherwise)");
  if (!rejoin) loco::refuse_used_run_dir(config.run.dir);  // before it joins anything
  if (!site.empty()) {
    if (!name.empty())
      throw loco::ConfigError("--name " + name + " and --site " + site +
                              ": a site joins the coordinator under its own name; drop --name");
    return run_site_worker(config, site, rejoin);
  }
  if (!config.sync.sites.empty())
    throw loco::ConfigError(
        "sync.sites lists sites: start each of their ranks with --site NAME "
        "(or run them all with `loco launch`)");
  auto client = std::make_shared<loco::CoordinatorClient>(
      config.sync.coordinator.address, config.sync.coordinator, config.sync.link);
  exit_cleanly_on_stop_signals("worker");
  leave_on_stop(client);  // it leaves even while still joining
  if (name.empty()) {
    char host[256] = "host";
    ::gethostname(host, sizeof(host) - 1);
    name = std::string(host) + ":" + std::to_string(::getpid());
  }
  int64_t num_params = loco::GPT(config.model)->num_params();
  OwnCheckpoint own = rejoin ? own_checkpoint(config.run.dir) : OwnCheckpoint{};
  auto join = client->join(name, num_params, own_shard(own.checkpoint.get()));
  spdlog::info("worker {}: joined at round {}, data shard {} of {}", join.worker_id, join.round,
               join.shard, join.num_shards);
  auto sync = loco::make_coordinated_sync(config, client, join);
  if (own.checkpoint) sync->resume_from(std::move(own.checkpoint), own.path);  // start() drops it
  loco::Trainer trainer(config, rejoin ? loco::RunStart::kRejoin : loco::RunStart::kFresh,
                        join.shard, join.num_shards, hand_over_on_stop(std::move(sync)));
  auto s = trainer.run();
  std::cout << "done: worker " << join.worker_id << ", " << s.steps << " steps, " << s.tokens
            << " tokens; final val loss " << s.final_eval.loss << "\nmetrics:    " << s.metrics_path
            << "\n";
  return 0;
}
