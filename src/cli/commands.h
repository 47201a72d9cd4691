// Subcommands of the `loco` binary that live outside main.cpp: each adds itself to the CLI11 app
// (returning its App, to tell whether it was given) and runs from its options.
#pragma once

#include <CLI/CLI.hpp>

#include "loco/eval.h"

namespace loco::cli {

// `loco eval --checkpoint CKPT [--data DIR]... [--tasks FILE]... [--similarity CKPT] ...`
CLI::App* add_eval(CLI::App& app, EvalOptions& options);
int run_eval(const EvalOptions& options);

// `loco data cloze --data DIR --out FILE.jsonl ...`, under `loco data`.
CLI::App* add_cloze(CLI::App& data, ClozeOptions& options);
int run_cloze(const ClozeOptions& options);

}  // namespace loco::cli
