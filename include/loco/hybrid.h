// Multi-site runs (sync.sites, docs/multisite.md): DDP over c10d inside each site, the method
// between sites (sync.mode: diloco, or the decoupled demo) through the coordinator.
//
// A site process is `loco worker --site NAME` with the torchrun variables of its own site's
// process group (dist_env.h: WORLD_SIZE = the site's rank count, MASTER_* its rank 0). Every step
// the site all-reduces its gradients (the DDP strategy, ddp.h). Only the site's rank 0 is a
// member of the coordinator, under the site's name: it runs the outer strategy (diloco.h), and
// every sync.inner_steps steps, once that strategy has pushed and pulled, the site broadcasts
// rank 0's parameters so that all its ranks hold the same replica again. Inner optimizer state
// needs no broadcast: the DDP ranks' gradients, hence their optimizer steps, are identical.
//
// Shapes: one site of W ranks is plain DDP (nothing lies between sites: no coordinator, no outer
// step); W sites of one rank each are plain DiLoCo workers (no process group); every other shape
// takes the hybrid strategy below. A site of one rank may sit beside larger ones.
//
// Data: site s (the coordinator's shard s of S) with R ranks: rank r reads loader stream s + S*r
// of S*R (loader.h). All of them lie in shard s, so the whole run reads disjoint data, and with
// the same R everywhere each site reads exactly what one DiLoCo worker with batch R*b would.
//
// Files: rank 0 writes into run.dir as a DiLoCo worker does (`loco launch` sets run.dir to
// RUN/worker-k for site k), rank r > 0 into run.dir/rank-r (ddp_rank_config). Only rank 0
// evaluates and checkpoints; train.eval_batches is multiplied by R, as under DDP.
//
// Metrics, every rank, every step: DDP's (loss is the site's mean, rank_loss, allreduce_bytes,
// comm_s, wire_bytes_sent, param_checksum), its ring traffic renamed site_bytes_up and
// site_bytes_down. bytes_up/bytes_down keep their DiLoCo meaning, the traffic to the coordinator
// (rank 0, on sync steps). On sync steps every rank also logs round, worker (the site's name),
// bcast_s and bcast_bytes (the parameter broadcast), and param_checksum after the broadcast, so
// a site's ranks can be checked identical after every step.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "loco/config.h"
#include "loco/coord_client.h"
#include "loco/sync.h"
#include "loco/trainer.h"

namespace loco {

class ProcessGroup;

// Makes the outer (between-site) strategy of a site's rank 0: make_coordinated_sync (diloco.h).
using OuterFactory = std::function<std::unique_ptr<Sync>(
    const Config&, std::shared_ptr<CoordinatorClient>, const JoinInfo&)>;

// The strategy of one rank of a site of more than one rank: DDP over `group`; `outer` on rank 0
// (null on the others) every step, and after each of its syncs the broadcast of rank 0's
// parameters. `site` names the site in the metrics. With elastic rounds (sync.lone train,
// sync.round_seconds) rank 0 tells its ranks after every step whether it synced, their step and
// whether the run is over. The other ranks wait for rank 0's sync through the store, for at most
// sync.timeout_s + sync.coordinator.connect_timeout_s + 2 * sync.coordinator.round_timeout_s + 60
// s.
std::unique_ptr<Sync> make_hybrid_sync(const Config& config, std::shared_ptr<ProcessGroup> group,
                                       std::unique_ptr<Sync> outer, const std::string& site);

struct SiteRun {
  TrainSummary summary;
  int64_t rank = 0, ranks = 1;  // this process's rank in its site, and the site's rank count
};

// One process of site `site` from start to end: checks --site against sync.sites, reads the
// site's torchrun variables, joins the site's process group and (rank 0) the coordinator at
// sync.coordinator.address, trains. Start-up mistakes are one-line ConfigErrors or DistErrors.
// `rejoin` (`loco worker --site NAME --resume`, every rank of the site): the site took part in
// the run before and comes back as a whole; rank 0 joins again under the site's name, pulls the
// current state and hands it, with the step and data position, to its ranks before the first
// step. With a single site (plain DDP, no coordinator) it resumes from the newest checkpoint.
SiteRun run_site(const Config& config, const std::string& site, const OuterFactory& make_outer,
                 bool rejoin = false);

}  // namespace loco
