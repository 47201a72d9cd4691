// Fixtures of the report suites (test_report, test_compare): small run directories built from real
// files (a single run, a DDP run, DiLoCo runs) whose numbers follow from their metrics and
// summaries by hand, and the helpers that write them.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loco/config.h"
#include "test_util.h"

namespace loco::testing {

// The model of every fake run: N = 2·512·64 + 12·2·64² = 163,840 parameters.
constexpr double kN4 = 4.0 * 163840;

inline void write_file(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

inline void write_metrics(const std::filesystem::path& path,
                          const std::vector<nlohmann::json>& lines, const std::string& tail = "") {
  std::string text;
  for (const auto& l : lines) text += l.dump() + "\n";
  write_file(path, text + tail);
}

class CompareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = loco::testing::temp_dir();
    data_ = make_data("data", "tokenizer", "val tokens");
  }

  // A data directory with a tokenizer and a val set of the given contents.
  std::string make_data(const std::string& name, const std::string& tokenizer,
                        const std::string& val) {
    std::filesystem::path d = std::filesystem::path(root_) / name;
    write_file(d / "tokenizer.model", tokenizer);
    write_file(d / "val.bin", val);
    write_file(d / "train.bin", "train");
    return d.string();
  }

  loco::Config config(const std::string& run_dir, const std::string& data = "") {
    const std::string d = data.empty() ? data_ : data;
    loco::Config c;
    c.run.dir = run_dir;
    c.data = {d + "/train.bin", d + "/val.bin", d + "/tokenizer.model"};
    c.model.n_layer = 2, c.model.n_head = 2, c.model.n_embd = 64, c.model.vocab_size = 512;
    return c;
  }

  // single: 4 steps of 1000 tokens, 10 s each; val loss 5.0 at step 2, 4.0 at step 4.
  std::string single_run(const std::string& name = "single", const std::string& data = "") {
    std::string dir = root_ + "/" + name;
    write_file(dir + "/config.yaml", loco::to_yaml(config(dir, data)));
    std::vector<nlohmann::json> lines;
    for (int s = 1; s <= 4; ++s) {
      nlohmann::json r = {{"step", s},
                          {"tokens", 1000 * s},
                          {"loss", 6.0 - 0.1 * s},
                          {"lr", 1e-3},
                          {"wall_s", 10.0 * s}};
      if (s == 2) r.update({{"val_loss", 5.0}, {"val_bpb", 2.0}});
      if (s == 4) r.update({{"val_loss", 4.0}, {"val_bpb", 1.6}});
      lines.push_back(r);
    }
    write_metrics(dir + "/metrics.jsonl", lines);
    // What the process writes at the end: it sent nothing, and DDP with one rank sends nothing.
    write_file(dir + "/summary.json", nlohmann::json({{"bytes_up", 0},
                                                      {"bytes_down", 0},
                                                      {"bytes_total", 0},
                                                      {"fp32_diloco_bytes", nullptr},
                                                      {"ddp_bytes", 0},
                                                      {"ratio_vs_diloco_fp32", nullptr},
                                                      {"ratio_vs_ddp", nullptr},
                                                      {"tokens", 4000},
                                                      {"steps", 4},
                                                      {"total_steps", 4},
                                                      {"complete", true},
                                                      {"final_val_loss", 4.0}})
                                          .dump());
    return dir;
  }

  // DDP, 2 ranks: 500 tokens per rank per step, 6 s a step, the ring's 2(W−1)/W·4N = 4N each
  // way per rank per step; val loss 4.5 at step 2, 3.9 at step 4. Rank 0's summary.json says
  // what DDP sends, 2·4N a step all ranks each way (`ratio_vs_ddp`: 1), unless `summary` is false
  // (a run still going or stopped); `ratio_vs_ddp` another value, written as the run's own.
  std::string ddp_run(const std::string& name = "ddp", bool summary = true,
                      double ratio_vs_ddp = 1.0) {
    std::string dir = root_ + "/" + name;
    auto c = config(dir);
    c.sync.mode = loco::Mode::kDdp, c.sync.workers = 2;
    write_file(dir + "/config.yaml", loco::to_yaml(c));
    std::vector<nlohmann::json> lines;
    for (int s = 1; s <= 4; ++s) {
      nlohmann::json r = {{"step", s},       {"tokens", 500 * s}, {"loss", 5.0},
                          {"lr", 1e-3},      {"wall_s", 6.0 * s}, {"allreduce_bytes", kN4},
                          {"bytes_up", kN4}, {"bytes_down", kN4}, {"comm_s", 0.01}};
      if (s == 2) r.update({{"val_loss", 4.5}, {"val_bpb", 1.8}});
      if (s == 4) r.update({{"val_loss", 3.9}, {"val_bpb", 1.5}});
      lines.push_back(r);
    }
    write_metrics(dir + "/metrics.jsonl", lines);
    write_metrics(dir + "/rank-1/metrics.jsonl", lines);
    if (summary)
      write_file(dir + "/summary.json", nlohmann::json({{"bytes_up", 4 * kN4 * 2},
                                                        {"bytes_down", 4 * kN4 * 2},
                                                        {"bytes_total", 16 * kN4},
                                                        {"fp32_diloco_bytes", nullptr},
                                                        {"ddp_bytes", ratio_vs_ddp * 16 * kN4},
                                                        {"ratio_vs_diloco_fp32", nullptr},
                                                        {"ratio_vs_ddp", ratio_vs_ddp},
                                                        {"tokens", 4000},
                                                        {"complete", true}})
                                            .dump());
    return dir;
  }

  // Where a fake coordinator run carries its ratios: nowhere (older than those fields), in its
  // lines (stopped before its summary), or in its lines and summary.json (finished).
  enum class Ratios { kNone, kLines, kSummary };

  // DiLoCo, 4 workers, H = 10, fp32: two rounds of 4000 tokens, 8 s each, 400 kB up and down
  // (all workers) in the coordinator's lines; val loss 4.2 then `final_loss`. Its ratios, as the
  // coordinator writes them where `ratios` says: DDP would have sent 2·2(W−1)·4N a step, fp32
  // DiLoCo 2·4N per worker a round; kLines writes 50 and 2 instead, to tell them apart.
  std::string diloco_run(const std::string& name = "diloco", double final_loss = 3.8,
                         Ratios ratios = Ratios::kSummary) {
    const double ddp_bytes = 2 * 10 * 2 * 2 * 3 * kN4, fp32_bytes = 2 * 4 * 2 * kN4;
    const nlohmann::json own = {{"ratio_vs_ddp", ddp_bytes / 1600000},
                                {"ratio_vs_diloco_fp32", fp32_bytes / 1600000}};
    std::string dir = root_ + "/" + name;
    auto c = config(dir + "/coordinator");
    c.sync.mode = loco::Mode::kDiloco, c.sync.workers = 4, c.sync.inner_steps = 10;
    write_file(dir + "/coordinator/config.yaml", loco::to_yaml(c));
    std::vector<nlohmann::json> lines;
    for (int round = 1; round <= 2; ++round) {
      nlohmann::json r = {{"round", round},
                          {"step", 10 * round},
                          {"tokens", 4000 * round},
                          {"loss", 5.0},
                          {"lr", 0.7},
                          {"wall_s", 8.0 * round},
                          {"bytes_up", 400000},
                          {"bytes_down", 400000},
                          {"bytes_total", 800000 * round},
                          {"val_loss", round == 1 ? 4.2 : final_loss},
                          {"val_bpb", 1.5}};
      if (ratios == Ratios::kLines)
        r.update({{"ratio_vs_ddp", 50.0}, {"ratio_vs_diloco_fp32", 2.0}});
      if (ratios == Ratios::kSummary) r.update(own);  // the same each round: both grow alike
      lines.push_back(r);
    }
    write_metrics(dir + "/coordinator/metrics.jsonl", lines);
    if (ratios == Ratios::kSummary) {
      nlohmann::json summary = {{"rounds", 2},
                                {"total_rounds", 2},
                                {"complete", true},
                                {"tokens", 8000},
                                {"bytes_up", 800000},
                                {"bytes_down", 800000},
                                {"bytes_total", 1600000},
                                {"fp32_diloco_bytes", fp32_bytes},
                                {"ddp_bytes", ddp_bytes},
                                {"final_val_loss", final_loss}};
      summary.update(own);
      write_file(dir + "/coordinator/summary.json", summary.dump());
    }
    // Each worker's own lines: 100 kB up and 150 kB down a round (its last download, which the
    // coordinator's lines never show, included).
    for (int k = 0; k < 4; ++k) {
      std::string wdir = dir + "/worker-" + std::to_string(k);
      auto w = config(wdir);
      w.sync = c.sync;
      write_file(wdir + "/config.yaml", loco::to_yaml(w));
      std::vector<nlohmann::json> steps;
      for (int s = 9; s <= 20; ++s) {
        nlohmann::json r = {
            {"step", s}, {"tokens", 100 * s}, {"loss", 5.0}, {"lr", 1e-3}, {"wall_s", 0.8 * s}};
        if (s % 10 == 0)
          r.update({{"round", s / 10}, {"bytes_up", 100000}, {"bytes_down", 150000}});
        steps.push_back(r);
      }
      write_metrics(wdir + "/metrics.jsonl", steps);
    }
    return dir;
  }

  std::string root_, data_;
};

}  // namespace loco::testing
