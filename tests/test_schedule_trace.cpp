// Carbon-intensity trace schedules (include/loco/trace.h, schedule.h) and the energy and
// emissions accounting (include/loco/energy.h), against hand computations on small traces.
#include <gtest/gtest.h>

#include <cmath>
#include <chrono>
#include <fstream>
#include <thread>

#include "loco/codec.h"
#include "loco/config.h"
#include "loco/coordinator.h"
#include "loco/energy.h"
#include "loco/schedule.h"
#include "loco/trace.h"
#include "test_util.h"

using namespace loco;

namespace {

// Rows every 5 minutes from 2024-05-01T00:00:00Z; one column per region.
std::string trace_csv(const std::vector<std::string>& regions,
                      const std::vector<std::vector<double>>& rows) {
  std::string out = "point_time";
  for (const auto& r : regions) out += "," + r;
  out += "\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    char ts[64];
    std::snprintf(ts, sizeof(ts), "2024-05-01T%02d:%02d:00Z", int(i * 5 / 60), int(i * 5 % 60));
    out += ts;
    for (double v : rows[i]) out += "," + std::to_string(v);
    out += "\n";
  }
  return out;
}

std::string trace_error(const std::string& csv) {
  try {
    IntensityTrace::parse(csv, "t.csv");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

std::string schedule_error(const std::string& dir, const std::string& yaml) {
  try {
    Schedule::parse(yaml, "s.yaml", dir);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(Trace, Iso8601Timestamps) {
  double t = 0;
  // Seconds since the epoch as `date -u -d ... +%s` gives them.
  ASSERT_TRUE(parse_iso8601("2024-05-01T00:05:00Z", &t));
  EXPECT_EQ(t, 1714521900);
  ASSERT_TRUE(parse_iso8601("2024-05-01T02:05:00+02:00", &t));
  EXPECT_EQ(t, 1714521900);
  ASSERT_TRUE(parse_iso8601("2024-04-30T19:05:00-0500", &t));
  EXPECT_EQ(t, 1714521900);
  ASSERT_TRUE(parse_iso8601("2024-05-01 00:05", &t));  // a space, no seconds, no zone: UTC
  EXPECT_EQ(t, 1714521900);
  ASSERT_TRUE(parse_iso8601("2024-02-29T22:30:00.5Z", &t));  // a leap day, a fraction
  EXPECT_EQ(t, 1709245800.5);
  for (const char* bad :
       {"2024-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2024-05-01T24:00Z", "2024-05-01",
        "2024-5-1T00:00Z", "2024-05-01T00:00:00Q", "2024-05-01T00:00:00+25:00", "yesterday", ""})
    EXPECT_FALSE(parse_iso8601(bad, &t)) << bad;
}

TEST(Trace, StepFunctionEndAndIntegral) {
  auto tr = IntensityTrace::parse(trace_csv({"A", "B"}, {{50, 80}, {200, 80}, {50, 300}}), "t.csv");
  EXPECT_EQ(tr.regions(), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(tr.start_epoch(), 1714521600);
  EXPECT_EQ(tr.duration_s(), 900);  // the last row at 600 s plus the 300 s spacing
  EXPECT_EQ(tr.intensity("A", 0), 50);
  EXPECT_EQ(tr.intensity("A", 299.9), 50);
  EXPECT_EQ(tr.intensity("A", 300), 200);  // the row at or before t
  EXPECT_EQ(tr.intensity("B", 899), 300);
  EXPECT_DOUBLE_EQ(tr.integral("A", 150, 450), 150 * 50 + 150 * 200);
  // Past the end it wraps to the start: 900 s of the whole trace, then 100 s of row 0.
  EXPECT_DOUBLE_EQ(tr.integral("A", 0, 1000), 300 * (50 + 200 + 50) + 100 * 50);
  EXPECT_THROW(tr.intensity("C", 0), std::out_of_range);
}

TEST(Trace, BadTracesNameTheFileRowAndColumn) {
  const std::string head = "point_time,CAISO_NORTH,SPP_TX\n";
  EXPECT_EQ(trace_error(head + "2024-05-01T00:05:00Z,1,2\n2024-05-01T00:00:00Z,1,2\n"),
            "t.csv: row 3, column 1 (point_time): '2024-05-01T00:00:00Z' comes before the "
            "timestamp of row 2 (rows must be in increasing time)");
  EXPECT_EQ(trace_error(head + "2024-05-01T00:00:00Z,1,2\n2024-05-01T00:00:00Z,1,2\n"),
            "t.csv: row 3, column 1 (point_time): '2024-05-01T00:00:00Z' repeats the timestamp "
            "of row 2 (rows must be in increasing time)");
  EXPECT_EQ(trace_error(head + "2024-05-01T00:00:00Z,1,2\n2024-05-01T00:05:00Z,1,n/a\n"),
            "t.csv: row 3, column 3 (SPP_TX): 'n/a' is not a number");
  EXPECT_EQ(trace_error(head + "2024-05-01T00:00:00Z,,2\n2024-05-01T00:05:00Z,1,2\n"),
            "t.csv: row 2, column 2 (CAISO_NORTH): '' is not a number");
  EXPECT_EQ(trace_error(head + "05/01/2024 00:00,1,2\n2024-05-01T00:05:00Z,1,2\n"),
            "t.csv: row 2, column 1 (point_time): '05/01/2024 00:00' is not an ISO 8601 "
            "timestamp (e.g. 2024-05-01T00:05:00Z)");
  EXPECT_EQ(trace_error(head + "2024-05-01T00:00:00Z,1\n"),
            "t.csv: row 2, column 3 (SPP_TX): expected 3 cells, got 2");  // the first missing one
  EXPECT_EQ(trace_error(head + "2024-05-01T00:00:00Z,1,2\n"),
            "t.csv: 1 data row(s); a trace needs at least 2 (its end is the last row plus the "
            "spacing of the last two)");
  EXPECT_EQ(trace_error("point_time,A,A\n"),
            "t.csv: row 1, column 3 (A): region 'A' appears twice");
  EXPECT_EQ(trace_error(""), "t.csv: empty trace (no header, no rows)");
}

TEST(Trace, BadTraceSchedulesNameTheFileAndField) {
  std::string dir = loco::testing::temp_dir();
  std::ofstream(dir + "/i.csv") << trace_csv({"A", "B"}, {{50, 300}, {200, 300}, {50, 300}});
  const std::string top = "trace: i.csv\npower: {train_kw: 2, idle_kw: 0.5}\n";
  EXPECT_EQ(schedule_error(dir, top + "sites: {a: {region: C, below: 100}}"),
            "s.yaml: sites.a.region: 'C' is not a column of " + dir + "/i.csv (row 1 has A, B)");
  EXPECT_EQ(schedule_error(dir, top + "sites: {b: {region: B, below: 100}}"),
            "s.yaml: sites.b: never up over the trace " + dir +
                "/i.csv: B's lowest intensity is 300 (row 2), not below 100");
  EXPECT_EQ(schedule_error(dir, top + "sites: {a: {region: A, below: 100, provision_s: 400}}"),
            "s.yaml: sites.a: never up over the trace " + dir +
                "/i.csv: A's lowest intensity is 50 (row 2), and no window below 100 outlasts "
                "provision_s");
  EXPECT_EQ(schedule_error(dir, top + "sites: {a: {region: A, above: 100}}"),
            "s.yaml: sites.a.above: unknown key (region, below, hysteresis_s, provision_s, "
            "window_below, power)");
  EXPECT_EQ(schedule_error(dir, "trace: i.csv\nsites: {a: {region: A, below: 100}}"),
            "s.yaml: sites.a.power: no train_kw or idle_kw: give power: {train_kw: KW, idle_kw: "
            "KW} at the top of the file or for the site");
  EXPECT_EQ(schedule_error(dir, top + "speed: 0\nsites: {a: {region: A}}"),
            "s.yaml: speed: must be > 0 (trace seconds per wall-clock second)");
  EXPECT_EQ(schedule_error(dir, "trace: none.csv\nsites: {a: {region: A}}"),
            "s.yaml: trace: cannot read the trace '" + dir + "/none.csv'");
  // A bad cell in the trace: the trace's own file, row and column.
  std::ofstream(dir + "/bad.csv") << "t,A\n2024-05-01T00:00:00Z,1\n2024-05-01T00:05:00Z,x\n";
  EXPECT_EQ(schedule_error(dir, "trace: bad.csv\nsites: {a: {region: A}}"),
            dir + "/bad.csv: row 3, column 2 (A): 'x' is not a number");
}

TEST(Trace, HysteresisAndProvisioning) {
  std::string dir = loco::testing::temp_dir();
  // 5-minute rows of region R: below 100 in rows 0, 2, 6 and 7.
  std::ofstream(dir + "/i.csv") << trace_csv({"R"},
                                             {{50}, {150}, {50}, {150}, {150}, {150}, {50}, {50}});
  Schedule s = Schedule::parse(
      "trace: i.csv\nspeed: 60\npower: {train_kw: 2, idle_kw: 0.5}\nsites:\n"
      "  a: {region: R, below: 100, hysteresis_s: 600, provision_s: 300}\n"
      "  b: {region: R, below: 100}\n"
      "  c: {region: R}\n",
      "s.yaml", dir);
  ASSERT_TRUE(s.has_trace());
  EXPECT_EQ(s.speed(), 60);
  EXPECT_EQ(s.trace_end_s(), 2400);
  // a: the 300 s above at row 1 is shorter than the hysteresis; from row 3 the intensity stays
  // above for 600 s, so a is powered until 900 + 600 = 1500, and again from row 6 (1800).
  using P = std::vector<std::pair<double, double>>;
  EXPECT_EQ(s.trace_site("a").powered, (P{{0, 1500}, {1800, 2400}}));
  EXPECT_EQ(s.state("a", 0), SiteState::kProvisioning);
  EXPECT_EQ(s.state("a", 299), SiteState::kProvisioning);
  EXPECT_EQ(s.state("a", 300), SiteState::kUp);
  EXPECT_EQ(s.state("a", 1499), SiteState::kUp);
  EXPECT_EQ(s.state("a", 1500), SiteState::kDown);
  EXPECT_EQ(s.state("a", 1800), SiteState::kProvisioning);
  EXPECT_EQ(s.state("a", 2100), SiteState::kUp);
  EXPECT_EQ(s.state("a", 2400), SiteState::kDown);  // past the end
  // b: no hysteresis, no provisioning: exactly the rows below 100.
  EXPECT_EQ(s.trace_site("b").powered, (P{{0, 300}, {600, 900}, {1800, 2400}}));
  EXPECT_EQ(s.state("b", 300), SiteState::kDown);
  // c: no threshold: powered over the whole trace.
  EXPECT_EQ(s.trace_site("c").powered, (P{{0, 2400}}));
  // up(): the wall-clock seconds times the speed, up only after provisioning.
  EXPECT_FALSE(s.up("a", 0, 4.9));  // 294 trace s: provisioning
  EXPECT_TRUE(s.up("a", 0, 5));     // 300
  EXPECT_FALSE(s.up("a", 0, 25));   // 1500
  EXPECT_TRUE(s.up("b", 7, 10));    // 600 (the round does not matter)
  EXPECT_FALSE(s.up("b", 0, 40));   // 2400: the trace is over
  EXPECT_TRUE(s.up("w9", 0, 1e9));  // not listed: always up
  EXPECT_TRUE(s.lists("a"));
  EXPECT_EQ(s.sites(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(s.intensity("R", 650), 50);
}

TEST(Energy, PerSiteEnergyAndEmissionsByHand) {
  std::string dir = loco::testing::temp_dir();
  // A: 50, 200, 50, 50; B: 80, 80, 300, 300 (gCO2/kWh), 300 s rows, trace end 1200 s.
  std::ofstream(dir + "/i.csv") << trace_csv({"A", "B"},
                                             {{50, 80}, {200, 80}, {50, 300}, {50, 300}});
  Schedule s = Schedule::parse(
      "trace: i.csv\npower: {train_kw: 2, idle_kw: 0.5}\nsites:\n"
      "  a: {region: A, below: 100}\n"
      "  b: {region: B, below: 100, power: {idle_kw: 0.25}}\n",
      "s.yaml", dir);
  EXPECT_EQ(s.trace_site("b").power.train_kw, 2);  // the default's, idle overridden
  EXPECT_EQ(s.trace_site("b").power.idle_kw, 0.25);
  EnergyMeter m(s);
  m.advance(600, {"a"});       // a trains in [0, 300), is down in [300, 600); b idles in [0, 600)
  m.advance(900, {"a", "b"});  // a trains in [600, 900); b is down (a member the schedule has
                               // down is not counted)
  m.advance(5000, {});         // clamped to 1200: a idles in [900, 1200)
  EXPECT_EQ(m.now(), 1200);
  m.advance(100, {"a"});  // the past: nothing
  const SiteEnergy& a = m.sites().at("a");
  const SiteEnergy& b = m.sites().at("b");
  EXPECT_DOUBLE_EQ(a.up_s, 900);
  EXPECT_DOUBLE_EQ(a.train_s, 600);
  EXPECT_DOUBLE_EQ(a.energy_kwh, 2.0 * 600 / 3600 + 0.5 * 300 / 3600);
  EXPECT_DOUBLE_EQ(a.emissions_g, (2.0 * 300 * 50 + 2.0 * 300 * 50 + 0.5 * 300 * 50) / 3600);
  EXPECT_DOUBLE_EQ(b.up_s, 600);
  EXPECT_DOUBLE_EQ(b.train_s, 0);
  EXPECT_DOUBLE_EQ(b.energy_kwh, 0.25 * 600 / 3600);
  EXPECT_DOUBLE_EQ(b.emissions_g, 0.25 * 600 * 80 / 3600);
  SiteEnergy t = m.total();
  EXPECT_DOUBLE_EQ(t.emissions_g, a.emissions_g + b.emissions_g);
  // The record every round carries, and the checkpoint's state round trip.
  auto r = m.record();
  EXPECT_EQ(r["trace_s"], 1200);
  EXPECT_DOUBLE_EQ(r["sites"]["a"]["train_s"].get<double>(), 600);
  EXPECT_DOUBLE_EQ(r["emissions_g"].get<double>(), t.emissions_g);
  EnergyMeter again(s);
  again.restore(m.state());
  EXPECT_EQ(again.record(), r);
  EXPECT_THROW(again.restore({1, 2}), std::runtime_error);
}

// The energy spent inside curtailment windows: while the region is below the site's
// window_below (default: its `below`), whether the site trains or idles.
TEST(Energy, EnergyInsideWindowsCountsOnlyRowsBelowTheWindowThreshold) {
  std::string dir = loco::testing::temp_dir();
  // A: 50, 200, 50, 50 (gCO2/kWh), 300 s rows.
  std::ofstream(dir + "/i.csv") << trace_csv({"A"}, {{50}, {200}, {50}, {50}});
  Schedule s = Schedule::parse(
      "trace: i.csv\npower: {train_kw: 2, idle_kw: 0.5}\nsites:\n"
      "  c: {region: A, window_below: 100}\n"  // always powered, windows where A < 100
      "  d: {region: A}\n",                    // no threshold at all: nothing is a window
      "s.yaml", dir);
  EnergyMeter m(s);
  m.advance(600, {"c", "d"});  // row 0 inside, row 1 outside, both training
  m.advance(1200, {});         // rows 2 and 3 inside, idle
  const SiteEnergy& c = m.sites().at("c");
  EXPECT_DOUBLE_EQ(c.energy_kwh, (2.0 * 600 + 0.5 * 600) / 3600);
  EXPECT_DOUBLE_EQ(c.window_energy_kwh, (2.0 * 300 + 0.5 * 600) / 3600);
  EXPECT_DOUBLE_EQ(m.sites().at("d").window_energy_kwh, 0);
  EXPECT_DOUBLE_EQ(m.record()["sites"]["c"]["window_energy_kwh"].get<double>(),
                   c.window_energy_kwh);
  // a checkpoint written before window_energy_kwh (four numbers a site) still restores
  std::vector<double> old = {1200, 1200, 600, c.energy_kwh, c.emissions_g, 1200, 600, 1.0, 2.0};
  EnergyMeter again(s);
  again.restore(old);
  EXPECT_DOUBLE_EQ(again.sites().at("c").energy_kwh, c.energy_kwh);
  EXPECT_DOUBLE_EQ(again.sites().at("c").window_energy_kwh, 0);
}

TEST(Energy, SplitsAtRowsAndProvisioningIdles) {
  std::string dir = loco::testing::temp_dir();
  std::ofstream(dir + "/i.csv") << trace_csv({"A"}, {{10}, {20}, {30}});
  Schedule s = Schedule::parse(
      "trace: i.csv\npower: {train_kw: 3, idle_kw: 1}\nsites: {a: {region: A, provision_s: 200}}\n",
      "s.yaml", dir);
  EnergyMeter m(s);
  // Idle while provisioning [0, 200) (not a member yet), then training across two row edges.
  m.advance(200, {});
  m.advance(750, {"a"});
  const SiteEnergy& a = m.sites().at("a");
  EXPECT_DOUBLE_EQ(a.up_s, 750);
  EXPECT_DOUBLE_EQ(a.train_s, 550);
  EXPECT_DOUBLE_EQ(a.emissions_g,
                   (1.0 * 200 * 10 + 3.0 * 100 * 10 + 3.0 * 300 * 20 + 3.0 * 150 * 30) / 3600);
  EXPECT_DOUBLE_EQ(a.energy_kwh, 3.0 * a.train_s / 3600 + 1.0 * (a.up_s - a.train_s) / 3600);
}

TEST(Energy, CentralisedBaselinesAndRatios) {
  auto tr = IntensityTrace::parse(
      trace_csv({"A", "B"}, {{50, 80}, {200, 80}, {50, 300}, {50, 300}}), "t.csv");
  // Tokens at one site's measured rate: the duration is the sites' summed train_s.
  EXPECT_DOUBLE_EQ(baseline_duration_s(6000, 600), 600);
  EXPECT_EQ(baseline_duration_s(0, 600), 0);
  EXPECT_EQ(baseline_duration_s(100, 0), 0);
  const double run_g = 10;
  auto b = centralised_baselines(tr, 2, 600, run_g);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_DOUBLE_EQ(b["A"].emissions_g, 2.0 * (300 * 50 + 300 * 200) / 3600);
  EXPECT_DOUBLE_EQ(b["B"].emissions_g, 2.0 * (600 * 80) / 3600);
  EXPECT_DOUBLE_EQ(b["A"].ratio, run_g / b["A"].emissions_g);
  EXPECT_DOUBLE_EQ(b["B"].duration_s, 600);
  // Longer than the trace (1200 s): it wraps to the start.
  auto longer = centralised_baselines(tr, 2, 1500, run_g);
  EXPECT_DOUBLE_EQ(longer["A"].emissions_g, 2.0 * (300 * (50 + 200 + 50 + 50) + 300 * 50) / 3600);
  auto j = baselines_json(b);
  EXPECT_DOUBLE_EQ(j["B"]["ratio"].get<double>(), run_g / b["B"].emissions_g);
}

TEST(Energy, SummaryCarriesSitesAndBaselines) {
  std::string dir = loco::testing::temp_dir();
  std::ofstream(dir + "/i.csv") << trace_csv({"A", "B"},
                                             {{50, 80}, {200, 80}, {50, 300}, {50, 300}});
  Schedule s = Schedule::parse(
      "trace: i.csv\npower: {train_kw: 2, idle_kw: 0.5}\nsites:\n"
      "  a: {region: A, below: 100}\n  b: {region: B, below: 100}\n",
      "s.yaml", dir);
  EnergyMeter m(s);
  m.advance(300, {"a", "b"});
  auto j = energy_summary(m, 1000);
  EXPECT_EQ(j["trace_end_s"], 1200);
  for (const char* site : {"a", "b"})
    for (const char* key : {"energy_kwh", "emissions_g", "up_s", "train_s"})
      EXPECT_TRUE(j["sites"][site][key].is_number()) << site << " " << key;
  // Both trained 300 s: the baseline runs 600 s.
  const double run_g = (2.0 * 300 * 50 + 2.0 * 300 * 80) / 3600;
  EXPECT_DOUBLE_EQ(j["emissions_g"].get<double>(), run_g);
  EXPECT_DOUBLE_EQ(j["baselines"]["A"]["emissions_g"].get<double>(),
                   2.0 * (300 * 50 + 300 * 200) / 3600);
  EXPECT_DOUBLE_EQ(j["baselines"]["A"]["ratio"].get<double>(),
                   run_g / (2.0 * (300 * 50 + 300 * 200) / 3600));
}

// A real `loco launch`: two workers under a trace replayed 150x (20 s of wall clock), w1 up from
// 600 trace s; the run's step budget is far off, so the trace's end ends it, with a summary that
// carries the sites and baselines, and `loco emissions` and `loco compare` read it.
TEST(Launch, TraceScheduleEndsTheRunWithEnergyInTheSummary) {
  std::string dir = loco::testing::temp_dir();
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < 10; ++i) rows.push_back({50, i < 2 ? 300.0 : 60.0});
  std::ofstream(dir + "/i.csv") << trace_csv({"A", "B"}, rows);
  std::ofstream(dir + "/schedule.yaml")
      << "trace: i.csv\nspeed: 150\npower: {train_kw: 2.024, idle_kw: 0.468}\nsites:\n"
         "  w0: {region: A, below: 100}\n  w1: {region: B, below: 100}\n";
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 5);
  c.train.max_steps = 5000;
  c.train.eval_every = 5;
  c.train.checkpoint_every = 0;
  c.train.log_every = 5;
  c.sync.coordinator.heartbeat_s = 0.2;
  c.sync.coordinator.lease_s = 1.5;
  c.sync.schedule = dir + "/schedule.yaml";
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("the trace ended"), std::string::npos) << r.output;
  std::ifstream in(dir + "/run/coordinator/summary.json");
  ASSERT_TRUE(in) << r.output;
  auto s = nlohmann::json::parse(in);
  EXPECT_EQ(s["ended_by"], "trace");
  EXPECT_EQ(s["complete"], true);
  EXPECT_GT(s["rounds"].get<int64_t>(), 0);
  EXPECT_LT(s["rounds"].get<int64_t>(), 1000);
  EXPECT_NEAR(s["trace_s"].get<double>(), 3000, 1e-6);  // accounted to the trace's end
  for (const char* site : {"w0", "w1"}) {
    const auto& e = s["sites"][site];
    double up = e["up_s"], train = e["train_s"];
    EXPECT_GT(train, 0) << site;
    EXPECT_LE(train, up) << site;
    EXPECT_NEAR(e["energy_kwh"].get<double>(), 2.024 * train / 3600 + 0.468 * (up - train) / 3600,
                1e-9)
        << site;
    EXPECT_GT(e["emissions_g"].get<double>(), 0) << site;
  }
  EXPECT_NEAR(s["sites"]["w0"]["up_s"].get<double>(), 3000, 1e-6);  // A is always below 100
  EXPECT_NEAR(s["sites"]["w1"]["up_s"].get<double>(), 2400, 1e-6);  // B from the third row
  for (const char* region : {"A", "B"}) EXPECT_GT(s["baselines"][region]["ratio"].get<double>(), 0);
  // Every round's record carries the sites so far.
  std::ifstream metrics(dir + "/run/coordinator/metrics.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(metrics, line));
  EXPECT_TRUE(nlohmann::json::parse(line)["sites"].contains("w1")) << line;
  auto e = loco::testing::run_loco("emissions " + dir + "/run --no-plot --out " + dir + "/em");
  EXPECT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("| w1 |"), std::string::npos) << e.output;
  EXPECT_NE(e.output.find("| B |"), std::string::npos) << e.output;
}

// The curtailment reproduction's last site (its window runs to the trace's end) trains alone
// (sync.lone train) and is stopped with the trace: its work since its anchor is handed over and
// taken as the run's last round, not refused as "the run is over".
TEST(Launch, ALoneSiteUpAtTheTracesEndHandsOverItsWorkAsTheLastRound) {
  std::string dir = loco::testing::temp_dir();
  std::vector<std::vector<double>> rows;
  // A always below 100, B for the first row only (a site never up is refused)
  for (int i = 0; i < 10; ++i) rows.push_back({50, i == 0 ? 50.0 : 300.0});
  std::ofstream(dir + "/i.csv") << trace_csv({"A", "B"}, rows);
  std::ofstream(dir + "/schedule.yaml")
      << "trace: i.csv\nspeed: 300\npower: {train_kw: 2, idle_kw: 0.5}\nsites:\n"
         "  w0: {region: A, below: 100}\n  w1: {region: B, below: 100}\n";
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 5);
  c.train.max_steps = 1000000;  // the trace's end ends it
  c.train.eval_every = 0;
  c.train.checkpoint_every = 0;
  c.train.log_every = 100;
  c.sync.lone = "train";
  c.sync.coordinator.heartbeat_s = 0.2;
  c.sync.coordinator.lease_s = 1.5;
  c.sync.schedule = dir + "/schedule.yaml";
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("could not hand over"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("handed over its"), std::string::npos) << r.output;
  auto s = nlohmann::json::parse(std::ifstream(dir + "/run/coordinator/summary.json"));
  EXPECT_EQ(s["ended_by"], "trace");
  // The last round is w0's whole lone stretch since B left (more than 10 steps of it).
  auto rounds = read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_FALSE(rounds.empty());
  EXPECT_EQ(rounds.back().at("round").get<int64_t>(), s["rounds"].get<int64_t>());
  EXPECT_EQ(rounds.back().at("members"), nlohmann::json::array({"w0"}));
  EXPECT_GT(rounds.back().at("round_tokens").get<int64_t>(),
            10 * c.train.batch_size * c.model.seq_len);
}

// The same, in process and in the order that lost the first full run's last site: the
// coordinator sees the trace's end before the lone member's hand-over arrives. The push is still
// taken, and closes the last round.
TEST(TraceEnd, ALoneMembersHandOverAfterTheEndClosesTheLastRound) {
  std::string dir = loco::testing::temp_dir();
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < 10; ++i) rows.push_back({50, i == 0 ? 50.0 : 300.0});
  std::ofstream(dir + "/i.csv") << trace_csv({"A", "B"}, rows);
  std::ofstream(dir + "/schedule.yaml")  // 3000 trace s at 6000x: half a second
      << "trace: i.csv\nspeed: 6000\npower: {train_kw: 2, idle_kw: 0.5}\nsites:\n"
         "  w0: {region: A, below: 100}\n  w1: {region: B, below: 100}\n";
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 2, 5);
  c.train.max_steps = 1000000;
  c.sync.lone = "train";
  c.sync.schedule = dir + "/schedule.yaml";
  CoordinatorCore core(c, false);
  const auto& last = core.layout().back();
  auto w0 = core.join("w0", last.offset + last.numel);
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  core.tick();  // the trace ended, w0 alone
  Update u;
  u.worker_id = w0.worker_id, u.round = 0, u.tokens = 4096, u.loss = 1.0;
  auto none = make_codec(CodecConfig{});
  for (const auto& l : core.layout())
    u.tensors.push_back({l.name, "float32", none->encode(torch::full(l.shape, 0.01f))});
  core.push(u, 1);           // the hand-over (refused as "the run is over" before the fix) ...
  core.leave(w0.worker_id);  // ... closes the round as its member leaves
  EXPECT_EQ(core.round(), 1);
  core.drain();
  core.tick();
  EXPECT_TRUE(core.finished());
}
