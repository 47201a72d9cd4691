// Tests of configuration: defaults, YAML, --set overrides, errors that name the key.
#include <gtest/gtest.h>

#include <fstream>

#include "loco/config.h"
#include "test_util.h"

using namespace loco;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Config, ShippedConfigsLoadAndValidate) {
  Config tiny = load_config(std::string(LOCO_SOURCE_DIR) + "/configs/tiny.yaml");
  EXPECT_NO_THROW(validate(tiny));
  EXPECT_EQ(tiny.model.n_layer, 4);
  EXPECT_EQ(tiny.model.n_head, 4);
  EXPECT_EQ(tiny.model.n_embd, 256);
  EXPECT_EQ(tiny.model.seq_len, 256);
  EXPECT_EQ(tiny.model.vocab_size, 4096);
  EXPECT_EQ(tiny.train.batch_size, 8);
  EXPECT_EQ(tiny.sync.mode, "single");
  Config d20 = load_config(std::string(LOCO_SOURCE_DIR) + "/configs/d20.yaml");
  EXPECT_NO_THROW(validate(d20));
  EXPECT_EQ(d20.model.n_layer, 20);
  EXPECT_EQ(d20.train.optimizer.name, "muon");
}

TEST(Config, UnknownKeyNamesThePathAndTheClosestKey) {
  Config c;
  std::string msg = error_of([&] { merge_yaml(c, "model:\n  n_layers: 3\n", "x.yaml"); });
  EXPECT_NE(msg.find("x.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model.n_layers'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'model.n_layer'"), std::string::npos) << msg;
  msg = error_of([&] { merge_yaml(c, "trian:\n  max_steps: 3\n", "x.yaml"); });
  EXPECT_NE(msg.find("did you mean 'train'"), std::string::npos) << msg;
  msg = error_of([&] { apply_override(c, "train.optimizer.lrr=0.1"); });
  EXPECT_NE(msg.find("did you mean 'train.optimizer.lr'"), std::string::npos) << msg;
}

TEST(Config, WrongTypesNameKeyValueAndType) {
  Config c;
  std::string msg = error_of([&] { merge_yaml(c, "train:\n  max_steps: lots\n", "x.yaml"); });
  EXPECT_NE(msg.find("train.max_steps: expected int, got 'lots'"), std::string::npos) << msg;
  msg = error_of([&] { apply_override(c, "model.softcap=abc"); });
  EXPECT_NE(msg.find("model.softcap: expected float"), std::string::npos) << msg;
  msg = error_of([&] { merge_yaml(c, "model: 3\n", "x.yaml"); });
  EXPECT_NE(msg.find("model: expected a mapping"), std::string::npos) << msg;
  msg = error_of([&] { merge_yaml(c, "model:\n  n_layer: [1, 2]\n", "x.yaml"); });
  EXPECT_NE(msg.find("model.n_layer: expected int, got a list"), std::string::npos) << msg;
  msg = error_of([&] { merge_yaml(c, "model: {n_layer: 2\n", "x.yaml"); });
  EXPECT_NE(msg.find("invalid YAML"), std::string::npos) << msg;
}

TEST(Config, OverridesApplyAfterTheFile) {
  Config c;
  merge_yaml(c, "train:\n  max_steps: 10\n", "x.yaml");
  apply_override(c, "train.max_steps=20");
  apply_override(c, "run.dir=/tmp/somewhere");
  apply_override(c, "sync.codec.error_feedback=false");
  EXPECT_EQ(c.train.max_steps, 20);
  EXPECT_EQ(c.run.dir, "/tmp/somewhere");
  EXPECT_FALSE(c.sync.codec.error_feedback);
  EXPECT_NE(error_of([&] { apply_override(c, "no_equals_sign"); }).find("key.path=value"),
            std::string::npos);
}

TEST(Config, ValidationNamesTheProblem) {
  Config c;
  c.model.n_embd = 100, c.model.n_head = 3;
  EXPECT_NE(error_of([&] {
              validate(c);
            }).find("model.n_embd (100) must be divisible by model.n_head (3)"),
            std::string::npos);
  c = Config();
  c.train.optimizer.name = "sgd";
  EXPECT_NE(
      error_of([&] { validate(c); }).find("train.optimizer.name: 'sgd' is not one of adamw | muon"),
      std::string::npos);
  c = Config();
  c.train.device = "tpu";
  EXPECT_NE(error_of([&] { validate(c); }).find("train.device"), std::string::npos);
}

TEST(Config, ResolvedYamlRoundTrips) {
  Config c;
  apply_override(c, "model.n_layer=7");
  apply_override(c, "run.name=a name: with colon");
  apply_override(c, "train.optimizer.lr=0.00123");
  std::string yaml = to_yaml(c);
  Config back;
  merge_yaml(back, yaml, "resolved");
  EXPECT_EQ(to_yaml(back), yaml);
  EXPECT_EQ(back.model.n_layer, 7);
  EXPECT_EQ(back.run.name, "a name: with colon");
  EXPECT_DOUBLE_EQ(back.train.optimizer.lr, 0.00123);
  for (const auto& key : config_keys()) {
    auto leaf = key.substr(key.rfind('.') + 1);
    EXPECT_NE(yaml.find(leaf + ":"), std::string::npos) << key;
  }
}

TEST(Config, MissingFileIsNamed) {
  EXPECT_NE(error_of([] { load_config("/nonexistent/loco.yaml"); }).find("/nonexistent/loco.yaml"),
            std::string::npos);
}
