// One round's exchange with the coordinator on a thread of its own, for the methods that train
// on while it runs (private to src/sync): streaming DiLoCo (a fragment's push and its aggregate,
// applied delay_steps later) and DiLoCo with a delayed outer step (the whole update, applied a
// round later). The thread does the push, then the pull of the round's encoded aggregate; the
// trainer's thread waits for it when it needs the result.
#pragma once

#include <nlohmann/json.hpp>

#include <exception>
#include <thread>
#include <vector>

#include "loco/coord_client.h"
#include "loco/progress.h"

namespace loco {

class BackgroundExchange {
 public:
  // Starts pushing `update` (for round update.round) and then pulling that round's aggregate,
  // laid out as `layout` (which must outlive the exchange).
  BackgroundExchange(CoordinatorClient& client, Update update,
                     const std::vector<TensorLayout>& layout, double pull_timeout_s)
      : round(update.round), start_s(now_s()), link_start_s(client.link_wait_s()) {
    thread_ = std::thread([this, &client, &layout, pull_timeout_s, u = std::move(update)] {
      try {
        up = client.push(u);
        down = client.pull_aggregate(round + 1, layout, aggregate, pull_timeout_s);
      } catch (...) {
        error_ = std::current_exception();
      }
      done_s = now_s();
    });
  }
  ~BackgroundExchange() {
    if (thread_.joinable()) thread_.join();
  }
  BackgroundExchange(const BackgroundExchange&) = delete;
  BackgroundExchange& operator=(const BackgroundExchange&) = delete;

  // Waits for the exchange to end; returns the seconds waited. Rethrows what failed (RpcError
  // for the coordinator's refusals and an unreachable coordinator).
  double wait() {
    const double start = now_s();
    if (thread_.joinable()) thread_.join();
    const double waited = now_s() - start;
    if (error_) std::rethrow_exception(error_);
    return waited;
  }

  // The sync's fields of the step's metrics (docs/streaming.md "What the metrics say"): the round
  // the result brought (down.round), bytes, exchange_s (push and pull on the thread), sync_s
  // (what the exchange held training up: encoding, `waited`, decoding), idle_s (`blocking`,
  // the exchange ran while training waited: the coordinator's wait for the slowest member;
  // otherwise `waited`), codec_s, the link's shaping, the worker.
  void record(nlohmann::json& out, double waited, bool blocking,
              const CoordinatorClient& client) const {
    out["round"] = down.round;
    out["bytes_up"] = up;
    out["bytes_down"] = down.wire_bytes;
    out["exchange_s"] = done_s - start_s;
    out["sync_s"] = codec_s + waited;
    out["idle_s"] = blocking ? down.wait_s : waited;
    out["codec_s"] = codec_s;
    if (!client.link_record().is_null()) {
      out["link"] = client.link_record();
      out["link_s"] = client.link_wait_s() - link_start_s;
    }
    out["worker"] = client.worker_id();
  }

  const int64_t round;
  const double start_s, link_start_s;
  double codec_s = 0;  // the trainer thread's encoding and decoding for this round
  // Filled in by the thread, read after wait():
  uint64_t up = 0;
  PullResult down;
  std::vector<Encoded> aggregate;
  double done_s = 0;

 private:
  std::exception_ptr error_;
  std::thread thread_;  // last: starts once everything above is in place
};

}  // namespace loco
