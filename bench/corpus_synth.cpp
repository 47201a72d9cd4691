// Writes a synthetic token stream of N uniformly random tokens (a seeded splitmix64 stream), for
// bench/corpus.sh's memory benchmark: a corpus of gigabytes without encoding gigabytes of text.
// The shards are ordinary ones (ShardWriter: OUT/train.bin, OUT/train-000001.bin, ...,
// OUT/train.index.json, headers and checksums), so `loco train` reads them as it reads a
// prepared corpus.
// Usage: corpus_synth OUT_FILE TOKENS VOCAB_SIZE [SHARD_TOKENS]   (OUT_FILE: e.g. OUT/train.bin)
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "loco/progress.h"
#include "loco/shard.h"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: corpus_synth OUT_FILE TOKENS VOCAB_SIZE [SHARD_TOKENS]\n");
    return 2;
  }
  const int64_t total = std::atoll(argv[2]);
  const auto vocab = static_cast<uint32_t>(std::atoll(argv[3]));
  const int64_t shard_tokens = argc == 5 ? std::atoll(argv[4]) : int64_t(1) << 26;
  if (total < 1 || vocab < 2 || shard_tokens < 1) {
    std::fprintf(stderr, "error: TOKENS, VOCAB_SIZE and SHARD_TOKENS must be positive\n");
    return 2;
  }
  try {
    loco::ShardWriter writer(argv[1], vocab, shard_tokens);
    loco::Progress progress("synth", total, "tokens");
    std::vector<int32_t> block;
    uint64_t state = 12345;
    for (int64_t done = 0; done < total;) {
      block.resize(static_cast<size_t>(std::min<int64_t>(1 << 20, total - done)));
      for (auto& t : block) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        t = static_cast<int32_t>((z ^ (z >> 31)) % vocab);
      }
      writer.append(block);
      done += static_cast<int64_t>(block.size());
      progress.update(done);
    }
    writer.finish();
    progress.finish();
    spdlog::info("corpus_synth: {} tokens in {} shards from {}", writer.tokens(), writer.shards(),
                 argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
