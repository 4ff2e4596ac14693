// Tokenizer throughput: MB/s of UTF-8 text on one core for the Llama-3
// tokenizer on the parity text set (1.25 MB, 1329 documents), next to the
// reference implementation (@huggingface/tokenizers, pure JS on node) measured
// in the same run by scripts/tokref/bench.mjs.
//
// Usage: bench_tokenizer [--repeats N] [--tokenizer NAME] [--source REPO_DIR]
//   NAME is a file stem in tests/data/tokenizer (llama3, qwen3, gpt2, ...).
// Needs node and scripts/tokref/node_modules (npm ci) for the baseline.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "analysis/common/error.h"
#include "analysis/text/tokenizer.h"
#include "bench/bench_common.h"

namespace fs = std::filesystem;

namespace {

std::string runCapture(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    status = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  status = pclose(p);
  return out;
}

std::string quote(const fs::path& p) { return "'" + p.string() + "'"; }

fs::path findSource(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* s = std::getenv("MOEFY_SOURCE_DIR")) return s;
  fs::path exe = fs::read_symlink("/proc/self/exe");
  for (fs::path d = exe.parent_path(); !d.empty() && d != d.root_path(); d = d.parent_path())
    if (fs::exists(d / "tests" / "data" / "tokenizer" / "textset.txt.gz")) return d;
  for (fs::path d = fs::current_path(); !d.empty() && d != d.root_path(); d = d.parent_path())
    if (fs::exists(d / "tests" / "data" / "tokenizer" / "textset.txt.gz")) return d;
  throw moefy::IoError("cannot find the repository (tests/data/tokenizer); pass --source DIR");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int repeats = 3;
    std::string name = "llama3", source;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      const char* usage = "usage: bench_tokenizer [--repeats N] [--tokenizer NAME] [--source REPO_DIR]\n";
      const char* prog = "bench_tokenizer";
      if (moefy::bench::isHelp(argv[i])) {
        std::cout << usage;
        return 0;
      } else if (a == "--repeats") {
        repeats = static_cast<int>(
            moefy::bench::intArg(prog, usage, "--repeats", moefy::bench::valueOf(prog, usage, argc, argv, i), 1, 1000));
        ++i;
      } else if (a == "--tokenizer") {
        name = moefy::bench::valueOf(prog, usage, argc, argv, i++);
      } else if (a == "--source") {
        source = moefy::bench::valueOf(prog, usage, argc, argv, i++);
      } else {
        moefy::bench::badArg(prog, usage, argv[i]);
      }
    }
    const fs::path repo = findSource(source);
    const fs::path data = repo / "tests" / "data" / "tokenizer";
    // An unknown name is refused with the known ones, before anything is made.
    const std::string suffix = ".tokenizer.json.gz";
    const fs::path gz = data / (name + suffix);
    if (!fs::exists(gz)) {
      std::vector<std::string> known;
      for (const auto& e : fs::directory_iterator(data)) {
        const std::string f = e.path().filename().string();
        if (f.size() > suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0)
          known.push_back(f.substr(0, f.size() - suffix.size()));
      }
      std::sort(known.begin(), known.end());
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw moefy::ParameterError("--tokenizer " + name + ": no " + gz.string() + " (known: " + list + ")");
    }
    char tmpl[] = "/tmp/bench_tokenizer.XXXXXX";
    if (!mkdtemp(tmpl)) throw moefy::IoError("cannot create a temporary folder");
    const fs::path tmp = tmpl;
    const moefy::bench::RemoveOnExit ownTmp(tmp);  // also on an error below
    int st = 0;
    runCapture("gzip -dc " + quote(gz) + " > " + quote(tmp / "tokenizer.json"), st);
    if (st != 0) throw moefy::IoError(gz.string() + ": cannot gunzip");
    runCapture("gzip -dc " + quote(data / "textset.txt.gz") + " > " + quote(tmp / "textset.txt"), st);
    if (st != 0) throw moefy::IoError((data / "textset.txt.gz").string() + ": cannot gunzip");

    std::ifstream in(tmp / "textset.txt", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> docs;
    size_t a = 0;
    for (size_t i = 0; i <= all.size(); ++i)
      if (i == all.size() || all[i] == '\0') {
        docs.push_back(all.substr(a, i - a));
        a = i + 1;
      }
    size_t bytes = 0;
    for (const auto& d : docs) bytes += d.size();

    auto t0 = std::chrono::steady_clock::now();
    auto tok = moefy::Tokenizer::fromFile(tmp / "tokenizer.json");
    double loadS = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < repeats; ++r) {
      auto s = std::chrono::steady_clock::now();
      tokens = 0;
      for (const auto& d : docs) tokens += tok->encode(d, true).size();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count());
    }
    const double ours = static_cast<double>(bytes) / 1e6 / best;
    std::printf("text set        %zu documents, %.2f MB\n", docs.size(), bytes / 1e6);
    std::printf("tokenizer       %s (%s), load %.2f s\n", name.c_str(), tok->kind().c_str(), loadS);
    std::printf("moefy (C++)     %.3f MB/s  (%zu tokens, best of %d, one thread)\n", ours, tokens, repeats);

    const fs::path script = repo / "scripts" / "tokref" / "bench.mjs";
    int rc = 0;
    if (!fs::exists(repo / "scripts" / "tokref" / "node_modules" / "@huggingface" / "tokenizers")) {
      std::printf("reference       unavailable: run 'npm ci' in scripts/tokref (needs node)\n");
      rc = 3;
    } else {
      std::string out = runCapture("node " + quote(script) + " " + quote(tmp / "tokenizer.json") + " " + quote(tmp / "textset.txt") + " " +
                                       std::to_string(repeats) + " 2>&1",
                                   st);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(out.substr(out.find('{')));
      } catch (const std::exception&) {
        std::printf("reference       failed: %s\n", out.c_str());
        rc = 3;
      }
      if (rc == 0) {
        const double ref = j["mb_per_s"].get<double>();
        std::printf("reference (JS)  %.3f MB/s  (%d tokens, @huggingface/tokenizers on node, best of %d)\n", ref,
                    j["tokens"].get<int>(), repeats);
        if (j["tokens"].get<size_t>() != tokens) std::printf("WARNING: token counts differ (%zu vs %d)\n", tokens, j["tokens"].get<int>());
        std::printf("ratio           %.2fx the reference (target >= 3x)\n", ours / ref);
      }
    }
    return rc;
  } catch (const moefy::ParameterError& e) {  // a bad argument, as badArg's: exit 2
    std::cerr << "bench_tokenizer: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "bench_tokenizer: " << e.what() << "\n";
    return 1;
  }
}
