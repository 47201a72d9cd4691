// `loco launch`: a whole experiment as local processes — the coordinator and sync.workers
// workers (diloco), sync.workers ranks (ddp, with torchrun-style variables), or one trainer
// (single). Each output line is prefixed with its origin ("[coord]", "[w2]", "[r1]"). Ctrl-C or
// the failure of any part stops the rest; the exit code is non-zero if any part failed.
// --dry-run prints the commands that run the same experiment across hosts instead.
#pragma once

#include <string>
#include <vector>

namespace loco {

struct LaunchOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // --set key=value, passed on to every part
  bool dry_run = false;
};

int launch(const LaunchOptions& options);

// A TCP port on loopback that is free right now (for local rendezvous and tests).
int free_port();

}  // namespace loco
