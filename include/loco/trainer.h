// The inner training loop of one worker: steps, evaluation, checkpoints, metrics, resume.
//
// A Trainer owns the model, its flat parameters, the optimizer and the data streams of one
// process. run() trains to train.max_steps, logging progress, evaluating every eval_every steps
// (val loss and bits per byte), checkpointing every checkpoint_every steps and writing
// metrics.jsonl and config.yaml into run.dir (run_dir.h), and at the end summary.json when the
// run is this process's (single; DDP's rank 0: see Sync::summary and include/loco/bytes.h).
// With train.precision bf16 each micro-batch's forward runs under autocast (precision.h); the
// parameters, gradients, optimizer state and checkpoints stay fp32.
// Constructed with RunStart::kResume it continues from the newest checkpoint in
// run.dir/checkpoints exactly where the interrupted run stood; with kFresh it refuses a run.dir
// that holds checkpoints.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "loco/config.h"
#include "loco/loader.h"
#include "loco/model.h"
#include "loco/optim.h"
#include "loco/run_dir.h"
#include "loco/sync.h"

namespace loco {

class MetricsWriter;

// A run that cannot go on (a non-finite loss); the message says at which step and what is kept.
struct TrainingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct StepStats {
  int64_t step = 0;  // steps completed after this one
  double loss = 0;   // mean training loss of the step's micro-batches
  double lr = 0;     // AdamW peak lr times the schedule multiplier
  double grad_norm = 0;
  double seconds = 0;
};

struct EvalStats {
  double loss = 0;  // mean cross-entropy in nats per token
  double bpb = 0;   // bits per UTF-8 byte of the val text
};

struct TrainSummary {
  int64_t steps = 0, tokens = 0;
  double final_loss = 0, wall_s = 0;
  EvalStats final_eval;
  std::string run_dir, metrics_path, checkpoint_path;
};

class Trainer {
 public:
  // `rank`/`world_size` choose this worker's share of the training stream. `sync` (optional)
  // joins this trainer to others (see sync.h); without one the trainer runs alone.
  Trainer(const Config& config, RunStart start, int64_t rank = 0, int64_t world_size = 1,
          std::unique_ptr<Sync> sync = nullptr);
  ~Trainer();

  TrainSummary run();
  StepStats train_step();
  EvalStats evaluate();
  std::string save_checkpoint();  // returns the path written
  // Moves training to `step` (the lr schedule follows) and, when given, the data stream to
  // `cursor`: a DiLoCo worker that joins mid-run, or one a restarted coordinator rolled back.
  void set_position(int64_t step, const std::optional<LoaderCursor>& cursor);
  // Everything `c` (read from `path`) holds: parameters, optimizer, RNG, data position, step,
  // tokens (a coordinated worker resuming exactly restores its own checkpoint from its strategy).
  void restore(const Checkpoint& c, const std::string& path);

  int64_t step() const { return step_; }
  int64_t tokens() const { return tokens_; }
  const Config& config() const { return config_; }
  GPT& model() { return model_; }
  FlatParams& params() { return *params_; }
  Optimizer& optimizer() { return *optimizer_; }
  DataLoader& loader() { return *loader_; }
  const torch::Device& device() const { return device_; }
  const std::string& last_checkpoint() const { return last_checkpoint_; }
  const std::string& metrics_path() const;  // run.dir/metrics.jsonl

 private:
  void restore(const std::string& path);  // the newest checkpoint at start (RunStart::kResume)
  void write_summary(const TrainSummary& summary);
  double current_lr() const;

  Config config_;
  torch::Device device_;
  GPT model_{nullptr};
  std::unique_ptr<FlatParams> params_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<DataLoader> loader_;
  std::shared_ptr<const TokenStream> val_tokens_;
  torch::Tensor token_bytes_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<Sync> sync_;
  int64_t step_ = 0, tokens_ = 0;
  double wall_offset_s_ = 0;  // training time before this process (from the checkpoint)
  std::string last_checkpoint_;
};

// Mean loss and bits per byte of `model` over `batches` fixed validation batches, in fp32
// whatever train.precision says (docs/precision.md: the val loss measures the weights).
EvalStats evaluate_model(GPT& model, const TokenStream& val_tokens,
                         const torch::Tensor& token_bytes, int64_t batch_size, int64_t seq_len,
                         int64_t batches, const torch::Device& device);

// Bytes per token id, from data.tokenizer (0 for control tokens); checks the vocabulary size
// against model.vocab_size.
torch::Tensor load_token_bytes(const Config& config);

// Opens the token stream (first shard + index) named by config key `key` ("data.train",
// "data.val"), verified and memory-mapped, checking its vocabulary and that it holds at least one
// window of model.seq_len + 1 tokens. Errors (ConfigError) name the key and the file.
std::shared_ptr<const TokenStream> load_checked_tokens(const std::string& key,
                                                       const std::string& path,
                                                       const ModelConfig& model);

// Device from train.device, checked against what this LibTorch was built with.
torch::Device resolve_device(const std::string& name);

// Copies the weights of `checkpoint_path` into `model` (train.init_from). Throws ConfigError
// naming the checkpoint and the first tensor whose name or shape differs from `model`'s.
void init_from_checkpoint(GPTImpl& model, const std::string& checkpoint_path);

// Builds a model from a checkpoint's config and parameters (for sample and eval).
GPT load_model(const std::string& checkpoint_path, const torch::Device& device, Config* config);

}  // namespace loco
