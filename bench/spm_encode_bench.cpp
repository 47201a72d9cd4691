// SentencePiece's own encode speed, for bench/corpus.sh to set beside `loco data prepare`'s:
// the same text file (one document per line) and tokenizer.model, encoded by
// sentencepiece::SentencePieceProcessor::Encode directly on N threads (thread t takes lines
// t, t + N, ...), no loco code in between. Prints one line: MB of text, seconds, MB/s.
// Usage: spm_encode_bench MODEL TEXT THREADS
// (Links only SentencePiece: its private protobuf must not meet LibTorch's; see
// src/data/sentencepiece_shim.cpp.)
#include <sentencepiece_processor.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: spm_encode_bench MODEL TEXT THREADS\n");
    return 2;
  }
  sentencepiece::SentencePieceProcessor processor;
  if (!processor.Load(argv[1]).ok()) {
    std::fprintf(stderr, "error: %s: cannot load the SentencePiece model\n", argv[1]);
    return 1;
  }
  std::ifstream in(argv[2]);
  if (!in) {
    std::fprintf(stderr, "error: %s: cannot open\n", argv[2]);
    return 1;
  }
  std::vector<std::string> lines;
  size_t bytes = 0;
  for (std::string line; std::getline(in, line);) {
    bytes += line.size();
    lines.push_back(std::move(line));
  }
  const int threads = std::max(1, std::atoi(argv[3]));
  std::vector<size_t> tokens(threads, 0);
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<int> ids;
      for (size_t i = t; i < lines.size(); i += threads) {
        processor.Encode(lines[i], &ids);
        tokens[t] += ids.size();
      }
    });
  }
  for (auto& thread : pool) thread.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  size_t total = 0;
  for (size_t n : tokens) total += n;
  std::printf(
      "spm_encode_bench: %.1f MB of text, %zu lines, %zu tokens in %.2fs on %d threads: "
      "%.2f MB/s\n",
      bytes / 1e6, lines.size(), total, seconds, threads, bytes / 1e6 / seconds);
  return 0;
}
