// The coordinator's parts driven alone, without a network or a CoordinatorCore: each sync
// method's aggregator on hand-made updates, the membership rules, the byte ledger and the chunk
// stream's checks (src/coord/).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "coord/aggregator.h"
#include "coord/ledger.h"
#include "coord/memory_gate.h"
#include "coord/membership.h"
#include "coord/stream.h"
#include "loco/coordinator.h"
#include "loco/progress.h"
#include "loco/checkpoint.h"
#include "test_util.h"

using namespace loco;

namespace {

std::vector<TensorLayout> two_tensors() {
  return {{"a", {4, 8}, 0, 32}, {"b", {16}, 32, 16}};
}

// An update whose tensors are `values[i]` flattened, encoded with `codec`.
Update update_of(const std::vector<TensorLayout>& layout, const std::vector<torch::Tensor>& values,
                 Codec& codec, int64_t tokens) {
  Update u;
  u.worker_id = "w", u.round = 0, u.tokens = tokens;
  for (size_t i = 0; i < layout.size(); ++i)
    u.tensors.push_back({layout[i].name, "float32", codec.encode(values[i].view(layout[i].shape))});
  return u;
}

Config method_config(Mode mode) {
  Config c;
  c.sync.mode = mode;
  c.sync.workers = 2;
  c.sync.outer.lr = 0.7, c.sync.outer.momentum = 0.9;
  if (mode == Mode::kDemo) c.sync.codec.type = "dct", c.sync.codec.chunk = 8, c.sync.codec.topk = 4;
  return c;
}

}  // namespace

TEST(DilocoAggregator, WeighsByTokensAndStepsLikeTheReferenceNesterov) {
  auto layout = two_tensors();
  Config c = method_config(Mode::kDiloco);
  auto agg = make_aggregator(c, layout);
  ASSERT_TRUE(agg->steps_global_model());
  EXPECT_FALSE(agg->serves_aggregate());  // codec none downloads the state
  auto none = make_codec(CodecConfig{});
  torch::manual_seed(1);
  auto d1 = torch::randn({48}), d2 = torch::randn({48});
  for (auto [d, tokens] : {std::pair{d1, int64_t(100)}, std::pair{d2, int64_t(300)}}) {
    Update u = update_of(layout, {d.narrow(0, 0, 32), d.narrow(0, 32, 16)}, *none, tokens);
    agg->add(u, agg->decode(u));
  }
  auto theta = torch::randn({48});
  auto expected = theta.clone();
  OuterNesterov outer(0.7, 0.9, theta), reference(0.7, 0.9, expected);
  agg->close(theta, outer, 400);
  reference.step(expected, (100 * d1 + 300 * d2) / 400);
  EXPECT_TRUE(torch::allclose(theta, expected, 1e-6, 1e-6));
  // The round's sum starts over: a second round of one push steps on that push alone.
  Update u = update_of(layout, {d1.narrow(0, 0, 32), d1.narrow(0, 32, 16)}, *none, 5);
  agg->add(u, agg->decode(u));
  agg->close(theta, outer, 5);
  reference.step(expected, d1);
  EXPECT_TRUE(torch::allclose(theta, expected, 1e-6, 1e-6));
}

TEST(DilocoAggregator, EncodedDownloadIsWhatItStepsWithAndCarriesTheChecksum) {
  auto layout = two_tensors();
  Config c = method_config(Mode::kDiloco);
  c.sync.codec.type = "int8";
  auto agg = make_aggregator(c, layout);
  ASSERT_TRUE(agg->serves_aggregate());
  auto int8 = make_codec(c.sync.codec);
  EXPECT_EQ(agg->push_codec(), int8->name());
  torch::manual_seed(2);
  auto d = torch::randn({48});
  Update u = update_of(layout, {d.narrow(0, 0, 32), d.narrow(0, 32, 16)}, *int8, 10);
  agg->add(u, agg->decode(u));
  auto theta = torch::randn({48});
  auto start = theta.clone();
  OuterNesterov outer(0.7, 0.9, theta);
  agg->close(theta, outer, 10);
  // A worker replays the step from the decoded aggregate and lands on the same bits.
  auto replay = start.clone();
  OuterNesterov worker(0.7, 0.9, replay);
  auto avg = torch::cat({int8->decode(agg->aggregate()[0]).reshape({-1}),
                         int8->decode(agg->aggregate()[1]).reshape({-1})});
  worker.step(replay, avg);
  EXPECT_TRUE(torch::equal(replay, theta));
  EXPECT_EQ(agg->checksum(), param_checksum(theta));
}

TEST(DilocoAggregator, RefusesAPushThatDoesNotDecodeAndNamesTheTensor) {
  auto layout = two_tensors();
  auto agg = make_aggregator(method_config(Mode::kDiloco), layout);
  auto none = make_codec(CodecConfig{});
  Update u = update_of(layout, {torch::ones({32}), torch::ones({16})}, *none, 1);
  u.tensors[1].encoded.payload.resize(7);
  try {
    agg->decode(u);
    FAIL() << "a truncated payload was accepted";
  } catch (const CoordError& e) {
    EXPECT_EQ(e.code, CoordError::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("tensor 'b'"), std::string::npos) << e.what();
  }
}

TEST(DemoAggregator, MergesTheSparseSetsAndStepsNothing) {
  auto layout = two_tensors();
  Config c = method_config(Mode::kDemo);
  auto agg = make_aggregator(c, layout);
  EXPECT_FALSE(agg->steps_global_model());
  ASSERT_NE(agg->replicas(), nullptr);
  auto dct = make_codec(c.sync.codec);
  torch::manual_seed(3);
  std::vector<Update> pushes;
  for (int w = 0; w < 2; ++w) {
    pushes.push_back(update_of(layout, {torch::randn({32}), torch::randn({16})}, *dct, 10));
    agg->add(pushes.back(), agg->decode(pushes.back()));
  }
  auto theta = torch::randn({48});
  auto before = theta.clone();
  OuterNesterov outer(0.7, 0.9, theta);
  agg->close(theta, outer, 20);
  EXPECT_TRUE(torch::equal(theta, before));
  for (size_t i = 0; i < layout.size(); ++i) {
    Encoded expected =
        encode_sparse(merge_sparse({pushes[0].tensors[i].encoded, pushes[1].tensors[i].encoded}),
                      c.sync.codec.values);
    EXPECT_EQ(agg->aggregate()[i].payload, expected.payload) << layout[i].name;
  }
  // Another chunking than the run's is refused before it reaches the merge.
  CodecConfig other = c.sync.codec;
  other.chunk = 4;
  Update odd = update_of(layout, {torch::randn({32}), torch::randn({16})}, *make_codec(other), 1);
  EXPECT_EQ(loco::testing::refusal([&] { agg->decode(odd); }), CoordError::kInvalidArgument);
}

// The consensus is the mean of the pushed replicas; sync.report_model decides which one replica
// is kept beside it: the named one, or the one with the lowest val loss.
TEST(DemoAggregator, ReplicaAverageIsTheMeanAndKeepsTheReportedReplica) {
  auto layout = two_tensors();
  auto none = make_codec(CodecConfig{});
  std::vector<torch::Tensor> p = {torch::randn({48}), torch::randn({48}), torch::randn({48})};
  const std::vector<double> val = {5.0, 4.0, 4.5};
  for (std::string report : {"replica:2", "best", "consensus"}) {
    SCOPED_TRACE(report);
    Config c = method_config(Mode::kDemo);
    c.sync.workers = 3;
    c.sync.report_model = report;
    auto agg = make_aggregator(c, layout);
    ReplicaAverage& replicas = *agg->replicas();
    for (int round = 0; round < 2; ++round) {  // the kept replica starts over each round
      for (int k = 0; k < 3; ++k) {
        Update u = update_of(layout, {p[k].narrow(0, 0, 32), p[k].narrow(0, 32, 16)}, *none, 0);
        u.kind = Update::kState;
        u.worker_id = "w" + std::to_string(k);
        u.val_loss = val[k] + round, u.val_bpb = val[k] / 2;
        replicas.add(u, replicas.decode(u));
      }
      EXPECT_EQ(replicas.count(), 3);
      auto theta = torch::zeros({48});
      ReplicaReport rep;
      replicas.take(theta, rep);
      EXPECT_TRUE(torch::allclose(theta, (p[0] + p[1] + p[2]) / 3, 1e-6, 1e-6));
      EXPECT_EQ(replicas.count(), 0);
      ASSERT_EQ(rep.evals.size(), 3u);
      EXPECT_DOUBLE_EQ(replica_loss_stats(rep.evals)["min"].get<double>(), 4.0 + round);
      EXPECT_DOUBLE_EQ(replica_loss_stats(rep.evals)["mean"].get<double>(), 4.5 + round);
      if (report == "consensus") {
        EXPECT_FALSE(rep.theta.defined());
        continue;
      }
      const int kept = report == "best" ? 1 : 2;
      EXPECT_EQ(rep.kept.member, "w" + std::to_string(kept));
      EXPECT_DOUBLE_EQ(rep.kept.loss, val[kept] + round);
      ASSERT_TRUE(rep.theta.defined());
      EXPECT_TRUE(torch::equal(rep.theta, p[kept]));
    }
  }
}

TEST(Aggregator, OnlyCoordinatedModesHaveOne) {
  auto layout = two_tensors();
  for (Mode m : {Mode::kSingle, Mode::kDdp}) {
    Config c = method_config(m);
    try {
      make_aggregator(c, layout);
      FAIL() << mode_name(m);
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("sync.mode"), std::string::npos) << e.what();
    }
  }
}

TEST(Membership, FirstRoundWaitsForEverySlotThenLaterJoinersTakeTheNextRound) {
  CoordinatorConfig co;
  Membership m(2, co);
  auto a = m.join("a", -1, 0);
  EXPECT_EQ(a.round, 0);
  m.reported(m.touch("a"), 10, 1.0);
  EXPECT_FALSE(m.round_complete(0));  // the first round of a process waits for both slots
  auto b = m.join("b", -1, 0);
  EXPECT_NE(a.shard, b.shard);
  m.reported(m.touch("b"), 30, 2.0);
  ASSERT_TRUE(m.round_complete(0));
  EXPECT_EQ(m.close_round(true), (std::vector<std::string>{"a", "b"}));
  // The shards' cursors moved on by the tokens each reported.
  auto cursors = m.shard_tokens();
  EXPECT_EQ(cursors[a.shard].item<int64_t>(), 10);
  EXPECT_EQ(cursors[b.shard].item<int64_t>(), 30);
  // b leaves and comes back: it takes part from the next round and reads on from its cursor.
  ASSERT_TRUE(m.leave("b"));
  auto again = m.join("b", b.shard, 1);
  EXPECT_EQ(again.round, 2);
  EXPECT_EQ(again.shard, b.shard);
  EXPECT_EQ(again.cursor_tokens, 30);
  m.reported(m.touch("a"), 10, 3.0);
  EXPECT_TRUE(m.round_complete(1));  // b does not take part in round 1
  EXPECT_EQ(loco::testing::refusal([&] { m.join("c", -1, 1); }), CoordError::kResourceExhausted);
  EXPECT_EQ(loco::testing::refusal([&] { m.touch("nobody"); }), CoordError::kNotFound);
}

TEST(Membership, AdaptiveDeadlineFollowsTheSpreadOfCompleteRounds) {
  CoordinatorConfig co;
  co.straggler = "adaptive", co.straggler_factor = 3, co.straggler_min_s = 0.5;
  co.round_timeout_s = 100, co.min_workers = 1;
  Membership m(2, co);
  m.join("a", -1, 0), m.join("b", -1, 0);
  EXPECT_EQ(m.straggler_deadline(), 100);  // nothing measured yet
  m.reported(m.touch("a"), 1, 10.0);
  m.reported(m.touch("b"), 1, 12.0);
  m.close_round(m.round_complete(0));
  EXPECT_DOUBLE_EQ(m.straggler_deadline(), 6.0);  // 3 x the 2 s spread
  m.reported(m.touch("a"), 1, 20.0);
  EXPECT_FALSE(m.deadline_passed(25.0));
  EXPECT_TRUE(m.deadline_passed(26.5));
}

TEST(Membership, LapsedLeasesAreDroppedAndTheirShardFreed) {
  CoordinatorConfig co;
  co.lease_s = 5;
  Membership m(1, co);
  auto a = m.join("a", -1, 0);
  m.expire(now_s() + 10);
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.join("b", -1, 0).shard, a.shard);
}

TEST(ByteLedger, CountsByPurposeAndTheBaselinesOfEachRound) {
  const int64_t n = 1000, workers = 4, h = 10;
  ByteLedger ledger(n, workers, h);
  ledger.down(500, Purpose::kSetup);
  ledger.up(100, Purpose::kRound);
  ledger.up(50, Purpose::kResync);
  ledger.down(70, Purpose::kRound);
  ledger.up(30, Purpose::kConsensus);
  auto [up, down] = ledger.close_round(3);
  EXPECT_EQ(up, 100u);
  EXPECT_EQ(down, 70u);
  auto t = ledger.totals();
  EXPECT_EQ(t.method, 220u);
  EXPECT_EQ(t.setup, 500u);
  EXPECT_EQ(t.consensus, 30u);
  EXPECT_DOUBLE_EQ(t.fp32_diloco, 3 * 2 * 4.0 * n);              // 3 reporters, Δ up and θ down
  EXPECT_DOUBLE_EQ(t.ddp, h * 2 * 2 * (workers - 1) * 4.0 * n);  // H ring all-reduces
  auto s = ledger.summary();
  EXPECT_EQ(s["bytes_up"].get<uint64_t>(), 180u);
  EXPECT_EQ(s["bytes_down"].get<uint64_t>(), 570u);
  EXPECT_DOUBLE_EQ(s["ratio_vs_ddp"].get<double>(), t.ddp / 220);
  EXPECT_EQ(ledger.close_round(1).first, 0u);  // the next round starts from zero
}

TEST(ChunkStream, WrittenChunksReassembleAndMalformedOnesAreRefused) {
  std::string big(kChunkBytes * 2 + 17, 'x'), small = "abc";
  v1::UpdateHeader h;
  add_spec(h.mutable_tensors(), "big", {int64_t(big.size())}, "none", big.size());
  add_spec(h.mutable_tensors(), "small", {3}, "none", small.size());
  std::vector<v1::UpdateChunk> sent;
  uint64_t wire = 0;
  auto keep = [&](const v1::UpdateChunk& m, uint64_t) {
    sent.push_back(m);
    return true;
  };
  ASSERT_TRUE(write_chunks<v1::UpdateChunk>({big, small}, keep, &wire));
  EXPECT_EQ(sent.size(), 4u);
  ChunkAssembler ok(h.tensors());
  for (const auto& m : sent) ok.accept(m.data());
  EXPECT_NO_THROW(ok.check_complete());
  ChunkAssembler shortened(h.tensors());
  shortened.accept(sent[0].data());
  EXPECT_THROW(shortened.accept(sent[2].data()), StreamError);  // skips a chunk
  EXPECT_THROW(shortened.check_complete(), StreamError);
  v1::DataChunk stray;
  stray.set_tensor(5);
  EXPECT_THROW(shortened.accept(stray), StreamError);
  EXPECT_EQ(from_proto(to_proto(PullKind::kConsensus)), PullKind::kConsensus);
}

// The push memory gate: requests share the budget, one over the whole budget goes in alone, and a
// waiter whose call is cancelled gives up.
TEST(MemoryGate, SharesTheBudgetAndLetsAnOversizedRequestInAlone) {
  MemoryGate gate(100);
  auto never = [] { return false; };
  auto a = gate.acquire(60, never);
  ASSERT_TRUE(a);
  int polls = 0;
  auto cancelled = gate.acquire(60, [&] { return ++polls >= 2; });  // 120 > 100: waits, gives up
  EXPECT_FALSE(cancelled);
  EXPECT_GE(polls, 2);
  auto b = gate.acquire(40, never);  // fits beside a
  EXPECT_TRUE(b);
  std::atomic<bool> got{false};
  std::thread big([&] {
    auto h = gate.acquire(500, never);  // over the budget: only once nothing is held
    got = bool(h);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(got);
  { auto release_a = std::move(a); }
  { auto release_b = std::move(b); }
  big.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(gate.peak(), 500u);
  EXPECT_EQ(push_budget(1000), uint64_t(128) << 20);            // small models: 128 MiB
  EXPECT_EQ(push_budget(int64_t(1) << 28), uint64_t(1) << 30);  // large: one fp32 copy
}
