// Bounds the memory the coordinator spends on pushes in flight. A push is validated and decoded
// whole before it touches the round (a bad push changes nothing), so each one is held in memory
// until it is added; without a bound, W workers pushing a model of M bytes at once would cost
// W x M. The service asks the gate for a push's bytes (its payload, plus its decoded fp32 copy
// when the codec is not raw fp32) after the header was checked and before reading the payload;
// the push waits, unread, while others hold the budget (gRPC's flow control holds the sender
// back). A push larger than the whole budget is let in alone. docs/performance.md states the
// coordinator's memory budget this gives: 3 x the fp32 model (parameters, outer velocity, the
// round's running sum) + the gate's budget.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace loco {

// The gate's budget for a model of `num_params` fp32 values: one fp32 copy of the model, and at
// least 128 MiB so that several small pushes stream at once.
inline uint64_t push_budget(int64_t num_params) {
  return std::max<uint64_t>(uint64_t(num_params) * 4, uint64_t(128) << 20);
}

class MemoryGate {
 public:
  explicit MemoryGate(uint64_t budget) : budget_(budget) {}

  // Bytes held until destroyed; false when the wait was cancelled.
  class Hold {
   public:
    Hold() = default;
    Hold(MemoryGate* gate, uint64_t bytes) : gate_(gate), bytes_(bytes) {}
    Hold(Hold&& o) noexcept : gate_(o.gate_), bytes_(o.bytes_) { o.gate_ = nullptr; }
    Hold& operator=(Hold&&) = delete;
    ~Hold() {
      if (gate_) gate_->release(bytes_);
    }
    explicit operator bool() const { return gate_ != nullptr; }

   private:
    MemoryGate* gate_ = nullptr;
    uint64_t bytes_ = 0;
  };

  // Waits until `bytes` fit in what is free (or nothing is held, for a request larger than the
  // budget), checking `cancelled()` every 100 ms.
  template <class Cancelled>
  Hold acquire(uint64_t bytes, Cancelled cancelled) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!(held_ == 0 || held_ + bytes <= budget_)) {
      if (cancelled()) return Hold();
      freed_.wait_for(lock, std::chrono::milliseconds(100));
    }
    held_ += bytes;
    peak_ = std::max(peak_, held_);
    return Hold(this, bytes);
  }

  uint64_t budget() const { return budget_; }
  uint64_t peak() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }

 private:
  void release(uint64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_ -= bytes;
    }
    freed_.notify_all();
  }

  const uint64_t budget_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  uint64_t held_ = 0, peak_ = 0;
};

}  // namespace loco
