// Tests of configuration: defaults, YAML, --set overrides, errors that name the key.
#include <gtest/gtest.h>

#include <fstream>

#include "loco/config.h"
#include "test_util.h"

using namespace loco;

namespace {

std::string error_of(const std::function<void()>& f) {
  return loco::testing::config_error(f);
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
  EXPECT_EQ(tiny.sync.mode, Mode::kSingle);
  Config d20 = load_config(std::string(LOCO_SOURCE_DIR) + "/configs/d20.yaml");
  EXPECT_NO_THROW(validate(d20));
  EXPECT_EQ(d20.model.n_layer, 20);
  EXPECT_EQ(d20.train.optimizer.name, "muon");
  Config hybrid = load_config(std::string(LOCO_SOURCE_DIR) + "/configs/hybrid-tiny.yaml");
  EXPECT_NO_THROW(validate(hybrid));
  ASSERT_EQ(hybrid.sync.sites.size(), 2u);
  EXPECT_EQ(hybrid.sync.sites[0].ranks, 2);
  Config dct = load_config(std::string(LOCO_SOURCE_DIR) + "/configs/diloco-dct-tiny.yaml");
  EXPECT_NO_THROW(validate(dct));
  EXPECT_EQ(dct.sync.codec.type, "dct");
  EXPECT_TRUE(downloads_update(dct.sync));
  Config demo = load_config(std::string(LOCO_SOURCE_DIR) + "/configs/demo-tiny.yaml");
  EXPECT_NO_THROW(validate(demo));
  EXPECT_EQ(demo.sync.mode, Mode::kDemo);
}

TEST(Config, DemoNeedsTheDctCodecAndDownloadIsKnown) {
  Config c;
  c.sync.mode = Mode::kDemo;
  std::string msg = error_of([&] { validate(c); });
  EXPECT_NE(msg.find("sync.codec.type to dct"), std::string::npos) << msg;
  c.sync.codec.type = "dct";
  c.sync.download = "sometimes";
  msg = error_of([&] { validate(c); });
  EXPECT_NE(msg.find("sync.download"), std::string::npos) << msg;
  c.sync.download = "auto";
  c.sync.resync_every = -1;
  msg = error_of([&] { validate(c); });
  EXPECT_NE(msg.find("sync.resync_every"), std::string::npos) << msg;
}

TEST(Config, ReportModelNamesAReplicaTheConsensusOrTheBest) {
  Config c;
  c.sync.mode = Mode::kDemo;
  c.sync.codec.type = "dct";
  c.sync.workers = 3;
  EXPECT_EQ(report_replica(c.sync), "w0");  // the default: the seed code's rank 0
  for (std::string ok : {"replica:2", "consensus", "best"}) {
    c.sync.report_model = ok;
    EXPECT_NO_THROW(validate(c)) << ok;
  }
  EXPECT_EQ(report_replica(c.sync), "");
  c.sync.report_model = "replica:2";
  EXPECT_EQ(report_replica(c.sync), "w2");
  c.sync.sites = {{"east", 1}, {"west", 2}, {"north", 1}};
  EXPECT_EQ(report_replica(c.sync), "north");  // with sites: the N-th site
  c.sync.sites.clear();
  for (std::string bad : {"replica:3", "replica:", "replica:-1", "rank0", "Best"}) {
    c.sync.report_model = bad;
    std::string msg = error_of([&] { validate(c); });
    EXPECT_NE(msg.find("sync.report_model"), std::string::npos) << bad << ": " << msg;
  }
  c.sync.report_model = "consensus";
  c.sync.mode = Mode::kDiloco;
  c.sync.codec.type = "none";
  std::string msg = error_of([&] { validate(c); });
  EXPECT_NE(msg.find("only sync.mode demo"), std::string::npos) << msg;
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

TEST(Config, SitesComeFromYamlListsOrTheCompactForm) {
  Config c;
  merge_yaml(c, "sync:\n  sites:\n    - {name: a, ranks: 2}\n    - name: b\n      ranks: 3\n",
             "x.yaml");
  ASSERT_EQ(c.sync.sites.size(), 2u);
  EXPECT_EQ(c.sync.sites[0].name, "a");
  EXPECT_EQ(c.sync.sites[1].name, "b");
  EXPECT_EQ(c.sync.sites[1].ranks, 3);
  Config d;
  apply_override(d, "sync.sites=a:2,b:3");
  EXPECT_EQ(to_yaml(d), to_yaml(c));
  apply_override(d, "sync.sites=[{name: x, ranks: 1}]");
  ASSERT_EQ(d.sync.sites.size(), 1u);
  EXPECT_EQ(d.sync.sites[0].name, "x");
  apply_override(d, "sync.sites=[]");
  EXPECT_TRUE(d.sync.sites.empty());
  Config back;
  merge_yaml(back, to_yaml(c), "resolved");
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  ASSERT_EQ(back.sync.sites.size(), 2u);
  EXPECT_EQ(back.sync.sites[1].ranks, 3);

  std::string msg =
      error_of([&] { merge_yaml(c, "sync:\n  sites:\n    - {name: a, rank: 2}\n", "x.yaml"); });
  EXPECT_NE(msg.find("x.yaml: sync.sites: item 0: unknown key 'rank' (a site has name, ranks)"),
            std::string::npos)
      << msg;
  msg = error_of([&] { apply_override(c, "sync.sites=a2"); });
  EXPECT_NE(msg.find("--set: sync.sites: 'a2' is not NAME:RANKS"), std::string::npos) << msg;
  msg = error_of([&] { apply_override(c, "sync.sites=a:two"); });
  EXPECT_NE(msg.find("ranks: expected int, got 'two'"), std::string::npos) << msg;
}

TEST(Config, SitesValidationNamesTheKey) {
  Config base;
  base.sync.mode = Mode::kDiloco;
  base.sync.workers = 2;
  apply_override(base, "sync.sites=a:2,b:2");
  EXPECT_NO_THROW(validate(base));
  struct Case {
    std::string override_, expected;
  };
  std::vector<Case> cases = {
      {"sync.workers=3", "sync.workers is 3 but sync.sites lists 2 sites: set sync.workers=2"},
      {"sync.mode=ddp",
       "sync.sites: sync.mode is 'ddp' but with sites it is the method between "
       "sites: set sync.mode to diloco, demo or streaming"},
      {"sync.sites=a:2,a:1", "the name 'a' is used twice"},
      {"sync.sites=a:2,b:0", "sync.sites[b].ranks must be >= 1, not 0"},
      {"sync.sites=[{name: 'x y', ranks: 1}, {name: b, ranks: 1}]",
       "name 'x y' must be letters, digits, '-' or '_'"},
  };
  for (const auto& k : cases) {
    Config c = base;
    apply_override(c, k.override_);
    std::string msg = error_of([&] { validate(c); });
    EXPECT_NE(msg.find(k.expected), std::string::npos) << k.override_ << ": " << msg;
  }
}

namespace {

// A config file in the test's temporary directory, resolved as every command resolves one.
Config resolved(const std::string& yaml, const std::vector<std::string>& sets) {
  auto dir = loco::testing::temp_dir("method_defaults");
  std::string path = dir + "/c.yaml";
  std::ofstream(path) << yaml;
  return resolve_config(path, sets);
}

}  // namespace

// Issue 21, "Defaults a user meets": choosing a method or a codec alone gives its measured best
// settings; whatever the file or --set gave stays.
TEST(Config, AMethodOrCodecChosenAloneGetsItsMeasuredDefaults) {
  const std::string base = "sync:\n  mode: diloco\n  workers: 4\n";
  Config dct = resolved(base, {"sync.codec.type=dct"});
  EXPECT_NO_THROW(validate(dct));
  EXPECT_EQ(dct.sync.codec.topk, 256);
  EXPECT_EQ(dct.sync.codec.topk_down, 256);
  EXPECT_EQ(dct.sync.codec.values, "int8");
  EXPECT_DOUBLE_EQ(dct.sync.outer.momentum, 0.5);
  EXPECT_DOUBLE_EQ(dct.sync.outer.lr, OuterConfig{}.lr);  // not the method's to change
  // What was given stays, from the file or from --set.
  Config given = resolved(base + "  outer:\n    momentum: 0.8\n",
                          {"sync.codec.type=dct", "sync.codec.topk=64"});
  EXPECT_DOUBLE_EQ(given.sync.outer.momentum, 0.8);
  EXPECT_EQ(given.sync.codec.topk, 64);
  EXPECT_EQ(given.sync.codec.topk_down, 256);
  // fp32 DiLoCo keeps the library's defaults (design.md: lr 0.7, momentum 0.9).
  Config fp32 = resolved(base, {});
  EXPECT_DOUBLE_EQ(fp32.sync.outer.momentum, OuterConfig{}.momentum);
  EXPECT_EQ(fp32.sync.codec.type, "none");
  // sync.mode demo alone selects the DCT itself, with the decoupled method's own eta.
  Config demo = resolved("sync:\n  workers: 4\n", {"sync.mode=demo"});
  EXPECT_NO_THROW(validate(demo));
  EXPECT_EQ(demo.sync.codec.type, "dct");
  EXPECT_EQ(demo.sync.codec.topk, 32);
  EXPECT_EQ(demo.sync.codec.values, "int4");
  EXPECT_DOUBLE_EQ(demo.sync.outer.lr, 0.2);
  EXPECT_DOUBLE_EQ(demo.sync.outer.momentum, 0.5);
  // ... but a codec the user named is kept, and refused by name.
  Config demo_none =
      resolved("sync:\n  workers: 4\n  codec:\n    type: none\n", {"sync.mode=demo"});
  std::string msg = error_of([&] { validate(demo_none); });
  EXPECT_NE(msg.find("sync.codec.type"), std::string::npos) << msg;
  // Top-k of the raw chunks alone is SparseLoCo's combination.
  Config raw = resolved(base, {"sync.codec.type=dct", "sync.codec.transform=none"});
  EXPECT_NO_THROW(validate(raw));
  EXPECT_EQ(raw.sync.codec.values, "int2");
  EXPECT_DOUBLE_EQ(raw.sync.codec.error_decay, 0.9);
  EXPECT_DOUBLE_EQ(raw.sync.outer.momentum, 0.0);
  // The start line says what was resolved and which keys the method's defaults set.
  std::string line = describe_method(dct);
  EXPECT_NE(line.find("k 256 up, 256 down"), std::string::npos) << line;
  EXPECT_NE(line.find("the method's defaults set sync.codec.topk"), std::string::npos) << line;
  EXPECT_EQ(describe_method(given).find("sync.codec.topk,"), std::string::npos)
      << describe_method(given);
  // A resolved config written out and read back is resolved the same (every key given).
  auto dir = loco::testing::temp_dir("method_defaults_yaml");
  std::ofstream(dir + "/r.yaml") << to_yaml(dct);
  Config again = resolve_config(dir + "/r.yaml", {});
  EXPECT_EQ(to_yaml(again), to_yaml(dct));
}
