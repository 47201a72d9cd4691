// `loco eval` and `loco data cloze` (docs/eval.md).
#include <iostream>

#include "commands.h"

namespace loco::cli {

CLI::App* add_eval(CLI::App& app, EvalOptions& o) {
  auto* cmd = app.add_subcommand(
      "eval",
      "val loss and bits per byte on prepared corpora, multiple-choice tasks (accuracy, "
      "length-normalised accuracy), per-layer CKA and weight distance to another checkpoint "
      "(docs/eval.md)");
  cmd->add_option("--checkpoint", o.checkpoint, "a run's or a coordinator's checkpoint file")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--data", o.data,
                  "a prepared corpus (directory, or a val .bin file) to score its val split; "
                  "repeatable (default: the checkpoint's data.val)")
      ->check(CLI::ExistingPath);
  cmd->add_option("--tasks", o.tasks,
                  "a multiple-choice JSONL file ({context, choices, answer} per line); repeatable")
      ->check(CLI::ExistingFile);
  cmd->add_option("--similarity", o.similarity,
                  "another checkpoint of the same architecture: per-layer linear CKA of the "
                  "hidden states on the same val batches, and relative L2 of the weights")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", o.tokenizer, "tokenizer model (default: the run's)");
  cmd->add_option("--batches", o.batches,
                  "val batches per corpus (default: the checkpoint's train.eval_batches)");
  cmd->add_option("--json", o.json, "also write the report as JSON here");
  cmd->add_option("--device", o.device)->capture_default_str();
  return cmd;
}

int run_eval(const EvalOptions& options) {
  std::cout << format_report(evaluate_checkpoint(options));
  if (!options.json.empty()) std::cout << "\nwrote " << options.json << "\n";
  return 0;
}

CLI::App* add_cloze(CLI::App& data, ClozeOptions& o) {
  auto* cmd = data.add_subcommand(
      "cloze",
      "a multiple-choice cloze task from a prepared corpus's val split: each document's start "
      "with its true continuation among others' (JSONL for loco eval --tasks)");
  cmd->add_option("--data", o.data, "a prepared corpus directory (val.bin, tokenizer.model)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--out", o.out, "the JSONL file to write")->required();
  cmd->add_option("--examples", o.examples, "examples at most")->capture_default_str();
  cmd->add_option("--choices", o.choices, "choices per example")->capture_default_str();
  cmd->add_option("--context-tokens", o.context_tokens, "tokens of each document's start")
      ->capture_default_str();
  cmd->add_option("--answer-tokens", o.answer_tokens, "tokens of each continuation")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed)->capture_default_str();
  return cmd;
}

int run_cloze(const ClozeOptions& options) {
  const int64_t n = make_cloze_task(options);
  std::cout << "wrote " << n << " examples to " << options.out << "\n";
  return 0;
}

}  // namespace loco::cli
