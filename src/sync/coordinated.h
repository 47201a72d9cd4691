// What every worker strategy that meets the others through the coordinator shares (private to
// src/sync): the tensor layout, the lease's heartbeats, the round's skeleton (push this worker's
// update, download the round's result, record the sync in the step's metrics), recovery after a
// late push, a coordinator restart or a drop, the data leases, and pulls of the global state
// (with the outer velocity when the method replays the outer step). With elastic rounds
// (sync.lone train, sync.round_seconds; docs/multisite.md) rounds end by steps since the round's
// start or by wall-clock, a lone member trains on without rounds, the step follows the run's token
// progress and the coordinator says when the run is over.
//
// A method is a subclass (src/sync/diloco_sync.cpp, src/sync/demo_sync.cpp) that fills in the
// hooks below; make_coordinated_sync (include/loco/diloco.h) picks it from sync.mode. Streaming
// DiLoCo (src/sync/streaming_sync.cpp) replaces the round's skeleton (after_step) with its
// overlapped fragment exchange and reuses the rest.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "loco/codec.h"
#include "loco/coord_client.h"
#include "loco/loader.h"
#include "loco/sync.h"

namespace loco {

class CoordinatedSync : public Sync {
 public:
  CoordinatedSync(const Config& config, std::shared_ptr<CoordinatorClient> client,
                  const JoinInfo& join);
  ~CoordinatedSync() override;

  void start(Trainer& trainer) override;
  // Every sync.inner_steps steps: push, download, after_round, then the metrics of the sync.
  void after_step(Trainer& trainer, nlohmann::json& record) override;
  void finish(Trainer& trainer) override;
  bool elastic() const override { return elastic_; }
  bool run_over() const override { return run_over_; }
  void refill_data(Trainer& trainer) override;
  void watch_stop(std::shared_ptr<StopRequest> stop) override { stop_ = std::move(stop); }
  // "sync.state" (whether this moment can be resumed from exactly, the round, the data slot, the
  // round's token start and loss count), "sync.loss_sum", "sync.global_checksum" (of
  // theta_start_) and the error-feedback residuals ("sync.residual", put_named).
  void save_state(Trainer& trainer, std::map<std::string, torch::Tensor>& out) override;
  void resume_from(std::shared_ptr<const Checkpoint> own, const std::string& path) override {
    own_ = std::move(own), own_path_ = path;
  }

 protected:
  // --- the method's hooks ---
  // In start(), before the first pull: allocate the method's state for `params`.
  virtual void prepare(const torch::Tensor& params) {}
  // The outer velocity that pulls of the global state carry along, or an undefined tensor when
  // the method keeps none (then pulls carry the parameters alone).
  virtual torch::Tensor velocity() { return {}; }
  // One tensor of this round's update: `x` is its slice of delta_ = theta_start_ - theta.
  virtual Encoded encode_tensor(const TensorLayout& l, const torch::Tensor& x) = 0;
  // With a downloaded aggregate (sync.download update): the new parameters from it, written
  // into `params`, tensor i of `aggregate` being layout_[i].
  virtual void apply_download(torch::Tensor& params, const std::vector<Encoded>& aggregate) = 0;
  // After the download of round round_: checks or exchanges more (and may evaluate the
  // trainer's model), may add to `down`'s bytes, to the record, and must update `checksum` when it
  // changes the parameters.
  virtual void after_round(Trainer& trainer, torch::Tensor& params, PullResult& down,
                           uint64_t& checksum, nlohmann::json& record) {}
  // The round's work is being discarded (recover): drop what was kept from it.
  virtual void discard_round() {}
  // Whether the trainer's state now is one the method goes on from exactly after a resume, given
  // the coordinator's state of round round_, the trainer's checkpoint and save_state's tensors:
  // nothing in flight, nothing of the round kept elsewhere. Default: never (demo, delayed).
  virtual bool resumable_now(const Trainer& trainer) const { return false; }
  // The method's error-feedback residuals by tensor name, if it keeps any.
  virtual std::map<std::string, torch::Tensor>* residuals() { return nullptr; }
  // Whether the method reads delta_ after the push (a download replayed from it, demo's momentum);
  // when not, the update is encoded tensor by tensor and delta_ never holds the whole model.
  virtual bool keeps_delta() const { return true; }

  // --- shared by the methods ---
  // Pulls round round_'s global state into `params` (and the outer velocity with it).
  PullResult pull_params(torch::Tensor& params, bool with_velocity);
  // After replaying the aggregate of the round `down` brought into `global` (the parameters, or a
  // copy of the global ones) whose checksum is now `sum`: when it differs from the
  // coordinator's, pulls the round's state and the outer velocity in full into them (bytes added
  // to `down`, record["resynced"]). Returns the checksum of `global`.
  uint64_t check_replay(torch::Tensor& global, uint64_t sum, PullResult& down,
                        nlohmann::json& record);
  double pull_timeout() const { return 2 * config_.sync.coordinator.round_timeout_s + 60; }
  // The error for tensor i of the coordinator's aggregate that would not decode.
  std::runtime_error bad_aggregate(size_t i, const CodecError& e) const;

  // The round went on without this worker (late, the coordinator restarted, dropped): takes the
  // coordinator's current state and moves the trainer to its round; `record` says so.
  void recover(Trainer& trainer, const RpcError& first, nlohmann::json& record);
  // Reports how far the loader read its lease and takes the next round's; `round` (>= 0): the
  // round the data is for, when the coordinator is not at it yet (a claim before this round's
  // push: streaming, delayed DiLoCo), so that the seats are dealt by it (docs/data.md).
  void claim_data(DataLoader& loader, int64_t round = -1);
  // The next round starts from the current parameters, tokens and an empty loss sum.
  void start_round(Trainer& trainer);
  // After a download: whether the coordinator's last round is reached (the run paused or ends),
  // which ends training after this step; no data is claimed for a round that will not come.
  bool ends_run(const PullResult& down);

  Config config_;
  std::shared_ptr<CoordinatorClient> client_;
  int64_t round_;
  const bool download_update_;
  std::unique_ptr<Codec> codec_;       // sync.codec
  std::vector<TensorLayout> layout_;   // the flat parameters' tensors, in order
  torch::Tensor theta_start_, delta_;  // the round's starting parameters; theta_start_ - theta
  int64_t site_ranks_;                 // the DDP ranks behind this member's pushes
  int64_t round_tokens_start_ = 0, loss_count_ = 0;  // the trainer's tokens at the round's start
  double loss_sum_ = 0;                              // and its losses since

 private:
  Update make_update(Trainer& trainer, double* codec_s);
  PullResult download(torch::Tensor& params, double* codec_s);
  // Whether this step ends the round: every sync.inner_steps steps, or once sync.round_seconds
  // have passed since the round started.
  bool round_ends(const Trainer& trainer) const;
  // sync.lone train: whether this member is the only live one and trains on without a round
  // (docs/multisite.md "A lone member"); false when a second member is live, when the run's
  // budget is reached, or when the coordinator lost this member (the usual recovery follows).
  bool train_alone(Trainer& trainer, nlohmann::json& record);
  // A stop signal came while alone (StopRequest): pushes the work since the anchor as the
  // round's update and ends training.
  void hand_over(Trainer& trainer, nlohmann::json& record);
  // Elastic rounds, after a sync: the step (the lr schedule's position) follows the run's token
  // progress, and the run is over once the coordinator closed its last round.
  void follow_run(Trainer& trainer);
  // The step at which the run has trained `tokens` of its token budget (elastic rounds).
  int64_t progress_step(int64_t tokens) const;
  void heartbeat_loop();
  void stop_heartbeats();
  // start() on an exact resume: the global state pulled into `global` matches the one own_ was
  // written with: restores the trainer and the method from own_. False (nothing restored): not
  // such a checkpoint, or another round, slot or state.
  bool resume_exactly(Trainer& trainer, const torch::Tensor& global);
  // An exact resume's data: the unread rest of the restored lease back from the coordinator, or
  // the claim the member made after the checkpointed step.
  void resume_data(DataLoader& loader);

  int32_t shard_;
  const bool elastic_, lone_;
  double round_start_s_ = 0;      // when the round started (sync.round_seconds)
  int64_t round_start_step_ = 0;  // the step it started at (elastic rounds)
  bool run_over_ = false, alone_ = false;
  std::shared_ptr<StopRequest> stop_;      // null: leave at once on a stop signal
  std::shared_ptr<const Checkpoint> own_;  // resume_from()
  std::string own_path_;
  std::thread heartbeats_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

// The strategies, one per method (make_coordinated_sync chooses).
std::unique_ptr<Sync> make_diloco_strategy(const Config& config,
                                           std::shared_ptr<CoordinatorClient> client,
                                           const JoinInfo& join);
std::unique_ptr<Sync> make_demo_strategy(const Config& config,
                                         std::shared_ptr<CoordinatorClient> client,
                                         const JoinInfo& join);
std::unique_ptr<Sync> make_delayed_diloco_strategy(const Config& config,
                                                   std::shared_ptr<CoordinatorClient> client,
                                                   const JoinInfo& join);
std::unique_ptr<Sync> make_streaming_strategy(const Config& config,
                                              std::shared_ptr<CoordinatorClient> client,
                                              const JoinInfo& join);

}  // namespace loco
