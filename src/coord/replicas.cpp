// The demo method's replicas at the coordinator (see replicas.h).
#include "replicas.h"

#include <algorithm>
#include <cmath>

#include "aggregator.h"

namespace loco {

nlohmann::json replica_loss_stats(const std::vector<ReplicaEval>& evals) {
  if (evals.empty()) return nullptr;
  double sum = 0, lo = evals[0].loss, hi = evals[0].loss;
  for (const auto& e : evals) sum += e.loss, lo = std::min(lo, e.loss), hi = std::max(hi, e.loss);
  return {{"mean", sum / double(evals.size())}, {"min", lo}, {"max", hi}, {"count", evals.size()}};
}

ReplicaAverage::ReplicaAverage(const std::vector<TensorLayout>& layout, const SyncConfig& sync)
    : layout_(layout),
      keep_member_(report_replica(sync)),
      keep_best_(sync.report_model == "best") {}

std::vector<torch::Tensor> ReplicaAverage::decode(const Update& u) const {
  return decode_tensors(u, *make_codec(CodecConfig{}), layout_);
}

void ReplicaAverage::add(const Update& u, const std::vector<torch::Tensor>& decoded) {
  const auto& last = layout_.back();
  const int64_t n = last.offset + last.numel;
  if (!sum_.defined()) sum_ = torch::zeros({n}, torch::kFloat32);
  for (size_t i = 0; i < layout_.size(); ++i)
    sum_.narrow(0, layout_[i].offset, layout_[i].numel).add_(decoded[i].reshape({-1}));
  ++count_;
  if (std::isnan(u.val_loss)) return;  // not evaluated: neither reported nor kept
  ReplicaEval e{u.worker_id, u.val_loss, u.val_bpb};
  report_.evals.push_back(e);
  const bool keep = u.worker_id == keep_member_ ||
                    (keep_best_ && (!report_.theta.defined() || e.loss < report_.kept.loss));
  if (!keep) return;
  if (!report_.theta.defined()) report_.theta = torch::empty({n}, torch::kFloat32);
  for (size_t i = 0; i < layout_.size(); ++i)
    report_.theta.narrow(0, layout_[i].offset, layout_[i].numel).copy_(decoded[i].reshape({-1}));
  report_.kept = e;
}

void ReplicaAverage::take(torch::Tensor& theta, ReplicaReport& report) {
  theta.copy_(sum_).div_(double(count_));
  sum_.zero_();
  count_ = 0;
  report = std::move(report_);
  report_ = ReplicaReport{};
}

}  // namespace loco
