// DiLoCo on the worker (sync.mode diloco), on the skeleton of coordinated.h. Every
// sync.inner_steps steps it sends the pseudo-gradient delta = theta_start - theta, encoded with
// sync.codec (with error feedback when the codec is lossy and sync.codec.error_feedback is set,
// its residual decayed by sync.codec.error_decay: SparseLoCo's accumulator, docs/codec.md).
// Then either the new global state replaces the parameters (sync.download state), or the round's
// encoded average is replayed through the coordinator's outer step from theta_start (sync.download
// update), and a checksum of the result against the coordinator's triggers a full resync.
#include "coordinated.h"
#include "loco/checkpoint.h"
#include "loco/optim.h"
#include "loco/progress.h"
#include "loco/trainer.h"

namespace loco {
namespace {

class DilocoSync : public CoordinatedSync {
 public:
  DilocoSync(const Config& config, std::shared_ptr<CoordinatorClient> client, const JoinInfo& join)
      : CoordinatedSync(config, std::move(client), join) {
    if (config.sync.codec.type != "none" && config.sync.codec.error_feedback)
      feedback_ = std::make_unique<ErrorFeedback>(*codec_, config.sync.codec.error_decay);
  }

 private:
  void prepare(const torch::Tensor& params) override {
    if (download_update_)
      outer_ = std::make_unique<OuterNesterov>(config_.sync.outer.lr, config_.sync.outer.momentum,
                                               params);
  }

  torch::Tensor velocity() override { return outer_ ? outer_->velocity() : torch::Tensor(); }
  bool keeps_delta() const override { return download_update_; }  // replayed from it

  Encoded encode_tensor(const TensorLayout& l, const torch::Tensor& x) override {
    return feedback_ ? feedback_->encode(l.name, x) : codec_->encode(x);
  }

  // Download update: theta = theta_start, then the coordinator's outer step on the decoded
  // average, bit for bit.
  void apply_download(torch::Tensor& params, const std::vector<Encoded>& aggregate) override {
    for (size_t i = 0; i < layout_.size(); ++i)
      delta_.narrow(0, layout_[i].offset, layout_[i].numel)
          .copy_(decode_checked(aggregate[i], i).reshape({-1}));
    params.copy_(theta_start_);
    outer_->step(params, delta_);
  }

  // A replayed step must land on the coordinator's parameters; if not, pull them in full.
  void after_round(Trainer&, torch::Tensor& params, PullResult& down, uint64_t& sum,
                   nlohmann::json& record) override {
    if (download_update_) sum = check_replay(params, sum, down, record);
  }

  void discard_round() override {
    if (feedback_) feedback_->residuals().clear();
  }

  // Right after a round's download (the trainer's step is the round's first): theta_start_ is the
  // global state, and what comes next depends only on the trainer's and save_state's state.
  bool resumable_now(const Trainer& trainer) const override {
    return trainer.step() == round_ * round_steps(config_.sync);
  }
  std::map<std::string, torch::Tensor>* residuals() override {
    return feedback_ ? &feedback_->residuals() : nullptr;
  }

  torch::Tensor decode_checked(const Encoded& e, size_t i) const {
    try {
      return codec_->decode(e).to(delta_.device());
    } catch (const CodecError& err) {
      throw bad_aggregate(i, err);
    }
  }

  std::unique_ptr<ErrorFeedback> feedback_;  // with a lossy codec and error feedback
  std::unique_ptr<OuterNesterov> outer_;     // download update: the replayed outer step
};

}  // namespace

std::unique_ptr<Sync> make_diloco_strategy(const Config& config,
                                           std::shared_ptr<CoordinatorClient> client,
                                           const JoinInfo& join) {
  return std::make_unique<DilocoSync>(config, std::move(client), join);
}

}  // namespace loco
