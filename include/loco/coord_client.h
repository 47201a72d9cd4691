// The worker's side of the coordinator protocol: join (retrying with backoff while the
// coordinator is unreachable), heartbeats, streamed pushes and pulls, leave. gRPC stays inside
// src/coord/client.cpp.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loco/config.h"
#include "loco/coordinator.h"

namespace loco {

struct PullResult {
  int64_t round = 0;
  uint64_t wire_bytes = 0;  // serialized bytes of every message received
  double wait_s = 0;        // time the coordinator held the call for the round to close
};

class CoordinatorClient {
 public:
  CoordinatorClient(const std::string& address, const CoordinatorConfig& config);
  ~CoordinatorClient();

  JoinInfo join(const std::string& name, int64_t num_params);
  void heartbeat();  // throws on failure
  void leave();
  // Streams the update; returns the serialized bytes sent. Throws std::runtime_error with the
  // coordinator's status message on refusal.
  uint64_t push(Update update);
  // Waits for `round` and copies the global parameters into `flat` (laid out as `layout`).
  PullResult pull(int64_t round, const std::vector<TensorLayout>& layout, torch::Tensor& flat,
                  double timeout_s);
  const std::string& worker_id() const { return worker_id_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  CoordinatorConfig config_;
  std::string address_, worker_id_;
};

}  // namespace loco
