// The coordinator's evaluation and records, off the round's path: a thread that takes closed
// rounds in order, evaluates the model they carry on the val split (val loss, bits per byte),
// writes their metrics.jsonl / TensorBoard record and, when a round carries its outer state, its
// checkpoint. Also the coordinator's checkpoint writer, which close_round calls directly when a
// round's state must be on disk before any worker can pull it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ledger.h"
#include "loco/config.h"
#include "loco/metrics.h"
#include "loco/model.h"
#include "loco/optim.h"
#include "loco/protocol.h"
#include "loco/token_stream.h"
#include "loco/trainer.h"
#include "replicas.h"

namespace loco {

// What a closed round (or a demo consensus) leaves for the evaluation thread.
struct ClosedRound {
  int64_t round = 0, tokens = 0, tokens_total = 0;
  double loss = 0, round_s = 0, wall_s = 0;
  double work_s = 0;        // decoding, averaging and stepping (the coordinator's own work) ...
  uint64_t work_bytes = 0;  // ... on this many bytes of decoded fp32 data
  uint64_t up = 0, down = 0;
  LedgerTotals bytes;  // run totals so far
  int workers = 0;
  std::vector<std::string> members;  // who reported, in id order
  int live = 0;                      // members at the close
  double deadline_s = 0;             // the straggler deadline in force
  bool consensus = false;            // a demo consensus (evaluated) rather than a round close
  ReplicaReport replicas;            // ... its replicas' own evaluations and the one kept
  bool relogged = false;             // logged again after a restart: only what a checkpoint holds
  torch::Tensor theta;               // evaluate these parameters (undefined: log only)
  torch::Tensor velocity;            // checkpoint the round with this outer state (demo)
  torch::Tensor shard_tokens;
  torch::Tensor energy_state;  // a trace schedule's accounting (EnergyMeter::state), checkpointed
  nlohmann::json energy;       // EnergyMeter::record() at the close, logged with the round
};

// The coordinator's checkpoint of round `round`: parameters, outer velocity, the data shards'
// cursors, a trace schedule's energy accounting (when defined) and the resolved config, written
// atomically into run.dir/checkpoints (pruned to train.keep_checkpoints).
void write_coordinator_checkpoint(const Config& config, int64_t round, int64_t tokens,
                                  const torch::Tensor& theta, const torch::Tensor& velocity,
                                  const torch::Tensor& shard_tokens, double wall_s,
                                  const torch::Tensor& energy = {},
                                  const torch::Tensor& consensus = {},
                                  const std::map<std::string, torch::Tensor>& residuals = {});

class Evaluator {
 public:
  // Loads the val split and tokenizer (unless sync.coordinator.evaluate is off) and builds the
  // model (the run's init, whose layout `slots()` gives); throws ConfigError before anything is
  // written.
  explicit Evaluator(const Config& config);
  ~Evaluator();  // finishes what is queued, then stops
  // Starts the thread, writing records with `metrics` (the run's metrics.jsonl and tb/).
  void start(std::unique_ptr<MetricsWriter> metrics);

  // The model's parameter layout (names, shapes, offsets in the flat buffer).
  const std::vector<FlatParams::Slot>& slots() const { return flat_->slots(); }
  // Hands over the model's parameters in their initial state as one flat buffer (the global
  // model's start) and keeps no copy: each evaluation points the model at the round's own
  // parameters (ClosedRound::theta) and lets go of them afterwards. Call once, before start().
  torch::Tensor take_initial_params();
  void submit(ClosedRound r);
  // Blocks until every submitted round is evaluated, logged and checkpointed.
  void drain();
  bool idle() const;
  double last_val_loss() const;
  double last_val_bpb() const;
  std::vector<LossPoint> val_losses() const;  // per evaluated round (consensus rounds included)
  // sync.mode demo: the last consensus round's report (report_model, reported, the replicas'
  // val loss mean/min/max and the consensus's) for summary.json; null for other modes.
  nlohmann::json replica_summary() const;
  // demo: the replica (not the consensus) the consensus of `round` reported; undefined otherwise.
  torch::Tensor reported_replica(int64_t round) const;

 private:
  void loop();
  // Both return the parameters the round reports (and checkpoints): r.theta, or for a demo
  // consensus the replica sync.report_model chooses.
  torch::Tensor evaluate_and_log(const ClosedRound& r);
  // Evaluates r.theta, when defined and sync.coordinator.evaluate is on, into the record's
  // val_loss and val_bpb (for a demo consensus: the reported model's, the consensus's apart).
  torch::Tensor evaluate_into(const ClosedRound& r, nlohmann::json& record);
  EvalStats evaluate_params(const torch::Tensor& theta);
  // A demo consensus: the replicas' evaluations into the record, and the model reported, with
  // `e` (the consensus's evaluation, if any) replaced by the reported model's.
  torch::Tensor report_replicas(const ClosedRound& r, std::optional<EvalStats>& e,
                                nlohmann::json& record);

  Config config_;
  GPT model_{nullptr};
  std::unique_ptr<FlatParams> flat_;
  std::shared_ptr<const TokenStream> val_tokens_;
  torch::Tensor token_bytes_;
  std::unique_ptr<MetricsWriter> metrics_;
  double start_time_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ClosedRound> queue_;
  bool busy_ = false, stop_ = false;
  double last_val_loss_ = 0, last_val_bpb_ = 0;
  std::optional<EvalStats> last_consensus_;  // demo: the last consensus's evaluation ...
  nlohmann::json last_replicas_;             // ... its replicas' val loss mean/min/max
  std::string last_reported_;                // ... and which model was reported
  torch::Tensor reported_replica_;           // ... a replica's parameters, of this round:
  int64_t reported_round_ = -1;
  std::vector<LossPoint> val_losses_;
  std::thread thread_;
};

}  // namespace loco
