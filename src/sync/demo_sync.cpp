// The decoupled DCT momentum method on the worker (sync.mode demo; docs/dct.md), on the skeleton
// of coordinated.h: m = beta m + delta, send the top-k of DCT(m) and keep the rest
// (m -= what was sent), fetch the merged set Q, m += IDCT(Q), theta = theta_start - lr (delta +
// beta m), with beta = sync.outer.momentum and lr = sync.outer.lr. On evaluation rounds
// (train.eval_every), the last round and every sync.resync_every rounds, push the full parameters
// for the coordinator's consensus average, with this replica's own val loss (evaluated just
// before); on resync rounds adopt that average.
#include "coordinated.h"
#include "loco/checkpoint.h"
#include "loco/diloco.h"
#include "loco/trainer.h"

namespace loco {

Encoded demo_compress(torch::Tensor& m, const torch::Tensor& delta, double beta, Codec& dct) {
  torch::NoGradGuard no_grad;
  m.mul_(beta).add_(delta);
  Encoded e = dct.encode(m);
  m.sub_(dct.decode(e).to(m.device()).view(m.sizes()));
  return e;
}

torch::Tensor demo_apply(torch::Tensor& m, const torch::Tensor& theta_start,
                         const torch::Tensor& delta, const Encoded& merged, double beta, double lr,
                         const Codec& dct) {
  torch::NoGradGuard no_grad;
  m.add_(dct.decode(merged).to(m.device()).view(m.sizes()));
  return theta_start - lr * (delta + beta * m);
}

namespace {

class DemoSync : public CoordinatedSync {
 public:
  DemoSync(const Config& config, std::shared_ptr<CoordinatorClient> client, const JoinInfo& join)
      : CoordinatedSync(config, std::move(client), join) {
    const int64_t h = config.sync.inner_steps, every = config.train.eval_every;
    consensus_every_ = every > 0 ? std::max<int64_t>(1, every / h) : 0;
  }

 private:
  void prepare(const torch::Tensor& params) override { momentum_ = torch::zeros_like(params); }

  // The top-k of the momentum's DCT.
  Encoded encode_tensor(const TensorLayout& l, const torch::Tensor& x) override {
    auto m = momentum_.narrow(0, l.offset, l.numel).view(l.shape);
    return demo_compress(m, x, config_.sync.outer.momentum, *codec_);
  }

  // m += IDCT(merged); theta = theta_start - lr (delta + beta m), tensor by tensor.
  void apply_download(torch::Tensor& params, const std::vector<Encoded>& merged) override {
    const auto& o = config_.sync.outer;
    for (size_t i = 0; i < layout_.size(); ++i) {
      const auto& l = layout_[i];
      auto m = momentum_.narrow(0, l.offset, l.numel).view(l.shape);
      try {
        params.narrow(0, l.offset, l.numel)
            .copy_(demo_apply(m, theta_start_.narrow(0, l.offset, l.numel).view(l.shape),
                              delta_.narrow(0, l.offset, l.numel).view(l.shape), merged[i],
                              o.momentum, o.lr, *codec_)
                       .reshape({-1}));
      } catch (const CodecError& e) {
        throw bad_aggregate(i, e);
      }
    }
  }

  void after_round(Trainer& trainer, torch::Tensor& params, PullResult&, uint64_t& sum,
                   nlohmann::json& record) override {
    if (!consensus_due(round_)) return;
    exchange_state(trainer, params, record);
    if (resync_due(round_)) sum = param_checksum(params);  // adopted the consensus
  }

  void discard_round() override { momentum_.zero_(); }

  // The rounds whose replicas are averaged (evaluation, the exported model, resync).
  bool consensus_due(int64_t round) const {
    const int64_t rounds = config_.train.max_steps / config_.sync.inner_steps;
    return round == rounds || (consensus_every_ > 0 && round % consensus_every_ == 0) ||
           resync_due(round);
  }
  bool resync_due(int64_t round) const {
    return config_.sync.resync_every > 0 && round % config_.sync.resync_every == 0;
  }

  // Evaluates this replica (its own val loss, which sync.report_model reads: the record's
  // val_loss, so the trainer does not evaluate this step again), pushes its parameters for the
  // consensus, and on resync rounds adopts the consensus.
  void exchange_state(Trainer& trainer, torch::Tensor& params, nlohmann::json& record) {
    auto none = make_codec(CodecConfig{});
    Update u;
    u.kind = Update::kState;
    u.round = round_;
    EvalStats e = trainer.evaluate();
    u.val_loss = e.loss, u.val_bpb = e.bpb;
    record["val_loss"] = e.loss, record["val_bpb"] = e.bpb;
    for (const auto& l : layout_)
      u.tensors.push_back(
          {l.name, "float32", none->encode(params.narrow(0, l.offset, l.numel).view(l.shape))});
    uint64_t up = client_->push(std::move(u));
    if (!resync_due(round_)) {
      record["consensus_bytes_up"] = up;
      return;
    }
    PullResult r = client_->pull(round_, layout_, params, pull_timeout(), PullKind::kConsensus);
    record["resync_bytes"] = up + r.wire_bytes;
    // It now holds the consensus: its own evaluation was of the replica it replaced.
    record["replica_val_loss"] = e.loss;
    record.erase("val_loss"), record.erase("val_bpb");
  }

  int64_t consensus_every_ = 0;
  torch::Tensor momentum_;  // this worker's outer momentum m
};

}  // namespace

std::unique_ptr<Sync> make_demo_strategy(const Config& config,
                                         std::shared_ptr<CoordinatorClient> client,
                                         const JoinInfo& join) {
  return std::make_unique<DemoSync>(config, std::move(client), join);
}

}  // namespace loco
