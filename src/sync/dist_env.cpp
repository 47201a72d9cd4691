// Reading and checking the torchrun-style variables (see include/loco/dist_env.h).
#include "loco/dist_env.h"

#include <optional>

#include "loco/config.h"

namespace loco {
namespace {

using Lookup = std::function<const char*(const char*)>;

std::optional<std::string> get_var(const Lookup& lookup, const char* name) {
  const char* value = lookup(name);
  if (!value || !*value) return std::nullopt;
  return std::string(value);
}

int parse_int(const char* name, const std::string& text) {
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size())
    throw ConfigError(std::string(name) + "='" + text + "' is not an integer");
  return value;
}

std::string str(int64_t v) {
  return std::to_string(v);
}

void read_world(DistEnv& env, int64_t workers, const Lookup& lookup, const std::string& key) {
  auto rank = get_var(lookup, "RANK"), world = get_var(lookup, "WORLD_SIZE");
  if (!world)
    throw ConfigError("RANK is set but WORLD_SIZE is not: set WORLD_SIZE=" + str(workers) + " (" +
                      key + ")");
  if (!rank)
    throw ConfigError("WORLD_SIZE is set but RANK is not: set RANK to this process's rank (0.." +
                      str(workers - 1) + ")");
  env.world_size = parse_int("WORLD_SIZE", *world);
  if (env.world_size != workers)
    throw ConfigError("WORLD_SIZE=" + *world + " but " + key + " is " + str(workers) +
                      ": set them equal");
  env.rank = parse_int("RANK", *rank);
  if (env.rank < 0 || env.rank >= env.world_size)
    throw ConfigError("RANK=" + *rank + " is out of range for WORLD_SIZE=" + *world + " (0.." +
                      str(env.world_size - 1) + ")");
}

void read_local(DistEnv& env, const Lookup& lookup) {
  auto local_world = get_var(lookup, "LOCAL_WORLD_SIZE"),
       local_rank = get_var(lookup, "LOCAL_RANK");
  env.local_world_size = local_world ? parse_int("LOCAL_WORLD_SIZE", *local_world) : env.world_size;
  if (env.local_world_size < 1 || env.local_world_size > env.world_size)
    throw ConfigError("LOCAL_WORLD_SIZE=" + str(env.local_world_size) +
                      " must be in 1..WORLD_SIZE (" + str(env.world_size) + ")");
  env.local_rank =
      local_rank ? parse_int("LOCAL_RANK", *local_rank) : env.rank % env.local_world_size;
  if (env.local_rank < 0 || env.local_rank >= env.local_world_size)
    throw ConfigError("LOCAL_RANK=" + str(env.local_rank) +
                      " is out of range for LOCAL_WORLD_SIZE=" + str(env.local_world_size) +
                      " (0.." + str(env.local_world_size - 1) + ")");
}

void read_master(DistEnv& env, const Lookup& lookup) {
  auto addr = get_var(lookup, "MASTER_ADDR"), port = get_var(lookup, "MASTER_PORT");
  if (!addr) throw ConfigError("MASTER_ADDR is not set (the address of rank 0, e.g. 127.0.0.1)");
  if (!port) throw ConfigError("MASTER_PORT is not set (a free TCP port on rank 0, e.g. 29500)");
  env.master_addr = *addr;
  bool digits = port->find_first_not_of("0123456789") == std::string::npos && port->size() <= 5;
  env.master_port = digits ? std::stoi(*port) : 0;
  if (env.master_port < 1 || env.master_port > 65535)
    throw ConfigError("MASTER_PORT='" + *port + "' is not a TCP port (1-65535)");
}

}  // namespace

DistEnv read_dist_env(int64_t workers, const Lookup& lookup, const std::string& key) {
  DistEnv env;
  if (!get_var(lookup, "RANK") && !get_var(lookup, "WORLD_SIZE")) {
    if (workers == 1) return env;
    throw ConfigError(key + " is " + str(workers) +
                      " but RANK and WORLD_SIZE are not set: start every rank with RANK, "
                      "WORLD_SIZE, MASTER_ADDR and MASTER_PORT (loco launch and torchrun do)");
  }
  read_world(env, workers, lookup, key);
  read_local(env, lookup);
  if (env.world_size > 1) read_master(env, lookup);
  return env;
}

}  // namespace loco
