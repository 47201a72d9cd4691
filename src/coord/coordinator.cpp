// The coordinator's state machine (see include/loco/coordinator.h).
#include "loco/progress.h"
#include "loco/coordinator.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "loco/checkpoint.h"
#include "loco/link.h"
#include "loco/metrics.h"
#include "loco/model.h"
#include "loco/shard.h"
#include "loco/trainer.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

// The global model and validation data, used to evaluate after each round.
struct CoordinatorCore::Evaluator {
  GPT model{nullptr};
  std::unique_ptr<FlatParams> flat;
  torch::Tensor val_tokens, token_bytes;
};

CoordinatorCore::CoordinatorCore(const Config& config, bool resume) : config_(config) {
  validate(config_);
  if (config_.train.threads > 0) torch::set_num_threads(int(config_.train.threads));
  const auto& sync = config_.sync;
  total_rounds_ = config_.train.max_steps / sync.inner_steps;
  codec_ = make_codec(sync.codec);

  evaluator_ = std::make_unique<Evaluator>();
  evaluator_->val_tokens = load_checked_tokens("data.val", config_.data.val, config_.model);
  evaluator_->token_bytes = load_token_bytes(config_);
  evaluator_->model = GPT(config_.model);
  evaluator_->model->init_weights(config_.run.seed);
  evaluator_->flat = std::make_unique<FlatParams>(*evaluator_->model);
  for (const auto& s : evaluator_->flat->slots())
    layout_.push_back({s.name, s.shape, s.offset, s.numel});
  theta_ = evaluator_->flat->data().clone();
  sum_ = torch::zeros_like(theta_);
  demo_ = sync.mode == "demo";
  download_update_ = downloads_update(sync);
  CodecConfig down = sync.codec;  // the download keeps up to what all uploads together carried
  down.topk = down.topk_down > 0 ? down.topk_down : down.topk * sync.workers;
  down_codec_ = make_codec(down);
  if (download_update_ && !demo_ && sync.codec.error_feedback && sync.codec.type != "none")
    down_feedback_ = std::make_unique<ErrorFeedback>(*down_codec_);
  demo_payloads_.resize(layout_.size());
  aggregate_.resize(layout_.size());
  outer_ = std::make_unique<OuterNesterov>(sync.outer.lr, sync.outer.momentum, theta_);

  shard_tokens_.assign(size_t(sync.workers), 0);
  std::string newest =
      prepare_run_dir(config_.run.dir, resume ? RunStart::kResume : RunStart::kFresh);
  int64_t keep_metrics = -1;
  if (resume) {
    Checkpoint c = load_checkpoint(newest);
    TORCH_CHECK(c.tensors.at("params").numel() == theta_.numel(), newest,
                ": parameter count differs from the model config");
    theta_.copy_(c.tensors.at("params"));
    outer_->velocity().copy_(c.tensors.at("outer_velocity"));
    round_ = c.step;
    tokens_total_ = c.tokens;
    auto shards = c.tensors.find("shard_tokens");  // absent in checkpoints of older versions
    if (shards != c.tensors.end() && shards->second.numel() == sync.workers)
      for (int64_t i = 0; i < sync.workers; ++i)
        shard_tokens_[size_t(i)] = shards->second[i].item<int64_t>();
    keep_metrics = round_ * sync.inner_steps;  // records are keyed by step, not round
    spdlog::info("coordinator: resumed from {} at round {}", newest, round_);
  }
  metrics_ = open_run_files(config_, keep_metrics);
  for (int32_t s = int32_t(sync.workers) - 1; s >= 0; --s) free_shards_.push_back(s);
  start_time_ = now_s();
  round_started_ = start_time_;
  eval_thread_ = std::thread([this] { eval_loop(); });
  spdlog::info(
      "coordinator: {} parameters in {} tensors, {} rounds of {} inner steps, "
      "outer lr {} momentum {}, codec {}",
      theta_.numel(), layout_.size(), total_rounds_, sync.inner_steps, sync.outer.lr,
      sync.outer.momentum, sync.codec.type);
}

CoordinatorCore::~CoordinatorCore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    eval_stop_ = true;
  }
  eval_cv_.notify_all();
  eval_thread_.join();
}

CoordinatorCore::Member& CoordinatorCore::member_locked(const std::string& worker_id) {
  auto it = members_.find(worker_id);
  if (it == members_.end())
    throw CoordError(CoordError::kNotFound, "unknown worker '" + worker_id + "' (join first)");
  it->second.last_seen = now_s();
  return it->second;
}

JoinInfo CoordinatorCore::join(const std::string& name, int64_t num_params, int32_t want_shard) {
  // The name becomes an id and goes into logs and metrics: short, printable, no spaces.
  if (name.size() > kMaxWorkerName ||
      !std::all_of(name.begin(), name.end(), [](char ch) { return ch > 0x20 && ch < 0x7f; }))
    throw CoordError(CoordError::kInvalidArgument,
                     "worker name must be at most " + std::to_string(kMaxWorkerName) +
                         " printable ASCII characters without spaces");
  std::lock_guard<std::mutex> lock(mu_);
  if (num_params != theta_.numel())
    throw CoordError(CoordError::kInvalidArgument, "model has " + std::to_string(num_params) +
                                                       " parameters, the coordinator's has " +
                                                       std::to_string(theta_.numel()) +
                                                       " (model config differs)");
  if (round_ >= total_rounds_)
    throw CoordError(CoordError::kFailedPrecondition, "the run is over (all rounds done)");
  Member m;
  m.info.name = name;
  // Until a round closes here, everyone starts together in the current round; later joiners
  // take part from the next round (they would come late to this one).
  m.from_round = rounds_closed_here_ == 0 ? round_ : round_ + 1;
  int64_t starts = -1;  // the round whose state it pulls first (from_round unless set below)
  auto same = name.empty() ? members_.end() : members_.find(name);
  if (same != members_.end()) {
    // The same worker again (it restarted before its lease lapsed): the new session replaces
    // the old one and keeps its shard. A push the old one made this round stays counted.
    spdlog::warn("coordinator: {} joined again; its previous session is dropped", name);
    m.info.shard = same->second.info.shard;
    if (same->second.info.reported) {  // it counts as reported; its next round is the next one
      m.info.reported = true;
      m.round_tokens = same->second.round_tokens;
      m.from_round = same->second.from_round;
      starts = round_ + 1;
    }
    members_.erase(same);
  } else {
    if (free_shards_.empty())
      throw CoordError(CoordError::kResourceExhausted,
                       "all " + std::to_string(config_.sync.workers) + " worker slots are taken");
    auto wanted = std::find(free_shards_.begin(), free_shards_.end(), want_shard);
    if (wanted == free_shards_.end()) wanted = free_shards_.end() - 1;
    m.info.shard = *wanted;
    free_shards_.erase(wanted);
  }
  // The worker's own name is its id (`loco launch` names them w0, w1, ...); unnamed: a number.
  m.info.worker_id = name.empty() ? "#" + std::to_string(next_id_++) : name;
  m.last_seen = now_s();
  members_[m.info.worker_id] = m;
  if (starts < 0) starts = m.from_round;
  spdlog::info("coordinator: {} joined as {} (shard {}) for round {}, {} live", name,
               m.info.worker_id, m.info.shard, starts, members_.size());
  JoinInfo info{m.info.worker_id, starts, m.info.shard, int32_t(config_.sync.workers)};
  info.cursor_tokens = shard_tokens_[size_t(m.info.shard)];
  return info;
}

void CoordinatorCore::heartbeat(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  member_locked(worker_id);
}

void CoordinatorCore::leave(const std::string& worker_id) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = members_.find(worker_id);
  if (it == members_.end()) return;
  spdlog::info("coordinator: {} left", worker_id);
  free_shards_.push_back(it->second.info.shard);
  members_.erase(it);
  round_closed_.notify_all();
}

void CoordinatorCore::check_header(const Update& u, uint64_t payload_bytes) const {
  uint64_t limit = uint64_t(config_.sync.coordinator.max_update_mb) << 20;
  if (payload_bytes > limit)
    throw CoordError(CoordError::kResourceExhausted,
                     "update of " + std::to_string(payload_bytes) + " bytes exceeds the limit of " +
                         std::to_string(limit) + " (sync.coordinator.max_update_mb)");
  std::lock_guard<std::mutex> lock(mu_);
  if (!members_.count(u.worker_id))
    throw CoordError(CoordError::kNotFound, "unknown worker '" + u.worker_id + "' (join first)");
  if (u.round != round_)
    throw CoordError(CoordError::kFailedPrecondition,
                     "update for round " + std::to_string(u.round) +
                         " but the coordinator is at round " + std::to_string(round_) +
                         (u.round < round_ ? " (stale)" : " (future)"));
  const bool state = u.kind == Update::kState;
  if (state && !demo_)
    throw CoordError(CoordError::kInvalidArgument, "a parameter (STATE) push, but sync.mode is '" +
                                                       config_.sync.mode +
                                                       "'; only demo averages replicas");
  if (state ? members_.at(u.worker_id).info.reported_state : members_.at(u.worker_id).info.reported)
    throw CoordError(CoordError::kFailedPrecondition,
                     "worker '" + u.worker_id + "' already pushed " +
                         (state ? "its parameters for" : "") + "round " + std::to_string(u.round));
  if (u.tensors.size() != layout_.size())
    throw CoordError(CoordError::kInvalidArgument,
                     "update has " + std::to_string(u.tensors.size()) + " tensors, the model has " +
                         std::to_string(layout_.size()));
  for (size_t i = 0; i < layout_.size(); ++i) {
    const auto& t = u.tensors[i];
    const auto& l = layout_[i];
    if (t.name != l.name)
      throw CoordError(CoordError::kInvalidArgument, "tensor " + std::to_string(i) + " is '" +
                                                         t.name + "', expected '" + l.name + "'");
    if (t.encoded.shape != l.shape)
      throw CoordError(CoordError::kInvalidArgument, "tensor '" + t.name + "' has shape " +
                                                         shape_str(t.encoded.shape) +
                                                         ", expected " + shape_str(l.shape));
    if (t.dtype != "float32")
      throw CoordError(CoordError::kInvalidArgument,
                       "tensor '" + t.name + "' has dtype '" + t.dtype + "', expected float32");
    const std::string codec = state ? "none" : codec_->name();
    if (t.encoded.codec != codec)
      throw CoordError(CoordError::kInvalidArgument, "tensor '" + t.name + "' is encoded with '" +
                                                         t.encoded.codec + "', expected '" + codec +
                                                         "'");
  }
  if (u.tokens <= 0 && !state)
    throw CoordError(CoordError::kInvalidArgument,
                     "update claims " + std::to_string(u.tokens) + " tokens (must be positive)");
}

// Decodes every tensor of `u` with `codec`; throws kInvalidArgument naming the tensor. Decoded
// tensors may alias u's payloads. With `sparse_chunk` > 0 (demo) it only parses the dct payloads
// and also refuses a chunking other than the run's (chunk_plan(shape, sparse_chunk), what every
// worker's codec writes): the round's merge needs one chunking per tensor.
static std::vector<torch::Tensor> decode_all(const Update& u, const Codec& codec,
                                             const std::vector<TensorLayout>& layout,
                                             int64_t sparse_chunk) {
  std::vector<torch::Tensor> decoded(layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    try {
      if (sparse_chunk > 0) {
        const ChunkPlan plan = parse_dct(u.tensors[i].encoded).plan;
        if (!(plan == chunk_plan(layout[i].shape, sparse_chunk)))
          throw CodecError("chunks of " + std::to_string(plan.n1) + "x" + std::to_string(plan.n2) +
                           ", this run's codec (sync.codec.chunk " + std::to_string(sparse_chunk) +
                           ") cuts this tensor differently");
        continue;
      }
      decoded[i] = codec.decode_view(u.tensors[i].encoded);
    } catch (const CodecError& e) {
      throw CoordError(CoordError::kInvalidArgument,
                       "tensor '" + layout[i].name + "': " + std::string(e.what()));
    }
    if (decoded[i].numel() != layout[i].numel)
      throw CoordError(CoordError::kInvalidArgument, "tensor '" + layout[i].name + "' decodes to " +
                                                         std::to_string(decoded[i].numel()) +
                                                         " values, expected " +
                                                         std::to_string(layout[i].numel));
  }
  return decoded;
}

void CoordinatorCore::push(const Update& u, uint64_t wire_bytes) {
  uint64_t payload = 0;
  for (const auto& t : u.tensors) payload += t.encoded.payload.size();
  check_header(u, payload);
  if (u.kind == Update::kState) return push_state(u, wire_bytes);
  // Decode everything before touching the round's sum: a bad tensor changes nothing. Decoding
  // checks that every value is finite; `decode_view` may alias the payload (no copy for fp32).
  double work_start = now_s();
  auto decoded = decode_all(u, *codec_, layout_, demo_ ? config_.sync.codec.chunk : 0);
  double decode_s = now_s() - work_start;
  std::unique_lock<std::mutex> lock(mu_);
  auto& m = member_locked(u.worker_id);
  if (u.round != round_ || m.info.reported || m.from_round > round_)  // it may have closed since
    throw CoordError(CoordError::kFailedPrecondition,
                     "round " + std::to_string(u.round) + " closed before this update arrived");
  double add_start = now_s();
  for (size_t i = 0; i < layout_.size(); ++i) {
    if (demo_)
      demo_payloads_[i].push_back(u.tensors[i].encoded);
    else
      sum_.narrow(0, layout_[i].offset, layout_[i].numel)
          .add_(decoded[i].reshape({-1}), double(u.tokens));
  }
  round_work_s_ += decode_s + (now_s() - add_start);
  m.info.reported = true;
  m.round_tokens = u.tokens;
  m.info.last_loss = u.loss;
  m.info.bytes_up += wire_bytes;
  bytes_up_ += wire_bytes;
  round_up_ += wire_bytes;
  method_bytes_ += wire_bytes;
  round_tokens_ += u.tokens;
  round_loss_sum_ += u.loss * double(u.tokens);
  round_last_report_ = now_s();
  if (round_first_report_ < 0) round_first_report_ = round_last_report_;
  if (round_complete_locked()) close_round_locked();
}

bool CoordinatorCore::round_complete_locked() const {
  int taking_part = 0, reported = 0;
  for (const auto& [id, m] : members_)
    if (m.from_round <= round_) ++taking_part, reported += m.info.reported;
  return reported > 0 && reported == taking_part &&
         (rounds_closed_here_ > 0 || taking_part >= config_.sync.workers);
}

double CoordinatorCore::straggler_deadline_locked() const {
  const auto& co = config_.sync.coordinator;
  if (co.straggler != "adaptive" || spreads_.empty()) return co.round_timeout_s;
  std::vector<double> sorted(spreads_.begin(), spreads_.end());
  std::nth_element(sorted.begin(), sorted.begin() + long(sorted.size() / 2), sorted.end());
  double median = sorted[sorted.size() / 2];
  return std::min(co.round_timeout_s, std::max(co.straggler_min_s, co.straggler_factor * median));
}

void CoordinatorCore::push_state(const Update& u, uint64_t wire_bytes) {
  auto none = make_codec(CodecConfig{});
  auto decoded = decode_all(u, *none, layout_, 0);
  std::unique_lock<std::mutex> lock(mu_);
  auto& m = member_locked(u.worker_id);
  if (u.round != round_ || m.info.reported_state)
    throw CoordError(CoordError::kFailedPrecondition,
                     "the consensus of round " + std::to_string(u.round) + " is closed");
  if (!state_sum_.defined()) state_sum_ = torch::zeros_like(theta_);
  for (size_t i = 0; i < layout_.size(); ++i)
    state_sum_.narrow(0, layout_[i].offset, layout_[i].numel).add_(decoded[i].reshape({-1}));
  m.info.reported_state = true;
  m.info.bytes_up += wire_bytes;
  bytes_up_ += wire_bytes;
  (is_resync_round(round_) ? method_bytes_ : consensus_bytes_) += wire_bytes;
  ++state_count_;
  if (state_count_ == int(members_.size())) close_consensus_locked();
}

bool CoordinatorCore::is_resync_round(int64_t round) const {
  return demo_ && config_.sync.resync_every > 0 && round % config_.sync.resync_every == 0;
}

void CoordinatorCore::close_consensus_locked() {
  theta_.copy_(state_sum_).div_(double(state_count_));
  state_sum_.zero_();
  for (auto& [id, m] : members_) m.info.reported_state = false;
  ClosedRound r;
  r.consensus = true;
  r.round = round_;
  r.workers = state_count_;
  state_count_ = 0;
  r.tokens_total = tokens_total_;
  r.loss = last_round_loss_;
  r.wall_s = now_s() - start_time_;
  r.method_bytes = method_bytes_, r.consensus_bytes = consensus_bytes_,
  r.setup_bytes = setup_bytes_;
  r.fp32_diloco_bytes = fp32_diloco_bytes_, r.ddp_bytes = ddp_bytes_;
  r.theta = theta_.clone();
  if (checkpoint_due(round_)) {
    r.velocity = outer_->velocity().clone();
    r.shard_tokens = shard_tokens_tensor();
  }
  consensus_round_ = round_;
  spdlog::info("coordinator: consensus of round {} from {} replicas", round_, r.workers);
  eval_queue_.push_back(std::move(r));
  eval_cv_.notify_all();
  round_closed_.notify_all();
}

void CoordinatorCore::close_round_locked() {
  ClosedRound r;
  r.round_s = now_s() - round_started_;
  double work_start = now_s();
  if (demo_) {
    for (size_t i = 0; i < layout_.size(); ++i) {
      aggregate_[i] = encode_sparse(merge_sparse(demo_payloads_[i]), config_.sync.codec.values);
      demo_payloads_[i].clear();
    }
  } else {
    sum_.div_(double(round_tokens_));
    if (download_update_) encode_aggregate_locked();
    outer_->step(theta_, sum_);
    sum_.zero_();
    if (download_update_)
      aggregate_checksum_ = fnv1a64(theta_.data_ptr(), size_t(theta_.numel()) * 4);
  }
  r.work_s = round_work_s_ + (now_s() - work_start);
  round_work_s_ = 0;
  r.loss = last_round_loss_ = round_loss_sum_ / double(round_tokens_);
  r.tokens = round_tokens_;
  if (round_complete_locked()) {  // everyone taking part reported: how far apart they arrived
    spreads_.push_back(round_last_report_ - round_first_report_);
    if (spreads_.size() > 8) spreads_.pop_front();
  }
  r.deadline_s = straggler_deadline_locked();
  r.live = int(members_.size());
  for (auto& [id, m] : members_) {
    if (m.info.reported) {
      r.members.push_back(id);
      shard_tokens_[size_t(m.info.shard)] += m.round_tokens;
    }
    r.workers += m.info.reported, m.info.reported = false, m.round_tokens = 0;
  }
  tokens_total_ += r.tokens;
  r.tokens_total = tokens_total_;
  r.up = round_up_, r.down = round_down_;
  r.work_bytes = uint64_t(r.workers) * uint64_t(theta_.numel()) * 4;
  // What fp32 DiLoCo (full Δ up, full θ down) and DDP (a ring all-reduce of 4N bytes every step,
  // each way) would have moved for this round, all workers together.
  const double n4 = 4.0 * double(theta_.numel()), w = double(config_.sync.workers);
  fp32_diloco_bytes_ += double(r.workers) * 2 * n4;
  ddp_bytes_ += double(config_.sync.inner_steps) * 2 * 2 * (w - 1) * n4;
  r.method_bytes = method_bytes_, r.consensus_bytes = consensus_bytes_,
  r.setup_bytes = setup_bytes_;
  r.fp32_diloco_bytes = fp32_diloco_bytes_, r.ddp_bytes = ddp_bytes_;
  round_tokens_ = 0, round_loss_sum_ = 0, round_first_report_ = -1, round_up_ = 0, round_down_ = 0;
  r.round = ++round_;
  ++rounds_closed_here_;
  if (!demo_) {  // demo evaluates and checkpoints the consensus instead
    r.theta = theta_.clone();
    // On disk before any worker can pull this state: what a worker was given is never lost.
    if (checkpoint_due(round_))
      write_checkpoint(round_, tokens_total_, theta_, outer_->velocity(), shard_tokens_tensor());
  }
  round_started_ = now_s();
  r.wall_s = round_started_ - start_time_;
  spdlog::info("coordinator: round {}/{} closed with {} of {} live workers, {} tokens, loss {:.4f}",
               r.round, total_rounds_, r.workers, r.live, r.tokens, r.loss);
  eval_queue_.push_back(std::move(r));
  eval_cv_.notify_all();
  round_closed_.notify_all();
}

void CoordinatorCore::encode_aggregate_locked() {
  for (size_t i = 0; i < layout_.size(); ++i) {
    const auto& l = layout_[i];
    auto x = sum_.narrow(0, l.offset, l.numel).view(l.shape);
    aggregate_[i] = down_feedback_ ? down_feedback_->encode(l.name, x) : down_codec_->encode(x);
    x.copy_(down_codec_->decode(aggregate_[i]));  // step with exactly what the workers decode
  }
}

void CoordinatorCore::eval_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    eval_cv_.wait(lock, [this] { return eval_stop_ || !eval_queue_.empty(); });
    if (eval_queue_.empty()) return;  // stopping, nothing left
    ClosedRound r = std::move(eval_queue_.front());
    eval_queue_.pop_front();
    eval_busy_ = true;
    lock.unlock();
    try {
      evaluate_and_log(r);  // logs without evaluating when r.theta is undefined
      if (r.velocity.defined())
        write_checkpoint(r.round, r.tokens_total, r.theta, r.velocity, r.shard_tokens);
    } catch (const std::exception& e) {
      spdlog::error("coordinator: evaluating round {} failed: {}", r.round, e.what());
    }
    lock.lock();
    eval_busy_ = false;
    eval_cv_.notify_all();
  }
}

void CoordinatorCore::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  eval_cv_.wait(lock, [this] { return eval_queue_.empty() && !eval_busy_; });
}

void CoordinatorCore::evaluate_and_log(const ClosedRound& r) {
  nlohmann::json record = {{"round", r.round},
                           {"step", r.round * config_.sync.inner_steps},
                           {"tokens", r.tokens_total},
                           {"loss", r.loss},
                           {"lr", config_.sync.outer.lr},
                           {"wall_s", r.wall_s},
                           {"workers", r.workers},
                           {"members", r.members},
                           {"bytes_total", r.method_bytes},
                           {"setup_bytes_total", r.setup_bytes},
                           {"fp32_diloco_bytes", r.fp32_diloco_bytes},
                           {"ddp_bytes", r.ddp_bytes},
                           {"ratio_vs_diloco_fp32", r.fp32_diloco_bytes / double(r.method_bytes)},
                           {"ratio_vs_ddp", r.ddp_bytes / double(r.method_bytes)}};
  if (r.consensus) {
    record["consensus"] = true;
    record["consensus_bytes_total"] = r.consensus_bytes;
    record["setup_bytes_total"] = r.setup_bytes;
  } else {
    record.update({{"bytes_up", r.up},
                   {"bytes_down", r.down},
                   {"round_tokens", r.tokens},
                   {"round_s", r.round_s},
                   {"live", r.live},
                   {"deadline_s", r.deadline_s},
                   {"coord_work_s", r.work_s},
                   {"coord_work_bytes", r.work_bytes}});
  }
  if (r.theta.defined()) {
    evaluator_->flat->data().copy_(r.theta);
    const auto& t = config_.train;
    EvalStats e = evaluate_model(evaluator_->model, evaluator_->val_tokens, evaluator_->token_bytes,
                                 t.batch_size, config_.model.seq_len, t.eval_batches,
                                 torch::Device(torch::kCPU));
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_val_loss_ = e.loss;
      last_val_bpb_ = e.bpb;
    }
    spdlog::info("coordinator: round {}{} | val loss {:.4f} | val bpb {:.4f}", r.round,
                 r.consensus ? " (consensus of the replicas)" : "", e.loss, e.bpb);
    record["val_loss"] = e.loss;
    record["val_bpb"] = e.bpb;
  }
  metrics_->write(record);
}

std::pair<int64_t, torch::Tensor> CoordinatorCore::wait_state(const std::string& worker_id,
                                                              int64_t round, double timeout_s,
                                                              double* wait_s) {
  auto d = wait_download(worker_id, PullKind::kParams, round, false, timeout_s, wait_s);
  return {d.round, d.flat};
}

Download CoordinatorCore::wait_download(const std::string& worker_id, PullKind kind, int64_t round,
                                        bool with_velocity, double timeout_s, double* wait_s) {
  double start = now_s();
  std::unique_lock<std::mutex> lock(mu_);
  member_locked(worker_id);
  if (kind == PullKind::kAggregate && !download_update_)
    throw CoordError(CoordError::kFailedPrecondition,
                     "this run downloads the parameters, not an aggregate (sync.download)");
  if (kind == PullKind::kConsensus && !demo_)
    throw CoordError(CoordError::kFailedPrecondition, "only sync.mode demo has a consensus");
  bool ok = round_closed_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] {
    return kind == PullKind::kConsensus ? consensus_round_ >= round : round_ >= round;
  });
  if (wait_s) *wait_s = now_s() - start;
  if (!ok)
    throw CoordError(CoordError::kUnavailable, "round " + std::to_string(round) +
                                                   " not reached within " +
                                                   std::to_string(int(timeout_s)) + " s");
  Download d;
  d.round = kind == PullKind::kConsensus ? consensus_round_ : round_;
  if (kind == PullKind::kAggregate) {
    if (round != round_)
      throw CoordError(CoordError::kFailedPrecondition,
                       "the aggregate of round " + std::to_string(round) +
                           " is gone (the coordinator is at round " + std::to_string(round_) +
                           "); pull the parameters instead");
    d.tensors = aggregate_;
    d.checksum = aggregate_checksum_;
  } else {
    d.flat = with_velocity ? torch::cat({theta_, outer_->velocity()}) : theta_.clone();
  }
  return d;
}

void CoordinatorCore::count_download(const std::string& worker_id, uint64_t wire_bytes,
                                     PullKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_down_ += wire_bytes;
  auto it = members_.find(worker_id);
  bool first = it != members_.end() && !it->second.pulled;
  if (it != members_.end()) it->second.info.bytes_down += wire_bytes, it->second.pulled = true;
  if (first) {
    setup_bytes_ += wire_bytes;  // a member's first pull: what any method needs to start
  } else if (kind == PullKind::kConsensus && !is_resync_round(round_)) {
    consensus_bytes_ += wire_bytes;
  } else {
    round_down_ += wire_bytes;
    method_bytes_ += wire_bytes;
  }
}

void CoordinatorCore::tick() {
  std::unique_lock<std::mutex> lock(mu_);
  double now = now_s();
  for (auto it = members_.begin(); it != members_.end();) {
    if (now - it->second.last_seen > config_.sync.coordinator.lease_s) {
      spdlog::warn("coordinator: {} missed its lease ({} s without a heartbeat); dropped",
                   it->first, config_.sync.coordinator.lease_s);
      free_shards_.push_back(it->second.info.shard);
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
  int reported = 0;
  for (const auto& [id, m] : members_) reported += m.info.reported;
  bool deadline = round_first_report_ >= 0 &&
                  now - round_first_report_ > straggler_deadline_locked() &&
                  reported >= config_.sync.coordinator.min_workers;
  bool all_in = round_complete_locked();
  if (round_ < total_rounds_ && (all_in || deadline)) close_round_locked();
  // demo: a member that left or lapsed no longer holds up the consensus
  if (state_count_ > 0 && state_count_ >= int(members_.size())) close_consensus_locked();
}

nlohmann::json CoordinatorCore::totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  const double method = double(std::max<uint64_t>(method_bytes_, 1));
  nlohmann::json out = {
      {"rounds", round_},
      {"total_rounds", total_rounds_},
      {"complete", round_ >= total_rounds_},  // false when stopped early (Ctrl-C, SIGTERM)
      {"tokens", tokens_total_},
      {"bytes_up", bytes_up_},
      {"bytes_down", bytes_down_},
      {"bytes_total", method_bytes_},
      {"consensus_bytes_total", consensus_bytes_},
      {"setup_bytes_total", setup_bytes_},
      {"fp32_diloco_bytes", fp32_diloco_bytes_},
      {"ddp_bytes", ddp_bytes_},
      {"ratio_vs_diloco_fp32", fp32_diloco_bytes_ / method},
      {"ratio_vs_ddp", ddp_bytes_ / method},
      {"final_val_loss", last_val_loss_},
      {"final_val_bpb", last_val_bpb_}};
  // The slow link the workers reached this coordinator through, and how it was shaped.
  LinkPlan link = plan_link(config_.sync.link);
  if (!link.record.is_null()) out["link"] = link.record;
  return out;
}

bool CoordinatorCore::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return round_ >= total_rounds_ && members_.empty() && eval_queue_.empty() && !eval_busy_;
}

int64_t CoordinatorCore::round() const {
  std::lock_guard<std::mutex> lock(mu_);
  return round_;
}

CoordinatorStatus CoordinatorCore::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  CoordinatorStatus s;
  s.round = round_, s.total_rounds = total_rounds_;
  for (const auto& [id, m] : members_) s.members.push_back(m.info);
  s.bytes_up = bytes_up_, s.bytes_down = bytes_down_, s.last_val_loss = last_val_loss_;
  return s;
}

void CoordinatorCore::save_checkpoint() {
  drain();
  int64_t round, tokens;
  torch::Tensor theta, velocity, shards;
  {
    std::lock_guard<std::mutex> lock(mu_);
    round = round_, tokens = tokens_total_;
    theta = theta_.clone();
    velocity = outer_->velocity().clone();
    shards = shard_tokens_tensor();
  }
  write_checkpoint(round, tokens, theta, velocity, shards);
}

bool CoordinatorCore::checkpoint_due(int64_t round) const {
  return round % config_.sync.coordinator.checkpoint_every == 0 || round == total_rounds_;
}

torch::Tensor CoordinatorCore::shard_tokens_tensor() const {
  return torch::tensor(shard_tokens_, torch::kInt64);
}

void CoordinatorCore::write_checkpoint(int64_t round, int64_t tokens, const torch::Tensor& theta,
                                       const torch::Tensor& velocity,
                                       const torch::Tensor& shard_tokens) {
  Checkpoint c;
  c.step = round;
  c.tokens = tokens;
  c.tensors["params"] = theta;
  c.tensors["outer_velocity"] = velocity;
  c.tensors["shard_tokens"] = shard_tokens;
  c.wall_s = now_s() - start_time_;
  c.config_yaml = to_yaml(config_);
  std::string dir = (fs::path(config_.run.dir) / "checkpoints").string();
  loco::save_checkpoint(checkpoint_path(dir, c.step), c);
  prune_checkpoints(dir, config_.train.keep_checkpoints);
}

}  // namespace loco
