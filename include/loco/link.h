// A slow link between each worker and the coordinator (sync.link, docs/link.md).
//
// Two ways to get one. `loco launch` as root shapes for real (src/launch/netns.h): each worker in
// its own network namespace, tc's tbf on both ends of its veth, netem for latency when the kernel
// has it. Everywhere else the worker's gRPC client paces its own pushes and pulls: a token bucket
// per direction at sync.link.mbps, and sync.link.latency_ms added once per push and per pull (a
// one-way, per-message latency, not a per-packet round trip). DDP's all-reduce runs inside Gloo,
// where no bucket can sit: there the link is modelled, one sleep per step (ddp_link_seconds).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "loco/config.h"

namespace loco {

// Paces a byte stream to `mbps` Mbit/s (10^6 bit/s). Tokens (bytes) accrue at the rate, at most
// `burst_bytes` of them while idle; take(n) spends n, and when that leaves the bucket in debt it
// sleeps until the debt is paid. So a stream of B bytes takes (B - burst) * 8 / rate seconds, the
// first burst passing at once as tc's tbf lets it. Thread-safe: concurrent takers queue behind
// each other's debt, as packets would on one link.
class TokenBucket {
 public:
  static constexpr double kDefaultBurstBytes = 16 * 1024;
  explicit TokenBucket(double mbps, double burst_bytes = kDefaultBurstBytes);
  // Spends `bytes`, sleeping as long as the link needs to carry them; returns the seconds slept.
  double take(uint64_t bytes);
  double bytes_per_s() const { return bytes_per_s_; }

 private:
  using Clock = std::chrono::steady_clock;
  std::mutex mu_;
  const double bytes_per_s_, burst_;
  double tokens_;
  Clock::time_point last_;
};

// What a process does about sync.link, and what the run records of it.
struct LinkPlan {
  bool pace = false;         // the transport paces bytes (token bucket)
  bool add_latency = false;  // the transport adds latency_ms once per push and pull
  nlohmann::json record;     // {"mbps", "latency_ms", "shaping", "bandwidth", "latency"}; null
                             // when the link is unlimited
};

// The environment variable `loco launch` sets for the processes it put in network namespaces:
// "1" when netem delays their packets, "0" when the kernel has no netem (the transport then adds
// the latency itself).
constexpr const char* kNetemEnv = "LOCO_LINK_NETEM";

// The plan of a worker or coordinator under `link`: shaping auto or token_bucket pace in the
// transport; netns (set by `loco launch` once its namespaces are up) leaves the bandwidth to tc
// and the latency to netem when kNetemEnv says it has it.
LinkPlan plan_link(const LinkConfig& link);

// The shaping of one worker's transport: up and down token buckets and the per-message latency.
// Unlimited (a no-op) when the plan paces nothing.
class LinkShaper {
 public:
  explicit LinkShaper(const LinkConfig& link);
  void latency();                 // once per push or pull: sleeps latency_ms when the plan says so
  void sent(uint64_t bytes);      // after writing a message of `bytes`
  void received(uint64_t bytes);  // after reading a message of `bytes`
  double waited_s() const;        // seconds slept so far, for the metrics
  const LinkPlan& plan() const { return plan_; }

 private:
  LinkPlan plan_;
  double latency_s_ = 0;
  std::unique_ptr<TokenBucket> up_, down_;
  mutable std::mutex mu_;
  double waited_s_ = 0;
};

// DDP, modelled: the seconds one step's all-reduce of `bytes` over `world` ranks would take on
// the link, as a ring sends it: 2(W-1)/W * bytes each way at mbps, plus 2(W-1) one-way latencies
// (the ring's steps). 0 for one rank or an unlimited link.
double ddp_link_seconds(const LinkConfig& link, int64_t bytes, int64_t world);

// `loco launch --link SPEC`: "100mbit,50ms", "1gbit", "20ms", "0" (unlimited) as --set overrides
// of sync.link.mbps and sync.link.latency_ms. Rates: kbit, mbit, gbit (tc's units, powers of
// ten; a bare number is Mbit/s); latency: us, ms, s. Throws ConfigError naming the flag.
std::vector<std::string> link_overrides(const std::string& spec);

}  // namespace loco
