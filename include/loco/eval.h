// `loco eval`: what a checkpoint is worth after pretraining (docs/eval.md).
//
// - Val loss and bits per byte on any prepared corpus (its val split), as the trainer measures
//   them (train.eval_batches fixed windows of train.batch_size x seq_len, fp32).
// - Multiple-choice tasks scored as CORE / HellaSwag / MMLU score them: each choice's summed
//   log-likelihood given the context; accuracy (the most likely choice is the answer) and
//   accuracy normalised by length (log-likelihood per UTF-8 byte of the choice). A task file is
//   JSONL, one example per line: {"context": "...", "choices": ["...", ...], "answer": INDEX}.
//   A choice is scored as the tokens that encoding context + choice adds to encoding the context
//   alone (nanochat's way), so a choice written " Paris" after "The capital is" is scored as the
//   text reads.
// - Drift against another checkpoint of the same architecture: per layer (the residual stream
//   after the embedding and after each block) the linear CKA of the two models' hidden states on
//   the same val batches, and the relative L2 distance of the layer's weights.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "loco/model.h"
#include "loco/tokenizer.h"

namespace loco {

struct EvalOptions {
  std::string checkpoint;
  std::vector<std::string> data;   // prepared corpora (directories or val .bin files); none: the
                                   // checkpoint's data.val
  std::vector<std::string> tasks;  // multiple-choice JSONL files
  std::string similarity;          // another checkpoint to compare with (CKA, weight distance)
  std::string tokenizer;           // empty: the checkpoint's data.tokenizer
  int64_t batches = 0;             // val batches per corpus; 0: the checkpoint's train.eval_batches
  std::string json;                // also write the report here (atomically)
  std::string device = "cpu";
};

struct CorpusScore {
  std::string data;  // the val token file
  double val_loss = 0, val_bpb = 0;
  int64_t tokens = 0;  // tokens scored
};

struct TaskScore {
  std::string file;
  int64_t examples = 0;
  double accuracy = 0, accuracy_norm = 0;
  int64_t choices = 0;  // choices per example (the largest), for chance level
};

struct LayerSimilarity {
  std::string layer;          // "embedding", "block.0", ..., "head" (the head has weights only)
  std::optional<double> cka;  // linear CKA of the hidden states
  double weight_rel_l2 = 0;   // ||w - w_other|| / ||w_other|| over the layer's parameters
};

struct EvalReport {
  std::string checkpoint;
  int64_t step = 0, tokens = 0;
  std::vector<CorpusScore> corpora;
  std::vector<TaskScore> tasks;
  std::string similarity_to;
  std::vector<LayerSimilarity> layers;
  nlohmann::json to_json() const;
};

// Runs everything `options` asks for. Errors (std::runtime_error / ConfigError) name the file,
// the line or the tensor.
EvalReport evaluate_checkpoint(const EvalOptions& options);

// The report as the text table `loco eval` prints.
std::string format_report(const EvalReport& report);

// --- multiple-choice tasks -------------------------------------------------------------------

struct TaskExample {
  std::string context;
  std::vector<std::string> choices;
  int64_t answer = 0;
  int64_t line = 0;  // in its file, for messages
};

// Reads a task file; a malformed line, fewer than two choices or an answer out of range is an
// error naming the file and the line.
std::vector<TaskExample> read_task_file(const std::string& path);

// Each choice's summed log-likelihood given the context, and its token count. The sequence is
// <bos> + context + choice, cut from the left to the model's seq_len + 1 tokens.
struct ChoiceScore {
  double log_likelihood = 0;
  int64_t tokens = 0;
};
std::vector<ChoiceScore> score_choices(GPTImpl& model, const Tokenizer& tokenizer,
                                       const TaskExample& example, const torch::Device& device);

// Writes a cloze task drawn from the val split of a prepared corpus: each example is the start
// of one document (`context_tokens` tokens) with its true next `answer_tokens` tokens among
// `choices` - 1 continuations drawn from other documents at the same offset. Deterministic for a
// seed. Returns how many examples it wrote.
struct ClozeOptions {
  std::string data;  // corpus directory (val.bin, tokenizer.model)
  std::string out;   // the JSONL file to write
  int64_t examples = 200;
  int64_t choices = 4;
  int64_t context_tokens = 24;
  int64_t answer_tokens = 8;
  int64_t seed = 0;
};
int64_t make_cloze_task(const ClozeOptions& options);

// Linear CKA (Kornblith et al. 2019) of two sets of n representations, x [n, d1] and y [n, d2]:
// ||y'^T x'||_F^2 / (||x'^T x'||_F ||y'^T y'||_F) with x', y' centred over the n rows; in double.
double linear_cka(const torch::Tensor& x, const torch::Tensor& y);

}  // namespace loco
