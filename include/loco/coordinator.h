// The coordinator's round state machine, free of any networking: it composes the parts in
// src/coord/, each testable alone, and holds the authoritative global model (θ and the outer
// Nesterov state) for joins, checkpoints and evaluation. src/coord/service.cpp puts it behind
// gRPC; tests drive it directly.
//   membership.h   joins, leases, shards and their cursors, the straggler deadline
//   data_plan.h    who reads which training windows: leases of the epochs' positions
//   aggregator.h   one aggregator per sync method: what a round's pushes become (DiLoCo: the
//                  token-weighted average and the outer step; demo: the sparse merge, consensus)
//   ledger.h       bytes by purpose, and what fp32 DiLoCo and DDP would have sent
//   evaluator.h    evaluation, metrics and checkpoints off the round's path
//
// Round r: members push (round r, tokens, encoded update per parameter tensor). An update is
// validated whole (worker, round, names, shapes, dtypes, codec, sizes) and decoded before
// anything touches the round, so a bad push changes nothing. The round closes when every live
// member taking part has reported, or when the straggler deadline has passed (membership.h's
// rules). Closing: the aggregator updates the global model, the checkpoint is written when due
// (before anyone sees the round's state), round + 1, and waiting pulls are released. A late push
// is refused (FAILED_PRECONDITION) and its worker pulls the current state. For methods whose
// replicas differ (demo), the members also push their full parameters (kState) in the rounds
// the method asks for; their average is the consensus the coordinator evaluates, checkpoints
// and, for sync.resync_every, serves back.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loco/config.h"
#include "loco/data_lease.h"
#include "loco/protocol.h"

namespace loco {

class Aggregator;
class ByteLedger;
class EnergyMeter;
class DataPlan;
class Evaluator;
class Membership;
class OuterNesterov;

// A refused request. `code` maps onto gRPC's status codes in the service.
struct CoordError : std::runtime_error {
  enum Code { kInvalidArgument, kFailedPrecondition, kNotFound, kResourceExhausted, kUnavailable };
  CoordError(Code c, const std::string& message) : std::runtime_error(message), code(c) {}
  Code code;
};

struct Member;

// What a pull gets (the service streams it).
struct Download {
  int64_t round = 0;
  // kParams, kConsensus: the fp32 parameters and, when asked, the outer velocity. Both share the
  // coordinator's state (no copy per pull): it is never written in place while referenced.
  torch::Tensor params, velocity;
  std::vector<Encoded> tensors;  // kAggregate: one per tensor of `layout`
  // kAggregate: the tensors of the aggregate when not the whole layout (streaming: the round's
  // fragment, owned by the aggregator); null: the whole layout.
  const std::vector<TensorLayout>* layout = nullptr;
  uint64_t checksum = 0;   // kAggregate in diloco: FNV-1a of the new parameters
  int64_t last_round = 0;  // the run's last round now (a pause lowers it)
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
  // when that one is taken). Each join returns the tokens its data shard has contributed so far,
  // the cursor to read on from.
  JoinInfo join(const std::string& name, int64_t num_params, int32_t want_shard = -1);
  static constexpr size_t kMaxWorkerName = 128;
  void heartbeat(const std::string& worker_id);
  // `lease_id`, `consumed`: the data lease it held and how far it read it (0, 0: none).
  void leave(const std::string& worker_id, int64_t lease_id = 0, int64_t consumed = -1);
  // The member's next data lease (src/coord/data_plan.h): saved to run.dir/data_plan.json before
  // it is returned, so a restarted coordinator hands out nothing twice.
  // `resume`: the unread rest of a lease a worker resuming exactly asks back (DataPlan::claim);
  // `round` (>= 0): the round the data is for, which deals the seats (else the current round).
  DataLease claim_data(const std::string& worker_id, int64_t lease_id, int64_t consumed,
                       int64_t want, int64_t windows, const std::vector<LeaseRange>& resume = {},
                       int64_t round = -1);
  // The data plan as saved (tests).
  nlohmann::json data_plan() const;

  // Checks an update's header before its payload arrives (size limit, round, worker, tensors).
  void check_header(const Update& header, uint64_t payload_bytes) const;
  // Validates, decodes and adds one update; may close the round. Throws CoordError.
  void push(const Update& update, uint64_t wire_bytes);

  // Blocks until the global round reaches `round` (or the timeout passes: kUnavailable).
  // Returns the round reached and the parameters (shared, read-only); `wait_s` gets the time
  // waited.
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
  // round's evaluation and checkpoint are written. With a trace schedule (sync.schedule,
  // docs/curtailment.md) the run also ends at the trace's end: the rounds closed by then are the
  // run (the one in progress is dropped, pushes are refused), and it is finished once the members
  // left or 30 s have passed.
  bool finished() const;
  // Blocks until every closed round has been evaluated, logged and checkpointed.
  void drain();
  // Wakes every pull still waiting for a round (their workers get UNAVAILABLE): called before
  // the server shuts down, which waits for its handlers to return.
  void stop_waiting();
  // Pause (`loco launch` on SIGUSR1, docs/faults.md): the round now open is the run's last; the
  // run ends after it with every process's state checkpointed at that boundary, not complete,
  // and `loco launch --resume` goes on exactly from there. Nothing when the run is ending anyway.
  void pause();
  CoordinatorStatus status() const;
  // The run's byte totals by purpose, what fp32 DiLoCo and DDP would have sent for the same
  // rounds, their ratios, and the last evaluation (written to run.dir/summary.json at the end);
  // with a trace schedule, the sites' energy and emissions and the centralised baselines
  // (include/loco/energy.h's energy_summary) and "ended_by": "trace" or "budget".
  nlohmann::json totals() const;
  const std::vector<TensorLayout>& layout() const { return layout_; }
  int64_t num_params() const { return layout_.back().offset + layout_.back().numel; }
  int64_t round() const;
  // The run's last round before pause() lowered it; 0 when the run was not paused.
  int64_t paused_from() const;
  void save_checkpoint();

 private:
  void restore(const std::string& checkpoint);
  // A coordinator killed between a round's checkpoint (written before the round is served) and
  // its metrics record (written by the evaluation thread) leaves the round unlogged. On a
  // restart, each such round whose checkpoint is still on disk is evaluated and logged again,
  // marked "relogged" (its bytes and training loss are lost with the process).
  void relog_lost_rounds();
  // Lets the aggregator update the global model with the round's pushes and hands the round to
  // the evaluation thread. Called with mu_ held.
  void close_round_locked();
  // The replicas pushed for this round (demo): their average becomes the consensus.
  void close_consensus_locked();
  void push_state(const Update& update, uint64_t wire_bytes);
  bool is_resync_round(int64_t round) const;
  bool checkpoint_due(int64_t round) const;
  // A copy of the encoded download's error feedback (Aggregator::residuals) for a checkpoint.
  std::map<std::string, torch::Tensor> download_residuals_locked() const;
  // sync.lone train, sync.round_seconds: the closed rounds' tokens reached the run's budget
  // (token_budget): the current round is the last one (total_rounds_ lowered to it).
  void end_at_budget();
  Member& member_locked(const std::string& worker_id);
  // Trace schedules: the trace time now, and the energy accounted up to it with the live
  // members training (const: the meter is bookkeeping outside the run's state, and totals()
  // brings it up to date).
  double trace_now_locked() const;
  void account_energy_locked() const;
  torch::Tensor energy_state_locked() const;

  Config config_;
  std::vector<TensorLayout> layout_;
  std::unique_ptr<Evaluator> evaluator_;  // also the model whose layout the run uses
  std::unique_ptr<Aggregator> aggregator_;
  std::unique_ptr<Membership> members_;
  std::unique_ptr<DataPlan> plan_;  // who reads which training windows
  void save_plan_locked() const;
  std::unique_ptr<ByteLedger> ledger_;
  mutable std::mutex mu_;  // guards everything below and the parts above but the evaluator
  std::condition_variable round_closed_;
  torch::Tensor theta_;  // the global parameters
  std::unique_ptr<OuterNesterov> outer_;
  int64_t round_ = 0, total_rounds_ = 0, tokens_total_ = 0, round_tokens_ = 0;
  double round_loss_sum_ = 0, round_started_ = 0, round_work_s_ = 0, last_round_loss_ = 0;
  int64_t consensus_round_ = -1;
  bool stopping_ = false;     // stop_waiting()
  bool paused_ = false;       // pause(): total_rounds_ lowered, the run not complete
  bool pause_asked_ = false;  // pause() was called (it acts once)
  int64_t paused_from_ = 0;   // total_rounds_ before the pause
  // Makes `last` the run's last round and wakes the pulls waiting for a later one.
  void end_run_at_locked(int64_t last);
  std::vector<LossPoint> train_losses_;  // per closed round, for status()
  double start_time_ = 0;
  std::unique_ptr<EnergyMeter> energy_;  // with a trace schedule
  double trace_offset_ = 0;              // trace time at start_time_ (a restart: where it was)
  double trace_over_at_ = -1;            // when the trace ended the run (wall clock)
  double last_waiting_log_ = 0;          // "no member is up" every kWaitingLogS while nobody is
  static constexpr double kWaitingLogS = 30;
  // The trace's end: how long the members still up have to hand over their work (a lone
  // member's stop hand-over is capped at 30 s too) before the last round closes without them.
  static constexpr double kTraceGraceS = 30;
  void end_with_trace_locked(double now);
  // demo: whether every member still here pushed its replica for the round's consensus.
  bool consensus_complete_locked() const;
};

}  // namespace loco
