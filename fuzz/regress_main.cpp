// Runs a fuzz target without libFuzzer (any compiler): every file named on
// the command line, or found in a folder named there, is fed once to
// LLVMFuzzerTestOneInput. CTest runs each target over its seed corpus
// (fuzz/corpus/TARGET) this way, so a fixed finding stays fixed.
//
//   fuzz_regress_json fuzz/corpus/json                 # the seeds
//   fuzz_regress_json --mutate 20000 fuzz/corpus/json   # plus random mutants
//
// --mutate N adds N inputs made from the seeds by byte flips, insertions,
// deletions, truncation, block duplication and splicing (seeded, so a run is
// repeatable with --seed S). It is a blind fuzzer for builds without clang;
// libFuzzer's coverage-guided campaigns (MOEFY_BUILD_FUZZ) find more.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

// The input being run, written to ./fuzz-crash-input if the target aborts or
// crashes, so that a mutant's finding can be replayed and added to the seeds.
const std::string* g_current = nullptr;

extern "C" void onCrash(int sig) {
  if (g_current) {
    const int fd = ::open("fuzz-crash-input", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      (void)!::write(fd, g_current->data(), g_current->size());
      ::close(fd);
    }
    static const char msg[] = "fuzz regress: the failing input is in ./fuzz-crash-input\n";
    (void)!::write(2, msg, sizeof msg - 1);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string mutate(const std::vector<std::string>& seeds, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n ? static_cast<size_t>(rng() % n) : 0; };
  std::string s = seeds[pick(seeds.size())];
  const int steps = 1 + static_cast<int>(rng() % 4);
  static const char* tokens[] = {
      "{",     "}",    "[",   "]",    "\"",   ":",     ",",       "-1",   "0",  "4294967296",
      "1e999", "-0.0", "NaN", "null", "true", "\"a\"", "\\u0000", "\xff", "\n", "18446744073709551615"};
  for (int k = 0; k < steps; ++k) {
    switch (rng() % 7) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // set a random byte
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(rng());
        break;
      case 2:  // delete a range
        if (!s.empty()) {
          size_t at = pick(s.size());
          s.erase(at, 1 + pick(std::min<size_t>(16, s.size() - at)));
        }
        break;
      case 3:  // insert a token
        s.insert(pick(s.size() + 1), tokens[pick(std::size(tokens))]);
        break;
      case 4:  // truncate
        s.resize(pick(s.size() + 1));
        break;
      case 5: {  // duplicate a block
        if (s.empty()) break;
        size_t at = pick(s.size()), len = 1 + pick(std::min<size_t>(64, s.size() - at));
        s.insert(pick(s.size() + 1), s.substr(at, len));
        break;
      }
      default: {  // splice with another seed
        const std::string& o = seeds[pick(seeds.size())];
        s = s.substr(0, pick(s.size() + 1)) + o.substr(pick(o.size() + 1));
        break;
      }
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  long mutants = 0;
  uint64_t seed = 1;
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--mutate") && i + 1 < argc) {
      mutants = std::atol(argv[++i]);
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::filesystem::is_directory(argv[i])) {
      for (const auto& e : std::filesystem::directory_iterator(argv[i]))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.emplace_back(argv[i]);
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s [--mutate N] [--seed S] FILE_OR_FOLDER...\n", argv[0]);
    return 2;
  }
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, onCrash);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> seeds;
  for (const auto& f : files) {
    seeds.push_back(slurp(f));
    const std::string& s = seeds.back();
    g_current = &s;
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  std::mt19937_64 rng(seed);
  for (long i = 0; i < mutants; ++i) {
    const std::string s = mutate(seeds, rng);
    g_current = &s;
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%zu seed inputs and %ld mutants ran cleanly in %.1f s\n", files.size(), mutants, secs);
  return 0;
}
