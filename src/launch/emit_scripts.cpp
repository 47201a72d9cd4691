// The scripts of `loco launch --emit` (emit.h), from the planned parts (plan.h): coordinator.sh;
// per site (a site of sync.sites, a plain DiLoCo worker w0, w1, .., DDP's ranks as "ddp", a
// single trainer as "train") site-NAME.sh, which starts the site's ranks on one machine, and
// site-NAME.sbatch, which starts them with srun in a Slurm allocation. Every rank runs the
// arguments --dry-run prints for it, except that --config names the config.yaml beside the script
// and the coordinator's address, the secret file and MASTER_ADDR/MASTER_PORT are parameters with
// the plan's values as defaults. docs/multisite.md ("Running on real clusters: --emit").
#include <cctype>
#include <map>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "emit.h"

namespace loco::launcher {
namespace {

// The ranks of one site, in rank order.
struct Site {
  std::string name;
  std::vector<const Part*> ranks;
};

std::vector<Site> sites_of(const std::vector<Part>& parts) {
  std::vector<Site> sites;
  for (const auto& p : parts) {
    if (p.site.empty()) continue;
    if (sites.empty() || sites.back().name != p.site) sites.push_back({p.site, {}});
    sites.back().ranks.push_back(&p);
  }
  for (const auto& s : sites)
    for (const Part* p : s.ranks)
      if (p->args != s.ranks.front()->args)  // plan_sites gives a site's ranks one command
        throw std::logic_error("--emit: the ranks of " + s.name + " differ in their arguments");
  return sites;
}

// A parameter of a script: an environment variable, the plan's value its default (or `expr`, a
// shell expression, when the script works it out); `assign`: false when the script reads it
// without giving it a default.
struct Param {
  Param(std::string var, std::string value, std::string meaning, std::string expr = "",
        bool assign = true)
      : var(std::move(var)),
        value(std::move(value)),
        meaning(std::move(meaning)),
        expr(std::move(expr)),
        assign(assign) {}
  std::string var, value, meaning, expr;
  bool assign;
};

// What the scripts of this run take as parameters.
struct Params {
  std::vector<Param> common;  // LOCO, LOCO_CONFIG (and the coordinator's secret)
  std::string address;        // the plan's sync.coordinator.address ("" without a coordinator)
};

Params params_of(const Config& config, bool coordinator) {
  Params p;
  p.common = {{"LOCO", "loco", "the loco binary"},
              {"LOCO_CONFIG", "", "the config (default: config.yaml beside this script)",
               "$HERE/config.yaml"}};
  if (coordinator) {
    p.address = config.sync.coordinator.address;
    const std::string& secret = config.sync.coordinator.secret_file;
    p.common.push_back({"LOCO_SECRET_FILE", secret,
                        std::string("the coordinator's shared secret file (docs/security.md)") +
                            (secret.empty() ? " (default: none)" : "")});
  }
  return p;
}

// A part's `loco` command: its arguments as the dry run prints them but for --config (the copy
// beside the script) and --coordinator (a parameter), then the coordinator's listen address (the
// coordinator), the secret file when one is given, and the script's own arguments.
std::string loco_command(const Part& p, bool coordinated) {
  std::string line = "\"$LOCO\"";
  for (size_t i = 0; i < p.args.size(); ++i) {
    const std::string& prev = i ? p.args[i - 1] : "";
    if (prev == "--config")
      line += " \"$LOCO_CONFIG\"";
    else if (prev == "--coordinator")
      line += " \"$LOCO_COORDINATOR\"";
    else
      line += " " + shell_quote(p.args[i]);
  }
  if (p.site.empty()) line += " --set \"sync.coordinator.address=$LOCO_LISTEN\"";
  if (coordinated)
    line += " ${LOCO_SECRET_FILE:+--set \"sync.coordinator.secret_file=$LOCO_SECRET_FILE\"}";
  return line + " \"$@\"";
}

enum class Target { kShell, kSlurm };

// A part's torchrun-style variables (include/loco/dist_env.h): on one machine the rank's own as
// planned, under Slurm the task's (SLURM_PROCID, ...); MASTER_ADDR and MASTER_PORT are the
// script's parameters.
std::string env_prefix(const Part& p, Target target) {
  static const std::map<std::string, std::string> kSlurm = {
      {"RANK", "\"$SLURM_PROCID\""},
      {"WORLD_SIZE", "\"$SLURM_NTASKS\""},
      {"LOCAL_RANK", "\"$SLURM_LOCALID\""},
      {"LOCAL_WORLD_SIZE", "\"${SLURM_NTASKS_PER_NODE:-$SLURM_NTASKS}\""}};
  std::string line;
  for (const auto& [k, v] : p.env) {
    std::string value = shell_quote(v);
    if (k == "MASTER_ADDR" || k == "MASTER_PORT")
      value = "\"$" + k + "\"";
    else if (target == Target::kSlurm && kSlurm.count(k))
      value = kSlurm.at(k);
    line += k + "=" + value + " ";
  }
  return line;
}

std::string env_value(const Part& p, const std::string& key) {
  for (const auto& [k, v] : p.env)
    if (k == key) return v;
  return "";
}

// The header: what the script runs, then its parameters and their defaults.
std::string header(const std::string& what, const std::vector<Param>& ps) {
  std::string h = what;
  h += "#\n# Parameters (environment variables; the defaults are the plan's):\n";
  for (const auto& p : ps) {
    std::string var = p.var + std::string(p.var.size() < 17 ? 17 - p.var.size() : 1, ' ');
    h += "#   " + var + p.meaning + (p.value.empty() ? "" : " (default: " + p.value + ")") + "\n";
  }
  return h;
}

// The parameters' defaults, after HERE (the script's directory) is set to `here`.
std::string assignments(const std::vector<Param>& ps, const std::string& here) {
  std::string s = "HERE=" + here + "\n";
  for (const auto& p : ps) {
    if (!p.assign) continue;
    std::string def = !p.expr.empty() ? p.expr : p.value.empty() ? "" : shell_quote(p.value);
    s += p.var + "=${" + p.var + ":-" + def + "}\n";
  }
  return s;
}

const char* kHereShell = "$(cd \"$(dirname \"${BASH_SOURCE[0]}\")\" && pwd)";

Emitted coordinator_script(const Config& config, const Part& coord, const Params& params,
                           const std::string& notes) {
  auto ps = params.common;
  ps.insert(ps.begin() + 2,
            Param{"LOCO_LISTEN", params.address, "HOST:PORT it listens on (0.0.0.0:PORT: all)"});
  std::string what = "# coordinator.sh: the coordinator of run " + config.run.name +
                     " (sync.mode " + mode_name(config.sync.mode) +
                     ").\n# Start it first, on a host every site's rank 0 reaches; give the " +
                     "sites LOCO_COORDINATOR=THIS_HOST:PORT.\n" + notes;
  std::string text = "#!/usr/bin/env bash\n" + header(what, ps) +
                     "# Arguments are passed on to `loco coordinator` (--resume: continue from "
                     "its newest checkpoint).\n\n" +
                     assignments(ps, kHereShell) + "exec " + loco_command(coord, true) + "\n";
  return {"coordinator.sh", text};
}

// The site's parameters: the common ones, the coordinator's address, its rank 0's host and port.
std::vector<Param> site_params(const Site& site, const Params& params, Target target) {
  auto ps = params.common;
  if (!params.address.empty())
    ps.insert(ps.begin() + 2, Param{"LOCO_COORDINATOR", params.address,
                                    "the coordinator's HOST:PORT, as this site reaches it"});
  const Part& rank0 = *site.ranks.front();
  if (!env_value(rank0, "MASTER_ADDR").empty()) {
    if (target == Target::kShell)
      ps.push_back({"MASTER_ADDR", env_value(rank0, "MASTER_ADDR"), "the site's rank 0 host"});
    else
      ps.push_back({"MASTER_ADDR", "", "the site's rank 0 host (default: the job's first node)",
                    "$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)"});
    ps.push_back({"MASTER_PORT", env_value(rank0, "MASTER_PORT"),
                  "a free TCP port there for the site's rendezvous"});
  }
  return ps;
}

// "# FILE: site a of run NAME (sync.mode diloco): 2 rank(s) of `loco worker`,\n# HOW.\n"
std::string site_what(const Config& config, const Site& site, const std::string& file,
                      const std::string& how) {
  std::string kind = config.sync.sites.empty() ? "the processes" : "site " + site.name;
  return "# " + file + ": " + kind + " of run " + config.run.name + " (sync.mode " +
         mode_name(config.sync.mode) + "): " + std::to_string(site.ranks.size()) +
         " rank(s) of `loco " + site.ranks.front()->args.front() + "`,\n# " + how + ".\n";
}

const char* kArgsNote =
    "# Arguments are passed on to every rank: --resume (the site rejoins the run it left),\n"
    "# --set key=value (e.g. this site's TLS client certificate: --set "
    "sync.coordinator.tls.cert=...).\n"
    "# Run it from the directory the config's relative paths (data, run.dir) are relative to.\n";

Emitted shell_script(const Config& config, const Site& site, const Params& params,
                     const std::string& notes) {
  const std::string file = "site-" + site.name + ".sh";
  auto ps = site_params(site, params, Target::kShell);
  std::string what = site_what(config, site, file, "all on this machine, in the background") +
                     "# It waits for them and exits with the first failing rank's code (stopping "
                     "the others);\n# SIGTERM or SIGINT is forwarded to the ranks.\n" +
                     notes;
  std::ostringstream s;
  s << "#!/usr/bin/env bash\n"
    << header(what, ps) << kArgsNote << "\n"
    << assignments(ps, kHereShell) << "\npids=()\nstopped=0\n"
    << "stop() {\n  [ \"$stopped\" = 1 ] || [ ${#pids[@]} -eq 0 ] || kill -TERM \"${pids[@]}\" "
       "2>/dev/null\n  stopped=1\n}\n"
    << "trap stop TERM INT\n\n";
  for (const Part* p : site.ranks)
    s << "# [" << p->label << "]\n"
      << env_prefix(*p, Target::kShell) << loco_command(*p, !params.address.empty()) << " &\n"
      << "pids+=($!)\n";
  s << "\n# Wait for every rank; the first that fails stops the others and gives its exit code.\n"
    << "status=0\nwhile [ ${#pids[@]} -gt 0 ]; do\n  left=()\n  for pid in \"${pids[@]}\"; do\n"
    << "    if kill -0 \"$pid\" 2>/dev/null; then left+=(\"$pid\"); continue; fi\n"
    << "    wait \"$pid\"\n    code=$?\n"
    << "    if [ \"$code\" -ne 0 ] && [ \"$status\" -eq 0 ]; then\n"
    << "      status=$code\n      echo \"" << file
    << ": a rank exited with $code; stopping the others\" >&2\n      stop\n    fi\n  done\n"
    << "  pids=(${left[@]+\"${left[@]}\"})\n  [ ${#pids[@]} -eq 0 ] || sleep 1\ndone\n"
    << "exit \"$status\"\n";
  return {file, s.str()};
}

std::string job_name(const Config& config, const Site& site) {
  std::string name = "loco-" + config.run.name + "-" + site.name;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  return name;
}

// The Slurm directory of the script: sbatch runs a copy of it, so $0 does not say where it lies.
const char* kHereSlurm =
    "${LOCO_EMIT_DIR:-$(dirname \"$(scontrol show job \"$SLURM_JOB_ID\" | sed -n "
    "'s/^ *Command=\\([^ ]*\\).*/\\1/p' | head -n 1)\")}";

Emitted slurm_script(const Config& config, const Site& site, const Params& params,
                     const std::string& notes) {
  const std::string file = "site-" + site.name + ".sbatch";
  const size_t n = site.ranks.size();
  auto ps = site_params(site, params, Target::kSlurm);
  ps.insert(ps.begin() + 2,
            Param("LOCO_EMIT_DIR", "", "this script's directory (default: `scontrol show job`'s)",
                  "", false));
  std::string what = site_what(config, site, file, "one Slurm task each, started by srun") +
                     "# Every task's RANK, WORLD_SIZE and LOCAL_RANK come from SLURM_PROCID, "
                     "SLURM_NTASKS and SLURM_LOCALID.\n# Submit it with `sbatch " +
                     file +
                     "`; more nodes: sbatch --nodes=N --ntasks-per-node=" + std::to_string(n) +
                     "/N " + file + ".\n" + notes;
  const Part& rank0 = *site.ranks.front();
  std::string task =
      env_prefix(rank0, Target::kSlurm) + loco_command(rank0, !params.address.empty());
  std::ostringstream s;
  s << "#!/usr/bin/env bash\n#SBATCH --job-name=" << job_name(config, site)
    << "\n#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=" << n << "\n";
  if (config.train.device.rfind("cuda", 0) == 0)
    s << "#SBATCH --gpus-per-node=" << n << "  # every task sees the node's GPUs, picks "
      << "cuda:LOCAL_RANK\n";
  s << "#SBATCH --output=%x-%j.out\n"
    << header(what, ps) << kArgsNote << "\n"
    << "if [ -z \"${SLURM_JOB_ID:-}\" ]; then\n  echo \"" << file << ": submit it with sbatch "
    << "(site-" << site.name << ".sh runs the site without Slurm)\" >&2\n  exit 2\nfi\n"
    << "if [ \"${SLURM_NTASKS:-0}\" != " << n << " ]; then\n  echo \"" << file << ": "
    << (config.sync.sites.empty() ? "" : "site ") << site.name << " runs " << n
    << " rank(s) but the job has ${SLURM_NTASKS:-no} tasks\" >&2\n"
    << "  exit 2\nfi\n"
    << assignments(ps, kHereSlurm) << "export";
  for (const auto& p : ps)
    if (p.assign) s << " " << p.var;
  s << "\n\n# [" << rank0.label << "]";
  if (n > 1) s << " .. [" << site.ranks.back()->label << "]: one task per rank";
  s << "\n"
    << "srun --kill-on-bad-exit=1 bash -c " << shell_quote(task) << " " << shell_quote(file)
    << " \"$@\"\n";
  return {file, s.str()};
}

// What the scripts leave to the operator that `loco launch` would do.
std::string notes_of(const Config& config, bool scheduled) {
  std::string n =
      "# Restarts (sync.on_failure) are `loco launch`'s: run a script again with "
      "--resume to bring it back.\n";
  if (scheduled)
    n += "# sync.schedule (" + config.sync.schedule + ") is not replayed here: start and stop " +
         "the site scripts as it says.\n";
  return n;
}

}  // namespace

std::vector<Emitted> emitted_scripts(const Config& config, const std::vector<Part>& parts,
                                     bool scheduled) {
  const Part* coord = parts.front().label == "coord" ? &parts.front() : nullptr;
  Params params = params_of(config, coord != nullptr);
  std::string notes = notes_of(config, scheduled);
  std::vector<Emitted> files;
  if (coord) files.push_back(coordinator_script(config, *coord, params, notes));
  for (const auto& site : sites_of(parts)) {
    files.push_back(shell_script(config, site, params, notes));
    files.push_back(slurm_script(config, site, params, notes));
  }
  return files;
}

}  // namespace loco::launcher
