// `loco compare` putting runs side by side (src/report/compare.cpp, plot.cpp): the table's
// numbers from small run directories built from real files (tests/report_test_util.h), the ratios
// the runs wrote, the plots through gnuplot, runs on other data refused; and one real tiny
// `loco train` run compared end to end.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loco/compare.h"
#include "loco/config.h"
#include "report_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::testing::CompareTest;
using loco::testing::write_file;
using nlohmann::json;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

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

bool have_gnuplot() {
  return loco::testing::run_command("command -v gnuplot").exit_code == 0;
}

}  // namespace

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
