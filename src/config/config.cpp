// YAML <-> Config: one table of fields drives parsing, overrides, validation messages and output.
#include "loco/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
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
  add("sync.sites", c.sync.sites);
  add("sync.schedule", c.sync.schedule);
  add("sync.outer.lr", c.sync.outer.lr);
  add("sync.outer.momentum", c.sync.outer.momentum);
  add("sync.codec.type", c.sync.codec.type);
  add("sync.codec.chunk", c.sync.codec.chunk);
  add("sync.codec.topk", c.sync.codec.topk);
  add("sync.codec.topk_down", c.sync.codec.topk_down);
  add("sync.codec.values", c.sync.codec.values);
  add("sync.codec.select", c.sync.codec.select);
  add("sync.codec.error_feedback", c.sync.codec.error_feedback);
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
                const std::string& prefix, const std::string& origin) {
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
      merge_node(table, value, key, origin);
      continue;
    }
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

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

void require_one_of(const std::string& key, const std::string& value,
                    const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : " | ") + a;
  throw ConfigError(key + ": '" + value + "' is not one of " + list);
}

bool is_site_name(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
  });
}

void validate_sites(const SyncConfig& sync) {
  const auto& sites = sync.sites;
  if (sites.empty()) return;
  std::set<std::string> names;
  for (size_t i = 0; i < sites.size(); ++i) {
    std::string at = "sync.sites item " + std::to_string(i);
    require(is_site_name(sites[i].name),
            at + ": name '" + sites[i].name + "' must be letters, digits, '-' or '_'");
    require(names.insert(sites[i].name).second,
            at + ": the name '" + sites[i].name + "' is used twice; site names are unique");
    require(sites[i].ranks >= 1, "sync.sites[" + sites[i].name + "].ranks must be >= 1, not " +
                                     std::to_string(sites[i].ranks));
  }
  require(coordinated(sync.mode),
          "sync.sites: sync.mode is '" + std::string(mode_name(sync.mode)) +
              "' but with sites it is the method between sites: set sync.mode to diloco or demo "
              "(inside a site it is DDP)");
  std::string n = std::to_string(sites.size());
  require(sync.workers == int64_t(sites.size()),
          "sync.workers is " + std::to_string(sync.workers) + " but sync.sites lists " + n +
              " sites: set sync.workers=" + n + " (the coordinator's members are the sites)");
}

void validate_link(const SyncConfig& sync) {
  const LinkConfig& link = sync.link;
  require(std::isfinite(link.mbps) && link.mbps >= 0,
          "sync.link.mbps must be >= 0 (Mbit/s per worker and direction; 0: unlimited), not " +
              std::to_string(link.mbps));
  require(std::isfinite(link.latency_ms) && link.latency_ms >= 0,
          "sync.link.latency_ms must be >= 0 (one-way, ms; 0: none), not " +
              std::to_string(link.latency_ms));
  require_one_of("sync.link.shaping", link.shaping, {"auto", "netns", "token_bucket"});
  if (link.shaping == "netns" && sync.mode == Mode::kDdp && sync.sites.empty())
    throw ConfigError(
        "sync.link.shaping: netns shapes the links between workers and the coordinator "
        "(sync.mode diloco or demo, or sites); DDP's all-reduce is modelled instead: set "
        "sync.link.shaping to auto or token_bucket");
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
  merge_node(table, root, "", origin);
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
}

void validate(const Config& c) {
  const auto& m = c.model;
  const auto& t = c.train;
  require(m.n_layer > 0 && m.n_head > 0 && m.n_embd > 0 && m.seq_len > 0 && m.vocab_size > 1,
          "model: n_layer, n_head, n_embd, seq_len must be positive and vocab_size > 1");
  require(m.n_embd % m.n_head == 0, "model.n_embd (" + std::to_string(m.n_embd) +
                                        ") must be divisible by model.n_head (" +
                                        std::to_string(m.n_head) + ")");
  require((m.n_embd / m.n_head) % 2 == 0, "model: head dim n_embd/n_head must be even (rotary)");
  require(m.softcap >= 0, "model.softcap must be >= 0 (0 disables it)");
  require(t.batch_size > 0, "train.batch_size must be positive");
  require(t.grad_accum > 0, "train.grad_accum must be positive");
  require(t.max_steps > 0, "train.max_steps must be positive");
  require(t.threads >= 0, "train.threads must be >= 0 (0: LibTorch's default)");
  require(t.eval_every >= 0 && t.checkpoint_every >= 0 && t.log_every >= 0,
          "train: eval_every, checkpoint_every and log_every must be >= 0");
  require(t.eval_batches > 0, "train.eval_batches must be positive");
  require(t.keep_checkpoints > 0, "train.keep_checkpoints must be positive");
  require(t.device == "cpu" || t.device.rfind("cuda", 0) == 0,
          "train.device: '" + t.device + "' is not one of cpu | cuda | cuda:N");
  require_one_of("train.optimizer.name", t.optimizer.name, {"adamw", "muon"});
  require(t.optimizer.lr > 0, "train.optimizer.lr must be positive");
  require(t.optimizer.grad_clip >= 0, "train.optimizer.grad_clip must be >= 0 (0 disables it)");
  require(t.optimizer.ns_steps > 0, "train.optimizer.ns_steps must be positive");
  require_one_of("train.schedule.kind", t.schedule.kind, {"cosine", "linear"});
  require(t.schedule.warmup_steps >= 0, "train.schedule.warmup_steps must be >= 0");
  require(t.schedule.warmdown_frac >= 0 && t.schedule.warmdown_frac <= 1,
          "train.schedule.warmdown_frac must be in [0, 1]");
  require(t.schedule.min_lr_frac >= 0 && t.schedule.min_lr_frac <= 1,
          "train.schedule.min_lr_frac must be in [0, 1]");
  require(c.sync.workers > 0, "sync.workers must be positive");
  require(c.sync.inner_steps > 0, "sync.inner_steps must be positive");
  require(c.sync.bucket_mb > 0, "sync.bucket_mb must be positive (MiB per all-reduce bucket)");
  require(c.sync.timeout_s > 0, "sync.timeout_s must be positive (seconds)");
  validate_sites(c.sync);
  require_one_of("sync.codec.type", c.sync.codec.type, {"none", "fp16", "bf16", "int8", "dct"});
  require(!c.run.dir.empty(), "run.dir must not be empty");
  const auto& co = c.sync.coordinator;
  require(co.round_timeout_s > 0 && co.heartbeat_s > 0 && co.lease_s > co.heartbeat_s,
          "sync.coordinator: round_timeout_s and heartbeat_s must be positive and lease_s > "
          "heartbeat_s");
  require(co.min_workers >= 1 && co.min_workers <= c.sync.workers,
          "sync.coordinator.min_workers must be between 1 and sync.workers");
  require_one_of("sync.coordinator.straggler", co.straggler, {"fixed", "adaptive"});
  require(co.straggler_factor >= 1 && co.straggler_min_s > 0,
          "sync.coordinator: straggler_factor must be >= 1 and straggler_min_s positive");
  require(co.max_update_mb > 0 && co.checkpoint_every > 0,
          "sync.coordinator: max_update_mb and checkpoint_every must be positive");
  require_one_of("sync.download", c.sync.download, {"auto", "state", "update"});
  require(c.sync.codec.topk_down >= 0, "sync.codec.topk_down must be >= 0 (0: topk x workers)");
  require(c.sync.resync_every >= 0, "sync.resync_every must be >= 0 (0: never)");
  if (c.sync.mode == Mode::kDemo)
    require(c.sync.codec.type == "dct",
            "sync.mode demo sends the DCT of each worker's momentum: set sync.codec.type to dct "
            "(it is '" +
                c.sync.codec.type + "')");
  if (coordinated(c.sync.mode))
    require(t.max_steps % c.sync.inner_steps == 0,
            "train.max_steps (" + std::to_string(t.max_steps) +
                ") must be a multiple of sync.inner_steps (" + std::to_string(c.sync.inner_steps) +
                ") so that every round is whole");
  validate_link(c.sync);
  if (!co.secret_file.empty()) read_secret(co.secret_file);
  require(co.tls_cert.empty() == co.tls_key.empty(),
          "sync.coordinator.tls: cert and key go together (cert is '" + co.tls_cert +
              "', key is '" + co.tls_key + "')");
  if (!co.tls_cert.empty()) read_config_file("sync.coordinator.tls.cert", co.tls_cert);
  if (!co.tls_key.empty()) read_config_file("sync.coordinator.tls.key", co.tls_key);
  if (!co.tls_ca.empty()) read_config_file("sync.coordinator.tls.ca", co.tls_ca);
}

std::string read_config_file(const std::string& key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), key + ": cannot read '" + path + "' (missing or not readable)");
  std::stringstream text;
  text << in.rdbuf();
  require(!in.bad() && !text.str().empty(), key + ": '" + path + "' is empty or unreadable");
  return text.str();
}

std::string read_secret(const std::string& path) {
  const std::string key = "sync.coordinator.secret_file";
  std::string secret = read_config_file(key, path);
  while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back())))
    secret.pop_back();
  require(!secret.empty(), key + ": '" + path + "' holds no secret (only whitespace)");
  require(
      std::all_of(secret.begin(), secret.end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; }),
      key + ": '" + path + "' must hold one line of printable ASCII (it is sent as metadata)");
  return secret;
}

namespace {
const std::pair<Mode, const char*> kModeNames[] = {{Mode::kSingle, "single"},
                                                   {Mode::kDdp, "ddp"},
                                                   {Mode::kDiloco, "diloco"},
                                                   {Mode::kDemo, "demo"}};
}  // namespace

const char* mode_name(Mode mode) {
  for (const auto& [m, name] : kModeNames)
    if (m == mode) return name;
  return "?";
}

Mode mode_from_name(const std::string& name) {
  std::string list;
  for (const auto& [m, n] : kModeNames) {
    if (name == n) return m;
    list += (list.empty() ? "" : " | ") + std::string(n);
  }
  throw ConfigError("sync.mode: '" + name + "' is not one of " + list);
}

bool coordinated(Mode mode) {
  return mode == Mode::kDiloco || mode == Mode::kDemo;
}

bool downloads_update(const SyncConfig& sync) {
  return sync.mode == Mode::kDemo || sync.download == "update" ||
         (sync.download == "auto" && sync.codec.type != "none");
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
