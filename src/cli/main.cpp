// `loco`: the one binary. Subcommands: data prepare, train, bench train, bench coordinator,
// launch, compare, emissions (and, in their own files, see commands.h: coordinator, worker,
// sample, export, status, eval, data cloze).
// Every user-facing error is caught here, printed as one line, and turned into exit code 1.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <csignal>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "loco/bench.h"
#include "loco/compare.h"
#include "loco/config.h"
#include "loco/ddp.h"
#include "loco/diloco.h"
#include "loco/dist_env.h"
#include "loco/emissions.h"
#include "loco/launch.h"
#include "loco/prepare.h"
#include "loco/trainer.h"

loco::Config loco::cli::load_config(const std::string& path,
                                    const std::vector<std::string>& overrides) {
  loco::Config config = loco::resolve_config(path, overrides);
  loco::validate(config);
  return config;
}

namespace {

using loco::cli::load_config;

int run_prepare(const loco::PrepareOptions& options) {
  auto r = loco::prepare_data(options);
  std::cout << "prepared " << options.out_dir << ": " << r.train_tokens << " train tokens ("
            << r.train_docs << " docs, " << r.train_shards << " shard(s) from train.bin), "
            << r.val_tokens << " val tokens (" << r.val_docs << " docs, " << r.val_shards
            << " shard(s) from val.bin)\n";
  return 0;
}

int run_train(const std::string& config_path, const std::vector<std::string>& overrides,
              bool resume) {
  loco::Config config = load_config(config_path, overrides);
  if (!config.sync.sites.empty())
    throw loco::ConfigError(
        "sync.sites lists sites: start each of their ranks with `loco worker "
        "--site NAME` (or run them all with `loco launch`)");
  if (loco::coordinated(config.sync.mode))
    throw loco::ConfigError("sync.mode is '" + std::string(loco::mode_name(config.sync.mode)) +
                            "': run it with `loco launch` (or `loco coordinator` and `loco "
                            "worker --coordinator HOST:PORT`); `loco train` runs single and ddp");
  loco::DistEnv env;
  std::unique_ptr<loco::Sync> sync;
  if (config.sync.mode == loco::Mode::kDdp) {
    env = loco::read_dist_env(config.sync.workers);
    sync = loco::make_ddp_sync(config, env);
    config = loco::ddp_rank_config(config, env);
  }
  loco::Trainer trainer(config, resume ? loco::RunStart::kResume : loco::RunStart::kFresh, env.rank,
                        env.world_size, std::move(sync));
  auto s = trainer.run();
  std::cout << "done: " << s.steps << " steps, " << s.tokens << " tokens in "
            << std::lround(s.wall_s) << " s";
  if (env.rank == 0)
    std::cout << "; final val loss " << s.final_eval.loss << ", val bpb " << s.final_eval.bpb;
  else
    std::cout << " (rank " << env.rank << " of " << env.world_size
              << "; rank 0 evaluates and writes the checkpoints)";
  std::cout << "\nmetrics:    " << s.metrics_path << "\n";
  if (env.rank == 0) std::cout << "checkpoint: " << s.checkpoint_path << "\n";
  return 0;
}

int run_bench(const std::string& config_path, const std::vector<std::string>& overrides,
              int64_t steps, int64_t warmup, bool json) {
  auto config = load_config(config_path, overrides);
  auto r = loco::bench_train(config, steps, warmup);
  if (json) {
    nlohmann::json out = {{"impl", "loco"},
                          {"tokens_per_s", r.tokens_per_s},
                          {"ms_per_step", r.ms_per_step},
                          {"peak_mem_mb", r.peak_mem_mb},
                          {"mfu", r.mfu},
                          {"flops_per_token", r.flops_per_token},
                          {"achieved_gflops", r.achieved_gflops},
                          {"matmul_peak_gflops", r.matmul_peak_gflops},
                          {"params", r.params},
                          {"precision", r.precision},
                          {"threads", config.train.threads},
                          {"steps", steps}};
    std::cout << out.dump() << "\n";
  } else {
    std::printf(
        "params         %.2fM\nprecision      %s\ntokens/s       %.0f\nms/step        %.1f\n"
        "peak memory    %.0f MB\nachieved       %.1f GFLOP/s\nmatmul peak    %.1f "
        "GFLOP/s (%s)\nMFU            %.1f%%\n",
        r.params / 1e6, r.precision.c_str(), r.tokens_per_s, r.ms_per_step, r.peak_mem_mb,
        r.achieved_gflops, r.matmul_peak_gflops, r.precision.c_str(), 100.0 * r.mfu);
  }
  return 0;
}

int run_compare(const loco::CompareOptions& options) {
  auto r = loco::compare_runs(options);
  std::cout << r.table << "\nwrote:\n";
  for (const auto& f : r.files) std::cout << "  " << f << "\n";
  return 0;
}

int run_emissions(const loco::EmissionsOptions& options) {
  auto r = loco::emissions_report(options);
  std::cout << r.table << "\nwrote:\n";
  for (const auto& f : r.files) std::cout << "  " << f << "\n";
  return 0;
}

// First line of an exception message (c10::Error appends a backtrace).
std::string first_line(const std::exception& e) {
  if (auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    std::string msg = c10->what_without_backtrace();
    return msg.substr(0, msg.find('\n'));
  }
  std::string msg = e.what();
  return msg.substr(0, msg.find('\n'));
}

// Where CLI11 puts what the command line says, and the subcommands, to see which one was given.
struct Cli {
  loco::PrepareOptions prep;
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
  loco::SampleOptions sample_opts;
  loco::ExportOptions export_opts;
  loco::EvalOptions eval_opts;
  loco::ClozeOptions cloze_opts;
  int64_t bench_steps = 10, bench_warmup = 2;
  bool bench_json = false;
  std::string coordinator_address, worker_name, worker_site;
  loco::LaunchOptions launch_opts;
  loco::CompareOptions compare_opts;
  loco::EmissionsOptions emissions_opts;
  loco::CoordBenchOptions coord_bench;
  loco::StatusOptions status_opts;
  CLI::App *prepare = nullptr, *train = nullptr, *sample = nullptr, *bench_train = nullptr,
           *bench_coordinator = nullptr, *coordinator = nullptr, *worker = nullptr,
           *launch = nullptr, *compare = nullptr, *emissions = nullptr, *export_cmd = nullptr,
           *status = nullptr, *eval = nullptr, *cloze = nullptr;
};

// --config and --set, as every subcommand that reads a config has them.
void add_config_options(CLI::App* command, std::string& config_path,
                        std::vector<std::string>& overrides) {
  command->add_option("--config", config_path, "YAML config")->required()->check(CLI::ExistingFile);
  command->add_option("--set", overrides, "override: key.path=value (repeatable)");
}

// --init-from CKPT: train.init_from (weights only; fresh optimizer and schedule) as an override.
void add_init_from(CLI::App* command, std::vector<std::string>& overrides) {
  command
      ->add_option_function<std::string>(
          "--init-from",
          [&overrides](const std::string& path) { overrides.push_back("train.init_from=" + path); },
          "start from this checkpoint's weights (a run's or a coordinator's; train.init_from)")
      ->check(CLI::ExistingFile);
}

void add_data(CLI::App& app, Cli& cli) {
  auto* data = app.add_subcommand("data", "data preparation");
  data->require_subcommand(1);
  loco::PrepareOptions& prep = cli.prep;
  auto* prepare = data->add_subcommand("prepare", "text/JSONL/JSON -> tokenizer + token shards");
  prepare->add_option("--input", prep.inputs, "input files or directories")
      ->required()
      ->check(CLI::ExistingPath);
  prepare->add_option("--out", prep.out_dir, "output directory")->required();
  prepare->add_option("--vocab-size", prep.vocab_size, "tokenizer vocabulary size")
      ->capture_default_str();
  prepare
      ->add_option("--val-permille", prep.val_permille,
                   "documents per 1000 held out for validation")
      ->capture_default_str();
  prepare
      ->add_option("--threads", prep.num_threads,
                   "tokenizer training and encoding threads (0: all cores)")
      ->capture_default_str();
  prepare
      ->add_option("--shard-tokens", prep.shard_tokens,
                   "tokens per shard (the last one shorter); 2 bytes a token below 65,536 types")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  prepare
      ->add_option("--tokenizer", prep.tokenizer,
                   "encode with this SentencePiece model (e.g. another corpus's) instead of "
                   "training one; --vocab-size is then its size")
      ->check(CLI::ExistingFile);
  cli.prepare = prepare;
  cli.cloze = loco::cli::add_cloze(*data, cli.cloze_opts);
}

void add_train(CLI::App& app, Cli& cli) {
  auto* train = app.add_subcommand("train", "train one worker");
  add_config_options(train, cli.config_path, cli.overrides);
  train->add_flag("--resume", cli.resume, "continue from the newest checkpoint in run.dir");
  add_init_from(train, cli.overrides);
  cli.train = train;
}

void add_bench(CLI::App& app, Cli& cli) {
  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  auto* bench_train = bench->add_subcommand("train", "training throughput and MFU");
  add_config_options(bench_train, cli.config_path, cli.overrides);
  bench_train->add_option("--steps", cli.bench_steps, "timed steps")->capture_default_str();
  bench_train->add_option("--warmup", cli.bench_warmup, "untimed steps first")
      ->capture_default_str();
  bench_train->add_flag("--json", cli.bench_json, "print one JSON line");
  cli.bench_train = bench_train;

  loco::CoordBenchOptions& o = cli.coord_bench;
  auto* coord = bench->add_subcommand(
      "coordinator", "a real coordinator process and simulated workers: round time, GB/s, RSS");
  coord->add_option("--params", o.params, "model parameters (a GPT shape of about this many)")
      ->capture_default_str();
  coord->add_option("--workers", o.workers, "simulated workers (client threads)")
      ->capture_default_str();
  coord->add_option("--rounds", o.rounds)->capture_default_str();
  coord->add_option("--codec", o.codec, "sync.codec.type: none | fp16 | bf16 | int8 | dct")
      ->capture_default_str();
  coord->add_option("--dir", o.dir, "the coordinator's run directory and log (wiped first)")
      ->capture_default_str();
  coord->add_option("--port", o.port, "loopback port (0: a free one)")->capture_default_str();
  coord->add_option("--threads", o.threads, "the coordinator's threads (0: LibTorch's default)")
      ->capture_default_str();
  cli.bench_coordinator = coord;
}

void add_coordinator(CLI::App& app, Cli& cli) {
  auto* coordinator = app.add_subcommand("coordinator", "serve a DiLoCo run's coordinator (gRPC)");
  add_config_options(coordinator, cli.config_path, cli.overrides);
  coordinator->add_flag("--resume", cli.resume, "continue from the newest coordinator checkpoint");
  cli.coordinator = coordinator;
}

void add_worker(CLI::App& app, Cli& cli) {
  auto* worker = app.add_subcommand("worker", "train as one DiLoCo worker of a coordinator");
  add_config_options(worker, cli.config_path, cli.overrides);
  worker->add_option("--coordinator", cli.coordinator_address,
                     "HOST:PORT (default: sync.coordinator.address)");
  worker->add_option("--name", cli.worker_name,
                     "this worker's id at the coordinator (default: host:pid)");
  worker->add_option("--site", cli.worker_site,
                     "run as a rank of this site of sync.sites (the torchrun variables describe "
                     "the site's ranks)");
  worker->add_flag("--resume", cli.resume,
                   "rejoin the run this worker (or, with --site, this site: every rank) left: "
                   "keep its run.dir (checkpoints, metrics)");
  cli.worker = worker;
}

void add_launch(CLI::App& app, Cli& cli) {
  loco::LaunchOptions& launch_opts = cli.launch_opts;
  auto* launch = app.add_subcommand("launch", "run a whole experiment as local processes");
  add_config_options(launch, launch_opts.config_path, launch_opts.overrides);
  add_init_from(launch, launch_opts.overrides);
  launch->add_flag("--dry-run", launch_opts.dry_run, "print the per-process (per-host) commands");
  launch->add_option("--emit", launch_opts.emit_dir,
                     "write the coordinator's and every site's scripts (shell and Slurm) into "
                     "DIR instead of running (docs/multisite.md)");
  launch->add_option("--link", launch_opts.link,
                     "slow link per worker, e.g. 100mbit,50ms (sync.link.mbps, latency_ms)");
  launch->add_flag("--resume", launch_opts.resume,
                   "continue the run stopped in run.dir (the coordinator or trainer from its "
                   "newest checkpoint, the workers rejoining; docs/faults.md)");
  launch->add_option("--on-failure", launch_opts.on_failure,
                     "restart | continue | stop: what to do when a process fails (overrides "
                     "sync.on_failure; docs/faults.md)");
  cli.launch = launch;
}

void add_compare(CLI::App& app, Cli& cli) {
  loco::CompareOptions& compare_opts = cli.compare_opts;
  auto* compare = app.add_subcommand(
      "compare", "plots (val loss vs tokens, time, bytes) and a table of runs (docs/compare.md)");
  compare->add_option("runs", compare_opts.runs, "run directories; the first is the baseline")
      ->required();
  compare->add_option("--out", compare_opts.out_dir, "output directory")->capture_default_str();
  compare->add_option("--gnuplot", compare_opts.gnuplot, "gnuplot binary")->capture_default_str();
  cli.compare = compare;
  loco::EmissionsOptions& e = cli.emissions_opts;
  auto* emissions = app.add_subcommand(
      "emissions",
      "energy, emissions and centralised baselines of a run with a carbon-intensity trace, and "
      "its availability plot (docs/curtailment.md)");
  emissions->add_option("run", e.run, "run directory")->required();
  emissions->add_option("--out", e.out_dir, "output directory")->capture_default_str();
  emissions->add_option("--gnuplot", e.gnuplot, "gnuplot binary")->capture_default_str();
  emissions->add_flag("!--no-plot", e.plot, "only the table");
  cli.emissions = emissions;
}

// Runs the subcommand that was given; its exceptions reach main.
int run_command(const Cli& cli) {
  if (cli.prepare->parsed()) return run_prepare(cli.prep);
  if (cli.train->parsed()) return run_train(cli.config_path, cli.overrides, cli.resume);
  if (cli.sample->parsed()) return loco::cli::run_sample(cli.sample_opts);
  if (cli.cloze->parsed()) return loco::cli::run_cloze(cli.cloze_opts);
  if (cli.eval->parsed()) return loco::cli::run_eval(cli.eval_opts);
  if (cli.export_cmd->parsed()) return loco::cli::run_export(cli.export_opts);
  if (cli.coordinator->parsed())
    return loco::cli::run_coordinator(cli.config_path, cli.overrides, cli.resume);
  if (cli.worker->parsed())
    return loco::cli::run_worker(cli.config_path, cli.overrides, cli.coordinator_address,
                                 cli.worker_name, cli.worker_site, cli.resume);
  if (cli.launch->parsed()) return loco::launch(cli.launch_opts);
  if (cli.status->parsed()) return loco::cli::run_status_command(cli.status_opts);
  if (cli.compare->parsed()) return run_compare(cli.compare_opts);
  if (cli.emissions->parsed()) return run_emissions(cli.emissions_opts);
  if (cli.bench_coordinator->parsed())
    return loco::bench_coordinator(cli.coord_bench,
                                   std::filesystem::read_symlink("/proc/self/exe").string());
  if (cli.bench_train->parsed())
    return run_bench(cli.config_path, cli.overrides, cli.bench_steps, cli.bench_warmup,
                     cli.bench_json);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_pattern("[%H:%M:%S] %v");
  // SIGUSR1 pauses a run (`loco launch`, `loco coordinator` take it); any other loco process,
  // reached by a signal meant for its group, goes on rather than die of it.
  ::signal(SIGUSR1, SIG_IGN);
  CLI::App app{"loco: low-communication (DiLoCo-style) language-model pretraining"};
  app.require_subcommand(1);
  Cli cli;
  add_data(app, cli);
  add_train(app, cli);
  cli.sample = loco::cli::add_sample(app, cli.sample_opts);
  cli.export_cmd = loco::cli::add_export(app, cli.export_opts);
  cli.eval = loco::cli::add_eval(app, cli.eval_opts);
  add_bench(app, cli);
  add_coordinator(app, cli);
  add_worker(app, cli);
  add_launch(app, cli);
  cli.status = loco::cli::add_status(app, cli.status_opts);
  add_compare(app, cli);

  CLI11_PARSE(app, argc, argv);
  try {
    return run_command(cli);
  } catch (const std::exception& e) {
    spdlog::error("error: {}", first_line(e));
    return 1;
  }
}
