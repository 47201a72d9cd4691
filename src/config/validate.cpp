// Validating a Config (validate() in include/loco/config.h): one check per constraint, each
// throwing ConfigError with the key, the bad value and what would be valid; and the files a config
// names (the coordinator's secret, TLS certificates) read and checked.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <set>
#include <utility>
#include <sstream>

#include "loco/config.h"

namespace loco {
namespace {

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
              "' but with sites it is the method between sites: set sync.mode to diloco, demo "
              "or streaming "
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

void validate_model(const ModelConfig& m) {
  require(m.n_layer > 0 && m.n_head > 0 && m.n_embd > 0 && m.seq_len > 0 && m.vocab_size > 1,
          "model: n_layer, n_head, n_embd, seq_len must be positive and vocab_size > 1");
  require(m.n_embd % m.n_head == 0, "model.n_embd (" + std::to_string(m.n_embd) +
                                        ") must be divisible by model.n_head (" +
                                        std::to_string(m.n_head) + ")");
  require((m.n_embd / m.n_head) % 2 == 0, "model: head dim n_embd/n_head must be even (rotary)");
  require(m.softcap >= 0, "model.softcap must be >= 0 (0 disables it)");
}

void validate_train(const TrainConfig& t) {
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
  require_one_of("train.precision", t.precision, {"fp32", "bf16"});
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
}

// The codec's keys together: the sparse (dct) codec's formats, its k against its chunk, and the
// combinations that cannot work (docs/codec.md, "Value formats and transforms").
void validate_codec(const SyncConfig& sync) {
  const auto& cc = sync.codec;
  const std::vector<std::string> values = {"fp32", "fp16", "bf16", "int8", "int4", "int2"};
  require_one_of("sync.codec.transform", cc.transform, {"dct", "none"});
  if (!cc.values_down.empty()) require_one_of("sync.codec.values_down", cc.values_down, values);
  require(cc.error_decay > 0 && cc.error_decay <= 1,
          "sync.codec.error_decay: " + std::to_string(cc.error_decay) + " is not in (0, 1]");
  if (cc.error_decay != 1)
    require(cc.error_feedback && (sync.mode == Mode::kDiloco || sync.mode == Mode::kStreaming) &&
                cc.type != "none",
            "sync.codec.error_decay " + std::to_string(cc.error_decay) +
                " decays the workers' error feedback: it needs sync.codec.error_feedback true, a "
                "lossy sync.codec.type and sync.mode diloco or streaming (the decoupled method's "
                "decay is "
                "sync.outer.momentum)");
  if (cc.type != "dct") {
    require(cc.transform == "dct",
            "sync.codec.transform none is top-k of raw chunks: it needs sync.codec.type dct (it "
            "is '" +
                cc.type + "')");
    require(cc.values != "int4" && cc.values != "int2" && cc.values_down.empty(),
            "sync.codec.values " + cc.values + " / values_down '" + cc.values_down +
                "' are formats of the sparse codec: they need sync.codec.type dct (it is '" +
                cc.type + "'; for dense values use sync.codec.type int8, int4 or int2)");
    return;
  }
  require_one_of("sync.codec.values", cc.values, values);
  require(!(cc.transform == "none" && cc.select == "band"),
          "sync.codec.select band keeps the highest DCT frequencies: with sync.codec.transform "
          "none it would send the same positions of every chunk forever and never the rest; use "
          "select topk or transform dct");
  const int64_t chunk_size = cc.chunk * cc.chunk;
  for (auto [key, k] : {std::pair<const char*, int64_t>{"sync.codec.topk", cc.topk},
                        {"sync.codec.topk_down", cc.topk_down}})
    require(k <= chunk_size, std::string(key) + ": " + std::to_string(k) +
                                 " is larger than a chunk (sync.codec.chunk " +
                                 std::to_string(cc.chunk) + ": at most " +
                                 std::to_string(chunk_size) + " values)");
}

// The sync section's own sizes, the sites and the codec.
void validate_sync(const SyncConfig& sync) {
  require(sync.workers > 0, "sync.workers must be positive");
  require(sync.inner_steps > 0, "sync.inner_steps must be positive");
  require(sync.bucket_mb > 0, "sync.bucket_mb must be positive (MiB per all-reduce bucket)");
  require(sync.timeout_s > 0, "sync.timeout_s must be positive (seconds)");
  validate_sites(sync);
  require_one_of("sync.on_failure", sync.on_failure, {"restart", "continue", "stop"});
  require(sync.restart_limit >= 0 && sync.restart_window_s > 0,
          "sync.restart_limit must be >= 0 and sync.restart_window_s positive (seconds)");
  require_one_of("sync.codec.type", sync.codec.type,
                 {"none", "fp16", "bf16", "int8", "int4", "int2", "dct"});
  validate_codec(sync);
}

// The status page (docs/status.md): HOST:PORT, and a host other than loopback only with the secret.
void validate_status_address(const CoordinatorConfig& co) {
  const std::string key = "sync.coordinator.status_address";
  const std::string& a = co.status_address;
  if (a.empty()) return;
  const size_t colon = a.rfind(':');
  int64_t port = -1;
  if (colon != std::string::npos && colon + 1 < a.size() && a.size() - colon <= 6 &&
      std::all_of(a.begin() + colon + 1, a.end(),
                  [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)) != 0; }))
    port = std::stoll(a.substr(colon + 1));
  require(colon != std::string::npos && colon > 0 && port >= 1 && port <= 65535,
          key + ": '" + a + "' is not HOST:PORT (e.g. 127.0.0.1:8080, port 1-65535)");
  require(is_loopback_host(status_host(a)) || !co.secret_file.empty(),
          key + ": '" + a +
              "' is not a loopback address and sync.coordinator.secret_file is not set: anyone "
              "who can reach it would see the run; set a secret or bind to 127.0.0.1");
}

void validate_coordinator(const SyncConfig& sync) {
  const auto& co = sync.coordinator;
  require(co.round_timeout_s > 0 && co.heartbeat_s > 0 && co.lease_s > co.heartbeat_s,
          "sync.coordinator: round_timeout_s and heartbeat_s must be positive and lease_s > "
          "heartbeat_s");
  require(co.min_workers >= 1 && co.min_workers <= sync.workers,
          "sync.coordinator.min_workers must be between 1 and sync.workers");
  require_one_of("sync.coordinator.straggler", co.straggler, {"fixed", "adaptive"});
  require(co.straggler_factor >= 1 && co.straggler_min_s > 0,
          "sync.coordinator: straggler_factor must be >= 1 and straggler_min_s positive");
  require(co.max_update_mb > 0 && co.checkpoint_every > 0,
          "sync.coordinator: max_update_mb and checkpoint_every must be positive");
  validate_status_address(co);
}

// Streaming DiLoCo's fragments, delay and mix (docs/streaming.md).
void validate_streaming(const Config& c) {
  const auto& sync = c.sync;
  const auto& st = sync.streaming;
  const std::string p = std::to_string(st.fragments), h = std::to_string(sync.inner_steps);
  require(st.fragments >= 1 && st.fragments <= c.model.n_layer,
          "sync.streaming.fragments: " + p + " must be between 1 and the model's " +
              std::to_string(c.model.n_layer) + " blocks (model.n_layer)");
  require(sync.inner_steps % st.fragments == 0,
          "sync.streaming.fragments: " + p + " does not divide sync.inner_steps (" + h +
              "): fragments sync every inner_steps / fragments steps");
  const int64_t every = sync.inner_steps / st.fragments;
  require(st.delay_steps >= 0 && st.delay_steps < every,
          "sync.streaming.delay_steps: " + std::to_string(st.delay_steps) +
              " must be >= 0 and below sync.inner_steps / fragments (" + std::to_string(every) +
              "): a fragment's result is applied before the next fragment syncs");
  require(st.alpha >= 0 && st.alpha <= 1,
          "sync.streaming.alpha: " + std::to_string(st.alpha) + " is not in [0, 1]");
  require(sync.download != "state",
          "sync.download state: streaming DiLoCo downloads the round's fragment update "
          "(set sync.download to auto or update)");
}

// What the exchange between workers (and its rounds) needs of the config as a whole.
void validate_exchange(const Config& c) {
  const auto& sync = c.sync;
  require_one_of("sync.download", sync.download, {"auto", "state", "update"});
  require(sync.codec.topk_down >= 0, "sync.codec.topk_down must be >= 0 (0: topk x workers)");
  require(sync.resync_every >= 0, "sync.resync_every must be >= 0 (0: never)");
  report_replica(sync);  // throws on a value that names no model
  if (sync.report_model != SyncConfig{}.report_model)
    require(sync.mode == Mode::kDemo,
            "sync.report_model: only sync.mode demo has replicas that differ (it is '" +
                std::string(mode_name(sync.mode)) + "')");
  require_one_of("sync.lone", sync.lone, {"sync", "train"});
  require(sync.round_seconds >= 0,
          "sync.round_seconds must be >= 0 (seconds; 0: rounds of "
          "sync.inner_steps steps)");
  if (elastic_rounds(sync))
    require(sync.mode == Mode::kDiloco,
            std::string(sync.lone == "train" ? "sync.lone train" : "sync.round_seconds") +
                " needs sync.mode diloco (it is '" + mode_name(sync.mode) + "')");
  if (sync.mode == Mode::kDemo)
    require(sync.codec.type == "dct",
            "sync.mode demo sends the DCT of each worker's momentum: set sync.codec.type to dct "
            "or leave it out (it is '" +
                sync.codec.type + "')");
  if (sync.mode == Mode::kStreaming) validate_streaming(c);
  require_one_of("sync.overlap", sync.overlap, {"none", "delayed"});
  if (sync.overlap == "delayed") {
    require(sync.mode == Mode::kDiloco,
            std::string("sync.overlap delayed is DiLoCo's delayed outer step: it needs sync.mode "
                        "diloco (it is '") +
                mode_name(sync.mode) + "'; streaming overlaps with sync.streaming.delay_steps)");
    require(!elastic_rounds(sync),
            "sync.overlap delayed: rounds of inner steps only (not with sync.lone train or "
            "sync.round_seconds)");
    require(sync.download != "state",
            "sync.download state: sync.overlap delayed replays the round's update a round later "
            "(set sync.download to auto or update)");
  }
  if (coordinated(sync.mode))
    require(c.train.max_steps % sync.inner_steps == 0,
            "train.max_steps (" + std::to_string(c.train.max_steps) +
                ") must be a multiple of sync.inner_steps (" + std::to_string(sync.inner_steps) +
                ") so that every round is whole");
}

// The secret and TLS files must be there and readable now, not at the first connection.
void validate_credentials(const CoordinatorConfig& co) {
  if (!co.secret_file.empty()) read_secret(co.secret_file);
  require(co.tls_cert.empty() == co.tls_key.empty(),
          "sync.coordinator.tls: cert and key go together (cert is '" + co.tls_cert +
              "', key is '" + co.tls_key + "')");
  if (!co.tls_cert.empty()) read_config_file("sync.coordinator.tls.cert", co.tls_cert);
  if (!co.tls_key.empty()) read_config_file("sync.coordinator.tls.key", co.tls_key);
  if (!co.tls_ca.empty()) read_config_file("sync.coordinator.tls.ca", co.tls_ca);
}

}  // namespace

void validate(const Config& c) {
  validate_model(c.model);
  validate_train(c.train);
  validate_sync(c.sync);
  require(!c.run.dir.empty(), "run.dir must not be empty");
  validate_coordinator(c.sync);
  validate_exchange(c);
  validate_link(c.sync);
  validate_credentials(c.sync.coordinator);
}

std::string read_config_file(const std::string& key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), key + ": cannot read '" + path + "' (missing or not readable)");
  std::stringstream text;
  text << in.rdbuf();
  require(!in.bad() && !text.str().empty(), key + ": '" + path + "' is empty or unreadable");
  return text.str();
}

std::string status_host(const std::string& address) {
  std::string host = address.substr(0, address.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return host;
}

bool is_loopback_host(const std::string& host) {
  return host.rfind("127.", 0) == 0 || host == "localhost" || host == "::1";
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

}  // namespace loco
