// The single-worker training loop (see include/loco/trainer.h).
#include "loco/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "loco/bytes.h"
#include "loco/checkpoint.h"
#include "loco/files.h"
#include "loco/metrics.h"
#include "loco/precision.h"
#include "loco/progress.h"
#include "loco/shard.h"
#include "loco/tokenizer.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

// Test hook for the divergence path: LOCO_INJECT_NAN_STEP=N makes step N's loss NaN.
int64_t injected_nan_step() {
  const char* v = std::getenv("LOCO_INJECT_NAN_STEP");
  return v ? std::atoll(v) : -1;
}

}  // namespace

std::shared_ptr<const TokenStream> load_checked_tokens(const std::string& key,
                                                       const std::string& path,
                                                       const ModelConfig& model) {
  if (!fs::exists(path))
    throw ConfigError(key + ": " + path + ": no such file (run `loco data prepare` first)");
  std::shared_ptr<const TokenStream> tokens;
  try {
    tokens = load_tokens(path);
  } catch (const ShardError& e) {
    throw ConfigError(key + ": " + e.what());
  }
  if (int64_t(tokens->vocab_size()) != model.vocab_size)
    throw ConfigError(key + ": " + path + " was tokenized with a vocabulary of " +
                      std::to_string(tokens->vocab_size()) + " but model.vocab_size is " +
                      std::to_string(model.vocab_size));
  if (tokens->size() < model.seq_len + 1)
    throw ConfigError("model.seq_len " + std::to_string(model.seq_len) + " is longer than " + key +
                      " (" + path + " holds " + std::to_string(tokens->size()) + " tokens)");
  return tokens;
}

torch::Tensor load_token_bytes(const Config& config) {
  const std::string& path = config.data.tokenizer;
  if (!fs::exists(path)) throw ConfigError("data.tokenizer: " + path + ": no such file");
  Tokenizer tok = Tokenizer::load(path);
  if (tok.vocab_size() != config.model.vocab_size)
    throw ConfigError("model.vocab_size is " + std::to_string(config.model.vocab_size) +
                      " but data.tokenizer (" + path + ") has " + std::to_string(tok.vocab_size()) +
                      " tokens; set model.vocab_size=" + std::to_string(tok.vocab_size()));
  auto bytes = tok.token_bytes();
  return torch::tensor(std::vector<int64_t>(bytes.begin(), bytes.end()), torch::kInt64);
}

torch::Device resolve_device(const std::string& name) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const std::exception&) {
    throw ConfigError("train.device: '" + name + "' is not a device (cpu | cuda | cuda:N)");
  }
  if (device.is_cuda() && !torch::cuda::is_available())
    throw ConfigError("train.device: '" + name +
                      "' but this LibTorch has no usable CUDA device (set train.device=cpu, or "
                      "build against a CUDA LibTorch with -DTorch_DIR=...)");
  if (device.is_cuda() && device.has_index() &&
      device.index() >= int64_t(torch::cuda::device_count()))
    throw ConfigError("train.device: '" + name + "' but this machine has " +
                      std::to_string(torch::cuda::device_count()) + " CUDA device(s)");
  return device;
}

Trainer::Trainer(const Config& config, RunStart start, int64_t rank, int64_t world_size,
                 std::unique_ptr<Sync> sync)
    : config_(config), device_(resolve_device(config.train.device)), sync_(std::move(sync)) {
  validate(config_);
  if (config_.train.threads > 0) torch::set_num_threads(int(config_.train.threads));
  check_precision(config_.train.precision, device_);
  if (device_.is_cuda()) set_tf32(config_.train.tf32);
  const auto& m = config_.model;
  auto train_tokens = load_checked_tokens("data.train", config_.data.train, m);
  val_tokens_ = load_checked_tokens("data.val", config_.data.val, m);
  token_bytes_ = load_token_bytes(config_).to(device_);

  model_ = GPT(m);
  model_->init_weights(config_.run.seed);
  if (!config_.train.init_from.empty()) init_from_checkpoint(*model_, config_.train.init_from);
  model_->to(device_);
  params_ = std::make_unique<FlatParams>(*model_);
  optimizer_ = make_optimizer(config_.train.optimizer, *params_);
  try {
    loader_ = std::make_unique<DataLoader>(train_tokens, config_.train.batch_size, m.seq_len,
                                           config_.run.seed, rank, world_size);
  } catch (const std::invalid_argument& e) {
    throw ConfigError("data.train (" + config_.data.train + "): " + e.what());
  }

  std::string newest = prepare_run_dir(config_.run.dir, start);
  int64_t keep_metrics_up_to = -1;
  if (!newest.empty()) {
    restore(newest);
    keep_metrics_up_to = step_;
  }
  metrics_ = open_run_files(config_, keep_metrics_up_to);
  spdlog::info(
      "model: {} layers, width {}, {} heads, {:.2f}M parameters, {:.1f} MFLOP/token, {} on {}",
      m.n_layer, m.n_embd, m.n_head, model_->num_params() / 1e6, model_->flops_per_token() / 1e6,
      config_.train.precision, device_.str());
}

Trainer::~Trainer() = default;

double Trainer::current_lr() const {
  const auto& opt = config_.train.optimizer;
  double peak = opt.name == "muon" ? opt.matrix_lr : opt.lr;
  return peak * lr_multiplier(config_.train.schedule, step_, config_.train.max_steps);
}

StepStats Trainer::train_step() {
  model_->train();
  double start = now_s();
  params_->zero_grad();
  const int64_t accum = config_.train.grad_accum;
  double loss_sum = 0;
  for (int64_t i = 0; i < accum; ++i) {
    Batch batch = loader_->next();
    torch::Tensor loss;
    {
      AutocastGuard autocast(device_, config_.train.precision == "bf16");  // precision.h
      loss = model_->loss(batch.input.to(device_), batch.target.to(device_));
    }
    (loss / double(accum)).backward();  // in the forward's dtypes; gradients land in fp32
    loss_sum += loss.item<double>();
    tokens_ += batch.input.numel();
  }
  if (sync_) sync_->after_backward(*this);
  StepStats stats;
  stats.loss = loss_sum / double(accum);
  if (step_ + 1 == injected_nan_step()) stats.loss = std::nan("");
  if (!std::isfinite(stats.loss)) {
    std::string kept = last_checkpoint_.empty() ? "no checkpoint was written yet"
                                                : "the last good checkpoint is " + last_checkpoint_;
    throw TrainingError("loss became " + std::to_string(stats.loss) + " at step " +
                        std::to_string(step_ + 1) + "; stopped without applying it, " + kept);
  }
  stats.grad_norm = params_->clip_grad_norm(config_.train.optimizer.grad_clip);
  stats.lr = current_lr();
  optimizer_->step(lr_multiplier(config_.train.schedule, step_, config_.train.max_steps));
  stats.step = ++step_;
  stats.seconds = now_s() - start;
  return stats;
}

EvalStats evaluate_model(GPT& model, const TokenStream& val_tokens,
                         const torch::Tensor& token_bytes, int64_t batch_size, int64_t seq_len,
                         int64_t batches, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  model->eval();
  double nats = 0, bpb_nats = 0;
  int64_t count = 0, bytes = 0;
  for (int64_t i = 0; i < batches; ++i) {
    Batch batch = eval_batch(val_tokens, i, batch_size, seq_len);
    auto target = batch.target.to(device);
    auto losses = model->token_losses(batch.input.to(device), target);
    auto target_bytes = token_bytes.index({target});
    nats += losses.sum().item<double>();
    bpb_nats += (losses * (target_bytes > 0)).sum().item<double>();
    count += losses.numel();
    bytes += target_bytes.sum().item<int64_t>();
  }
  model->train();
  return {nats / double(count), bpb_nats / (std::log(2.0) * double(std::max<int64_t>(bytes, 1)))};
}

EvalStats Trainer::evaluate() {
  return evaluate_model(model_, *val_tokens_, token_bytes_, config_.train.batch_size,
                        config_.model.seq_len, config_.train.eval_batches, device_);
}

std::string Trainer::save_checkpoint() {
  Checkpoint c;
  c.step = step_;
  c.tokens = tokens_;
  c.wall_s = wall_offset_s_;
  c.config_yaml = to_yaml(config_);
  c.cursor = loader_->cursor();
  if (loader_->leased()) {  // a coordinated worker's data lease: [id, offset, rank, ranks, ranges]
    const DataLease lease = loader_->lease();
    std::vector<int64_t> v = {lease.id, loader_->lease_offset(), loader_->lease_rank(),
                              loader_->lease_ranks()};
    for (const auto& r : lease.ranges) v.insert(v.end(), {r.epoch, r.begin, r.end});
    c.tensors["data_lease"] = torch::tensor(v, torch::kInt64);
  }
  c.tensors["params"] = params_->data();
  c.tensors["rng"] = at::detail::getDefaultCPUGenerator().get_state();
  for (auto& [name, tensor] : optimizer_->state()) c.tensors["optim." + name] = tensor;
  if (sync_) sync_->save_state(*this, c.tensors);
  std::string dir = (fs::path(config_.run.dir) / "checkpoints").string();
  last_checkpoint_ = checkpoint_path(dir, step_);
  loco::save_checkpoint(last_checkpoint_, c);
  prune_checkpoints(dir, config_.train.keep_checkpoints);
  return last_checkpoint_;
}

void Trainer::restore(const std::string& path) {
  restore(load_checkpoint(path), path);
}

void Trainer::restore(const Checkpoint& c, const std::string& path) {
  auto params = c.tensors.at("params");
  TORCH_CHECK(params.numel() == params_->numel(), path, ": checkpoint holds ", params.numel(),
              " parameters, this model has ", params_->numel(), " (model config changed?)");
  torch::NoGradGuard no_grad;
  params_->data().copy_(params);
  std::map<std::string, torch::Tensor> optim;
  for (auto& [name, tensor] : c.tensors)
    if (name.rfind("optim.", 0) == 0) optim[name.substr(6)] = tensor.to(device_);
  optimizer_->load_state(optim);
  at::Generator rng = at::detail::getDefaultCPUGenerator();
  rng.set_state(c.tensors.at("rng"));
  loader_->set_cursor(c.cursor);
  auto lease = c.tensors.find("data_lease");
  if (lease != c.tensors.end()) {
    auto v = lease->second.contiguous();
    const int64_t* p = v.data_ptr<int64_t>();
    DataLease l{p[0], {}};
    for (int64_t i = 4; i + 2 < v.numel(); i += 3) l.ranges.push_back({p[i], p[i + 1], p[i + 2]});
    loader_->set_lease(l, p[1], p[2], p[3]);
  }
  step_ = c.step;
  tokens_ = c.tokens;
  wall_offset_s_ = c.wall_s;
  last_checkpoint_ = path;
  spdlog::info("resumed from {} (step {}, {} tokens)", path, step_, tokens_);
}

void Trainer::set_position(int64_t step, const std::optional<LoaderCursor>& cursor) {
  step_ = step;
  if (cursor) loader_->set_cursor(*cursor);
}

TrainSummary Trainer::run() {
  const auto& t = config_.train;
  spdlog::info("training {} steps of {} tokens into {}", t.max_steps,
               t.batch_size * t.grad_accum * config_.model.seq_len, config_.run.dir);
  double start = now_s(), last_log = start;
  const double run_start = start;  // `start` moves with each checkpoint (wall-time bookkeeping)
  TrainSummary summary;
  if (sync_) sync_->start(*this);  // may move step_ (a worker joining mid-run)
  int64_t last_log_tokens = tokens_, first_step = step_;
  bool primary = !sync_ || sync_->is_primary();
  // Elastic rounds: the strategy ends the run (at its token budget); otherwise train.max_steps,
  // or earlier when the coordinator paused the run (its last round came before max_steps).
  const bool elastic = sync_ && sync_->elastic();
  auto over = [&] {
    return elastic ? sync_->run_over() : step_ >= t.max_steps || (sync_ && sync_->run_over());
  };
  while (!over()) {
    StepStats s = train_step();
    double wall = wall_offset_s_ + (now_s() - start);
    nlohmann::json record = {{"step", s.step},
                             {"tokens", tokens_},
                             {"loss", s.loss},
                             {"lr", s.lr},
                             {"wall_s", wall},
                             {"grad_norm", s.grad_norm},
                             {"step_ms", s.seconds * 1e3}};
    if (sync_) sync_->after_step(*this, record);
    // the end, and the step not rolled back by the sync
    bool last = elastic || (sync_ && sync_->run_over())
                    ? over()
                    : s.step == t.max_steps && step_ == t.max_steps;
    if (primary && (last || (t.eval_every > 0 && s.step % t.eval_every == 0))) {
      EvalStats e;
      if (record.contains("val_loss")) {  // the sync evaluated this step's model already (demo)
        e.loss = record["val_loss"], e.bpb = record["val_bpb"];
      } else {
        e = evaluate();
        record["val_loss"] = e.loss;
        record["val_bpb"] = e.bpb;
      }
      summary.final_eval = e;
      spdlog::info("step {}/{} | val loss {:.4f} | val bpb {:.4f}", s.step, t.max_steps, e.loss,
                   e.bpb);
    }
    metrics_->write(record);
    if (last || (t.log_every > 0 && s.step % t.log_every == 0)) {
      double now = now_s();
      double tok_s = double(tokens_ - last_log_tokens) / std::max(now - last_log, 1e-9);
      double per_step = (now - run_start) / double(std::max<int64_t>(1, s.step - first_step));
      spdlog::info("step {}/{} | loss {:.4f} | lr {:.2e} | {:.0f} tok/s | eta {}", s.step,
                   t.max_steps, s.loss, s.lr, tok_s,
                   format_duration(per_step * double(t.max_steps - s.step)));
      last_log = now, last_log_tokens = tokens_;
    }
    if (last || (t.checkpoint_every > 0 && s.step % t.checkpoint_every == 0)) {
      wall_offset_s_ = wall;
      start = now_s();
      if (primary) save_checkpoint();
    }
    summary.final_loss = s.loss;
  }
  if (sync_) sync_->finish(*this);
  if (primary) write_summary(summary);
  summary.steps = step_;
  summary.tokens = tokens_;
  summary.wall_s = wall_offset_s_;
  summary.run_dir = config_.run.dir;
  summary.metrics_path = metrics_->path();
  summary.checkpoint_path = last_checkpoint_;
  return summary;
}

const std::string& Trainer::metrics_path() const {
  return metrics_->path();
}

void Trainer::write_summary(const TrainSummary& s) {
  // A single run is one rank that sent nothing (include/loco/bytes.h).
  nlohmann::json out =
      sync_ ? sync_->summary(*this) : ddp_run_bytes(params_->numel(), 1, step_, 0, 0);
  if (out.is_null()) return;  // the coordinator's to write
  if (!out.contains("tokens")) out["tokens"] = tokens_;
  out.update({{"steps", step_},
              {"total_steps", config_.train.max_steps},
              {"complete", step_ >= config_.train.max_steps},
              {"wall_s", wall_offset_s_},
              {"final_val_loss", s.final_eval.loss},
              {"final_val_bpb", s.final_eval.bpb}});
  const std::string path = (fs::path(config_.run.dir) / "summary.json").string();
  write_file_atomically(path, out.dump(1) + "\n");  // readers never see half a file
}

void init_from_checkpoint(GPTImpl& model, const std::string& checkpoint_path) {
  const std::string where = "train.init_from: " + checkpoint_path;
  Config theirs;
  GPT source = [&] {
    try {
      return load_model(checkpoint_path, torch::kCPU, &theirs);
    } catch (const std::exception& e) {
      throw ConfigError(where + ": " + e.what());
    }
  }();
  auto shape = [](const torch::Tensor& t) { return c10::str(t.sizes()); };
  auto from = source->named_parameters();
  auto to = model.named_parameters();
  for (const auto& item : to) {
    const torch::Tensor* t = from.find(item.key());
    if (!t)
      throw ConfigError(where + ": has no tensor " + item.key() + " (its model: n_layer " +
                        std::to_string(theirs.model.n_layer) + ")");
    if (!t->sizes().equals(item.value().sizes()))
      throw ConfigError(where + ": tensor " + item.key() + " has shape " + shape(*t) +
                        ", this model's is " + shape(item.value()) + " (its model.vocab_size " +
                        std::to_string(theirs.model.vocab_size) + ", n_embd " +
                        std::to_string(theirs.model.n_embd) + ")");
  }
  if (from.size() != to.size())
    throw ConfigError(where + ": has " + std::to_string(from.size()) + " tensors, this model " +
                      std::to_string(to.size()) + " (its model.n_layer is " +
                      std::to_string(theirs.model.n_layer) + ")");
  torch::NoGradGuard no_grad;
  for (auto& item : to) item.value().copy_(from[item.key()]);
}

GPT load_model(const std::string& checkpoint_path, const torch::Device& device, Config* config) {
  Checkpoint c = load_checkpoint(checkpoint_path);
  Config loaded;
  merge_yaml(loaded, c.config_yaml, checkpoint_path);
  GPT model(loaded.model);
  model->to(device);
  FlatParams flat(*model);
  torch::NoGradGuard no_grad;
  auto params = c.tensors.at("params");
  TORCH_CHECK(params.numel() == flat.numel(), checkpoint_path, ": parameter count mismatch");
  flat.data().copy_(params);
  if (config) *config = loaded;
  return model;
}

}  // namespace loco
