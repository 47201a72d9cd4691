// Streaming DiLoCo (sync.mode streaming, docs/streaming.md): its config errors, the fragments,
// the schedule and mix against an independent PyTorch script (tests/golden/reference_streaming.py),
// and real runs under `loco launch`: one fragment without delay or mix is DiLoCo step for step,
// and with fragments, delay and mix the workers hold identical global parameters after every
// round while each round sends one fragment.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "coord/streaming_aggregator.h"
#include "loco/checkpoint.h"
#include "loco/metrics.h"
#include "loco/streaming.h"
#include "replica_checks.h"
#include "test_util.h"

using namespace loco;

namespace {

Config streaming_config(const std::string& run_dir, int64_t workers, int64_t h, int64_t fragments,
                        int64_t delay, double alpha) {
  Config c = loco::testing::coordinated_config(run_dir, "streaming", workers, h);
  c.sync.streaming = {fragments, delay, alpha};
  return c;
}

}  // namespace

TEST(StreamingConfig, BadInputNamesTheKey) {
  auto error = [](std::function<void(Config&)> change) {
    Config c = streaming_config("/tmp/unused", 2, 4, 2, 1, 0.5);
    change(c);
    return loco::testing::config_error([&] { validate(c); });
  };
  EXPECT_EQ(error([](Config&) {}), "(no error)");
  EXPECT_NE(error([](Config& c) {
              c.sync.streaming.fragments = 3;
            }).find("sync.streaming.fragments: 3 must be between 1 and the model's 2 blocks"),
            std::string::npos);
  EXPECT_NE(error([](Config& c) {
              c.model.n_layer = 4;
              c.sync.streaming.fragments = 3;
            }).find("sync.streaming.fragments: 3 does not divide sync.inner_steps (4)"),
            std::string::npos);
  EXPECT_NE(error([](Config& c) { c.sync.streaming.delay_steps = 2; })
                .find("sync.streaming.delay_steps: 2 must be >= 0 and below sync.inner_steps / "
                      "fragments (2)"),
            std::string::npos);
  for (double alpha : {-0.1, 1.5})
    EXPECT_NE(
        error([&](Config& c) { c.sync.streaming.alpha = alpha; }).find("sync.streaming.alpha"),
        std::string::npos)
        << alpha;
  EXPECT_NE(error([](Config& c) { c.sync.download = "state"; }).find("sync.download state"),
            std::string::npos);
  EXPECT_NE(error([](Config& c) { c.sync.round_seconds = 5; }).find("needs sync.mode diloco"),
            std::string::npos);
  // A YAML key of its own, read as any other.
  Config c = streaming_config("/tmp/unused", 2, 4, 1, 0, 0);
  apply_override(c, "sync.streaming.alpha=0.25");
  apply_override(c, "sync.mode=streaming");
  EXPECT_DOUBLE_EQ(c.sync.streaming.alpha, 0.25);
  EXPECT_EQ(c.sync.mode, Mode::kStreaming);
  EXPECT_EQ(round_steps(streaming_config("/tmp/unused", 2, 8, 2, 0, 0).sync), 4);
}

TEST(StreamingFragments, AreContiguousNearEqualAndCutOnlyBetweenRows) {
  Config c = streaming_config("/tmp/unused", 2, 4, 2, 0, 0);
  auto layout = loco::testing::model_layout(c);
  const int64_t total = layout.back().offset + layout.back().numel;
  int64_t widest = 0;
  for (const auto& l : layout) widest = std::max(widest, l.numel / l.shape[0]);
  EXPECT_EQ(widest, 256);
  for (int64_t count : {1, 2, 3, 5}) {
    auto frags = plan_fragments(layout, count);
    ASSERT_EQ(int64_t(frags.size()), count);
    int64_t at = 0;
    for (const auto& f : frags) {
      EXPECT_EQ(f.offset, at);
      int64_t pieces = 0;
      for (const auto& p : f.pieces) {
        EXPECT_EQ(p.offset, at + pieces) << p.name;
        int64_t n = 1;
        for (auto d : p.shape) n *= d;
        EXPECT_EQ(n, p.numel) << p.name;
        pieces += p.numel;
      }
      EXPECT_EQ(pieces, f.numel);
      // Near-equal: each fragment ends within one row of its share's end, so its size is
      // within a row (the widest here: the MLP's c_proj, 256 values) of N / P.
      EXPECT_LE(std::abs(f.numel - total / count), widest + count) << count;
      at += f.numel;
    }
    EXPECT_EQ(at, total);
  }
  // Three fragments of this model cut lm_head (N / 3 falls inside it): its pieces are named by
  // rows and keep its width.
  auto three = plan_fragments(layout, 3);
  const auto& cut = three[0].pieces.back();
  EXPECT_EQ(cut.name.rfind("lm_head.weight[0:", 0), 0u) << cut.name;
  EXPECT_EQ(three[1].pieces.front().name.rfind("lm_head.weight[", 0), 0u)
      << three[1].pieces.front().name;
  EXPECT_EQ(cut.shape, (std::vector<int64_t>{cut.numel / 64, 64}));
  // Two fragments end exactly at a tensor's end here: nothing is cut.
  for (const auto& f : plan_fragments(layout, 2))
    for (const auto& p : f.pieces) EXPECT_EQ(p.name.find('['), std::string::npos) << p.name;
  EXPECT_THROW(plan_fragments(layout, total + 1), std::invalid_argument);
}

// W workers and the coordinator's aggregator in one process, a synthetic inner step, every
// worker's parameters after every step checked against the reference script.
TEST(Streaming, ScheduleFragmentsAndMixMatchTheReferenceScript) {
  struct Case {
    int64_t fragments, delay;
    double alpha;
  };
  for (const Case& k : {Case{1, 0, 0.0}, Case{2, 1, 0.5}, Case{3, 0, 0.25}, Case{3, 1, 1.0}}) {
    SCOPED_TRACE("P " + std::to_string(k.fragments) + " tau " + std::to_string(k.delay));
    const int64_t workers = 3, h = 6, steps = 4 * h;
    const double eta = 0.1;
    SyncConfig sync;
    sync.mode = Mode::kStreaming;
    sync.workers = workers;
    sync.inner_steps = h;
    sync.streaming = {k.fragments, k.delay, k.alpha};
    sync.outer.lr = 0.7;
    sync.outer.momentum = 0.9;
    std::vector<TensorLayout> layout = {
        {"a", {6, 4}, 0, 24}, {"b", {5, 3}, 24, 15}, {"c", {7}, 39, 7}};
    const int64_t n = 46;
    auto theta0 = torch::sin(torch::arange(n, torch::kFloat32));
    auto targets =
        torch::cos(torch::arange(workers * n, torch::kFloat32) * 0.37).view({workers, n});
    std::vector<int64_t> tokens = {100, 200, 300};

    StreamingAggregator agg(sync, layout);
    torch::Tensor theta = theta0.clone();
    OuterNesterov outer(sync.outer.lr, sync.outer.momentum, theta);
    std::vector<std::unique_ptr<StreamingWorker>> w;
    std::vector<torch::Tensor> params, global;
    for (int64_t i = 0; i < workers; ++i) {
      w.push_back(std::make_unique<StreamingWorker>(sync, layout, theta0));
      params.push_back(theta0.clone());
      global.push_back(theta0.clone());
    }
    std::vector<torch::Tensor> trace, rounds;
    int64_t round = 0, pending = -1;
    auto apply = [&](int64_t r) {
      for (int64_t i = 0; i < workers; ++i) {
        w[size_t(i)]->replay(r, agg.aggregate(), global[size_t(i)]);
        EXPECT_EQ(param_checksum(global[size_t(i)]), agg.checksum()) << "round " << r;
        w[size_t(i)]->mix(r, global[size_t(i)], params[size_t(i)]);
      }
    };
    for (int64_t step = 1; step <= steps; ++step) {
      for (int64_t i = 0; i < workers; ++i)
        params[size_t(i)].sub_(eta * (params[size_t(i)] - targets[i]));
      if (pending >= 0 && w[0]->applies(step)) apply(pending), pending = -1;
      if (w[0]->ends_round(step)) {
        int64_t all = 0;
        for (int64_t i = 0; i < workers; ++i) {
          Update u;
          u.round = round;
          u.tokens = tokens[size_t(i)];
          u.tensors = w[size_t(i)]->encode(round, global[size_t(i)], params[size_t(i)]);
          agg.add(u, agg.decode(u));
          all += u.tokens;
        }
        agg.close(theta, outer, all);
        rounds.push_back(theta.clone());
        if (k.delay == 0)
          apply(round);
        else
          pending = round;
        ++round;
      }
      trace.push_back(torch::stack(params));
    }
    EXPECT_EQ(round, steps / (h / k.fragments));

    std::vector<torch::Tensor> shapes, frags;
    for (const auto& l : layout) shapes.push_back(torch::tensor(l.shape));
    for (const auto& f : plan_fragments(layout, k.fragments))
      frags.push_back(torch::tensor({f.offset, f.numel}));
    auto dump = loco::testing::make_dict();
    dump.insert("settings",
                torch::tensor({double(workers), double(h), double(k.fragments), double(k.delay),
                               k.alpha, sync.outer.lr, sync.outer.momentum, eta, double(steps)},
                              torch::kFloat64));
    dump.insert("shapes", c10::List<torch::Tensor>(shapes));
    dump.insert("fragments", c10::List<torch::Tensor>(frags));
    dump.insert("theta0", theta0);
    dump.insert("targets", targets);
    dump.insert("tokens", torch::tensor(tokens, torch::kFloat64));
    dump.insert("trace", torch::stack(trace));
    dump.insert("rounds", torch::stack(rounds));
    const std::string path = loco::testing::temp_dir() + "/streaming.pt";
    loco::testing::save_dump(path, dump);
    auto r = loco::testing::run_python("tests/golden/reference_streaming.py check " + path);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
}

// --- real processes under `loco launch` ---

namespace {

struct LaunchedRun {
  std::vector<nlohmann::json> coordinator;
  std::map<int64_t, std::set<uint64_t>> checksums;
};

LaunchedRun launch(const std::string& dir, const Config& c, int workers) {
  std::filesystem::create_directories(dir);
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return {read_metrics(c.run.dir + "/coordinator/metrics.jsonl"),
          loco::testing::checksums_by_round(c.run.dir, workers)};
}

}  // namespace

TEST(StreamingLaunch, OneFragmentWithoutDelayOrMixIsDilocoStepForStep) {
  const std::string dir = loco::testing::temp_dir();
  Config diloco = loco::testing::coordinated_config(dir + "/diloco", "diloco", 2, 4);
  diloco.train.max_steps = 12;
  diloco.sync.download = "update";  // what streaming downloads: the round's average, replayed
  Config streaming = diloco;
  streaming.run.dir = dir + "/streaming";
  streaming.sync.mode = Mode::kStreaming;
  streaming.sync.streaming = {1, 0, 0.0};
  streaming.sync.coordinator.address = "127.0.0.1:" + std::to_string(loco::testing::free_port());
  auto a = launch(dir + "/a", diloco, 2);
  auto b = launch(dir + "/b", streaming, 2);
  ASSERT_EQ(a.coordinator.size(), 3u);
  ASSERT_EQ(b.coordinator.size(), a.coordinator.size());
  for (size_t i = 0; i < a.coordinator.size(); ++i)
    EXPECT_EQ(a.coordinator[i].at("val_loss").get<double>(),
              b.coordinator[i].at("val_loss").get<double>())
        << "round " << i + 1;
  EXPECT_EQ(a.checksums, b.checksums);
  ASSERT_EQ(b.checksums.size(), 3u);
  for (const auto& [round, set] : b.checksums) EXPECT_EQ(set.size(), 1u) << "round " << round;
}

TEST(StreamingLaunch, FragmentsSyncInTurnOverlappedAndEveryWorkerHoldsTheSameGlobalModel) {
  const std::string dir = loco::testing::temp_dir();
  Config c = streaming_config(dir + "/run", 3, 4, 2, 1, 0.5);
  c.train.max_steps = 16;
  c.train.eval_every = 4;
  auto run = launch(dir, c, 3);
  // 16 steps, a round every H / P = 2 steps: 8 rounds, fragments 0, 1, 0, 1, ...
  ASSERT_EQ(run.coordinator.size(), 8u);
  // The coordinator evaluates once every fragment synced since: rounds 2, 4, 6, 8.
  std::vector<double> val;
  for (const auto& rec : run.coordinator) {
    EXPECT_EQ(rec.contains("val_loss"), rec.at("round").get<int64_t>() % 2 == 0) << rec.dump();
    if (rec.contains("val_loss")) val.push_back(rec.at("val_loss").get<double>());
  }
  ASSERT_EQ(val.size(), 4u);
  EXPECT_LT(val.back(), val.front());
  // Rounds 1..7 are applied during training; the 8th after the last step (below).
  ASSERT_EQ(run.checksums.size(), 7u);
  for (const auto& [round, set] : run.checksums) EXPECT_EQ(set.size(), 1u) << "round " << round;
  for (const auto& rec : run.coordinator)  // and those global parameters are the coordinator's
    if (rec.contains("param_checksum") && run.checksums.count(rec.at("round").get<int64_t>()))
      EXPECT_EQ(*run.checksums[rec.at("round").get<int64_t>()].begin(),
                rec.at("param_checksum").get<uint64_t>());

  // A worker's records: the result of round r is applied tau = 1 step after the round's end,
  // at step 2 r + 1, for fragment (r - 1) mod 2; each push carries about half the model.
  const int64_t params = [&] {
    auto layout = loco::testing::model_layout(c);
    return layout.back().offset + layout.back().numel;
  }();
  int synced = 0;
  for (const auto& rec : read_metrics(c.run.dir + "/worker-0/metrics.jsonl")) {
    if (!rec.contains("fragment")) continue;
    const int64_t round = rec.at("round").get<int64_t>();
    EXPECT_EQ(rec.at("step").get<int64_t>(), 2 * (round - 1) + 2 + 1) << "round " << round;
    EXPECT_EQ(rec.at("fragment").get<int64_t>(), (round - 1) % 2);
    const double up = rec.at("bytes_up").get<double>();
    EXPECT_GT(up, 0.45 * 4 * double(params));
    EXPECT_LT(up, 0.55 * 4 * double(params));
    ++synced;
  }
  // The last round's result would come after the last step: applied at the end, not logged.
  EXPECT_EQ(synced, 7);
}

// --- DiLoCo with a delayed outer step (sync.overlap delayed) ---

TEST(DelayedConfig, BadInputNamesTheKey) {
  auto error = [](std::function<void(Config&)> change) {
    Config c = loco::testing::coordinated_config("/tmp/unused", "diloco", 2, 4);
    c.sync.overlap = "delayed";
    change(c);
    return loco::testing::config_error([&] { validate(c); });
  };
  EXPECT_EQ(error([](Config&) {}), "(no error)");
  EXPECT_NE(error([](Config& c) { c.sync.overlap = "eager"; }).find("sync.overlap"),
            std::string::npos);
  EXPECT_NE(error([](Config& c) { c.sync.mode = Mode::kStreaming; })
                .find("sync.overlap delayed is DiLoCo's delayed outer step: it needs sync.mode "
                      "diloco (it is 'streaming'"),
            std::string::npos);
  EXPECT_NE(error([](Config& c) { c.sync.download = "state"; }).find("sync.download state"),
            std::string::npos);
  Config c = loco::testing::coordinated_config("/tmp/unused", "diloco", 2, 4);
  c.sync.overlap = "delayed";
  EXPECT_TRUE(downloads_update(c.sync));  // codec none, download auto: still the update
}

TEST(DelayedLaunch, RoundsOverlapTheNextRoundAndWorkersStartEachRoundFromTheSameState) {
  const std::string dir = loco::testing::temp_dir();
  Config c = loco::testing::coordinated_config(dir + "/run", "diloco", 3, 4);
  c.train.max_steps = 20;
  c.sync.overlap = "delayed";
  auto run = launch(dir, c, 3);
  ASSERT_EQ(run.coordinator.size(), 5u);
  EXPECT_LT(run.coordinator.back().at("val_loss").get<double>(),
            run.coordinator.front().at("val_loss").get<double>());
  // Round r's result is applied at the end of round r + 1 (step 4 (r + 1)), for r = 1..4; the
  // fifth comes after the last step.
  ASSERT_EQ(run.checksums.size(), 4u);
  for (const auto& [round, set] : run.checksums) EXPECT_EQ(set.size(), 1u) << "round " << round;
  for (const auto& rec : read_metrics(c.run.dir + "/worker-1/metrics.jsonl")) {
    if (!rec.contains("param_checksum")) continue;
    EXPECT_EQ(rec.at("step").get<int64_t>(), 4 * (rec.at("round").get<int64_t>() + 1));
    EXPECT_TRUE(rec.contains("exchange_s"));
  }
  // The coordinator is DiLoCo's: every round's state is the one the workers logged for it.
  std::map<int64_t, uint64_t> coordinator_sums;
  for (const auto& rec : run.coordinator)
    if (rec.contains("param_checksum"))
      coordinator_sums[rec.at("round").get<int64_t>()] = rec.at("param_checksum").get<uint64_t>();
  for (const auto& [round, set] : run.checksums)
    if (coordinator_sums.count(round)) EXPECT_EQ(*set.begin(), coordinator_sums[round]);
}

TEST(StreamingLaunch, ASiteOfTwoRanksTakesEachFragmentTogether) {
  const std::string dir = loco::testing::temp_dir();
  Config c = streaming_config(dir + "/run", 2, 4, 2, 1, 0.5);
  apply_override(c, "sync.sites=a:2,b:1");
  c.train.max_steps = 8;
  auto r = loco::testing::run_loco("launch --config " + loco::testing::write_config(dir, c));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto global = read_metrics(c.run.dir + "/coordinator/metrics.jsonl");
  ASSERT_EQ(global.size(), 4u);  // 8 steps, a round every H / P = 2
  const int64_t rank_tokens = 2 * c.train.batch_size * c.model.seq_len;
  for (const auto& g : global) {
    EXPECT_EQ(g.at("workers").get<int>(), 2);
    EXPECT_EQ(g.at("round_tokens").get<int64_t>(), 3 * rank_tokens);  // a's two ranks and b's
  }
  // Site a's ranks hold the same parameters after every step, the fragments' mixes included.
  auto checksums = [](const std::string& path) {
    std::vector<uint64_t> out;
    for (const auto& rec : read_metrics(path))
      if (rec.contains("param_checksum")) out.push_back(rec.at("param_checksum").get<uint64_t>());
    return out;
  };
  auto a0 = checksums(c.run.dir + "/worker-0/metrics.jsonl");
  auto a1 = checksums(c.run.dir + "/worker-0/rank-1/metrics.jsonl");
  EXPECT_GE(a0.size(), 3u);
  EXPECT_EQ(a0, a1);
}
