// The DiLoCo coordinator's state machine, free of any networking: membership and leases, the
// round's pseudo-gradients, the token-weighted average, the outer Nesterov step, evaluation,
// metrics and checkpoints. src/coord/service.cpp puts it behind gRPC; tests drive it directly.
//
// Membership (docs/faults.md): a member takes part from the round it joined for. Until the
// first round closes in this process (a fresh start, or a restart from a checkpoint) that is the
// current round; afterwards it is the next one, whose state it pulls once the current one
// closes. A join under a live member's name replaces that member (the worker restarted). Each
// join also returns the tokens its data shard has contributed so far, the cursor to read on from.
//
// Round r: members push (round r, tokens, encoded pseudo-gradient per parameter tensor). An
// update is validated whole (worker, round, names, shapes, dtypes, codec, sizes) and decoded
// before anything touches the round's sum, so a bad push changes nothing. The round closes when
// every live member taking part has reported (in the first round of a process: and at least
// sync.workers of them), or when the straggler deadline has passed since its first report and
// at least min_workers have reported (sync.coordinator.straggler: fixed round_timeout_s, or
// adaptive to the spread of recent arrivals). A late push is refused (FAILED_PRECONDITION) and
// its worker pulls the current state. Closing (diloco): delta = sum(tokens_i * delta_i) /
// sum(tokens_i), then the outer step (see OuterNesterov), the checkpoint when due (written
// before anyone sees the round's state), round + 1, and waiting pulls are released. With
// sync.download update, delta is first encoded with the run's codec (error feedback kept here)
// and the outer step uses exactly what the workers will decode, so their replay is bit-exact.
//
// sync.mode demo: a push carries each worker's top-k momentum coefficients; closing merges them
// per tensor (merge_sparse: the mean over the workers that sent a coefficient) into the round's
// aggregate, and the coordinator steps nothing. Replicas differ: in the rounds the workers push
// their full parameters (kind kState), the coordinator averages them into the consensus model it
// evaluates, checkpoints and, for sync.resync_every, serves back.
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

#include <nlohmann/json.hpp>

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
  enum Kind { kDelta, kState };  // the round's encoded update, or full fp32 parameters (demo)
  Kind kind = kDelta;
  std::string worker_id;
  int64_t round = 0;
  int64_t tokens = 0;
  double loss = 0;
  std::vector<TensorPayload> tensors;
};

// What a pull fetches (see PullKind in proto/loco.proto).
enum class PullKind { kParams, kAggregate, kConsensus };

struct Download {
  int64_t round = 0;
  torch::Tensor flat;            // kParams, kConsensus: fp32 parameters (then velocity, if asked)
  std::vector<Encoded> tensors;  // kAggregate: one per tensor of the layout
  uint64_t checksum = 0;         // kAggregate in diloco: FNV-1a of the new parameters
};

struct JoinInfo {
  std::string worker_id;
  int64_t round = 0;
  int32_t shard = 0, num_shards = 1;
  int64_t cursor_tokens = 0;  // tokens the shard contributed in closed rounds: read on from there
  // Set by the member itself, not the coordinator: the DDP ranks that train its replica (a
  // site's rank count, docs/multisite.md). Its pushes count their tokens, which the average
  // weighs by.
  int64_t site_ranks = 1;
};

struct MemberInfo {
  std::string worker_id, name;
  int32_t shard = 0;
  bool reported = false, reported_state = false;
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

  // Refuses (kInvalidArgument) a name longer than kMaxWorkerName or with anything but printable
  // ASCII without spaces, and a parameter count that is not the model's.
  // `want_shard` >= 0: a rejoining worker asks for the shard it reads (it gets another one only
  // when that one is taken).
  JoinInfo join(const std::string& name, int64_t num_params, int32_t want_shard = -1);
  static constexpr size_t kMaxWorkerName = 128;
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
  // The general pull: waits for `round` (kConsensus: for that round's consensus) and returns
  // what `kind` names. kAggregate is refused when the run downloads the state.
  Download wait_download(const std::string& worker_id, PullKind kind, int64_t round,
                         bool with_velocity, double timeout_s, double* wait_s);
  void count_download(const std::string& worker_id, uint64_t wire_bytes, PullKind kind);

  // Periodic housekeeping: expires leases, closes rounds whose deadline passed.
  void tick();
  // True once the last round closed, every member left (or its lease lapsed) and the last
  // round's evaluation and checkpoint are written.
  bool finished() const;
  // Blocks until every closed round has been evaluated, logged and checkpointed.
  void drain();
  CoordinatorStatus status() const;
  // The run's byte totals by purpose, what fp32 DiLoCo and DDP would have sent for the same
  // rounds, their ratios, and the last evaluation (written to run.dir/summary.json at the end).
  nlohmann::json totals() const;
  const std::vector<TensorLayout>& layout() const { return layout_; }
  int64_t round() const;
  void save_checkpoint();

 private:
  struct Member {
    MemberInfo info;
    double last_seen = 0;
    int64_t from_round = 0;    // the first round it takes part in
    int64_t round_tokens = 0;  // its push's tokens this round (its shard's, once the round closes)
    bool pulled = false;       // its first pull (the starting state) is counted as setup
  };
  // What a closed round leaves for the evaluation thread.
  struct ClosedRound {
    int64_t round = 0, tokens = 0, tokens_total = 0;
    double loss = 0, round_s = 0, wall_s = 0;
    double work_s = 0;        // decoding, averaging and stepping (the coordinator's own work) ...
    uint64_t work_bytes = 0;  // ... on this many bytes of decoded fp32 data
    uint64_t up = 0, down = 0;
    uint64_t method_bytes = 0, consensus_bytes = 0, setup_bytes = 0;  // run totals so far
    double fp32_diloco_bytes = 0, ddp_bytes = 0;  // what those would have sent so far
    int workers = 0;
    std::vector<std::string> members;  // who reported, in id order
    int live = 0;                      // members at the close
    double deadline_s = 0;             // the straggler deadline in force
    bool consensus = false;            // a demo consensus (evaluated) rather than a round close
    torch::Tensor theta, velocity;     // theta: evaluate it; velocity: checkpoint the round (demo)
    torch::Tensor shard_tokens;
  };
  // Steps the outer optimizer on the round's average and hands the round to the evaluation
  // thread. Called with mu_ held.
  void close_round_locked();
  // demo: all live members pushed their parameters for this round: average, evaluate.
  void close_consensus_locked();
  void push_state(const Update& update, uint64_t wire_bytes);
  // diloco, download update: encodes sum_ (the average) tensor by tensor into aggregate_ and
  // replaces it with what the encoding decodes to.
  void encode_aggregate_locked();
  bool is_resync_round(int64_t round) const;
  // Whether every member taking part in this round has reported (see the membership rules).
  bool round_complete_locked() const;
  // Seconds after the round's first report at which it closes without the missing members.
  double straggler_deadline_locked() const;
  // The evaluation thread: evaluates, logs and checkpoints closed rounds in order, off the path
  // of the pushes and pulls.
  void eval_loop();
  void evaluate_and_log(const ClosedRound& r);
  void write_checkpoint(int64_t round, int64_t tokens, const torch::Tensor& theta,
                        const torch::Tensor& velocity, const torch::Tensor& shard_tokens);
  bool checkpoint_due(int64_t round) const;
  torch::Tensor shard_tokens_tensor() const;
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
  bool demo_ = false, download_update_ = false;
  std::unique_ptr<Codec> down_codec_;                // diloco, download update: its encoding ...
  std::unique_ptr<ErrorFeedback> down_feedback_;     // ... and what it did not send
  std::vector<std::vector<Encoded>> demo_payloads_;  // demo: this round's pushes, per tensor
  std::vector<Encoded> aggregate_;                   // the last closed round's encoded aggregate
  uint64_t aggregate_checksum_ = 0;
  torch::Tensor state_sum_;  // demo: sum of the parameters pushed as kState this round
  int state_count_ = 0;
  uint64_t state_up_ = 0;  // bytes of this round's kState pushes
  int64_t consensus_round_ = -1;
  // Run totals by purpose: the method's own traffic (pushes, per-round downloads, resyncs), the
  // demo consensus for evaluation and export, and each member's first pull of the state.
  uint64_t method_bytes_ = 0, consensus_bytes_ = 0, setup_bytes_ = 0;
  double fp32_diloco_bytes_ = 0, ddp_bytes_ = 0;
  double last_val_loss_ = 0, last_val_bpb_ = 0, last_round_loss_ = 0;
  double start_time_ = 0;
  std::vector<int32_t> free_shards_;
  std::vector<int64_t> shard_tokens_;  // per data shard: tokens contributed in closed rounds
  int64_t rounds_closed_here_ = 0;     // by this process (0 after a start or restart)
  double round_last_report_ = 0;
  std::deque<double> spreads_;  // first-to-last arrival of recent complete rounds (adaptive)
  std::unique_ptr<MetricsWriter> metrics_;
  struct Evaluator;
  std::unique_ptr<Evaluator> evaluator_;
  std::deque<ClosedRound> eval_queue_;  // guarded by mu_
  bool eval_busy_ = false, eval_stop_ = false;
  std::condition_variable eval_cv_;
  std::thread eval_thread_;
};

}  // namespace loco
