// `loco launch --emit DIR`: the scripts say what --dry-run plans (every rank's arguments, the
// torchrun-style variables, the coordinator's address and the secret file as parameters), pass
// `bash -n`, replace only an earlier --emit's files, and the shell scripts run a real 2-site run
// on loopback as separate processes; a site script stops its ranks when one fails or when it is
// sent SIGTERM. Slurm is not installed here: the .sbatch files are checked as text, by bash -n,
// and run the same run under stand-ins for srun and scontrol.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "loco/config.h"
#include "loco/metrics.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loco::testing::read_text;
using loco::testing::run_loco;

namespace {

// A diloco run of `sites` (as --set sync.sites) over the small model: `rounds` rounds of 2 steps.
loco::Config sites_config(const std::string& run_dir, const std::string& sites, int64_t rounds) {
  loco::Config c = loco::testing::process_config(run_dir, 2, rounds, 2);
  loco::apply_override(c, "sync.sites=" + sites);
  c.sync.workers = int64_t(c.sync.sites.size());
  c.train.eval_every = 0;
  c.sync.timeout_s = 30;
  return c;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The plan's lines "[label] VAR=value ... loco ARGS": label -> (variables, arguments).
struct PlannedPart {
  std::string env, args;
};
std::map<std::string, PlannedPart> planned(const std::string& plan) {
  std::map<std::string, PlannedPart> parts;
  std::istringstream in(plan);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '[') continue;
    size_t close = line.find("] "), loco = line.find("loco ", close);
    parts[line.substr(1, close - 1)] = {line.substr(close + 2, loco - close - 2),
                                        line.substr(loco + 5)};
  }
  return parts;
}

// `args` as a script runs them: the config beside it, the coordinator's address a parameter.
std::string scripted(std::string args, const std::string& config, const std::string& address) {
  args.replace(args.find("--config " + config), 9 + config.size(), "--config \"$LOCO_CONFIG\"");
  if (!address.empty() && contains(args, "--coordinator " + address))
    args.replace(args.find("--coordinator " + address), 14 + address.size(),
                 "--coordinator \"$LOCO_COORDINATOR\"");
  return "\"$LOCO\" " + args;
}

std::string masked_ports(const std::string& s) {
  return std::regex_replace(s, std::regex("MASTER_PORT=[0-9]+"), "MASTER_PORT=N");
}

// Waits up to `timeout_s` for a spawned process; its exit code, or -1 (then it is killed).
int wait_for(pid_t pid, double timeout_s) {
  int status = 0;
  bool ended =
      loco::testing::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout_s);
  if (!ended) {
    ::kill(pid, SIGTERM);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST(Emit, ScriptsAgreeWithTheDryRun) {
  std::string dir = loco::testing::temp_dir();
  loco::Config c = sites_config(dir + "/run", "a:2,b:1", 3);
  std::ofstream(dir + "/secret") << "s3cret\n";
  c.sync.coordinator.secret_file = dir + "/secret";
  std::string config = loco::testing::write_config(dir, c), out = dir + "/emit";
  auto emit = run_loco("launch --emit " + out + " --config " + config + " --set run.seed=7");
  ASSERT_EQ(emit.exit_code, 0) << emit.output;
  auto dry = run_loco("launch --dry-run --config " + config + " --set run.seed=7");
  ASSERT_EQ(dry.exit_code, 0) << dry.output;

  // plan.txt is what --dry-run prints (the sites' free ports aside).
  std::string plan = read_text(out + "/plan.txt");
  EXPECT_EQ(masked_ports(plan), masked_ports(dry.output));
  EXPECT_EQ(read_text(out + "/config.yaml"),
            "# " + config + ", copied by `loco launch --emit`\n" + read_text(config));
  std::vector<std::string> scripts = {"coordinator.sh", "site-a.sh", "site-a.sbatch", "site-b.sh",
                                      "site-b.sbatch"};
  for (const auto& s : scripts) {
    struct stat st {};
    ASSERT_EQ(::stat((out + "/" + s).c_str(), &st), 0) << s;
    EXPECT_EQ(st.st_mode & 0777, 0755u) << s;
    auto syntax = loco::testing::run_command("bash -n " + out + "/" + s);
    EXPECT_EQ(syntax.exit_code, 0) << s << ": " << syntax.output;
    EXPECT_EQ(read_text(out + "/" + s).rfind("#!/usr/bin/env bash\n", 0), 0u) << s;
  }

  // Every rank's arguments, as planned, in its site's scripts; its variables in each.
  auto parts = planned(plan);
  ASSERT_EQ(parts.size(), 4u) << plan;
  const std::string address = c.sync.coordinator.address;
  std::string coord = read_text(out + "/coordinator.sh");
  EXPECT_TRUE(contains(coord, "exec " + scripted(parts["coord"].args, config, "") +
                                  " --set \"sync.coordinator.address=$LOCO_LISTEN\""))
      << coord;
  EXPECT_TRUE(contains(coord, "LOCO_LISTEN=${LOCO_LISTEN:-" + address + "}")) << coord;
  for (const auto& [label, part] : parts) {
    if (label == "coord") continue;
    std::string site = label.substr(0, label.find('/')), rank = label.substr(label.find('/') + 1);
    std::string sh = read_text(out + "/site-" + site + ".sh");
    std::string sbatch = read_text(out + "/site-" + site + ".sbatch");
    std::string command = scripted(part.args, config, address);
    EXPECT_TRUE(contains(part.args, "--set run.seed=7")) << part.args;
    std::string env;
    if (site == "a") {
      env = "RANK=" + rank + " WORLD_SIZE=2 LOCAL_RANK=" + rank +
            " LOCAL_WORLD_SIZE=2 MASTER_ADDR=\"$MASTER_ADDR\" MASTER_PORT=\"$MASTER_PORT\" ";
      std::smatch port;
      ASSERT_TRUE(std::regex_search(part.env, port, std::regex("MASTER_PORT=([0-9]+)")));
      EXPECT_TRUE(contains(sh, "MASTER_PORT=${MASTER_PORT:-" + port[1].str() + "}")) << sh;
      EXPECT_TRUE(contains(sh, "MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}")) << sh;
      EXPECT_TRUE(contains(sbatch,
                           "MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "
                           "\"$SLURM_JOB_NODELIST\" | head -n 1)}"))
          << sbatch;
      EXPECT_TRUE(contains(sbatch,
                           "RANK=\"$SLURM_PROCID\" WORLD_SIZE=\"$SLURM_NTASKS\" "
                           "LOCAL_RANK=\"$SLURM_LOCALID\" LOCAL_WORLD_SIZE="))
          << sbatch;
    } else {
      EXPECT_TRUE(part.env.empty()) << part.env;  // a site of one rank is a plain worker
      EXPECT_FALSE(contains(sh, "MASTER_PORT")) << sh;
    }
    std::string secret =
        " ${LOCO_SECRET_FILE:+--set \"sync.coordinator.secret_file="
        "$LOCO_SECRET_FILE\"} \"$@\"";
    EXPECT_TRUE(contains(sh, "# [" + label + "]\n" + env + command + secret + " &\n")) << sh;
    EXPECT_TRUE(contains(sbatch, "srun --kill-on-bad-exit=1 bash -c '")) << sbatch;
    EXPECT_TRUE(contains(sbatch, command + secret + "' site-" + site + ".sbatch \"$@\"\n"))
        << sbatch;
    for (const std::string* s : {&sh, &sbatch}) {
      EXPECT_TRUE(contains(*s, "LOCO_COORDINATOR=${LOCO_COORDINATOR:-" + address + "}")) << *s;
      EXPECT_TRUE(contains(*s, "LOCO_SECRET_FILE=${LOCO_SECRET_FILE:-" + dir + "/secret}")) << *s;
      EXPECT_TRUE(contains(*s, "LOCO_CONFIG=${LOCO_CONFIG:-$HERE/config.yaml}")) << *s;
    }
    std::string ranks = site == "a" ? "2" : "1";
    EXPECT_TRUE(contains(sbatch, "#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=" + ranks + "\n"))
        << sbatch;
    EXPECT_TRUE(contains(sbatch, "#SBATCH --job-name=loco-test-" + site + "\n")) << sbatch;
    EXPECT_TRUE(contains(sbatch, "if [ \"${SLURM_NTASKS:-0}\" != " + ranks + " ]")) << sbatch;
    EXPECT_FALSE(contains(sbatch, "--gpus-per-node")) << sbatch;  // train.device cpu
  }
}

TEST(Emit, ReplacesOnlyAnEarlierEmit) {
  std::string dir = loco::testing::temp_dir(), out = dir + "/emit";
  std::string sites = loco::testing::write_config(dir, sites_config(dir + "/run", "a:2,b:1", 3));
  ASSERT_EQ(run_loco("launch --emit " + out + " --config " + sites).exit_code, 0);
  EXPECT_TRUE(fs::exists(out + "/site-b.sbatch"));

  // Plain DiLoCo workers: one "site" per worker; site-a and site-b's files go.
  loco::Config workers = loco::testing::process_config(dir + "/run2", 2, 3, 2);
  workers.train.device = "cuda";
  std::string plain = dir + "/workers.yaml";
  std::ofstream(plain) << loco::to_yaml(workers);
  auto again = run_loco("launch --emit " + out + " --config " + plain);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"config.yaml", "plan.txt", "coordinator.sh", "site-w0.sh",
                                          "site-w0.sbatch", "site-w1.sh", "site-w1.sbatch"}));
  std::string w1 = read_text(out + "/site-w1.sh");
  EXPECT_TRUE(contains(w1, "--coordinator \"$LOCO_COORDINATOR\" --name w1")) << w1;
  EXPECT_TRUE(contains(read_text(out + "/site-w1.sbatch"), "#SBATCH --gpus-per-node=1"));

  // Anything else in DIR: refused before a file is written.
  std::ofstream(out + "/notes.txt") << "mine\n";
  auto refused = run_loco("launch --emit " + out + " --config " + sites);
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_TRUE(contains(refused.output, "it holds notes.txt, which --emit did not write"))
      << refused.output;
  EXPECT_TRUE(fs::exists(out + "/site-w0.sh"));
  EXPECT_FALSE(fs::exists(out + "/site-a.sh"));
}

TEST(Emit, ShellScriptsRunATwoSiteRunOnLoopback) {
  std::string dir = loco::testing::temp_dir(), out = dir + "/emit";
  loco::Config c = sites_config(dir + "/run", "a:2,b:1", 3);
  std::string config = loco::testing::write_config(dir, c);
  ASSERT_EQ(run_loco("launch --emit " + out + " --config " + config).exit_code, 0);
  // The coordinator's address and a secret as parameters: not the config's port, and a secret
  // the coordinator requires, so a site that did not pass it on could not join.
  std::ofstream(dir + "/secret") << "s3cret\n";
  std::string address = "127.0.0.1:" + std::to_string(loco::testing::free_port());
  std::string env = "env LOCO=" + std::string(LOCO_BINARY) + " LOCO_SECRET_FILE=" + dir +
                    "/secret LOCO_LISTEN=" + address + " LOCO_COORDINATOR=" + address + " ";
  pid_t coord =
      loco::testing::spawn_shell(env + "bash " + out + "/coordinator.sh", dir + "/coord.log");
  pid_t a = loco::testing::spawn_shell(env + "bash " + out + "/site-a.sh", dir + "/a.log");
  pid_t b = loco::testing::spawn_shell(env + "bash " + out + "/site-b.sh", dir + "/b.log");
  EXPECT_EQ(wait_for(a, 240), 0) << read_text(dir + "/a.log");
  EXPECT_EQ(wait_for(b, 60), 0) << read_text(dir + "/b.log");
  EXPECT_EQ(wait_for(coord, 60), 0) << read_text(dir + "/coord.log");

  EXPECT_TRUE(contains(read_text(dir + "/coord.log"), address)) << read_text(dir + "/coord.log");
  ASSERT_TRUE(fs::exists(dir + "/run/coordinator/summary.json"));
  auto rounds = loco::read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_EQ(rounds.size(), 3u);
  EXPECT_EQ(rounds.back().at("round").get<int64_t>(), 3);
  for (const auto& r : rounds) EXPECT_EQ(r.at("workers").get<int64_t>(), 2) << r.dump();
  // Site a's two ranks trained (rank 1 writes into worker-0/rank-1).
  EXPECT_EQ(loco::read_metrics(dir + "/run/worker-0/rank-1/metrics.jsonl").size(), 6u);
  EXPECT_EQ(loco::read_metrics(dir + "/run/worker-1/metrics.jsonl").size(), 6u);
}

TEST(Emit, SiteScriptStopsItsRanksOnAFailureAndOnSigterm) {
  std::string dir = loco::testing::temp_dir(), out = dir + "/emit";
  std::string config = loco::testing::write_config(dir, sites_config(dir + "/run", "a:2,b:1", 3));
  ASSERT_EQ(run_loco("launch --emit " + out + " --config " + config).exit_code, 0);
  // A stand-in for loco: notes its rank and pid, fails as rank FAIL_RANK, else sleeps.
  std::string fake = dir + "/fake-loco";
  std::ofstream(fake) << "#!/bin/sh\necho \"$RANK $$\" >> " << dir << "/started\n"
                      << "if [ \"$RANK\" = \"${FAIL_RANK:-none}\" ]; then exit 3; fi\n"
                      << "exec sleep 60\n";
  fs::permissions(fake, fs::perms::owner_all);
  auto started_pids = [&] {
    std::vector<pid_t> pids;
    std::istringstream in(read_text(dir + "/started"));
    for (int rank, pid; in >> rank >> pid;) pids.push_back(pid);
    return pids;
  };
  auto all_gone = [&] {
    for (pid_t p : started_pids())
      if (::kill(p, 0) == 0) return false;
    return true;
  };

  auto t0 = std::chrono::steady_clock::now();
  pid_t failing = loco::testing::spawn_shell(
      "env LOCO=" + fake + " FAIL_RANK=1 bash " + out + "/site-a.sh", dir + "/fail.log");
  EXPECT_EQ(wait_for(failing, 30), 3) << read_text(dir + "/fail.log");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
  EXPECT_TRUE(contains(read_text(dir + "/fail.log"), "a rank exited with 3; stopping the others"));
  EXPECT_TRUE(loco::testing::wait_until(all_gone, 10));

  fs::remove(dir + "/started");
  pid_t site = loco::testing::spawn_shell("env LOCO=" + fake + " bash " + out + "/site-a.sh",
                                          dir + "/term.log");
  ASSERT_TRUE(loco::testing::wait_until([&] { return started_pids().size() == 2; }, 20));
  ::kill(site, SIGTERM);
  EXPECT_EQ(wait_for(site, 20), 128 + SIGTERM) << read_text(dir + "/term.log");
  EXPECT_TRUE(loco::testing::wait_until(all_gone, 10));
}

TEST(Emit, SlurmScriptsRunATwoSiteRunUnderAStandInSrun) {
  // Slurm is not installed: stand-ins for srun (every task of the job at once, with its
  // SLURM_PROCID and SLURM_LOCALID) and scontrol (the first node, the job's script) run the
  // .sbatch files as sbatch would, from a copy in a spool directory as Slurm runs them.
  std::string dir = loco::testing::temp_dir(), out = dir + "/emit", bin = dir + "/bin";
  loco::Config c = sites_config(dir + "/run", "a:2,b:1", 2);
  std::string config = loco::testing::write_config(dir, c);
  ASSERT_EQ(run_loco("launch --emit " + out + " --config " + config).exit_code, 0);
  fs::create_directories(bin);
  std::ofstream(bin + "/srun") << "#!/usr/bin/env bash\n"
                               << "while [[ \"$1\" == --* ]]; do shift; done\npids=()\n"
                               << "for ((i = 0; i < SLURM_NTASKS; ++i)); do\n"
                               << "  SLURM_PROCID=$i SLURM_LOCALID=$i \"$@\" &\n  pids+=($!)\n"
                               << "done\nstatus=0\n"
                               << "for p in \"${pids[@]}\"; do wait \"$p\" || status=$?; done\n"
                               << "exit $status\n";
  std::ofstream(bin + "/scontrol") << "#!/bin/sh\ncase \"$1 $2\" in\n"
                                   << "  'show hostnames') echo 127.0.0.1 ;;\n"
                                   << "  'show job') echo \"   Command=$FAKE_COMMAND\" ;;\nesac\n";
  for (const char* f : {"/srun", "/scontrol"}) fs::permissions(bin + f, fs::perms::owner_all);
  for (std::string site : {"a", "b"}) {
    fs::create_directories(dir + "/spool-" + site);
    fs::copy_file(out + "/site-" + site + ".sbatch", dir + "/spool-" + site + "/slurm_script");
  }
  std::string common = "env LOCO=" + std::string(LOCO_BINARY) + " PATH=" + bin + ":$PATH ";
  auto job = [&](const std::string& site, int tasks) {
    return common + "SLURM_JOB_ID=7 SLURM_NTASKS=" + std::to_string(tasks) +
           " SLURM_NTASKS_PER_NODE=" + std::to_string(tasks) +
           " SLURM_JOB_NODELIST=node1 FAKE_COMMAND=" + out + "/site-" + site + ".sbatch bash " +
           dir + "/spool-" + site + "/slurm_script";
  };
  // Outside a job, or with another task count, the batch script refuses to start.
  auto outside = loco::testing::run_command(common + "bash " + out + "/site-a.sbatch");
  EXPECT_EQ(outside.exit_code, 2);
  EXPECT_TRUE(contains(outside.output, "site-a.sbatch: submit it with sbatch")) << outside.output;
  auto wrong = loco::testing::run_command(job("a", 3));
  EXPECT_EQ(wrong.exit_code, 2);
  EXPECT_TRUE(contains(wrong.output, "site a runs 2 rank(s) but the job has 3 tasks"))
      << wrong.output;

  pid_t coord =
      loco::testing::spawn_shell(common + "bash " + out + "/coordinator.sh", dir + "/coord.log");
  pid_t a = loco::testing::spawn_shell(job("a", 2), dir + "/a.log");
  pid_t b = loco::testing::spawn_shell(job("b", 1), dir + "/b.log");
  EXPECT_EQ(wait_for(a, 240), 0) << read_text(dir + "/a.log");
  EXPECT_EQ(wait_for(b, 60), 0) << read_text(dir + "/b.log");
  EXPECT_EQ(wait_for(coord, 60), 0) << read_text(dir + "/coord.log");
  auto rounds = loco::read_metrics(dir + "/run/coordinator/metrics.jsonl");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) EXPECT_EQ(r.at("workers").get<int64_t>(), 2) << r.dump();
  EXPECT_EQ(loco::read_metrics(dir + "/run/worker-0/rank-1/metrics.jsonl").size(), 4u);
}
