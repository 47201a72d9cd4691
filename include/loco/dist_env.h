// Where this process stands in a multi-process run, read from the torchrun-style environment.
//
//   RANK              this process's rank, 0 .. WORLD_SIZE-1            (required when W > 1)
//   WORLD_SIZE        number of processes; must equal sync.workers      (required when W > 1)
//   LOCAL_RANK        rank on this host; picks cuda:LOCAL_RANK           (default: RANK)
//   LOCAL_WORLD_SIZE  processes on this host                            (default: WORLD_SIZE)
//   MASTER_ADDR       address of rank 0, which serves the rendezvous   (required when W > 1)
//   MASTER_PORT       TCP port rank 0 listens on                        (required when W > 1)
//
// torchrun, `loco launch`, and a Slurm or Kubernetes wrapper that exports these all work. With
// none of them set and sync.workers == 1 the process is rank 0 of 1. Every mistake is a
// ConfigError whose one line says what to set.
//
// In a multi-site run the variables describe the process's own site (docs/multisite.md):
// WORLD_SIZE is the site's rank count (sync.sites[NAME].ranks), RANK the rank within the site,
// MASTER_ADDR/MASTER_PORT the site's rank 0.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>

namespace loco {

struct DistEnv {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_world_size = 1;
  std::string master_addr;  // empty only for a world of one
  int master_port = 0;
};

// Reads the variables through `lookup` (std::getenv unless a test passes its own) and checks
// them against `workers`, the count that config key `key` sets (sync.workers, or a site's
// sync.sites[NAME].ranks); the messages name that key.
DistEnv read_dist_env(int64_t workers,
                      const std::function<const char*(const char*)>& lookup = std::getenv,
                      const std::string& key = "sync.workers");

}  // namespace loco
