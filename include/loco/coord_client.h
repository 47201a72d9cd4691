// The worker's side of the coordinator protocol: join (retrying with backoff while the
// coordinator is unreachable), heartbeats, streamed pushes and pulls, leave. Every call carries
// the shared secret of sync.coordinator.secret_file when set; the channel is TLS when tls.ca or
// tls.cert is set (docs/security.md). With a sync.link, pushes and pulls are paced and delayed
// as include/loco/link.h says. gRPC stays inside src/coord/.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <string>
#include <vector>

#include "loco/config.h"
#include "loco/data_lease.h"
#include "loco/protocol.h"

namespace loco {

// A call that failed: refused by the coordinator or never answered. `code` tells a worker what it
// can do about it: kUnavailable (unreachable, timed out: rejoin once it is back), kNotFound (it
// does not know this worker: rejoin), kFailedPrecondition (e.g. the round closed without this
// push: pull the current state), kOther (a real refusal).
struct RpcError : std::runtime_error {
  enum Code { kUnavailable, kNotFound, kFailedPrecondition, kOther };
  RpcError(Code c, const std::string& message) : std::runtime_error(message), code(c) {}
  Code code;
};

struct PullResult {
  int64_t round = 0;
  uint64_t wire_bytes = 0;  // serialized bytes of every message received
  double wait_s = 0;        // time the coordinator held the call for the round to close
  uint64_t checksum = 0;    // aggregates in diloco: FNV-1a of the new parameters
  int64_t last_round = 0;   // the run's last round as the coordinator saw it (a pause lowers it)
};

class CoordinatorClient {
 public:
  // `link`: the slow link this worker's pushes and pulls go through (include/loco/link.h); the
  // default is unlimited.
  CoordinatorClient(const std::string& address, const CoordinatorConfig& config,
                    const LinkConfig& link = {});
  ~CoordinatorClient();

  // `want_shard` (>= 0): the data slot asked for, when free (a worker resuming from its own
  // checkpoint asks for the one it had).
  JoinInfo join(const std::string& name, int64_t num_params, int32_t want_shard = -1);
  // Joins again under the last join's name (the coordinator restarted, or dropped this worker).
  JoinInfo rejoin();
  CoordinatorStatus status(double timeout_s = 5);
  void heartbeat();  // throws on failure
  // Leaves the coordinator, first stopping the data source (set_data_source) and telling the
  // coordinator how far this worker read its data lease. Best effort: the lease expires anyway.
  void leave();
  // The next data lease (docs/data.md, "Data in a coordinated run"): reports `consumed` windows
  // read of lease `lease_id`, asks for `want`, in a corpus of `windows` windows an epoch.
  // `resume`: the unread rest of an old lease asked back (ClaimRequest.resume); `round` (>= 0):
  // the round the data is for (ClaimRequest.round).
  DataLease claim_data(int64_t lease_id, int64_t consumed, int64_t want, int64_t windows,
                       const std::vector<LeaseRange>& resume = {}, int64_t round = -1);
  // What leave() calls to stop reading data and learn (lease id, windows read); null: none.
  void set_data_source(std::function<std::pair<int64_t, int64_t>()> stop_reading);
  // Streams the update (under this client's worker id, whatever update.worker_id says) from its
  // payloads in place; returns the serialized bytes sent. Throws std::runtime_error with the
  // coordinator's status message on refusal.
  uint64_t push(const Update& update);
  // Waits for `round` and copies the global parameters (kParams) or the replicas' consensus
  // (kConsensus) into `flat` (laid out as `layout`); with_velocity: `flat` holds twice as many
  // values and gets the outer momentum after the parameters.
  PullResult pull(int64_t round, const std::vector<TensorLayout>& layout, torch::Tensor& flat,
                  double timeout_s, PullKind kind = PullKind::kParams, bool with_velocity = false);
  // Waits for `round` and hands the global parameters to `sink(tensor, offset, bytes)` chunk by
  // chunk as they arrive (kChunkBytes at most; each checked to continue its tensor), keeping
  // nothing: `loco bench coordinator`'s simulated workers.
  using ChunkSink = std::function<void(uint32_t tensor, uint64_t offset, std::string_view bytes)>;
  PullResult pull_chunks(int64_t round, const std::vector<TensorLayout>& layout, double timeout_s,
                         const ChunkSink& sink);
  // Waits for `round` and fetches the encoded aggregate of the round that led to it.
  PullResult pull_aggregate(int64_t round, const std::vector<TensorLayout>& layout,
                            std::vector<Encoded>& out, double timeout_s);
  const std::string& worker_id() const { return worker_id_; }
  // What the transport shapes ({"mbps", "latency_ms", "shaping", ...}; null when unlimited) and
  // the seconds it has slept for the link so far.
  const nlohmann::json& link_record() const;
  double link_wait_s() const;

 private:
  struct PullSpec {
    int64_t round;
    PullKind kind;
    bool with_velocity;
    double timeout_s;
  };
  template <class CheckSpecs, class Sink>
  PullResult stream_pull(const PullSpec& spec, CheckSpecs check_specs, Sink sink);

  struct Impl;
  std::unique_ptr<Impl> impl_;
  CoordinatorConfig config_;
  std::string address_, worker_id_, name_;
  int64_t num_params_ = 0;
  int32_t shard_ = -1;  // from the last successful join
  std::mutex data_mu_;
  std::function<std::pair<int64_t, int64_t>()> stop_reading_;
};

}  // namespace loco
