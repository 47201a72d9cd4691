// `loco sample`, `loco export` and `loco status`: the commands that read a checkpoint or watch a
// coordinator rather than train.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <iostream>

#include "commands.h"

namespace loco::cli {
namespace {

std::atomic<bool> g_stop_watch{false};
void stop_watch(int) {
  g_stop_watch = true;
}

}  // namespace

CLI::App* add_sample(CLI::App& app, SampleOptions& o) {
  auto* cmd = app.add_subcommand("sample", "continue a prompt with a checkpoint");
  cmd->add_option("--checkpoint", o.checkpoint, "checkpoint file")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--prompt", o.prompt, "text to continue")->required();
  cmd->add_option("--tokenizer", o.tokenizer, "tokenizer model (default: the run's)");
  cmd->add_option("--max-tokens", o.max_tokens)->capture_default_str();
  cmd->add_option("--temperature", o.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", o.top_k, "0 = all")->capture_default_str();
  cmd->add_option("--seed", o.seed)->capture_default_str();
  cmd->add_option("--device", o.device)->capture_default_str();
  return cmd;
}

int run_sample(const SampleOptions& options) {
  std::cout << options.prompt << sample(options) << "\n";
  return 0;
}

CLI::App* add_export(CLI::App& app, ExportOptions& o) {
  auto* cmd = app.add_subcommand(
      "export", "a checkpoint as model.safetensors + config.json + tokenizer (docs/export.md)");
  cmd->add_option("--checkpoint", o.checkpoint, "a run's or a coordinator's checkpoint file")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o.out, "directory to write")->required();
  cmd->add_option("--tokenizer", o.tokenizer, "tokenizer model (default: the run's)");
  cmd->add_flag("--force", o.force, "replace a non-empty --out");
  return cmd;
}

int run_export(const ExportOptions& options) {
  export_model(options);
  spdlog::info("export: wrote {}/model.safetensors, config.json, tokenizer.model", options.out);
  return 0;
}

CLI::App* add_status(CLI::App& app, StatusOptions& o) {
  auto* cmd = app.add_subcommand(
      "status", "a running coordinator's round, members, bytes and losses (docs/status.md)");
  cmd->add_option("address", o.address,
                  "HOST:PORT of the coordinator (default: --config's sync.coordinator.address)");
  cmd->add_option("--watch", o.watch_s,
                  "print again every SECONDS (2 when not given) until the coordinator is gone")
      ->expected(0, 1)
      ->default_str("2")
      ->check(CLI::Range(0.1, 86400.0));
  cmd->add_flag("--json", o.json, "print /status.json's JSON instead of the table");
  cmd->add_option("--config", o.config_path, "take sync.coordinator (secret, TLS) from this YAML")
      ->check(CLI::ExistingFile);
  cmd->add_option("--secret-file", o.secret_file, "the run's shared secret (as secret_file)");
  cmd->add_option("--tls-ca", o.tls_ca, "CA of the coordinator's certificate (as tls.ca)");
  cmd->add_option("--tls-cert", o.tls_cert, "client certificate (as tls.cert)");
  cmd->add_option("--tls-key", o.tls_key, "its key (as tls.key)");
  return cmd;
}

int run_status_command(const StatusOptions& options) {
  struct sigaction sa {};
  sa.sa_handler = stop_watch;  // Ctrl-C ends a watch (exit 0)
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  return run_status(options, g_stop_watch, std::cout);
}

}  // namespace loco::cli
