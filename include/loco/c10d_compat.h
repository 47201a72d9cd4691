// loco's one door to c10d, PyTorch's collective engine: a process group of the ranks of a run.
//
// Rendezvous goes through c10d's TCPStore (rank 0 serves it on MASTER_ADDR:MASTER_PORT, the
// others connect); collectives run on ProcessGroupGloo for CPU tensors and ProcessGroupNCCL for
// CUDA tensors (when LibTorch was built with NCCL). c10d's headers and class layout differ
// between LibTorch 1.13 and 2.x, so only src/sync/c10d_compat.cpp includes them; everything else
// sees this interface and builds against both.
//
// Every failure (a port in use, a peer that never came, a peer that died, a timeout) is a
// DistError with a one-line message.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "loco/dist_env.h"

namespace loco {

struct DistError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ProcessGroup {
 public:
  // Joins the env.world_size ranks. Blocks until every rank arrived, at most `timeout`; the same
  // timeout bounds every later collective. `device` picks the backend (cpu: Gloo, cuda: NCCL).
  // A world of one needs no network (an in-process store).
  static std::unique_ptr<ProcessGroup> create(const DistEnv& env, const torch::Device& device,
                                              std::chrono::milliseconds timeout);
  ~ProcessGroup();

  // Sums each tensor in place over all ranks. The tensors (contiguous, on the group's device)
  // are all in flight together; returns when every one is done.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  // Overwrites `tensor` on every rank with rank `root`'s.
  void broadcast(torch::Tensor& tensor, int root);
  // Rank `root` publishes `value` under `key` (each key once) and returns it; every other rank
  // waits for it, at most `timeout`, and returns it. Goes through the rendezvous store, not the
  // backend, so `timeout` may exceed the group's own: a site's ranks hold here while their rank 0
  // waits for the coordinator. A root that died fails the wait at once.
  std::string share(int root, const std::string& key, const std::string& value,
                    std::chrono::milliseconds timeout);

  int rank() const;
  int size() const;
  std::string backend() const;  // "gloo" | "nccl"

  struct Impl;

 private:
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loco
