// Run-directory setup shared by every process kind (see include/loco/run_dir.h).
#include "loco/run_dir.h"

#include <filesystem>
#include <fstream>

#include "loco/checkpoint.h"
#include "loco/metrics.h"

namespace fs = std::filesystem;

namespace loco {
namespace {

std::string checkpoint_dir(const std::string& dir) {
  return (fs::path(dir) / "checkpoints").string();
}

}  // namespace

void refuse_used_run_dir(const std::string& dir) {
  if (!list_checkpoints(checkpoint_dir(dir)).empty())
    throw ConfigError("run.dir " + dir +
                      " already holds checkpoints; pass --resume to continue it, or choose "
                      "another run.dir (--set run.dir=...)");
}

std::string prepare_run_dir(const std::string& dir, RunStart start) {
  std::string newest;
  if (start == RunStart::kFresh) refuse_used_run_dir(dir);
  if (start == RunStart::kResume) {
    auto found = list_checkpoints(checkpoint_dir(dir));
    if (found.empty()) throw ConfigError("--resume: no checkpoint in " + checkpoint_dir(dir));
    newest = found.back();
  }
  fs::create_directories(dir);
  return newest;
}

std::unique_ptr<MetricsWriter> open_run_files(const Config& config, int64_t keep_metrics_up_to) {
  std::ofstream(fs::path(config.run.dir) / "config.yaml") << to_yaml(config);
  return std::make_unique<MetricsWriter>((fs::path(config.run.dir) / "metrics.jsonl").string(),
                                         keep_metrics_up_to);
}

}  // namespace loco
