// Streaming DiLoCo on the worker (sync.mode streaming, docs/streaming.md), after Douillard et al.
// 2025 and torchft's local_sgd.py. The parameters are split into P fragments
// (include/loco/streaming.h); round r syncs fragment r mod P, every H / P steps, so each fragment
// syncs every H steps and the fragments take turns. At the round's step the worker sends the
// fragment's pseudo-gradient theta_start_p - theta_p (encoded with sync.codec, with error
// feedback as DiLoCo) and goes on training while the exchange runs on a thread of its own; tau =
// sync.streaming.delay_steps steps later it takes the round's encoded average, replays the
// coordinator's outer step on its copy of the global fragment (theta_start_p, which the
// coordinator's checksum checks) and mixes: theta_p = alpha theta_p + (1 - alpha) theta_start_p.
// With P = 1, tau = 0 and alpha = 0 this is DiLoCo with sync.download update, step for step.
#include "coordinated.h"
#include "exchange.h"
#include "loco/checkpoint.h"
#include "loco/optim.h"
#include "loco/progress.h"
#include "loco/streaming.h"
#include "loco/trainer.h"

namespace loco {
namespace {

class StreamingSync : public CoordinatedSync {
 public:
  StreamingSync(const Config& config, std::shared_ptr<CoordinatorClient> client,
                const JoinInfo& join)
      : CoordinatedSync(config, std::move(client), join) {}

  void after_step(Trainer& trainer, nlohmann::json& record) override {
    loss_sum_ += record.at("loss").get<double>();
    ++loss_count_;
    const int64_t step = trainer.step();
    if (exchange_ && worker_->applies(step)) finish_exchange(trainer, record);
    if (!worker_->ends_round(step)) return;
    start_exchange(trainer);
    if (worker_->delay_steps() == 0) finish_exchange(trainer, record);
  }

  // The last round's exchange is still open when training ends (its result would come tau steps
  // later): complete it, so that the coordinator has every push before this worker leaves.
  void finish(Trainer& trainer) override {
    if (exchange_) {
      nlohmann::json ignored;
      finish_exchange(trainer, ignored);
    }
    CoordinatedSync::finish(trainer);
  }

 private:
  void prepare(const torch::Tensor& params) override {
    worker_ = std::make_unique<StreamingWorker>(config_.sync, layout_, params);
  }

  torch::Tensor velocity() override { return worker_->velocity(); }
  bool keeps_delta() const override { return false; }

  // The skeleton's per-tensor hooks: streaming pushes and applies a fragment's pieces instead
  // (StreamingWorker), from its own after_step.
  Encoded encode_tensor(const TensorLayout&, const torch::Tensor&) override {
    throw std::logic_error("streaming DiLoCo encodes fragments, not the whole update");
  }
  void apply_download(torch::Tensor&, const std::vector<Encoded>&) override {
    throw std::logic_error("streaming DiLoCo applies fragments, not the whole update");
  }

  void discard_round() override { worker_->discard(); }

  // Between a round's result and the next round's step nothing is in flight: the global copy
  // (theta_start_) is the coordinator's state of round round_, the local parameters, the inner
  // optimizer and the data position are the trainer's, the round's token start save_state's.
  bool resumable_now(const Trainer&) const override { return !exchange_; }
  std::map<std::string, torch::Tensor>* residuals() override { return worker_->residuals(); }

  // The round's step: the fragment's update, then its push and the download of the round's
  // average on the exchange's thread.
  void start_exchange(Trainer& trainer) {
    torch::NoGradGuard no_grad;
    const double start = now_s();
    Update u;
    u.round = round_;
    u.tokens = (trainer.tokens() - round_tokens_start_) * site_ranks_;
    u.loss = loss_count_ ? loss_sum_ / double(loss_count_) : 0.0;
    u.tensors = worker_->encode(round_, theta_start_, trainer.params().data());
    const double codec_s = now_s() - start;
    round_tokens_start_ = trainer.tokens();
    loss_sum_ = 0, loss_count_ = 0;
    // With overlap, the next round's data now, on this thread (the loader is the trainer's),
    // while the coordinator is at this round: every member claims once for each round, naming
    // it, so the seats stay deterministic (docs/streaming.md "Data"). Without overlap, after the
    // download as DiLoCo does.
    if (worker_->delay_steps() > 0 && trainer.step() < config_.train.max_steps)
      claim_data(trainer.loader(), round_ + 1);
    exchange_ = std::make_unique<BackgroundExchange>(
        *client_, std::move(u), worker_->fragment(round_).pieces, pull_timeout());
    exchange_->codec_s = codec_s;
  }

  // tau steps after the round's step: wait for the exchange, replay the outer step on the global
  // fragment, check it against the coordinator's checksum, and mix it into the parameters.
  void finish_exchange(Trainer& trainer, nlohmann::json& record) {
    torch::NoGradGuard no_grad;
    auto e = std::move(exchange_);
    double waited = 0;
    try {
      waited = e->wait();
    } catch (const RpcError& err) {
      if (err.code == RpcError::kOther || site_ranks_ > 1) throw;
      recover(trainer, err, record);  // theta_start_ and the parameters: the current state
      return;
    }
    auto& params = trainer.params().data();
    double t = now_s();
    worker_->replay(e->round, e->aggregate, theta_start_);
    e->codec_s += now_s() - t;
    round_ = e->down.round;
    const uint64_t sum = check_replay(theta_start_, param_checksum(theta_start_), e->down, record);
    worker_->mix(e->round, theta_start_, params);
    if (!ends_run(e->down) && worker_->delay_steps() == 0 &&
        trainer.step() < config_.train.max_steps)
      claim_data(trainer.loader());
    record["fragment"] = fragment_of_round(e->round, config_.sync.streaming.fragments);
    e->record(record, waited, worker_->delay_steps() == 0, *client_);
    // Every worker holds the same global parameters after a round (its local ones differ with
    // alpha > 0 or tau > 0): the checksum is of those.
    record["param_checksum"] = sum;
  }

  std::unique_ptr<StreamingWorker> worker_;       // the schedule and the maths (loco/streaming.h)
  std::unique_ptr<BackgroundExchange> exchange_;  // the round in flight, if any
};

}  // namespace

std::unique_ptr<Sync> make_streaming_strategy(const Config& config,
                                              std::shared_ptr<CoordinatorClient> client,
                                              const JoinInfo& join) {
  return std::make_unique<StreamingSync>(config, std::move(client), join);
}

}  // namespace loco
