// DiLoCo with a delayed outer step (sync.mode diloco, sync.overlap delayed; docs/streaming.md
// "Delayed outer step"), the one-step-delayed member of the "overlapping communication" family
// (Kale et al. 2025, "Eager updates for overlapped communication and computation in DiLoCo", the
// naive variant): the exchange of round r runs behind round r + 1's inner steps, and its outer
// step is applied at the end of round r + 1. The coordinator is plain DiLoCo's; only the worker
// differs. At the end of round r a worker
//   1. waits for round r - 1's exchange (normally long done) and replays its outer step on its
//      copy of the global parameters: global = theta_g(r), checked by the coordinator's checksum;
//   2. sends round r's pseudo-gradient against the round's anchor, theta_g(r - 1) - theta, in the
//      background (the push, then the pull of round r's encoded average);
//   3. starts round r + 1 from theta_g(r): parameters and anchor.
// So a pseudo-gradient is computed on a state one outer step older than the one it is applied to
// (staleness 1), and no worker ever waits for the slowest one or the link unless an exchange
// takes longer than a round. Round 0 starts and round 1 starts from the initial state.
#include "coordinated.h"
#include "exchange.h"
#include "loco/checkpoint.h"
#include "loco/optim.h"
#include "loco/progress.h"
#include "loco/trainer.h"

namespace loco {
namespace {

class DelayedDilocoSync : public CoordinatedSync {
 public:
  DelayedDilocoSync(const Config& config, std::shared_ptr<CoordinatorClient> client,
                    const JoinInfo& join)
      : CoordinatedSync(config, std::move(client), join) {
    if (config.sync.codec.type != "none" && config.sync.codec.error_feedback)
      feedback_ = std::make_unique<ErrorFeedback>(*codec_, config.sync.codec.error_decay);
  }

  void after_step(Trainer& trainer, nlohmann::json& record) override {
    loss_sum_ += record.at("loss").get<double>();
    ++loss_count_;
    if (trainer.step() % config_.sync.inner_steps != 0) return;
    torch::NoGradGuard no_grad;
    auto& params = trainer.params().data();
    if (!global_.defined()) global_ = theta_start_.clone();  // round 0's anchor
    auto done = std::move(exchange_);
    double waited = 0;
    if (done) {
      try {
        waited = done->wait();
      } catch (const RpcError& err) {
        if (err.code == RpcError::kOther || site_ranks_ > 1) throw;
        recover(trainer, err, record);  // the current state, into the parameters and the anchor
        global_.copy_(params);
        return;
      }
      apply(*done, record);
      if (ends_run(done->down)) {  // paused: the run ended with the round just applied
        params.copy_(global_);
        done->record(record, waited, /*blocking=*/false, *client_);
        return;
      }
    }
    // Round round_'s update: its pseudo-gradient against the anchor it started from.
    const double start = now_s();
    Update u;
    u.round = round_;
    u.tokens = (trainer.tokens() - round_tokens_start_) * site_ranks_;
    u.loss = loss_count_ ? loss_sum_ / double(loss_count_) : 0.0;
    for (const auto& l : layout_) {
      TensorPayload p;
      p.name = l.name;
      auto x = theta_start_.narrow(0, l.offset, l.numel) - params.narrow(0, l.offset, l.numel);
      p.encoded = encode_tensor(l, x.view(l.shape));
      u.tensors.push_back(std::move(p));
    }
    const double codec_s = now_s() - start;
    // The next round starts from the newest global state, one outer step behind this round's.
    params.copy_(global_);
    start_round(trainer);
    // The next round's data, before this round's push: named, so the seats stay deterministic.
    if (trainer.step() < config_.train.max_steps) claim_data(trainer.loader(), round_ + 1);
    exchange_ =
        std::make_unique<BackgroundExchange>(*client_, std::move(u), layout_, pull_timeout());
    exchange_->codec_s = codec_s;
    if (done) {
      done->codec_s += codec_s;
      done->record(record, waited, /*blocking=*/false, *client_);
      record["param_checksum"] = param_checksum(params);  // = the coordinator's round's state
    }
  }

  // The last round's exchange is still open when training ends: complete it before leaving.
  void finish(Trainer& trainer) override {
    if (exchange_) {
      auto done = std::move(exchange_);
      done->wait();
      nlohmann::json ignored;
      apply(*done, ignored);
    }
    CoordinatedSync::finish(trainer);
  }

 private:
  void prepare(const torch::Tensor& params) override {
    outer_ =
        std::make_unique<OuterNesterov>(config_.sync.outer.lr, config_.sync.outer.momentum, params);
  }

  torch::Tensor velocity() override { return outer_->velocity(); }
  bool keeps_delta() const override { return false; }

  Encoded encode_tensor(const TensorLayout& l, const torch::Tensor& x) override {
    return feedback_ ? feedback_->encode(l.name, x) : codec_->encode(x);
  }

  void apply_download(torch::Tensor&, const std::vector<Encoded>&) override {
    throw std::logic_error("delayed DiLoCo applies a round's aggregate a round later");
  }

  void discard_round() override {
    if (feedback_) feedback_->residuals().clear();
  }

  // The round's encoded average replayed through the outer step on the global copy, checked
  // against the coordinator's checksum (a full resync when they differ).
  void apply(BackgroundExchange& e, nlohmann::json& record) {
    const double start = now_s();
    auto avg = torch::empty_like(global_);
    for (size_t i = 0; i < layout_.size(); ++i) {
      try {
        avg.narrow(0, layout_[i].offset, layout_[i].numel)
            .copy_(codec_->decode(e.aggregate.at(i)).reshape({-1}));
      } catch (const CodecError& err) {
        throw bad_aggregate(i, err);
      }
    }
    outer_->step(global_, avg);
    e.codec_s += now_s() - start;
    round_ = e.down.round;
    check_replay(global_, param_checksum(global_), e.down, record);
  }

  std::unique_ptr<ErrorFeedback> feedback_;       // with a lossy codec and error feedback
  std::unique_ptr<OuterNesterov> outer_;          // the replayed outer steps
  torch::Tensor global_;                          // the newest global parameters this worker has
  std::unique_ptr<BackgroundExchange> exchange_;  // the round in flight, if any
};

}  // namespace

std::unique_ptr<Sync> make_delayed_diloco_strategy(const Config& config,
                                                   std::shared_ptr<CoordinatorClient> client,
                                                   const JoinInfo& join) {
  return std::make_unique<DelayedDilocoSync>(config, std::move(client), join);
}

}  // namespace loco
