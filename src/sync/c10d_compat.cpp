// c10d behind loco's ProcessGroup (see include/loco/c10d_compat.h). The only file that includes
// c10d headers; `#if TORCH_VERSION_MAJOR >= 2` marks where LibTorch 1.13 and 2.x differ.
// CMake compiles it with USE_C10D_GLOO (and USE_C10D_NCCL for a CUDA LibTorch), the guards
// c10d's own headers expect.
#include "loco/c10d_compat.h"

#include <torch/version.h>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace loco {
namespace {

#if TORCH_VERSION_MAJOR >= 2
using Backend = ::c10d::Backend;  // 2.x: Gloo and NCCL are Backends under a ProcessGroup
#else
using Backend = ::c10d::ProcessGroup;  // 1.13: they are ProcessGroups themselves
#endif

using Clock = std::chrono::steady_clock;

// The first line of a c10d or Gloo message, without c10's backtrace or Gloo's "[file:line] ".
std::string detail(const std::exception& e) {
  auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string msg = c10 ? c10->what_without_backtrace() : e.what();
  msg = msg.substr(0, msg.find('\n'));
  if (!msg.empty() && msg[0] == '[' && msg.find("] ") != std::string::npos)
    msg = msg.substr(msg.find("] ") + 2);
  return msg;
}

std::string seconds(std::chrono::milliseconds t) {
  return std::to_string(std::lround(double(t.count()) / 1e3)) + " s";
}

bool is_loopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "localhost" || addr == "::1";
}

c10::intrusive_ptr<::c10d::Store> make_store(const DistEnv& env,
                                             std::chrono::milliseconds timeout) {
  if (env.world_size == 1) return c10::make_intrusive<::c10d::HashStore>();
  ::c10d::TCPStoreOptions opts;
  opts.port = uint16_t(env.master_port);
  opts.isServer = env.rank == 0;
  opts.numWorkers = size_t(env.world_size);
  opts.waitWorkers = false;  // the backend's own rendezvous waits for every rank
  opts.timeout = timeout;
  std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  try {
    return c10::make_intrusive<::c10d::TCPStore>(env.master_addr, opts);
  } catch (const std::exception& e) {
    std::string port = "MASTER_PORT " + std::to_string(env.master_port);
    if (opts.isServer && detail(e).find("in use") != std::string::npos)
      throw DistError(port + " is in use on rank 0's host: set MASTER_PORT to a free port");
    if (opts.isServer)
      throw DistError("rank 0 could not listen on " + port + " (" + detail(e) + ")");
    throw DistError("could not reach rank 0 at " + where + " within " + seconds(timeout) + " (" +
                    detail(e) + "); check that rank 0 runs and MASTER_ADDR/MASTER_PORT name it");
  }
}

// Gloo binds each rank to one address that the others must reach: GLOO_SOCKET_IFNAME's when set
// (as in PyTorch), loopback for a local run, else the address this host's name resolves to.
std::shared_ptr<::gloo::transport::Device> make_gloo_device(const DistEnv& env) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
    return ::c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (env.world_size == 1 || is_loopback(env.master_addr))
    return ::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return ::c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<Backend> make_backend(const c10::intrusive_ptr<::c10d::Store>& store,
                                         const DistEnv& env, const torch::Device& device,
                                         std::chrono::milliseconds timeout) {
  if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
    auto opts = ::c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    return c10::make_intrusive<::c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, opts);
#else
    throw DistError("train.device is " + device.str() +
                    " but this LibTorch was built without NCCL; use train.device=cpu (Gloo) or "
                    "a CUDA LibTorch (-DTorch_DIR=...)");
#endif
  }
  auto opts = ::c10d::ProcessGroupGloo::Options::create(timeout);
  opts->devices.push_back(make_gloo_device(env));
  return c10::make_intrusive<::c10d::ProcessGroupGloo>(store, env.rank, env.world_size, opts);
}

}  // namespace

struct ProcessGroup::Impl {
  c10::intrusive_ptr<::c10d::Store> store;
  c10::intrusive_ptr<Backend> backend;
  int rank = 0, size = 1;
  std::chrono::milliseconds timeout{0};

  // Waits for every work item, all within one timeout from now.
  void wait_all(std::vector<c10::intrusive_ptr<::c10d::Work>>& works, const char* what) {
    auto deadline = Clock::now() + timeout;
    for (auto& work : works) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      try {
        work->wait(std::max(left, std::chrono::milliseconds(1)));
      } catch (const std::exception& e) {
        throw DistError(std::string(what) + " failed on rank " + std::to_string(rank) +
                        ": another rank died or stopped answering (" + detail(e) +
                        "; sync.timeout_s is " + seconds(timeout) + ")");
      }
    }
  }
};

std::unique_ptr<ProcessGroup> ProcessGroup::create(const DistEnv& env, const torch::Device& device,
                                                   std::chrono::milliseconds timeout) {
  auto impl = std::make_unique<Impl>();
  impl->rank = env.rank;
  impl->size = env.world_size;
  impl->timeout = timeout;
  impl->store = make_store(env, timeout);
  try {
    impl->backend = make_backend(impl->store, env, device, timeout);
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistError("rank " + std::to_string(env.rank) + ": not all " +
                    std::to_string(env.world_size) + " ranks joined within " + seconds(timeout) +
                    " (" + detail(e) + "); start every rank with the same MASTER_ADDR/MASTER_PORT");
  }
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(std::move(impl)));
}

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  std::vector<c10::intrusive_ptr<::c10d::Work>> works;
  for (auto& t : tensors) {
    std::vector<at::Tensor> one{t};
    works.push_back(impl_->backend->allreduce(one));
  }
  impl_->wait_all(works, "all-reduce");
}

void ProcessGroup::broadcast(torch::Tensor& tensor, int root) {
  std::vector<at::Tensor> one{tensor};
  ::c10d::BroadcastOptions opts;
  opts.rootRank = root;
  std::vector<c10::intrusive_ptr<::c10d::Work>> works{impl_->backend->broadcast(one, opts)};
  impl_->wait_all(works, "broadcast");
}

std::string ProcessGroup::share(int root, const std::string& key, const std::string& value,
                                std::chrono::milliseconds timeout) {
  const std::string k = "loco/share/" + key;
  try {
    if (impl_->rank == root) {
      impl_->store->set(k, std::vector<uint8_t>(value.begin(), value.end()));
      return value;
    }
    impl_->store->wait({k}, timeout);
    auto bytes = impl_->store->get(k);
    return std::string(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    throw DistError("rank " + std::to_string(impl_->rank) + " waited for rank " +
                    std::to_string(root) + " (" + key +
                    ") in vain: it died or did not come within " + seconds(timeout) + " (" +
                    detail(e) + ")");
  }
}

int ProcessGroup::rank() const {
  return impl_->rank;
}
int ProcessGroup::size() const {
  return impl_->size;
}
std::string ProcessGroup::backend() const {
  return impl_->backend->getBackendName();
}

}  // namespace loco
