// The DiLoCo coordinator's state machine, free of any networking: membership and leases, the
// round's pseudo-gradients, the token-weighted average, the outer Nesterov step, evaluation,
// metrics and checkpoints. src/coord/service.cpp puts it behind gRPC; tests drive it directly.
//
// Round r: members push (round r, tokens, encoded pseudo-gradient per parameter tensor). An
// update is validated whole (worker, round, names, shapes, dtypes, codec, sizes) and decoded
// into a staging buffer before anything touches the round's sum, so a bad push changes nothing.
// The round closes when every live member has reported and at least sync.workers members are
// live, or when sync.coordinator.round_timeout_s has passed since its first report and at least
// min_workers have reported. Closing: delta = sum(tokens_i * delta_i) / sum(tokens_i), then
// the outer step (see OuterNesterov), round + 1, and waiting pulls are released.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "loco/codec.h"
#include "loco/config.h"
#include "loco/optim.h"

namespace loco {

class MetricsWriter;

// A refused request. `code` maps onto gRPC's status codes in the service.
struct CoordError : std::runtime_error {
  enum Code { kInvalidArgument, kFailedPrecondition, kNotFound, kResourceExhausted, kUnavailable };
  CoordError(Code c, const std::string& message) : std::runtime_error(message), code(c) {}
  Code code;
};

struct TensorPayload {
  std::string name;
  std::string dtype = "float32";
  Encoded encoded;  // codec, shape, payload
};

struct Update {
  std::string worker_id;
  int64_t round = 0;
  int64_t tokens = 0;
  double loss = 0;
  std::vector<TensorPayload> tensors;
};

struct JoinInfo {
  std::string worker_id;
  int64_t round = 0;
  int32_t shard = 0, num_shards = 1;
  // Set by the member itself, not the coordinator: the DDP ranks that train its replica (a
  // site's rank count, docs/multisite.md). Its pushes count their tokens, which the average
  // weighs by.
  int64_t site_ranks = 1;
};

struct MemberInfo {
  std::string worker_id, name;
  int32_t shard = 0;
  bool reported = false;
  double last_loss = 0;
  uint64_t bytes_up = 0, bytes_down = 0;
};

struct CoordinatorStatus {
  int64_t round = 0, total_rounds = 0;
  std::vector<MemberInfo> members;
  uint64_t bytes_up = 0, bytes_down = 0;
  double last_val_loss = 0;
};

// One parameter tensor of the global model: name and shape, and where it sits in the flat buffer.
struct TensorLayout {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
};

class CoordinatorCore {
 public:
  // Builds the global model from config (same init as a single worker with run.seed), or
  // restores it from the newest checkpoint in run.dir/checkpoints when `resume`.
  CoordinatorCore(const Config& config, bool resume);
  ~CoordinatorCore();

  JoinInfo join(const std::string& name, int64_t num_params);
  void heartbeat(const std::string& worker_id);
  void leave(const std::string& worker_id);

  // Checks an update's header before its payload arrives (size limit, round, worker).
  void check_header(const Update& header, uint64_t payload_bytes) const;
  // Validates, decodes and adds one update; may close the round. Throws CoordError.
  void push(const Update& update, uint64_t wire_bytes);

  // Blocks until the global round reaches `round` (or the timeout passes: kUnavailable).
  // Returns the round reached and a copy of the parameters; `wait_s` gets the time waited.
  std::pair<int64_t, torch::Tensor> wait_state(const std::string& worker_id, int64_t round,
                                               double timeout_s, double* wait_s);
  void count_download(const std::string& worker_id, uint64_t wire_bytes);

  // Periodic housekeeping: expires leases, closes rounds whose deadline passed.
  void tick();
  // True once the last round closed, every member left (or its lease lapsed) and the last
  // round's evaluation and checkpoint are written.
  bool finished() const;
  // Blocks until every closed round has been evaluated, logged and checkpointed.
  void drain();
  CoordinatorStatus status() const;
  const std::vector<TensorLayout>& layout() const { return layout_; }
  int64_t round() const;
  void save_checkpoint();

 private:
  struct Member {
    MemberInfo info;
    double last_seen = 0;
  };
  // What a closed round leaves for the evaluation thread.
  struct ClosedRound {
    int64_t round = 0, tokens = 0, tokens_total = 0;
    double loss = 0, round_s = 0, wall_s = 0;
    double work_s = 0;  // decoding, averaging and stepping (the coordinator's own work) ...
    uint64_t work_bytes = 0;  // ... on this many bytes of decoded fp32 data
    uint64_t up = 0, down = 0;
    int workers = 0;
    torch::Tensor theta, velocity;  // velocity only when the round is checkpointed
  };
  // Steps the outer optimizer on the round's average and hands the round to the evaluation
  // thread. Called with mu_ held.
  void close_round_locked();
  // The evaluation thread: evaluates, logs and checkpoints closed rounds in order, off the path
  // of the pushes and pulls.
  void eval_loop();
  void evaluate_and_log(const ClosedRound& r);
  void write_checkpoint(int64_t round, int64_t tokens, const torch::Tensor& theta,
                        const torch::Tensor& velocity);
  Member& member_locked(const std::string& worker_id);

  Config config_;
  std::vector<TensorLayout> layout_;
  std::unique_ptr<Codec> codec_;
  mutable std::mutex mu_;
  std::condition_variable round_closed_;
  torch::Tensor theta_, sum_;  // global parameters; token-weighted sum of this round's deltas
  std::unique_ptr<OuterNesterov> outer_;
  std::map<std::string, Member> members_;
  int64_t round_ = 0, total_rounds_ = 0, tokens_total_ = 0, round_tokens_ = 0, next_id_ = 0;
  double round_loss_sum_ = 0, round_first_report_ = -1, round_started_ = 0;
  uint64_t bytes_up_ = 0, bytes_down_ = 0, round_up_ = 0, round_down_ = 0;
  double round_work_s_ = 0;  // this round's decode + average + outer step time
  double last_val_loss_ = 0;
  double start_time_ = 0;
  std::vector<int32_t> free_shards_;
  std::unique_ptr<MetricsWriter> metrics_;
  struct Evaluator;
  std::unique_ptr<Evaluator> evaluator_;
  std::deque<ClosedRound> eval_queue_;  // guarded by mu_
  bool eval_busy_ = false, eval_stop_ = false;
  std::condition_variable eval_cv_;
  std::thread eval_thread_;
};

}  // namespace loco
