// `loco compare` (include/loco/compare.h) on small run directories built from real files: a
// single run, a DDP run, DiLoCo and demo runs, whose table numbers follow from their metrics and
// summaries by hand; the plots through gnuplot; and the bad inputs (not a run, a worker's
// directory, other data, torn and empty metrics files). One test compares a real tiny `loco
// train` run. The byte formulas (include/loco/bytes.h) are checked against counts of their own.
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
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The model of every fake run: N = 2·512·64 + 12·2·64² = 163,840 parameters.
constexpr double kN4 = 4.0 * 163840;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

void write_metrics(const fs::path& path, const std::vector<json>& lines,
                   const std::string& tail = "") {
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
    fs::path d = fs::path(root_) / name;
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
    std::vector<json> lines;
    for (int s = 1; s <= 4; ++s) {
      json r = {{"step", s},
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
    write_file(dir + "/summary.json", json({{"bytes_up", 0},
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
    std::vector<json> lines;
    for (int s = 1; s <= 4; ++s) {
      json r = {{"step", s},       {"tokens", 500 * s}, {"loss", 5.0},
                {"lr", 1e-3},      {"wall_s", 6.0 * s}, {"allreduce_bytes", kN4},
                {"bytes_up", kN4}, {"bytes_down", kN4}, {"comm_s", 0.01}};
      if (s == 2) r.update({{"val_loss", 4.5}, {"val_bpb", 1.8}});
      if (s == 4) r.update({{"val_loss", 3.9}, {"val_bpb", 1.5}});
      lines.push_back(r);
    }
    write_metrics(dir + "/metrics.jsonl", lines);
    write_metrics(dir + "/rank-1/metrics.jsonl", lines);
    if (summary)
      write_file(dir + "/summary.json", json({{"bytes_up", 4 * kN4 * 2},
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
    const json own = {{"ratio_vs_ddp", ddp_bytes / 1600000},
                      {"ratio_vs_diloco_fp32", fp32_bytes / 1600000}};
    std::string dir = root_ + "/" + name;
    auto c = config(dir + "/coordinator");
    c.sync.mode = loco::Mode::kDiloco, c.sync.workers = 4, c.sync.inner_steps = 10;
    write_file(dir + "/coordinator/config.yaml", loco::to_yaml(c));
    std::vector<json> lines;
    for (int round = 1; round <= 2; ++round) {
      json r = {{"round", round},
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
      json summary = {{"rounds", 2},
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
      std::vector<json> steps;
      for (int s = 9; s <= 20; ++s) {
        json r = {
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

// The cells of the table row of run `dir`.
std::vector<std::string> row(const std::string& table, const std::string& dir) {
  std::istringstream in(table);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| " + dir + " |", 0) != 0) continue;
    std::vector<std::string> cells;
    std::istringstream cols(line.substr(1));
    for (std::string cell; std::getline(cols, cell, '|');)
      if (cell.size() >= 2) cells.push_back(cell.substr(1, cell.size() - 2));
    return cells;
  }
  return {};
}

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

bool have_gnuplot() {
  return loco::testing::run_command("command -v gnuplot").exit_code == 0;
}

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

// The ratios in the table are the ones the run wrote, not recomputed: a DDP run whose summary
// says 42 (its buckets, say, held more than the fp32 gradient) and a DiLoCo run whose summary
// disagrees with its lines and with the formulas.
TEST_F(CompareTest, RatiosComeFromTheRunsSummary) {
  auto ddp = loco::read_run(ddp_run("odd", true, 42.0));
  EXPECT_EQ(ddp.ratio_source, "summary.json");
  EXPECT_DOUBLE_EQ(ddp.ratio_vs_ddp, 42);
  std::string dir = diloco_run("own", 3.8, Ratios::kLines);
  write_file(dir + "/coordinator/summary.json", json({{"bytes_total", 1600000},
                                                      {"fp32_diloco_bytes", 11 * 1600000},
                                                      {"ddp_bytes", 777 * 1600000},
                                                      {"ratio_vs_diloco_fp32", 11.0},
                                                      {"ratio_vs_ddp", 777.0}})
                                                    .dump());
  auto diloco = loco::read_run(dir);
  std::string table = loco::compare_table({ddp, diloco});
  auto a = row(table, ddp.dir), b = row(table, diloco.dir);
  ASSERT_EQ(a.size(), 11u) << table;
  ASSERT_EQ(b.size(), 11u) << table;
  EXPECT_EQ(a[7], "42.0×");
  EXPECT_EQ(a[8], "—");
  EXPECT_EQ(b[7], "777.0×");
  EXPECT_EQ(b[8], "11.0×");
  EXPECT_NE(table.find(ddp.dir + ": summary.json, " + diloco.dir + ": summary.json"),
            std::string::npos)
      << table;
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

TEST_F(CompareTest, TableHoldsWhatTheFilesImply) {
  std::vector<loco::RunData> runs = {
      loco::read_run(single_run()), loco::read_run(ddp_run()), loco::read_run(diloco_run()),
      loco::read_run(diloco_run("slow", 4.5)), loco::read_run(diloco_run("close", 4.00004))};
  std::string table = loco::compare_table(runs);
  auto base = row(table, runs[0].dir), ddp = row(table, runs[1].dir);
  auto diloco = row(table, runs[2].dir), slow = row(table, runs[3].dir);
  ASSERT_EQ(base.size(), 11u) << table;
  ASSERT_EQ(ddp.size(), 11u) << table;
  ASSERT_EQ(diloco.size(), 11u) << table;
  ASSERT_EQ(slow.size(), 11u) << table;
  // run | curve | loss | bpb | tokens | up | down | vs DDP | vs fp32 DiLoCo | wall | to baseline
  EXPECT_EQ(base, (std::vector<std::string>{runs[0].dir, "single", "4.0000", "1.6000", "4,000",
                                            "0 B", "0 B", "—", "—", "40.0 s", "40.0 s"}));
  EXPECT_EQ(ddp, (std::vector<std::string>{runs[1].dir, "ddp 2 ranks", "3.9000", "1.5000", "4,000",
                                           "2.6 MB", "2.6 MB", "1.0×", "—", "24.0 s", "24.0 s"}));
  EXPECT_EQ(diloco, (std::vector<std::string>{runs[2].dir, "diloco 4w H=10 fp32", "3.8000",
                                              "1.5000", "8,000", "200.0 kB", "300.0 kB", "98.3×",
                                              "6.6×", "16.0 s", "16.0 s"}));
  EXPECT_EQ(slow[10], "not reached");
  EXPECT_EQ(row(table, runs[4].dir).at(10), "16.0 s") << "4.00004 prints as the baseline's 4.0000";
  EXPECT_NE(table.find("Baseline: the first run given, " + runs[0].dir), std::string::npos);
  EXPECT_NE(table.find(runs[0].dir + ": n/a, " + runs[1].dir + ": summary.json, " + runs[2].dir +
                       ": summary.json"),
            std::string::npos)
      << table;
}

TEST_F(CompareTest, WritesPlotsAndTable) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed (Debian: gnuplot-nox)";
  std::string out = root_ + "/out";
  auto r = loco::compare_runs({{single_run(), ddp_run(), diloco_run()}, out, "gnuplot"});
  EXPECT_EQ(slurp(out + "/table.md"), r.table);
  for (const char* name : {"val_loss_vs_tokens", "val_loss_vs_time", "val_loss_vs_bytes"}) {
    std::string png = slurp(out + "/" + name + ".png"), svg = slurp(out + "/" + name + ".svg");
    EXPECT_EQ(png.substr(0, 4), "\x89PNG") << name;
    EXPECT_GT(png.size(), 1000u) << name;
    EXPECT_NE(svg.find("<svg"), std::string::npos) << name;
    EXPECT_NE(svg.find("ddp 2 ranks"), std::string::npos) << name;
    EXPECT_NE(svg.find("diloco 4w H=10 fp32"), std::string::npos) << name;
    EXPECT_NE(svg.find("val loss (nats per token)"), std::string::npos) << name;
  }
  EXPECT_NE(slurp(out + "/val_loss_vs_tokens.svg").find(">single<"), std::string::npos);
  EXPECT_NE(slurp(out + "/val_loss_vs_time.svg").find("wall-clock time (s)"), std::string::npos);
  // A single run sends nothing: no point on the log-scale bytes axis, so no curve.
  EXPECT_EQ(slurp(out + "/val_loss_vs_bytes.svg").find(">single<"), std::string::npos);
  EXPECT_EQ(r.files.size(), 8u);  // table.md, compare.gp, 3 plots × (png, svg)
}

TEST_F(CompareTest, MissingGnuplotSaysSoAfterWritingTheTable) {
  std::string out = root_ + "/out";
  try {
    loco::compare_runs({{single_run(), diloco_run()}, out, root_ + "/no/gnuplot"});
    FAIL() << "expected a CompareError";
  } catch (const loco::CompareError& e) {
    EXPECT_NE(std::string(e.what()).find("gnuplot not found"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("gnuplot-nox"), std::string::npos) << e.what();
  }
  EXPECT_NE(slurp(out + "/table.md").find("diloco 4w H=10 fp32"), std::string::npos);
  EXPECT_NE(slurp(out + "/compare.gp").find("$run1 << EOD"), std::string::npos);
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

TEST_F(CompareTest, DifferentTokenizerOrValSetIsRefused) {
  std::string a = single_run();
  std::string same = single_run("copy", make_data("copy", "tokenizer", "val tokens"));
  EXPECT_NO_THROW(loco::check_comparable({loco::read_run(a), loco::read_run(same)}))
      << "the same contents at another path compare";

  std::string tok = single_run("tok", make_data("tok", "another tokenizer", "val tokens"));
  try {
    loco::check_comparable({loco::read_run(a), loco::read_run(tok)});
    FAIL() << "expected a CompareError";
  } catch (const loco::CompareError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("refusing to put " + a + " and " + tok), std::string::npos) << m;
    EXPECT_NE(m.find("different tokenizers (data.tokenizer"), std::string::npos) << m;
  }
  std::string val = single_run("val", make_data("val", "tokenizer", "other val tokens"));
  auto r = loco::testing::run_loco("compare " + a + " " + val + " --out " + root_ + "/out");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("different val sets (data.val"), std::string::npos) << r.output;
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

// A real tiny `loco train` run, compared with itself: the labels tell the two curves apart.
TEST(CompareRealRun, TinyTrainRunComparesEndToEnd) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed (Debian: gnuplot-nox)";
  std::string dir = loco::testing::temp_dir();
  std::ofstream(dir + "/config.yaml") << loco::testing::small_run_yaml(dir + "/run");
  auto train = loco::testing::run_loco("train --config " + dir + "/config.yaml");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  // The process wrote its summary: nothing sent, no ratios (include/loco/bytes.h).
  auto summary = json::parse(slurp(dir + "/run/summary.json"));
  EXPECT_TRUE(summary.at("complete").get<bool>());
  EXPECT_EQ(summary.at("bytes_total").get<double>(), 0);
  EXPECT_EQ(summary.at("ddp_bytes").get<double>(), 0);
  EXPECT_TRUE(summary.at("ratio_vs_ddp").is_null());
  EXPECT_EQ(loco::read_run(dir + "/run").ratio_source, "summary.json");
  auto r = loco::testing::run_loco("compare " + dir + "/run " + dir + "/run --out " + dir + "/out");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| " + dir + "/run | single [" + dir + "/run] |"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(dir + "/out/val_loss_vs_time.svg"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/out/val_loss_vs_bytes.svg")) << "a single run sends nothing";
  EXPECT_NE(slurp(dir + "/out/val_loss_vs_tokens.svg").find("single ["), std::string::npos);
}

// The restarts `loco launch` recorded (launch_events.jsonl) go on a line below the table; a run
// without an events file reads n/a, and a table of such runs only has no such line.
TEST_F(CompareTest, CountsRestartsFromTheLaunchEventsFile) {
  std::string faulty = diloco_run("faulty", 3.8, Ratios::kLines);
  std::string plain = diloco_run("plain", 3.8, Ratios::kLines);
  EXPECT_EQ(loco::compare_table({loco::read_run(plain)}).find("Restarts after"), std::string::npos);
  write_file(faulty + "/launch_events.jsonl",
             "{\"process\":\"w1\",\"event\":\"exited\",\"signal\":9,\"action\":\"restart\"}\n"
             "{\"process\":\"w1\",\"event\":\"restarted\",\"action\":\"resume\"}\n"
             "{\"process\":\"coord\",\"event\":\"restarted\",\"action\":\"resume\"}\n"
             "{\"process\":\"w2\",\"event\":\"given_up\",\"reason\":\"...\"}\n"
             "{\"process\":\"w0\",\"event\":\"rest");  // a torn last line is skipped
  auto run = loco::read_run(faulty);
  EXPECT_EQ(run.restarts, 2);
  EXPECT_EQ(run.given_up, 1);
  std::string table = loco::compare_table({run, loco::read_run(plain)});
  EXPECT_NE(table.find("Restarts after failures (loco launch, launch_events.jsonl): " + faulty +
                       ": 2 (1 given up), " + plain + ": n/a."),
            std::string::npos)
      << table;
  EXPECT_EQ(row(table, faulty).size(), 11u) << table;
}
