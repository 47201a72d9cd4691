// DDP, the baseline (sync.mode: ddp): every step the gradients of all ranks are averaged through a
// c10d all-reduce, then every rank takes the same optimizer step; the replicas stay identical.
//
// W ranks with batch b train exactly as one process with batch W*b and the same seed: rank r's
// loader takes the windows r, r+W, ... of each step (loader.h), start() broadcasts rank 0's
// parameters, and after_backward() sums the flat gradient in buckets of sync.bucket_mb MiB (all
// in flight together) and divides it by W. A rank that dies or hangs makes the others fail with a
// DistError after at most sync.timeout_s.
//
// Files: rank 0 writes into run.dir exactly as a single run does (config.yaml, metrics.jsonl,
// checkpoints/, the evaluations); rank r > 0 writes its config.yaml and metrics.jsonl into
// run.dir/rank-r, whose checkpoints/ links to rank 0's, so --resume restores every rank from the
// same checkpoint.
//
// Step metrics (every rank): loss is the mean over all ranks (as one process with batch W*b would
// log it) and rank_loss this rank's own; allreduce_bytes the gradient bytes reduced (the bucket
// sizes summed); bytes_up = bytes_down = 2(W-1)/W * allreduce_bytes, a ring all-reduce's traffic
// per rank; wire_bytes_sent what this process really wrote to its sockets during the all-reduce
// (Gloo on Linux only); comm_s the seconds spent in it; param_checksum (checkpoint.h) FNV-1a of
// the parameters, equal on every rank while the replicas agree.
//
// At the end rank 0 writes run.dir/summary.json (Trainer): the ring traffic its lines counted,
// all ranks, and what DDP sends by include/loco/bytes.h's formula (ratio_vs_ddp 1 when the
// buckets held the 4N-byte fp32 gradient); `loco compare` reads the ratios there.
#pragma once

#include <torch/types.h>

#include <memory>

#include "loco/config.h"
#include "loco/dist_env.h"
#include "loco/sync.h"

namespace loco {

class ProcessGroup;

// Joins the process group of `env` (blocking until every rank arrived, at most sync.timeout_s;
// Gloo, or NCCL for train.device cuda). Throws DistError (port in use, rendezvous timeout).
std::shared_ptr<ProcessGroup> open_process_group(const Config& config, const DistEnv& env);

// The DDP strategy for this rank of `group` (which other strategies may share: a multi-site run
// broadcasts over it too). No sync.link: the ranks of a site share a fast interconnect.
std::unique_ptr<Sync> make_ddp_sync(const Config& config, std::shared_ptr<ProcessGroup> group);

// open_process_group, then make_ddp_sync; plain DDP (no sync.sites) with a sync.link sleeps after
// each step's all-reduce what the link would have taken (ddp_link_seconds in loco/link.h) and
// records "link" and "link_s" (part of comm_s) in the metrics.
std::unique_ptr<Sync> make_ddp_sync(const Config& config, const DistEnv& env);

// The config this rank trains with: run.dir as described above (creating run.dir/rank-r and its
// checkpoints link for r > 0), train.device "cuda" made cuda:LOCAL_RANK, and train.eval_batches
// times W, so that rank 0 evaluates the very windows one process with batch W*b would.
Config ddp_rank_config(const Config& config, const DistEnv& env);

}  // namespace loco
