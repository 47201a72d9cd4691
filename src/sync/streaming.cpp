// Streaming DiLoCo's fragments, outer step and mix (see include/loco/streaming.h).
#include "loco/streaming.h"

#include <torch/torch.h>

#include <stdexcept>
#include <string>

namespace loco {

std::vector<Fragment> plan_fragments(const std::vector<TensorLayout>& layout, int64_t count) {
  if (count < 1 || layout.empty()) throw std::invalid_argument("plan_fragments: nothing to split");
  const int64_t total = layout.back().offset + layout.back().numel;
  std::vector<Fragment> out(static_cast<size_t>(count));
  int64_t p = 0;
  auto fragment_end = [&](int64_t q) { return (total * (q + 1) + count - 1) / count; };
  for (const auto& t : layout) {
    const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
    const int64_t row = rows > 0 ? t.numel / rows : t.numel;
    int64_t r = 0;
    while (r < rows) {
      // This fragment takes rows until its end falls on or before a row boundary.
      while (p < count - 1 && fragment_end(p) <= t.offset + r * row) ++p;
      int64_t end_rows = rows;
      if (p < count - 1) {
        const int64_t want = fragment_end(p) - t.offset;  // > r * row
        end_rows = std::min(rows, (want + row - 1) / row);
      }
      TensorLayout piece = t;
      piece.offset = t.offset + r * row;
      piece.numel = (end_rows - r) * row;
      if (r > 0 || end_rows < rows) {
        piece.name = t.name + "[" + std::to_string(r) + ":" + std::to_string(end_rows) + "]";
        piece.shape[0] = end_rows - r;
      }
      Fragment& f = out[size_t(p)];
      if (f.pieces.empty()) f.offset = piece.offset;
      f.numel += piece.numel;
      f.pieces.push_back(std::move(piece));
      r = end_rows;
    }
  }
  for (int64_t q = 0; q < count; ++q)
    if (out[size_t(q)].pieces.empty())
      throw std::invalid_argument("plan_fragments: " + std::to_string(count) +
                                  " fragments of a model with too few rows");
  return out;
}

void outer_step_fragment(OuterNesterov& outer, torch::Tensor& theta, const torch::Tensor& delta,
                         const Fragment& f) {
  outer.step(theta, delta, f.offset);
}

void mix_fragment(torch::Tensor& params, const torch::Tensor& global, const Fragment& f,
                  double alpha) {
  torch::NoGradGuard no_grad;
  auto local = params.narrow(0, f.offset, f.numel);
  if (alpha == 0) {
    local.copy_(global.narrow(0, f.offset, f.numel));
    return;
  }
  // alpha local + (1 - alpha) global, as global + alpha (local - global)
  local.copy_(global.narrow(0, f.offset, f.numel).lerp(local, alpha));
}

StreamingWorker::StreamingWorker(const SyncConfig& sync, const std::vector<TensorLayout>& layout,
                                 const torch::Tensor& like)
    : every_(round_steps(sync)),
      delay_(sync.streaming.delay_steps),
      alpha_(sync.streaming.alpha),
      fragments_(plan_fragments(layout, sync.streaming.fragments)),
      codec_(make_codec(sync.codec)),
      outer_(sync.outer.lr, sync.outer.momentum, like) {
  if (sync.codec.type != "none" && sync.codec.error_feedback)
    feedback_ = std::make_unique<ErrorFeedback>(*codec_, sync.codec.error_decay);
}

const Fragment& StreamingWorker::fragment(int64_t round) const {
  return fragments_[size_t(fragment_of_round(round, int64_t(fragments_.size())))];
}

std::vector<TensorPayload> StreamingWorker::encode(int64_t round, const torch::Tensor& global,
                                                   const torch::Tensor& params) {
  torch::NoGradGuard no_grad;
  std::vector<TensorPayload> out;
  for (const auto& piece : fragment(round).pieces) {
    TensorPayload p;
    p.name = piece.name;
    auto x =
        (global.narrow(0, piece.offset, piece.numel) - params.narrow(0, piece.offset, piece.numel))
            .view(piece.shape);
    p.encoded = feedback_ ? feedback_->encode(piece.name, x) : codec_->encode(x);
    out.push_back(std::move(p));
  }
  return out;
}

void StreamingWorker::replay(int64_t round, const std::vector<Encoded>& aggregate,
                             torch::Tensor& global) {
  torch::NoGradGuard no_grad;
  const Fragment& f = fragment(round);
  if (aggregate.size() != f.pieces.size())
    throw std::runtime_error("coordinator's aggregate has " + std::to_string(aggregate.size()) +
                             " tensors, fragment " + std::to_string(round % fragments_.size()) +
                             " has " + std::to_string(f.pieces.size()));
  auto avg = torch::empty({f.numel}, global.options());
  for (size_t i = 0; i < f.pieces.size(); ++i) {
    torch::Tensor x;
    try {
      x = codec_->decode(aggregate[i]);
    } catch (const CodecError& e) {
      throw std::runtime_error("coordinator's aggregate for '" + f.pieces[i].name +
                               "': " + e.what());
    }
    if (x.numel() != f.pieces[i].numel)
      throw std::runtime_error("coordinator's aggregate for '" + f.pieces[i].name + "' has " +
                               std::to_string(x.numel()) + " values, not " +
                               std::to_string(f.pieces[i].numel));
    avg.narrow(0, f.pieces[i].offset - f.offset, f.pieces[i].numel)
        .copy_(x.reshape({-1}).to(global.device()));
  }
  outer_step_fragment(outer_, global, avg, f);
}

void StreamingWorker::mix(int64_t round, const torch::Tensor& global, torch::Tensor& params) const {
  mix_fragment(params, global, fragment(round), alpha_);
}

void StreamingWorker::discard() {
  if (feedback_) feedback_->residuals().clear();
}

}  // namespace loco
