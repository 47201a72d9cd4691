// Subcommands of the `loco` binary that live outside main.cpp: each adds itself to the CLI11 app
// (returning its App, to tell whether it was given) and runs from its options.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "loco/config.h"
#include "loco/eval.h"
#include "loco/export.h"
#include "loco/sample.h"
#include "loco/status.h"

namespace loco::cli {

// The config at `path` with the `--set` overrides and the typed defaults, validated (main.cpp).
Config load_config(const std::string& path, const std::vector<std::string>& overrides);

// `loco coordinator --config C [--resume]` and `loco worker --config C [--coordinator HOST:PORT]
// [--name N] [--site S] [--resume]` (member_commands.cpp): a stop signal makes a worker leave the
// coordinator at once (or hand over its lone work first) and the coordinator stop cleanly.
int run_coordinator(const std::string& config_path, const std::vector<std::string>& overrides,
                    bool resume);
int run_worker(const std::string& config_path, std::vector<std::string> overrides,
               const std::string& address, std::string name, const std::string& site, bool rejoin);

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
