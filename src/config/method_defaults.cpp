// The typed defaults of each method and codec (docs/dct.md, "Defaults a user meets"): choosing a
// method or a codec without its further keys gives the settings measured best for it on this
// project's benchmarks, not the library's generic defaults, and every command says what it
// resolved to at start.
#include <sstream>

#include "loco/config.h"

namespace loco {
namespace {

struct Defaults {
  const char* method;  // for messages
  bool (*applies)(const Config&);
  std::vector<std::pair<const char*, const char*>> keys;  // filled when not given, in this order
};

bool dct_transform(const Config& c) {
  return c.sync.mode == Mode::kDiloco && c.sync.codec.type == "dct" &&
         c.sync.codec.transform == "dct";
}
bool raw_topk(const Config& c) {
  return c.sync.mode == Mode::kDiloco && c.sync.codec.type == "dct" &&
         c.sync.codec.transform == "none";
}

// In the order they are tried; a later entry sees what an earlier one set (demo selects the DCT,
// then its own k). The numbers are the best of configs/experiments/tune_*.yaml (docs/dct.md,
// "Every method at its own best"): demo eta 0.2, beta 0.5; DiLoCo+DCT momentum 0.5 (outer lr 0.5
// and 0.7 within 0.03% of each other: design.md's 0.7 kept); SparseLoCo eta 1, beta 0.9.
const std::vector<Defaults>& table() {
  static const std::vector<Defaults> t = {
      // The decoupled method sends the DCT of each worker's momentum: it selects the codec. A beta
      // of 0.5 keeps the replicas close (their consensus within 2% of them, at 0.9 13% behind);
      // int4 values were the best of int8/int4/int2 at k 32 (frontier_demo, docs/dct.md).
      {"demo",
       [](const Config& c) { return c.sync.mode == Mode::kDemo; },
       {{"sync.codec.type", "dct"},
        {"sync.codec.topk", "32"},
        {"sync.codec.values", "int4"},
        {"sync.outer.lr", "0.2"},
        {"sync.outer.momentum", "0.5"}}},
      // DiLoCo + DCT: error feedback delays what a round held back, which a momentum of 0.9
      // amplifies; 0.5 and k 256 both ways measured best.
      {"diloco with the dct codec",
       dct_transform,
       {{"sync.codec.topk", "256"},
        {"sync.codec.topk_down", "256"},
        {"sync.codec.values", "int8"},
        {"sync.outer.momentum", "0.5"}}},
      // Top-k of the raw chunks is SparseLoCo's codec: its 2-bit values, exact download and
      // decayed error feedback in place of the outer momentum (docs/codec.md, "SparseLoCo").
      {"diloco with raw top-k (SparseLoCo)",
       raw_topk,
       {{"sync.codec.topk", "64"},
        {"sync.codec.values", "int2"},
        {"sync.codec.values_down", "fp32"},
        {"sync.codec.error_decay", "0.9"},
        {"sync.outer.lr", "1.0"},
        {"sync.outer.momentum", "0.0"}}},
  };
  return t;
}

}  // namespace

std::vector<std::string> apply_method_defaults(Config& config) {
  std::vector<std::string> set;
  for (const auto& d : table()) {
    if (!d.applies(config)) continue;
    for (const auto& [key, value] : d.keys) {
      if (config.given.count(key)) continue;
      set_default(config, key, value);
      set.push_back(std::string(key) + "=" + value);
    }
  }
  return set;
}

Config resolve_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config config = load_config(path);
  for (const auto& o : overrides) apply_override(config, o);
  apply_method_defaults(config);
  return config;
}

std::string describe_method(const Config& config) {
  const SyncConfig& s = config.sync;
  const CodecConfig& c = s.codec;
  std::ostringstream out;
  out << "sync.mode " << mode_name(s.mode);
  if (!coordinated(s.mode)) return out.str();
  out << ", H " << s.inner_steps << ", outer lr " << s.outer.lr << " momentum " << s.outer.momentum;
  if (c.type == "none") {
    out << ", fp32 pseudo-gradients";
  } else if (c.type == "dct") {
    const int64_t down = c.topk_down ? c.topk_down : c.topk * s.workers;
    out << ", codec dct (" << (c.transform == "none" ? "raw top-k" : "DCT top-k") << " of "
        << c.chunk << "x" << c.chunk << " chunks: k " << c.topk;
    if (s.mode != Mode::kDemo)
      out << " up, " << down << " down, values " << c.values << " up, "
          << (c.values_down.empty() ? c.values : c.values_down) << " down";
    else
      out << ", values " << c.values;
    out << ")";
  } else {
    out << ", codec " << c.type;
  }
  if (c.type != "none" && s.mode != Mode::kDemo)
    out << ", error feedback " << (c.error_feedback ? "on" : "off")
        << (c.error_decay < 1 ? " (decay " + std::to_string(c.error_decay).substr(0, 4) + ")" : "");
  if (config.train.optimizer.name != "adamw")
    out << ", inner optimizer " << config.train.optimizer.name;
  std::string filled;
  for (const auto& d : table())
    if (d.applies(config))
      for (const auto& [key, value] : d.keys)
        if (!config.given.count(key)) filled += (filled.empty() ? "" : ", ") + std::string(key);
  if (!filled.empty()) out << "; the method's defaults set " << filled;
  return out.str();
}

}  // namespace loco
