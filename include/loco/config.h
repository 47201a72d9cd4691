// loco's configuration: typed structs with defaults, filled from YAML and --set overrides.
//
// Flow (one way): struct defaults -> YAML file -> `--set a.b=c` overrides. Unknown keys are
// errors that name the key path and the closest valid key; wrong types name the key, the value
// and the expected type. The resolved config is written to the run directory and into every
// checkpoint (see to_yaml()).
#pragma once

#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace loco {

// Thrown for any configuration problem; the message is meant for the user as is.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RunConfig {
  std::string name = "tiny";      // label used in logs and comparisons
  std::string dir = "runs/tiny";  // where config.yaml, metrics.jsonl, checkpoints/ go
  int64_t seed = 1337;            // seeds model init and data order
};

struct DataConfig {
  // The first shard of a token stream written by `loco data prepare` (DIR/train.bin); when
  // DIR/train.index.json exists it lists the further shards (train-000001.bin, ...), otherwise
  // the file alone is the corpus.
  std::string train = "data/train.bin";
  std::string val = "data/val.bin";                // held-out stream, same form
  std::string tokenizer = "data/tokenizer.model";  // SentencePiece model
};

struct ModelConfig {
  int64_t n_layer = 4;        // transformer blocks
  int64_t n_head = 4;         // attention heads; n_embd must divide by it, head dim must be even
  int64_t n_embd = 256;       // width
  int64_t seq_len = 256;      // context length in tokens
  int64_t vocab_size = 4096;  // must equal the tokenizer's vocabulary
  double softcap = 15.0;      // logit soft-cap: logits = c * tanh(logits / c); 0 disables
};

struct OptimizerConfig {
  std::string name = "adamw";  // adamw | muon (Muon for block matrices, AdamW for the rest)
  double lr = 3e-3;            // AdamW peak learning rate (all parameters, name: adamw)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled, applied by AdamW
  double grad_clip = 1.0;     // global L2 norm; 0 disables
  double matrix_lr = 0.02;    // Muon learning rate for the 2-D block matrices
  double momentum = 0.95;     // Muon momentum (Nesterov)
  int64_t ns_steps = 5;       // Newton-Schulz iterations
  double embedding_lr = 0.2;  // AdamW lr for the token embedding under Muon
  double head_lr = 0.004;     // AdamW lr for the output head under Muon
};

struct ScheduleConfig {
  std::string kind = "cosine";  // cosine | linear (constant, then linear warm-down)
  int64_t warmup_steps = 20;    // linear warm-up from 0 to the peak
  double warmdown_frac = 0.2;   // linear: fraction of max_steps spent warming down
  double min_lr_frac = 0.1;     // final lr as a fraction of the peak
};

struct TrainConfig {
  std::string device = "cpu";  // cpu | cuda | cuda:N
  int64_t threads = 1;         // intra-op threads (0: LibTorch's default)
  // fp32 | bf16. bf16: the forward runs under autocast (CPU or CUDA), so the matmuls (and
  // attention) compute in bfloat16 while the weights, gradients, optimizer state,
  // pseudo-gradients, outer state and checkpoints stay fp32; no loss scaling (bf16 has fp32's
  // exponent range). Refused at start on a device without bf16 arithmetic (see precision.h).
  // Evaluation and `loco sample` run in fp32 whatever this says.
  std::string precision = "fp32";
  // CUDA only: let fp32 matmuls use TF32 tensor cores (10-bit mantissa). false keeps fp32
  // matmuls exact IEEE fp32, as before this key existed; no effect on CPU.
  bool tf32 = false;
  // A checkpoint (a run's or a coordinator's) whose weights the model starts from instead of
  // its random init: weights only, with a fresh optimizer and schedule (`--init-from` of `loco
  // train` / `loco launch` sets it; a resume continues from its own checkpoint instead). Its
  // architecture must match model.* (a tensor of another shape is refused by name).
  std::string init_from;
  int64_t batch_size = 8;          // sequences per micro-batch
  int64_t grad_accum = 1;          // micro-batches per optimizer step
  int64_t max_steps = 600;         // optimizer steps
  int64_t eval_every = 100;        // steps between evaluations (0: only at the end)
  int64_t eval_batches = 8;        // validation batches per evaluation
  int64_t checkpoint_every = 200;  // steps between checkpoints (0: only at the end)
  int64_t keep_checkpoints = 2;    // newest checkpoints kept on disk
  int64_t log_every = 10;          // steps between progress lines
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
};

struct OuterConfig {
  double lr = 0.7;        // outer Nesterov learning rate (eta)
  double momentum = 0.9;  // outer momentum (mu)
};

struct CodecConfig {
  std::string type = "none";  // none | fp16 | bf16 | int8 | int4 | int2 | dct (top-k of chunks)
  int64_t chunk = 64;
  int64_t topk = 32;
  // dct, DiLoCo's encoded download (sync.download update): coefficients kept per chunk of the
  // coordinator's average; 0 = topk x sync.workers, as many as the workers' uploads can carry.
  int64_t topk_down = 0;
  // dct: the kept values' format, fp32 | fp16 | bf16 | int8 | int4 | int2 (int8, int4: one
  // float32 scale per chunk; int2: four float32 levels per chunk, SparseLoCo's quantiser).
  std::string values = "int8";
  // dct, DiLoCo's encoded download: the format of its values; "" = values. fp32 with topk_down
  // >= topk x workers makes the download lossless (the SparseLoCo combination, docs/codec.md).
  std::string values_down;
  std::string select = "topk";
  // dct: dct (top-k of each chunk's DCT coefficients) | none (top-k of each chunk's raw values,
  // SparseLoCo's use_dct false); the same chunks either way.
  std::string transform = "dct";
  bool error_feedback = true;
  // The workers' error feedback, beta in e <- beta * e + x before each encode: 1 keeps every
  // residual in full; SparseLoCo decays it (0.95), its accumulator standing in for the outer
  // momentum. In (0, 1]; below 1 only with error_feedback and sync.mode diloco.
  double error_decay = 1.0;
};

struct CoordinatorConfig {
  std::string address = "127.0.0.1:50051";
  // A file holding the shared secret (printable ASCII, one line; a trailing newline is
  // dropped). When set, the coordinator refuses every RPC that does not carry it (UNAUTHENTICATED)
  // and workers send it with every call. See docs/security.md.
  std::string secret_file;
  // TLS, PEM files. cert and key are this process's own certificate and key: the coordinator's
  // server certificate, a worker's client certificate. ca is whom to trust: on the coordinator,
  // when set, every client must present a certificate it signed; on a worker, the CA that signed
  // the coordinator's certificate. A worker uses TLS when ca or cert is set; the coordinator when
  // cert is set (it needs cert and key).
  std::string tls_cert, tls_key, tls_ca;
  double round_timeout_s = 600.0;  // a round closes this long after its first report
  int64_t min_workers = 1;         // ... if at least this many workers reported
  // The straggler deadline: "fixed" (round_timeout_s) or "adaptive": straggler_factor times the
  // median spread of the last complete rounds' arrivals (first to last push), at least
  // straggler_min_s, at most round_timeout_s (docs/faults.md).
  std::string straggler = "fixed";
  double straggler_factor = 3.0;
  double straggler_min_s = 5.0;
  double heartbeat_s = 2.0;      // how often workers renew their lease
  double lease_s = 30.0;         // a worker not heard from for this long leaves the round
  int64_t max_update_mb = 4096;  // larger pushes are refused (RESOURCE_EXHAUSTED)
  // Rounds between coordinator checkpoints (and at the end). A checkpointed round's state is
  // served to the workers only once its checkpoint is on disk, so with 1 nothing a worker was
  // given is ever lost to a coordinator crash.
  int64_t checkpoint_every = 1;
  double connect_timeout_s = 120;  // how long a worker keeps retrying an unreachable coordinator
  // Whether the coordinator evaluates each round's model on data.val (val_loss, val_bpb). false:
  // data.val and data.tokenizer are not read and rounds are logged without them (a large model on
  // a small coordinator machine; `loco bench coordinator`).
  bool evaluate = true;
  // HOST:PORT where the coordinator serves its live status page over HTTP (`GET /`, an HTML page
  // that refreshes itself, and `GET /status.json`; docs/status.md). Empty (the default): none.
  // A host other than loopback (127.x, localhost, ::1) needs secret_file, and the page then asks
  // for the secret (`?token=SECRET` or `Authorization: Bearer SECRET`).
  std::string status_address;
};

// One site of a multi-site run (docs/multisite.md): ranks on a fast interconnect that train one
// replica together with DDP; the sites meet through the coordinator (sync.mode).
struct SiteConfig {
  std::string name;   // the site's id (`loco worker --site NAME`, its name at the coordinator):
                      // letters, digits, '-' and '_'; unique
  int64_t ranks = 1;  // DDP ranks inside the site (its WORLD_SIZE), >= 1
};

// A slow link between each worker and the coordinator (docs/link.md). mbps and latency_ms 0 (the
// defaults) leave it unlimited. Also `loco launch --link 100mbit,50ms`.
struct LinkConfig {
  double mbps = 0;        // bandwidth per worker, each direction, in Mbit/s (10^6 bit/s); >= 0
  double latency_ms = 0;  // one-way latency added once per push/pull (or per packet: netem); >= 0
  // auto: `loco launch` as root with ip and tc shapes for real (netns), else token_bucket;
  // netns: real shaping, an error when it cannot be set up; token_bucket: paced in loco's own
  // transport (DDP: modelled per step). A worker started by hand treats auto as token_bucket.
  std::string shaping = "auto";
  bool limited() const { return mbps > 0 || latency_ms > 0; }
};

// How replicas are kept in step (sync.mode), parsed once from the config: code switches on the
// enum, never on the string. A new method is one value here, its name in kModeNames
// (src/config/config.cpp), one aggregator and one worker strategy (docs/design.md).
enum class Mode {
  kSingle,     // one process, no synchronisation
  kDdp,        // gradients all-reduced every step (c10d)
  kDiloco,     // DiLoCo through the coordinator
  kDemo,       // the decoupled DCT momentum method through the coordinator
  kStreaming,  // streaming DiLoCo: fragments synced in turn, overlapped with inner steps
};
// "single", "ddp", "diloco", "demo", "streaming": the name in YAML, logs and messages.
const char* mode_name(Mode mode);
// The mode named `name`; throws ConfigError listing the valid names.
Mode mode_from_name(const std::string& name);
// Whether the mode's workers meet through the coordinator (diloco, demo, streaming).
bool coordinated(Mode mode);

// Streaming DiLoCo (sync.mode streaming, docs/streaming.md): the parameters split into
// `fragments` contiguous pieces of near-equal size; a round every sync.inner_steps / fragments
// steps syncs one fragment in turn (so each fragment every sync.inner_steps steps); its exchange
// runs in the background and its result is applied `delay_steps` inner steps later as
// theta_p = alpha theta_p,local + (1 - alpha) theta_p,global.
struct StreamingConfig {
  int64_t fragments = 1;    // 1 .. model.n_layer, dividing sync.inner_steps
  int64_t delay_steps = 0;  // tau: 0 .. sync.inner_steps / fragments - 1 (0: no overlap)
  double alpha = 0;         // in [0, 1]: the local parameters' share of the mix
};

struct SyncConfig {
  Mode mode = Mode::kSingle;  // single | ddp | diloco | demo | streaming; with sites: not ddp
  int64_t workers = 1;
  int64_t inner_steps = 50;
  double bucket_mb = 25.0;   // ddp: gradient all-reduce bucket size in MiB (> 0)
  double timeout_s = 300.0;  // ddp: rendezvous and collective timeout; a dead rank fails the
                             // others after this long (must exceed rank 0's eval/checkpoint)
  // What workers download after a round: "state" (the new parameters, fp32), "update" (the
  // round's averaged pseudo-gradient encoded with sync.codec, replayed through the outer step by
  // every worker, checked by a checksum) or "auto" (state for codec none, update otherwise).
  // sync.mode demo always downloads the merged sparse momentum.
  std::string download = "auto";
  // demo: average the replicas in full every this many rounds (0: never); bytes counted apart.
  int64_t resync_every = 0;
  // demo: the model the run reports — its evaluation (val_loss, final_val_loss), the
  // coordinator's checkpoints and so `loco export`: "replica:N" (worker N's own replica, the
  // seed code's choice with N = 0), "consensus" (the average of the replicas) or "best" (the one
  // of the replicas and their consensus with the lowest val loss at each consensus round).
  std::string report_model = "replica:0";
  // Multi-site: empty (the default) for none. In YAML a list of {name, ranks}; on the command
  // line also `--set sync.sites=a:2,b:2`. With sites, sync.mode is the method between them
  // (diloco | demo) and sync.workers must equal the number of sites.
  std::vector<SiteConfig> sites;
  // A YAML file saying when each DiLoCo worker is up (windows in rounds or seconds, or a CSV
  // trace); `loco launch` replays it by stopping and starting workers. Empty: always up.
  std::string schedule;
  // What a DiLoCo member does at a round's end when it is the only live member (docs/multisite.md
  // "A lone member"): "sync" (the default: it pushes and pulls its own update as any round) or
  // "train" (it keeps training on its anchor, sends nothing, and syncs its whole pseudo-gradient
  // since then once a second member is live). sync.mode diloco only.
  std::string lone = "sync";
  // Rounds by wall-clock: > 0, each member trains as many inner steps as it can in this many
  // seconds, then syncs (sync.inner_steps is then unused between syncs); 0 (the default): rounds
  // of sync.inner_steps steps. With it, or with sync.lone train, the run ends at its token budget
  // (train.max_steps x every member's tokens per step, docs/multisite.md). sync.mode diloco only.
  double round_seconds = 0;
  // sync.mode diloco: "none" (the default: a round's end waits for the round's result) or
  // "delayed": round r's exchange runs behind round r + 1's inner steps and its outer step is
  // applied at the end of round r + 1 (docs/streaming.md "Delayed outer step").
  std::string overlap = "none";
  // What `loco launch` does when a process it started exits abnormally (a non-zero status or a
  // signal it did not send; docs/faults.md): "restart" (the default: a worker rejoins with
  // --resume, the coordinator restarts from its checkpoint, with backoff from 1 s doubling to
  // 30 s), "continue" (leave it down; the run goes on while sync.coordinator.min_workers
  // workers remain) or "stop" (stop every process, exit non-zero). Without a coordinator
  // (single, ddp) and for the ranks of sync.sites, every value means stop. `--on-failure`
  // overrides it.
  std::string on_failure = "restart";
  // A process that fails more than restart_limit times within restart_window_s seconds is given
  // up on (left down); the run goes on while min_workers workers remain. restart_limit >= 0,
  // restart_window_s > 0.
  int64_t restart_limit = 5;
  double restart_window_s = 300;
  OuterConfig outer;
  CodecConfig codec;
  CoordinatorConfig coordinator;
  LinkConfig link;
  StreamingConfig streaming;
};

// Whether DiLoCo workers download the encoded update (true) or the new state (false).
bool downloads_update(const SyncConfig& sync);

// The inner steps between two of the coordinator's rounds: sync.inner_steps, or for streaming
// DiLoCo sync.inner_steps / sync.streaming.fragments (a round syncs one fragment).
int64_t round_steps(const SyncConfig& sync);

// Whether a member's inner steps and the coordinator's rounds are decoupled (sync.lone train or
// sync.round_seconds): the run then ends at its token budget, not at a step count.
bool elastic_rounds(const SyncConfig& sync);

// sync.report_model "replica:N": the member whose replica the run reports, "wN" (the launcher's
// name for worker N) or with sync.sites the N-th site's name; empty for "consensus" and "best".
// Throws ConfigError naming the key when the value is none of these or N is out of range.
std::string report_replica(const SyncConfig& sync);

struct Config {
  RunConfig run;
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  SyncConfig sync;
  // The keys a config file or `--set` gave (not written by to_yaml): apply_method_defaults fills
  // the method's keys that are not among them.
  std::set<std::string> given;
};

// The run's token budget: train.max_steps steps of every member (a site's ranks each count), the
// tokens a run in lockstep rounds trains. Elastic runs end when their closed rounds reach it.
int64_t token_budget(const Config& config);

// Reads `path` (YAML) over the defaults. Throws ConfigError naming the file and key.
Config load_config(const std::string& path);

// Applies one `key.path=value` override (as from `--set`). Throws ConfigError.
void apply_override(Config& config, const std::string& assignment);

// Sets `key` (a path of config_keys()) from text as a default would be, without marking it given.
void set_default(Config& config, const std::string& key, const std::string& value);
// The value of `key` as to_yaml writes it.
std::string config_value(Config& config, const std::string& key);

// The method's typed defaults (src/config/method_defaults.cpp, docs/dct.md "Defaults"): a method
// or codec chosen without its further keys gets the settings measured best for it, e.g.
// `sync.mode: demo` alone selects the DCT codec and the decoupled method's tuned eta. Only keys
// not in config.given are set. Returns "key=value" for each key it set.
std::vector<std::string> apply_method_defaults(Config& config);

// The config file, then each `--set`, then the method's typed defaults: what every command runs.
Config resolve_config(const std::string& path, const std::vector<std::string>& overrides);

// One line saying the method and the settings that decide it ("diloco, dct codec: k 256 up, ...").
std::string describe_method(const Config& config);

// Parses YAML text over `config` (used by load_config and for checkpoint configs).
void merge_yaml(Config& config, const std::string& yaml_text, const std::string& origin);

// Checks cross-field constraints (positive sizes, known enums, divisibility) and that the
// security files named in sync.coordinator exist and are readable. Throws ConfigError.
void validate(const Config& config);

// The whole text of the file that config key `key` names; throws ConfigError naming the key when
// the file is missing, unreadable or empty.
std::string read_config_file(const std::string& key, const std::string& path);

// The shared secret in sync.coordinator.secret_file, trailing newline and spaces dropped; throws
// ConfigError when it is empty or holds anything but printable ASCII (it travels as gRPC
// metadata).
std::string read_secret(const std::string& path);

// The host of a HOST:PORT address ("[::1]:80" gives "::1"), and whether it is loopback (127.x,
// localhost, ::1): sync.coordinator.status_address needs the secret unless it is.
std::string status_host(const std::string& address);
bool is_loopback_host(const std::string& host);

// The resolved config as YAML, every key present.
std::string to_yaml(const Config& config);

// All valid key paths ("model.n_layer", ...), for help text and suggestions.
std::vector<std::string> config_keys();

}  // namespace loco
