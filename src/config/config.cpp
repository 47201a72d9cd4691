// YAML <-> Config: one table of fields drives parsing, overrides, validation messages and output.
// The checks on the values (validate) are in validate.cpp.
#include "loco/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

namespace loco {
namespace {

// A typed view of one config field: parse a scalar into it, print it back. A structured field
// (a list) reads and prints YAML text, and its setter's std::invalid_argument says what was wrong.
struct Field {
  std::string type;  // "int", "float", "bool", "string", "list of {name, ranks}" (for messages)
  std::function<void(const std::string&)> set;
  std::function<std::string()> get;
  bool structured = false;
  bool quoted = false;  // written as a quoted YAML string
};

Field make_field(int64_t& v) {
  return {"int",
          [&v](const std::string& s) {
            size_t used = 0;
            long long x = std::stoll(s, &used);
            if (used != s.size()) throw std::invalid_argument(s);
            v = x;
          },
          [&v] { return std::to_string(v); }};
}
Field make_field(double& v) {
  return {"float",
          [&v](const std::string& s) {
            size_t used = 0;
            double x = std::stod(s, &used);
            if (used != s.size()) throw std::invalid_argument(s);
            v = x;
          },
          [&v] {
            std::ostringstream os;
            os.precision(10);
            os << v;
            return os.str();
          }};
}
Field make_field(bool& v) {
  return {"bool",
          [&v](const std::string& s) {
            if (s == "true" || s == "yes" || s == "on" || s == "1")
              v = true;
            else if (s == "false" || s == "no" || s == "off" || s == "0")
              v = false;
            else
              throw std::invalid_argument(s);
          },
          [&v] { return std::string(v ? "true" : "false"); }};
}
Field make_field(std::string& v) {
  return {"string", [&v](const std::string& s) { v = s; }, [&v] { return v; }, false, true};
}
Field make_field(Mode& v) {
  return {"one of single | ddp | diloco | demo",
          [&v](const std::string& s) { v = mode_from_name(s); },
          [&v] { return std::string(mode_name(v)); }, false, true};
}

int64_t parse_site_ranks(const std::string& text, size_t index) {
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size())
    throw std::invalid_argument("item " + std::to_string(index) + ": ranks: expected int, got '" +
                                text + "'");
  return x;
}

// sync.sites: a YAML list of {name, ranks} (a file, to_yaml's output, `--set sync.sites=[...]`) or
// the command line's compact `a:2,b:2`; empty text or [] for none.
std::vector<SiteConfig> parse_sites(const std::string& text) {
  YAML::Node node;
  try {
    node = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(std::string("invalid YAML: ") + e.what());
  }
  std::vector<SiteConfig> sites;
  if (node.IsNull()) return sites;
  if (node.IsScalar()) {
    std::stringstream items(node.Scalar());
    for (std::string item; std::getline(items, item, ',');) {
      auto colon = item.find(':');
      if (colon == std::string::npos)
        throw std::invalid_argument("'" + item + "' is not NAME:RANKS (e.g. a:2,b:2)");
      sites.push_back(
          {item.substr(0, colon), parse_site_ranks(item.substr(colon + 1), sites.size())});
    }
    return sites;
  }
  if (!node.IsSequence())
    throw std::invalid_argument("expected a list of {name, ranks}, got a mapping");
  for (size_t i = 0; i < node.size(); ++i) {
    std::string at = "item " + std::to_string(i);
    if (!node[i].IsMap()) throw std::invalid_argument(at + ": expected {name: ..., ranks: ...}");
    SiteConfig site;
    for (const auto& kv : node[i]) {
      std::string key = kv.first.as<std::string>();
      if (!kv.second.IsScalar())
        throw std::invalid_argument(at + ": " + key + ": expected a value");
      if (key == "name")
        site.name = kv.second.Scalar();
      else if (key == "ranks")
        site.ranks = parse_site_ranks(kv.second.Scalar(), i);
      else
        throw std::invalid_argument(at + ": unknown key '" + key + "' (a site has name, ranks)");
    }
    sites.push_back(site);
  }
  return sites;
}

Field make_field(std::vector<SiteConfig>& v) {
  return {"list of {name, ranks}", [&v](const std::string& s) { v = parse_sites(s); },
          [&v] {
            YAML::Emitter out;
            out << YAML::Flow << YAML::BeginSeq;
            for (const auto& site : v)
              out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << site.name << YAML::Key
                  << "ranks" << YAML::Value << site.ranks << YAML::EndMap;
            out << YAML::EndSeq;
            return std::string(out.c_str());
          },
          /*structured=*/true};
}

// Every field of Config, in output order. Adding a config field means adding one line here.
// (Long on purpose: a table of one line per key reads better whole than split.)
std::vector<std::pair<std::string, Field>> fields(Config& c) {
  std::vector<std::pair<std::string, Field>> f;
  auto add = [&f](const char* key, auto& member) { f.emplace_back(key, make_field(member)); };
  add("run.name", c.run.name);
  add("run.dir", c.run.dir);
  add("run.seed", c.run.seed);
  add("data.train", c.data.train);
  add("data.val", c.data.val);
  add("data.tokenizer", c.data.tokenizer);
  add("model.n_layer", c.model.n_layer);
  add("model.n_head", c.model.n_head);
  add("model.n_embd", c.model.n_embd);
  add("model.seq_len", c.model.seq_len);
  add("model.vocab_size", c.model.vocab_size);
  add("model.softcap", c.model.softcap);
  add("train.device", c.train.device);
  add("train.threads", c.train.threads);
  add("train.precision", c.train.precision);
  add("train.tf32", c.train.tf32);
  add("train.init_from", c.train.init_from);
  add("train.batch_size", c.train.batch_size);
  add("train.grad_accum", c.train.grad_accum);
  add("train.max_steps", c.train.max_steps);
  add("train.eval_every", c.train.eval_every);
  add("train.eval_batches", c.train.eval_batches);
  add("train.checkpoint_every", c.train.checkpoint_every);
  add("train.keep_checkpoints", c.train.keep_checkpoints);
  add("train.log_every", c.train.log_every);
  add("train.optimizer.name", c.train.optimizer.name);
  add("train.optimizer.lr", c.train.optimizer.lr);
  add("train.optimizer.beta1", c.train.optimizer.beta1);
  add("train.optimizer.beta2", c.train.optimizer.beta2);
  add("train.optimizer.eps", c.train.optimizer.eps);
  add("train.optimizer.weight_decay", c.train.optimizer.weight_decay);
  add("train.optimizer.grad_clip", c.train.optimizer.grad_clip);
  add("train.optimizer.matrix_lr", c.train.optimizer.matrix_lr);
  add("train.optimizer.momentum", c.train.optimizer.momentum);
  add("train.optimizer.ns_steps", c.train.optimizer.ns_steps);
  add("train.optimizer.embedding_lr", c.train.optimizer.embedding_lr);
  add("train.optimizer.head_lr", c.train.optimizer.head_lr);
  add("train.schedule.kind", c.train.schedule.kind);
  add("train.schedule.warmup_steps", c.train.schedule.warmup_steps);
  add("train.schedule.warmdown_frac", c.train.schedule.warmdown_frac);
  add("train.schedule.min_lr_frac", c.train.schedule.min_lr_frac);
  add("sync.mode", c.sync.mode);
  add("sync.workers", c.sync.workers);
  add("sync.inner_steps", c.sync.inner_steps);
  add("sync.bucket_mb", c.sync.bucket_mb);
  add("sync.timeout_s", c.sync.timeout_s);
  add("sync.download", c.sync.download);
  add("sync.resync_every", c.sync.resync_every);
  add("sync.report_model", c.sync.report_model);
  add("sync.sites", c.sync.sites);
  add("sync.schedule", c.sync.schedule);
  add("sync.lone", c.sync.lone);
  add("sync.round_seconds", c.sync.round_seconds);
  add("sync.overlap", c.sync.overlap);
  add("sync.streaming.fragments", c.sync.streaming.fragments);
  add("sync.streaming.delay_steps", c.sync.streaming.delay_steps);
  add("sync.streaming.alpha", c.sync.streaming.alpha);
  add("sync.on_failure", c.sync.on_failure);
  add("sync.restart_limit", c.sync.restart_limit);
  add("sync.restart_window_s", c.sync.restart_window_s);
  add("sync.outer.lr", c.sync.outer.lr);
  add("sync.outer.momentum", c.sync.outer.momentum);
  add("sync.codec.type", c.sync.codec.type);
  add("sync.codec.chunk", c.sync.codec.chunk);
  add("sync.codec.topk", c.sync.codec.topk);
  add("sync.codec.topk_down", c.sync.codec.topk_down);
  add("sync.codec.values", c.sync.codec.values);
  add("sync.codec.values_down", c.sync.codec.values_down);
  add("sync.codec.select", c.sync.codec.select);
  add("sync.codec.transform", c.sync.codec.transform);
  add("sync.codec.error_feedback", c.sync.codec.error_feedback);
  add("sync.codec.error_decay", c.sync.codec.error_decay);
  add("sync.coordinator.address", c.sync.coordinator.address);
  add("sync.coordinator.secret_file", c.sync.coordinator.secret_file);
  add("sync.coordinator.tls.cert", c.sync.coordinator.tls_cert);
  add("sync.coordinator.tls.key", c.sync.coordinator.tls_key);
  add("sync.coordinator.tls.ca", c.sync.coordinator.tls_ca);
  add("sync.coordinator.round_timeout_s", c.sync.coordinator.round_timeout_s);
  add("sync.coordinator.min_workers", c.sync.coordinator.min_workers);
  add("sync.coordinator.straggler", c.sync.coordinator.straggler);
  add("sync.coordinator.straggler_factor", c.sync.coordinator.straggler_factor);
  add("sync.coordinator.straggler_min_s", c.sync.coordinator.straggler_min_s);
  add("sync.coordinator.heartbeat_s", c.sync.coordinator.heartbeat_s);
  add("sync.coordinator.lease_s", c.sync.coordinator.lease_s);
  add("sync.coordinator.max_update_mb", c.sync.coordinator.max_update_mb);
  add("sync.coordinator.checkpoint_every", c.sync.coordinator.checkpoint_every);
  add("sync.coordinator.connect_timeout_s", c.sync.coordinator.connect_timeout_s);
  add("sync.coordinator.evaluate", c.sync.coordinator.evaluate);
  add("sync.coordinator.status_address", c.sync.coordinator.status_address);
  add("sync.link.mbps", c.sync.link.mbps);
  add("sync.link.latency_ms", c.sync.link.latency_ms);
  add("sync.link.shaping", c.sync.link.shaping);
  return f;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// Valid keys and section prefixes ("train", "train.optimizer", ...).
std::set<std::string> sections(const std::vector<std::string>& keys) {
  std::set<std::string> out;
  for (const auto& k : keys)
    for (size_t p = k.find('.'); p != std::string::npos; p = k.find('.', p + 1))
      out.insert(k.substr(0, p));
  return out;
}

std::string closest(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = edit_distance(key, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

[[noreturn]] void unknown_key(const std::string& origin, const std::string& key) {
  auto keys = config_keys();
  auto secs = sections(keys);
  keys.insert(keys.end(), secs.begin(), secs.end());
  throw ConfigError(origin + ": unknown config key '" + key + "' (did you mean '" +
                    closest(key, keys) + "'?)");
}

void set_field(Field& field, const std::string& key, const std::string& value,
               const std::string& origin) {
  try {
    field.set(value);
  } catch (const std::exception& e) {
    if (field.structured) throw ConfigError(origin + ": " + key + ": " + e.what());
    throw ConfigError(origin + ": " + key + ": expected " + field.type + ", got '" + value + "'");
  }
}

void merge_node(std::map<std::string, Field>& table, const YAML::Node& node,
                const std::string& prefix, const std::string& origin,
                std::set<std::string>& given) {
  if (!node.IsMap())
    throw ConfigError(origin + ": " + (prefix.empty() ? "top level" : prefix) +
                      ": expected a mapping of keys");
  for (const auto& kv : node) {
    std::string key = (prefix.empty() ? "" : prefix + ".") + kv.first.as<std::string>();
    const YAML::Node& value = kv.second;
    auto it = table.find(key);
    if (it == table.end()) {
      auto secs = sections(config_keys());
      if (!secs.count(key)) unknown_key(origin, key);
      if (value.IsNull()) continue;  // an empty section keeps its defaults
      merge_node(table, value, key, origin, given);
      continue;
    }
    given.insert(key);
    if (it->second.structured) {
      set_field(it->second, key, YAML::Dump(value), origin);
      continue;
    }
    if (!value.IsScalar())
      throw ConfigError(origin + ": " + key + ": expected " + it->second.type + ", got a " +
                        (value.IsMap() ? "mapping" : "list"));
    set_field(it->second, key, value.Scalar(), origin);
  }
}

std::map<std::string, Field> table_of(Config& config) {
  auto list = fields(config);
  return {list.begin(), list.end()};
}

}  // namespace

std::vector<std::string> config_keys() {
  Config scratch;
  std::vector<std::string> keys;
  for (auto& [k, f] : fields(scratch)) keys.push_back(k);
  return keys;
}

void merge_yaml(Config& config, const std::string& yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ": invalid YAML: " + e.what());
  }
  if (root.IsNull()) return;
  auto table = table_of(config);
  merge_node(table, root, "", origin, config.given);
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open config file");
  std::stringstream text;
  text << in.rdbuf();
  Config config;
  merge_yaml(config, text.str(), path);
  return config;
}

void apply_override(Config& config, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set " + assignment + ": expected key.path=value");
  std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  auto table = table_of(config);
  auto it = table.find(key);
  if (it == table.end()) unknown_key("--set", key);
  set_field(it->second, key, value, "--set");
  config.given.insert(key);
}

void set_default(Config& config, const std::string& key, const std::string& value) {
  auto table = table_of(config);
  set_field(table.at(key), key, value, "the method's default");
}

std::string config_value(Config& config, const std::string& key) {
  return table_of(config).at(key).get();
}

std::string to_yaml(const Config& config) {
  Config copy = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::vector<std::string> open;  // the section path currently open in the emitter
  for (auto& [key, field] : fields(copy)) {
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    std::vector<std::string> section(parts.begin(), parts.end() - 1);
    size_t common = 0;
    while (common < open.size() && common < section.size() && open[common] == section[common])
      ++common;
    for (size_t i = open.size(); i > common; --i) out << YAML::EndMap;
    for (size_t i = common; i < section.size(); ++i)
      out << YAML::Key << section[i] << YAML::Value << YAML::BeginMap;
    open = section;
    out << YAML::Key << parts.back() << YAML::Value;
    if (field.structured)
      out << YAML::Load(field.get());
    else if (field.quoted)
      out << YAML::DoubleQuoted << field.get();
    else
      out << field.get();
  }
  for (size_t i = 0; i < open.size(); ++i) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace loco
