// `loco compare` reading runs (src/report/read_run.cpp) from small run directories built from real
// files (tests/report_test_util.h): a single run, a DDP run, DiLoCo and demo runs, whose curves,
// bytes and ratios follow from their metrics and summaries by hand; and the bad inputs (not a
// run, a worker's directory, torn and empty metrics files). The byte formulas
// (include/loco/bytes.h, src/report/bytes.cpp) are checked against counts of their own.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loco/bytes.h"
#include "loco/compare.h"
#include "loco/config.h"
#include "loco/model.h"
#include "report_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::testing::CompareTest;
using loco::testing::kN4;
using loco::testing::write_file;
using loco::testing::write_metrics;
using nlohmann::json;

namespace {

// Captures what spdlog prints while alive.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() { spdlog::default_logger()->sinks().pop_back(); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

}  // namespace

TEST(ParamCount, MatchesTheModel) {
  loco::ModelConfig m;
  EXPECT_EQ(loco::param_count(m), loco::GPT(m)->num_params());
  m.n_layer = 2, m.n_head = 2, m.n_embd = 64, m.vocab_size = 512;
  EXPECT_EQ(loco::param_count(m), loco::GPT(m)->num_params());
  EXPECT_EQ(loco::param_count(m), 163840);
  int64_t numel = 0;  // every tensor the model holds, counted one by one
  for (const auto& p : loco::GPT(m)->parameters()) numel += p.numel();
  EXPECT_EQ(loco::param_count(m), numel);
}

// The reference formulas against counts of their own: a ring all-reduce simulated chunk by chunk,
// and the fp32 tensors a DiLoCo round moves.
TEST(ByteFormulas, MatchARingAllReduceAndFp32Rounds) {
  loco::ModelConfig m;
  m.n_layer = 2, m.n_head = 2, m.n_embd = 64, m.vocab_size = 512;
  const int64_t n = loco::GPT(m)->num_params();
  const double gradient = double(torch::zeros({n}, torch::kFloat32).nbytes());  // 4N
  for (int64_t w = 1; w <= 8; ++w) {
    // A ring of w ranks: the gradient in w chunks; w−1 reduce-scatter then w−1 all-gather
    // steps, each of which every rank sends one chunk to its neighbour, who receives it.
    double sent = 0, received = 0;
    for (int64_t step = 0; step < 2 * (w - 1); ++step)
      for (int64_t rank = 0; rank < w; ++rank)
        sent += gradient / double(w), received += gradient / double(w);
    EXPECT_NEAR(loco::ddp_step_bytes(n, w), sent + received, 1e-6 * gradient) << w << " ranks";
  }
  EXPECT_EQ(loco::ddp_step_bytes(n, 1), 0);  // one rank sends nothing
  for (int64_t reporters = 0; reporters <= 4; ++reporters) {
    double moved = 0;  // each reporter pushes its whole Δ and pulls the whole new θ
    for (int64_t k = 0; k < reporters; ++k) moved += gradient + gradient;
    EXPECT_EQ(loco::fp32_diloco_round_bytes(n, reporters), moved) << reporters;
  }
  // A run's fields: 2 ranks, 3 steps, each rank logging 4N up and down a step (the ring of 2).
  auto ddp = loco::ddp_run_bytes(n, 2, 3, 3 * gradient, 3 * gradient);
  EXPECT_EQ(ddp.at("bytes_total").get<double>(), 2 * 2 * 3 * gradient);
  EXPECT_EQ(ddp.at("ddp_bytes").get<double>(), 2 * 2 * 3 * gradient);
  EXPECT_EQ(ddp.at("ratio_vs_ddp").get<double>(), 1.0);
  EXPECT_TRUE(ddp.at("fp32_diloco_bytes").is_null());
  EXPECT_TRUE(ddp.at("ratio_vs_diloco_fp32").is_null());
  auto single = loco::ddp_run_bytes(n, 1, 3, 0, 0);
  EXPECT_EQ(single.at("bytes_total").get<double>(), 0);
  EXPECT_EQ(single.at("ddp_bytes").get<double>(), 0);
  EXPECT_TRUE(single.at("ratio_vs_ddp").is_null());
}

TEST_F(CompareTest, ReadsASingleRun) {
  auto run = loco::read_run(single_run());
  EXPECT_EQ(run.kind, "single");
  EXPECT_EQ(run.label, "single");
  ASSERT_EQ(run.curve.size(), 2u);
  EXPECT_DOUBLE_EQ(run.curve[0].tokens, 2000);
  EXPECT_DOUBLE_EQ(run.final_eval().val_loss, 4.0);
  EXPECT_DOUBLE_EQ(run.final_eval().val_bpb, 1.6);
  EXPECT_DOUBLE_EQ(run.tokens, 4000);
  EXPECT_DOUBLE_EQ(run.wall_s, 40);
  EXPECT_DOUBLE_EQ(run.bytes_total, 0);
  EXPECT_TRUE(std::isnan(run.ratio_vs_ddp));
  EXPECT_TRUE(std::isnan(run.ratio_vs_fp32_diloco));
  EXPECT_EQ(run.ratio_source, "summary.json");
}

TEST_F(CompareTest, ReadsADdpRunOnTheGlobalScale) {
  auto run = loco::read_run(ddp_run());
  EXPECT_EQ(run.kind, "ddp");
  EXPECT_EQ(run.label, "ddp 2 ranks");
  EXPECT_EQ(run.workers, 2);
  ASSERT_EQ(run.curve.size(), 2u);
  EXPECT_DOUBLE_EQ(run.curve[0].tokens, 2000);            // 2 steps × 500 × 2 ranks
  EXPECT_DOUBLE_EQ(run.curve[0].bytes, 2 * 2 * kN4 * 2);  // steps × (up + down) × ranks
  EXPECT_DOUBLE_EQ(run.tokens, 4000);
  EXPECT_DOUBLE_EQ(run.bytes_up_per_worker, 4 * kN4);
  EXPECT_DOUBLE_EQ(run.bytes_down_per_worker, 4 * kN4);
  EXPECT_NEAR(run.ratio_vs_ddp, 1.0, 1e-12);  // it is DDP: 2·2(W−1)/W·4N per rank per step
  EXPECT_TRUE(std::isnan(run.ratio_vs_fp32_diloco));
  EXPECT_EQ(run.ratio_source, "summary.json");
  EXPECT_DOUBLE_EQ(run.bytes_total, 16 * kN4);

  // Stopped before rank 0 wrote its summary: the same fields from its lines, by bytes.h.
  auto stopped = loco::read_run(ddp_run("stopped", /*summary=*/false));
  EXPECT_EQ(stopped.ratio_source, "computed");
  EXPECT_NEAR(stopped.ratio_vs_ddp, 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(stopped.ratio_vs_fp32_diloco));
  EXPECT_DOUBLE_EQ(stopped.bytes_total, 16 * kN4);
}

TEST_F(CompareTest, ReadsADilocoRunAndComputesItsRatios) {
  // A run older than the ratio fields: computed by include/loco/bytes.h's formulas.
  auto run = loco::read_run(diloco_run("diloco", 3.8, Ratios::kNone));
  EXPECT_EQ(run.kind, "diloco");
  EXPECT_EQ(run.label, "diloco 4w H=10 fp32");
  ASSERT_EQ(run.curve.size(), 2u);
  EXPECT_DOUBLE_EQ(run.curve[1].tokens, 8000);
  EXPECT_DOUBLE_EQ(run.curve[1].bytes, 1600000);
  EXPECT_DOUBLE_EQ(run.bytes_total, 1600000);
  EXPECT_DOUBLE_EQ(run.bytes_up_per_worker, 200000);  // the workers' own lines: 2 × 100 kB
  EXPECT_DOUBLE_EQ(run.bytes_down_per_worker, 300000);
  EXPECT_EQ(run.ratio_source, "computed");
  // DDP: rounds·H·2·2(W−1)·4N; fp32 DiLoCo: rounds·W·2·4N; both over the bytes sent.
  EXPECT_NEAR(run.ratio_vs_ddp, 2 * 10 * 2 * 2 * 3 * kN4 / 1600000, 1e-9);
  EXPECT_NEAR(run.ratio_vs_fp32_diloco, 2 * 4 * 2 * kN4 / 1600000, 1e-9);

  // The run's own ratios win: summary.json first, else the last metrics line carrying them.
  auto lines = loco::read_run(diloco_run("lines", 3.8, Ratios::kLines));
  EXPECT_EQ(lines.ratio_source, "metrics.jsonl");
  EXPECT_DOUBLE_EQ(lines.ratio_vs_ddp, 50);
  write_file(
      root_ + "/lines/coordinator/summary.json",
      json({{"ratio_vs_ddp", 123.0}, {"ratio_vs_diloco_fp32", 7.0}, {"bytes_total", 2e6}}).dump());
  auto summary = loco::read_run(root_ + "/lines");
  EXPECT_EQ(summary.ratio_source, "summary.json");
  EXPECT_DOUBLE_EQ(summary.bytes_total, 2e6);  // the final total, last download included
  EXPECT_DOUBLE_EQ(summary.ratio_vs_ddp, 123);
  EXPECT_DOUBLE_EQ(summary.ratio_vs_fp32_diloco, 7);

  // Without the workers' directories, the coordinator's round lines over the workers.
  for (int k = 0; k < 4; ++k)
    loco::testing::remove_tree(root_ + "/lines/worker-" + std::to_string(k));
  auto coordinator_only = loco::read_run(root_ + "/lines");
  EXPECT_DOUBLE_EQ(coordinator_only.bytes_up_per_worker, 200000);  // 2 rounds × 400 kB / 4
  EXPECT_DOUBLE_EQ(coordinator_only.bytes_down_per_worker, 200000);
}

TEST_F(CompareTest, ReadsDemoFromItsConsensusLinesAndLabelsSites) {
  std::string dir = root_ + "/demo";
  auto c = config(dir + "/coordinator");
  c.sync.mode = loco::Mode::kDemo, c.sync.inner_steps = 25, c.sync.codec.type = "dct";
  c.sync.sites = {{"a", 2}, {"b", 2}}, c.sync.workers = 2;
  write_file(dir + "/coordinator/config.yaml", loco::to_yaml(c));
  write_metrics(dir + "/coordinator/metrics.jsonl", {{{"round", 1},
                                                      {"tokens", 100},
                                                      {"wall_s", 1.0},
                                                      {"bytes_up", 30},
                                                      {"bytes_down", 50},
                                                      {"bytes_total", 80}},
                                                     {{"round", 1},
                                                      {"tokens", 100},
                                                      {"wall_s", 1.5},
                                                      {"bytes_total", 80},
                                                      {"consensus", true},
                                                      {"val_loss", 4.4},
                                                      {"val_bpb", 1.9}}});
  auto run = loco::read_run(dir);
  EXPECT_EQ(run.label, "demo 2 sites×2 ranks H=25 dct k32 int8");
  EXPECT_EQ(run.workers, 2);
  ASSERT_EQ(run.curve.size(), 1u);
  EXPECT_DOUBLE_EQ(run.curve[0].wall_s, 1.5);
  EXPECT_DOUBLE_EQ(run.bytes_up_per_worker, 15);  // the round line's bytes, not the consensus'
  EXPECT_DOUBLE_EQ(run.bytes_down_per_worker, 25);
}

TEST_F(CompareTest, NotARunIsRefusedByName) {
  std::string dir = root_ + "/empty";
  fs::create_directories(dir);
  try {
    loco::read_run(dir);
    FAIL() << "expected a CompareError";
  } catch (const loco::CompareError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + " is not a run"), std::string::npos) << e.what();
  }
  auto r =
      loco::testing::run_loco("compare " + single_run() + " " + dir + " --out " + root_ + "/out");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("error: " + dir + " is not a run"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(root_ + "/out/table.md"));
}

TEST_F(CompareTest, AWorkersDirectoryIsRefusedWithTheRunsDirectory) {
  std::string run = diloco_run();
  try {
    loco::read_run(run + "/worker-0");
    FAIL() << "expected a CompareError";
  } catch (const loco::CompareError& e) {
    EXPECT_NE(std::string(e.what()).find("is one worker of a diloco run"), std::string::npos)
        << e.what();
  }
  // The coordinator's directory itself is a run: the same curve.
  EXPECT_EQ(loco::read_run(run + "/coordinator").curve.size(), 2u);
}

TEST_F(CompareTest, TornMetricsLineIsWarnedAndTheCompleteLinesUsed) {
  std::string dir = single_run();
  std::ofstream(dir + "/metrics.jsonl", std::ios::app)
      << R"({"step": 5, "tokens": 5000, "loss": 3.0, "wall_s": 50, "val_loss": 3.)";
  LogCapture log;
  auto run = loco::read_run(dir);
  EXPECT_EQ(run.skipped_lines, 1);
  ASSERT_EQ(run.curve.size(), 2u);
  EXPECT_DOUBLE_EQ(run.final_eval().val_loss, 4.0);
  EXPECT_DOUBLE_EQ(run.tokens, 4000);
  EXPECT_NE(log.text().find(dir + "/metrics.jsonl: skipped 1 incomplete line"), std::string::npos)
      << log.text();
}

TEST_F(CompareTest, EmptyMetricsFileHasNothingToCompare) {
  std::string dir = single_run();
  write_file(dir + "/metrics.jsonl", "");
  try {
    loco::read_run(dir);
    FAIL() << "expected a CompareError";
  } catch (const loco::CompareError& e) {
    EXPECT_NE(std::string(e.what()).find("has no evaluation (val_loss) yet (0 complete lines)"),
              std::string::npos)
        << e.what();
  }
}
