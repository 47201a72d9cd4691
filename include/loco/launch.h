// `loco launch`: a whole experiment as local processes — the coordinator and sync.workers
// workers (diloco), sync.workers ranks (ddp, with torchrun-style variables), or one trainer
// (single). Each output line is prefixed with its origin ("[coord]", "[w2]", "[r1]"). A part
// that fails is restarted, left down or stops the rest by sync.on_failure (docs/faults.md);
// every start, exit, restart, give-up and stop goes into run.dir/launch_events.jsonl. Ctrl-C or
// SIGTERM stops every part (a second one kills them); the exit code is 0 when the run finished,
// 1 when a failure stopped it, 130 when interrupted.
// --resume continues a run that was stopped as a whole (every part as after a failure: the
// coordinator or trainer from its newest checkpoint, the workers rejoining); without it a run.dir
// that holds checkpoints is refused. --dry-run prints the commands that run the same experiment
// across hosts instead; --emit DIR writes them as scripts an operator runs on each machine or
// cluster (docs/multisite.md). With a sync.link (or --link), the launcher shapes it (docs/link.md):
// as root with ip and tc, each worker (or site) in a network namespace of its own, tc on its veth;
// otherwise the workers' transport paces itself; namespaces and veths go when the launch ends,
// however.
#pragma once

#include <string>
#include <vector>

namespace loco {

struct LaunchOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // --set key=value, passed on to every part
  bool dry_run = false;
  std::string emit_dir;    // --emit DIR: write the coordinator's and every site's scripts there
  std::string link;        // --link SPEC ("100mbit,50ms"): sync.link.mbps and latency_ms overrides
  std::string on_failure;  // --on-failure restart|continue|stop: overrides sync.on_failure
  bool resume = false;     // --resume: continue the run stopped in run.dir (docs/faults.md)
};

int launch(const LaunchOptions& options);

// A TCP port on loopback that is free right now (for local rendezvous and tests).
int free_port();

}  // namespace loco
