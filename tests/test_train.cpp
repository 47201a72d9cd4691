// End-to-end tests of `loco train`, `sample` and `bench` as real processes on real files:
// exact resume, divergence handling, bad input, and that a small model learns. Also the
// TensorBoard event files beside metrics.jsonl, read back by an independent Python reader
// (tests/golden/read_tfevents.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "loco/checkpoint.h"
#include "loco/config.h"
#include "loco/metrics.h"
#include "tensorboard.pb.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::testing::read_tb;
using loco::testing::run_loco;

namespace {

// Small runs over the shipped corpus sample (see test_util.h).
class TrainTest : public ::testing::Test {
 protected:
  // A config file for a small, fast model over the prepared sample, in a fresh directory.
  std::string write_config(const std::string& dir, const std::string& extra = "") {
    std::string path = dir + "/config.yaml";
    std::ofstream(path) << loco::testing::small_run_yaml(dir + "/run") << extra;
    return path;
  }
  const std::string data_dir_ = loco::testing::prepared_sample();
};

std::vector<double> losses(const std::string& metrics_path) {
  std::vector<double> out;
  for (const auto& r : loco::read_metrics(metrics_path)) out.push_back(r.at("loss").get<double>());
  return out;
}

// Every (step, value) of `tag` in a read_tb() JSON, in file order.
std::vector<std::pair<int64_t, float>> tb_series(const nlohmann::json& tb, const std::string& tag) {
  std::vector<std::pair<int64_t, float>> out;
  for (const auto& e : tb.at("events"))
    if (e.at("scalars").contains(tag))
      out.emplace_back(e.at("step").get<int64_t>(), e.at("scalars").at(tag).get<float>());
  return out;
}

std::vector<std::pair<int64_t, float>> jsonl_series(const std::string& metrics_path,
                                                    const std::string& key) {
  std::vector<std::pair<int64_t, float>> out;
  for (const auto& r : loco::read_metrics(metrics_path))
    if (r.contains(key)) out.emplace_back(r.at("step").get<int64_t>(), r.at(key).get<float>());
  return out;
}

// The step of a serialized tensorflow.Event, parsed by the generated code.
int64_t event_step(const std::string& data) {
  tensorflow::Event event;
  EXPECT_TRUE(event.ParseFromString(data));
  return event.step();
}

int error_lines(const std::string& output) {
  int n = 0;
  for (size_t p = output.find("error:"); p != std::string::npos; p = output.find("error:", p + 1))
    ++n;
  return n;
}

}  // namespace

class ResumeTest : public TrainTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(ResumeTest, InterruptedRunResumesExactly) {
  std::string dir = loco::testing::temp_dir("_" + GetParam());
  std::string optimizer = " --set train.optimizer.name=" + GetParam();
  std::string config = write_config(dir);

  auto whole =
      run_loco("train --config " + config + optimizer + " --set run.dir=" + dir + "/whole");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;

  // The same run, stopped by a non-finite loss at step 6, then resumed from step 4.
  auto broken = loco::testing::run_command("LOCO_INJECT_NAN_STEP=6 " + std::string(LOCO_BINARY) +
                                           " train --config " + config + optimizer +
                                           " --set run.dir=" + dir + "/parts");
  EXPECT_EQ(broken.exit_code, 1) << broken.output;
  EXPECT_NE(broken.output.find("loss became nan at step 6"), std::string::npos) << broken.output;
  EXPECT_NE(broken.output.find("step_00000004.pt"), std::string::npos) << broken.output;
  EXPECT_EQ(loco::list_checkpoints(dir + "/parts/checkpoints").size(), 1u);
  auto resumed = run_loco("train --config " + config + optimizer + " --set run.dir=" + dir +
                          "/parts --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;

  auto a = losses(dir + "/whole/metrics.jsonl"), b = losses(dir + "/parts/metrics.jsonl");
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a, b);  // bit for bit, every step
  auto ca = loco::load_checkpoint(dir + "/whole/checkpoints/step_00000008.pt");
  auto cb = loco::load_checkpoint(dir + "/parts/checkpoints/step_00000008.pt");
  ASSERT_EQ(ca.tensors.size(), cb.tensors.size());
  for (const auto& [name, tensor] : ca.tensors)
    EXPECT_TRUE(torch::equal(tensor, cb.tensors.at(name))) << name;
  EXPECT_EQ(ca.cursor.position, cb.cursor.position);
  EXPECT_EQ(ca.tokens, cb.tokens);

  // TensorBoard: the resumed run's event files (the first truncated at step 4, a second from
  // step 5 on) show the same curve as the uninterrupted run's single file.
  auto tb_whole = read_tb(dir + "/whole/tb"), tb_parts = read_tb(dir + "/parts/tb");
  ASSERT_EQ(tb_whole.exit_code, 0) << tb_whole.output;
  ASSERT_EQ(tb_parts.exit_code, 0) << tb_parts.output;
  EXPECT_EQ(tb_whole.json.at("files"), 1);
  EXPECT_EQ(tb_parts.json.at("files"), 2);
  auto la = tb_series(tb_whole.json, "loss"), lb = tb_series(tb_parts.json, "loss");
  ASSERT_EQ(la.size(), 8u);
  EXPECT_EQ(la, lb);
  EXPECT_EQ(la, jsonl_series(dir + "/whole/metrics.jsonl", "loss"));
}

INSTANTIATE_TEST_SUITE_P(Optimizers, ResumeTest, ::testing::Values("adamw", "muon"));

TEST_F(TrainTest, RunDirectoryHoldsConfigMetricsAndCheckpoints) {
  std::string dir = loco::testing::temp_dir();
  auto r = run_loco("train --config " + write_config(dir) + " --set train.keep_checkpoints=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step 8/8"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eta"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("metrics:"), std::string::npos) << r.output;

  auto records = loco::read_metrics(dir + "/run/metrics.jsonl");
  ASSERT_EQ(records.size(), 8u);
  for (const auto& rec : records)
    for (const char* key : {"step", "tokens", "loss", "lr", "wall_s"})
      EXPECT_TRUE(rec.contains(key)) << key;
  EXPECT_TRUE(records[3].contains("val_loss"));
  EXPECT_TRUE(records[7].contains("val_bpb"));
  EXPECT_FALSE(records[4].contains("val_loss"));
  EXPECT_EQ(records[7].at("tokens").get<int64_t>(), 8 * 4 * 32);

  auto saved = loco::load_config(dir + "/run/config.yaml");
  EXPECT_EQ(saved.model.n_embd, 64);
  EXPECT_EQ(saved.train.keep_checkpoints, 1);
  auto ckpts = loco::list_checkpoints(dir + "/run/checkpoints");
  ASSERT_EQ(ckpts.size(), 1u);  // pruned to keep_checkpoints
  EXPECT_EQ(fs::path(ckpts[0]).filename(), "step_00000008.pt");
  for (const auto& e : fs::directory_iterator(dir + "/run/checkpoints"))
    EXPECT_EQ(e.path().extension(), ".pt") << "leftover " << e.path();

  // run.dir/tb/: one event file whose scalars are metrics.jsonl's numbers at the same steps.
  auto tb = read_tb(dir + "/run/tb");
  ASSERT_EQ(tb.exit_code, 0) << tb.output;
  EXPECT_EQ(tb.json.at("files"), 1);
  EXPECT_EQ(tb.json.at("events").size(), 8u);
  for (const char* tag : {"loss", "lr", "tokens", "val_loss", "val_bpb"})
    EXPECT_EQ(tb_series(tb.json, tag), jsonl_series(dir + "/run/metrics.jsonl", tag)) << tag;
  ASSERT_EQ(tb_series(tb.json, "val_loss").size(), 2u);  // steps 4 and 8
  EXPECT_EQ(tb_series(tb.json, "val_loss")[0].first, 4);

  auto sample = run_loco("sample --checkpoint " + ckpts[0] + " --prompt 'The film' --max-tokens 8");
  EXPECT_EQ(sample.exit_code, 0) << sample.output;
  EXPECT_EQ(sample.output.rfind("The film", 0), 0u) << sample.output;
  EXPECT_GT(sample.output.size(), std::string("The film\n").size());
}

TEST_F(TrainTest, CorruptCheckpointIsRefusedByName) {
  std::string dir = loco::testing::temp_dir();
  ASSERT_EQ(run_loco("train --config " + write_config(dir)).exit_code, 0);
  std::string path = dir + "/run/checkpoints/step_00000008.pt";
  auto size = fs::file_size(path);
  fs::resize_file(path, size / 2);
  auto r = run_loco("sample --checkpoint " + path + " --prompt x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(path), std::string::npos) << r.output;
  EXPECT_EQ(error_lines(r.output), 1) << r.output;
}

TEST_F(TrainTest, BadInputGetsOneLineErrorAndNonZeroExit) {
  std::string dir = loco::testing::temp_dir();
  std::string config = write_config(dir);
  // train.bin without its index: a one-shard corpus (shard 0 alone), corrupted below.
  std::string corrupt = dir + "/corrupt.bin";
  fs::copy_file(data_dir_ + "/train.bin", corrupt);
  // Copies of the prepared corpus with the train stream's third shard missing, and truncated.
  const std::string missing = dir + "/missing", truncated = dir + "/truncated";
  fs::copy(data_dir_, missing);
  fs::copy(data_dir_, truncated);
  fs::remove(missing + "/train-000002.bin");
  fs::resize_file(truncated + "/train-000002.bin",
                  fs::file_size(truncated + "/train-000002.bin") - 2);
  {
    std::fstream f(corrupt, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  struct Case {
    std::string args, expected;
  };
  std::vector<Case> cases = {
      {"--set model.n_layers=3", "did you mean 'model.n_layer'"},
      {"--set train.max_steps=many", "train.max_steps: expected int, got 'many'"},
      {"--set data.train=/nonexistent/train.bin",
       "data.train: /nonexistent/train.bin: no such file"},
      {"--set data.tokenizer=/nonexistent/tok.model", "data.tokenizer: /nonexistent/tok.model"},
      {"--set model.vocab_size=1024", "vocabulary of 512 but model.vocab_size is 1024"},
      {"--set model.seq_len=100000", "model.seq_len 100000 is longer than data.train"},
      {"--set model.seq_len=4096", "model.seq_len 4096 is longer than data.val"},
      {"--set data.train=" + corrupt, "checksum mismatch"},
      {"--set data.train=" + missing + "/train.bin",
       "data.train: " + missing + "/train-000002.bin: missing shard"},
      {"--set data.train=" + truncated + "/train.bin",
       "data.train: " + truncated + "/train-000002.bin: truncated"},
      {"--set train.optimizer.name=sgd", "train.optimizer.name: 'sgd' is not one of adamw | muon"},
      {"--set train.device=cuda:99", "train.device: 'cuda:99'"},  // no CUDA, or no 100th GPU
  };
  for (const auto& c : cases) {
    auto r = run_loco("train --config " + config + " " + c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_EQ(error_lines(r.output), 1) << c.args << "\n" << r.output;
  }
  // A tokenizer whose vocabulary differs from the model's, with shards that agree with the model.
  ASSERT_EQ(run_loco("train --config " + config).exit_code, 0);
  auto again = run_loco("train --config " + config);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("pass --resume"), std::string::npos) << again.output;
  EXPECT_NE(run_loco("train --config /nonexistent.yaml").exit_code, 0);
}

TEST_F(TrainTest, BenchReportsThroughputAndMfu) {
  std::string dir = loco::testing::temp_dir();
  auto r = run_loco("bench train --config " + write_config(dir) + " --steps 2 --warmup 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto json = nlohmann::json::parse(r.output.substr(r.output.rfind('{')));
  EXPECT_GT(json.at("tokens_per_s").get<double>(), 0.0);
  EXPECT_GT(json.at("matmul_peak_gflops").get<double>(), 0.0);
  EXPECT_GT(json.at("mfu").get<double>(), 0.0);
  EXPECT_LT(json.at("mfu").get<double>(), 1.0);
  EXPECT_GT(json.at("peak_mem_mb").get<double>(), 0.0);
}

TEST_F(TrainTest, TinyShapeLearnsOnTheShippedSample) {
  // The tiny config's width and depth (4 layers, 4 heads, 256 wide) with a shorter context so
  // that it runs in a test; the full tiny config on the default corpus is in the README.
  std::string dir = loco::testing::temp_dir();
  std::string config = write_config(dir);
  auto r = run_loco("train --config " + config +
                    " --set model.n_layer=4 --set model.n_head=4 --set model.n_embd=256"
                    " --set model.seq_len=64 --set train.batch_size=8 --set train.max_steps=150"
                    " --set train.eval_every=0 --set train.eval_batches=4"
                    " --set train.checkpoint_every=0 --set train.log_every=50"
                    " --set train.schedule.warmup_steps=10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto records = loco::read_metrics(dir + "/run/metrics.jsonl");
  double uniform = std::log(512.0);
  double val = records.back().at("val_loss").get<double>();
  std::cout << "val loss after 150 steps: " << val << " (uniform: " << uniform << ")\n";
  EXPECT_LT(val, 0.75 * uniform);
  // The sample's val text has more than 2 bytes per token, so uniform guessing costs at most
  // log2(512) / 2 bits per byte.
  EXPECT_LT(records.back().at("val_bpb").get<double>(), 0.75 * std::log2(512.0) / 2.0);
}

// ---- TensorBoard event files (src/train/tensorboard.cpp, MetricsWriter)

TEST(TensorBoard, Crc32cKnownAnswers) {
  EXPECT_EQ(loco::crc32c("123456789", 9), 0xE3069283u);  // CRC-32C's check value
  std::string zeros(32, '\0');
  EXPECT_EQ(loco::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720, B.4
  EXPECT_EQ(loco::masked_crc32c("123456789", 9), 0xC78AB0E5u);       // rotr 15, + 0xa282ead8
}

TEST(TensorBoard, EventsAreProtobufWireFormat) {
  // Event{wall_time: 1.5, step: 3, summary{value{tag: "loss", simple_value: 2}}}, byte by byte.
  const std::string expected =
      std::string("\x09\x00\x00\x00\x00\x00\x00\xf8\x3f", 9) +  // 1: double 1.5
      std::string("\x10\x03", 2) +                              // 2: varint 3
      std::string("\x2a\x0d\x0a\x0b", 4) +                      // 5: Summary (13), 1: Value (11)
      std::string("\x0a\x04loss", 6) +                          // Value 1: "loss"
      std::string("\x15\x00\x00\x00\x40", 5);                   // Value 2: float 2.0
  std::string event = loco::encode_scalars_event(1.5, 3, {{"loss", 2.0f}});
  EXPECT_EQ(event, expected);
  EXPECT_EQ(event_step(event), 3);
  const int64_t big_step = int64_t(1) << 40;
  EXPECT_EQ(event_step(loco::encode_scalars_event(0, big_step, {})), big_step);
  EXPECT_EQ(loco::encode_file_version_event(1.5, "brain.Event:2"),
            std::string("\x09\x00\x00\x00\x00\x00\x00\xf8\x3f", 9) + "\x1a\x0d" + "brain.Event:2");
  tensorflow::Event torn;
  EXPECT_FALSE(torn.ParseFromString(event.substr(0, event.size() - 2)));

  std::string record = loco::frame_record(event);
  ASSERT_EQ(record.size(), 8 + 4 + event.size() + 4);
  EXPECT_EQ(record.substr(0, 8), std::string("\x1a\0\0\0\0\0\0\0", 8));  // length 26, LE
  EXPECT_EQ(record.substr(12, event.size()), event);
}

TEST(TensorBoard, IndependentReaderReadsMetricsScalars) {
  std::string dir = loco::testing::temp_dir();
  double before = double(std::time(nullptr)) - 1;
  {
    loco::MetricsWriter w(dir + "/metrics.jsonl");
    EXPECT_EQ(fs::path(w.event_file()).parent_path(), fs::path(dir) / "tb");
    EXPECT_EQ(fs::path(w.event_file()).filename().string().rfind("events.out.tfevents.", 0), 0u);
    w.write({{"step", 1},
             {"loss", 3.25},
             {"lr", 1e-3},
             {"tokens", 128},
             {"worker", "w0"},
             {"round", 1},
             {"resynced", true},
             {"param_checksum", uint64_t(0xfedcba9876543210)}});
    w.write({{"step", 2},
             {"loss", 2.5},
             {"val_loss", 2.75},
             {"val_bpb", 1.125},
             {"bytes_up", 1000},
             {"bytes_down", 2000},
             {"sync_s", 0.5}});
    w.write({{"step", 10}, {"loss", -0.0625}, {"nested", {{"x", 1}}}});
  }
  double after = double(std::time(nullptr)) + 1;
  EXPECT_EQ(loco::read_metrics(dir + "/metrics.jsonl").size(), 3u);

  auto tb = read_tb(dir + "/tb");
  ASSERT_EQ(tb.exit_code, 0) << tb.output;
  ASSERT_FALSE(tb.json.is_discarded()) << tb.output;
  EXPECT_EQ(tb.json.at("files"), 1);
  const auto& events = tb.json.at("events");
  ASSERT_EQ(events.size(), 3u);
  std::vector<int64_t> steps;
  for (const auto& e : events) {
    steps.push_back(e.at("step").get<int64_t>());
    EXPECT_GE(e.at("wall_time").get<double>(), before);
    EXPECT_LE(e.at("wall_time").get<double>(), after);
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 10}));
  EXPECT_EQ(events[0].at("scalars"),
            nlohmann::json({{"loss", 3.25}, {"lr", 1e-3f}, {"tokens", 128.0}}));
  EXPECT_EQ(events[1].at("scalars"), nlohmann::json({{"loss", 2.5},
                                                     {"val_loss", 2.75},
                                                     {"val_bpb", 1.125},
                                                     {"bytes_up", 1000.0},
                                                     {"bytes_down", 2000.0},
                                                     {"sync_s", 0.5}}));
  EXPECT_EQ(events[2].at("scalars"), nlohmann::json({{"loss", -0.0625}}));
}

TEST(TensorBoard, IndependentReaderRejectsACorruptedByte) {
  std::string dir = loco::testing::temp_dir();
  std::string path;
  {
    loco::MetricsWriter w(dir + "/metrics.jsonl");
    path = w.event_file();
    for (int step = 1; step <= 3; ++step) w.write({{"step", step}, {"loss", 1.0 / step}});
  }
  ASSERT_EQ(read_tb(path).exit_code, 0) << read_tb(path).output;
  ASSERT_EQ(loco::read_records(path).size(), 4u);  // file_version + 3 events
  const std::string good = dir + "/good";
  fs::copy_file(path, good);
  auto flip = [&](std::streamoff offset) {
    fs::copy_file(good, path, fs::copy_options::overwrite_existing);
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(offset);
    char c = char(f.get());
    f.seekp(offset);
    f.put(char(c ^ 0x01));
  };
  const auto size = std::streamoff(fs::file_size(good));
  flip(size - 8);  // inside the last event's data (its float value)
  auto r = read_tb(path);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("tfevents: FAIL data CRC mismatch"), std::string::npos) << r.output;
  EXPECT_EQ(loco::read_records(path).size(), 3u);  // the C++ reader stops there too

  flip(0);  // the first record's length
  r = read_tb(path);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("tfevents: FAIL length CRC mismatch"), std::string::npos) << r.output;
  EXPECT_EQ(loco::read_records(path).size(), 0u);

  fs::copy_file(good, path, fs::copy_options::overwrite_existing);
  fs::resize_file(path, fs::file_size(good) - 3);  // a torn last record
  r = read_tb(path);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("runs past the end"), std::string::npos) << r.output;
}

TEST(TensorBoard, ResumeDropsEventsPastTheCheckpoint) {
  std::string dir = loco::testing::temp_dir();
  std::string first;
  {
    loco::MetricsWriter w(dir + "/metrics.jsonl");
    first = w.event_file();
    for (int step = 1; step <= 6; ++step) w.write({{"step", step}, {"loss", double(step)}});
  }
  std::ofstream(first, std::ios::app | std::ios::binary) << std::string("\x20\0\0", 3);  // torn
  ASSERT_NE(read_tb(dir + "/tb").exit_code, 0);
  {
    loco::MetricsWriter w(dir + "/metrics.jsonl", /*keep_up_to_step=*/4);
    EXPECT_NE(w.event_file(), first);
    for (int step = 5; step <= 6; ++step) w.write({{"step", step}, {"loss", 10.0 * step}});
  }
  auto tb = read_tb(dir + "/tb");
  ASSERT_EQ(tb.exit_code, 0) << tb.output;
  EXPECT_EQ(tb.json.at("files"), 2);
  using Series = std::vector<std::pair<int64_t, float>>;
  EXPECT_EQ(tb_series(tb.json, "loss"), (Series{{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 50}, {6, 60}}));
  EXPECT_EQ(tb_series(tb.json, "loss"), jsonl_series(dir + "/metrics.jsonl", "loss"));
  for (const auto& e : fs::directory_iterator(dir + "/tb"))
    EXPECT_EQ(e.path().filename().string().rfind("events.out.tfevents.", 0), 0u) << e.path();
}
