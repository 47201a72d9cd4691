// Subcommands of the `loco` binary that live outside main.cpp: each adds itself to the CLI11 app
// (returning its App, to tell whether it was given) and runs from its options.
#pragma once

#include <CLI/CLI.hpp>

#include "loco/eval.h"
#include "loco/export.h"
#include "loco/sample.h"
#include "loco/status.h"

namespace loco::cli {

// `loco eval --checkpoint CKPT [--data DIR]... [--tasks FILE]... [--similarity CKPT] ...`
CLI::App* add_eval(CLI::App& app, EvalOptions& options);
int run_eval(const EvalOptions& options);

// `loco data cloze --data DIR --out FILE.jsonl ...`, under `loco data`.
CLI::App* add_cloze(CLI::App& data, ClozeOptions& options);
int run_cloze(const ClozeOptions& options);

// `loco sample`, `loco export`, `loco status` (tool_commands.cpp).
CLI::App* add_sample(CLI::App& app, SampleOptions& options);
int run_sample(const SampleOptions& options);
CLI::App* add_export(CLI::App& app, ExportOptions& options);
int run_export(const ExportOptions& options);
CLI::App* add_status(CLI::App& app, StatusOptions& options);
int run_status_command(const StatusOptions& options);

}  // namespace loco::cli
