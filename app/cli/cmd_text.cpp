// moefy tokenize / moefy corpus: run a model's tokenizer, describe a corpus.
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/text/corpus.h"
#include "analysis/text/corpus_options.h"
#include "analysis/text/tokenizer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

std::unique_ptr<Tokenizer> openTokenizer(const std::string& p) {
  std::filesystem::path path(p);
  if (std::filesystem::is_directory(path)) return Tokenizer::fromModelDir(path);
  return Tokenizer::fromFile(path);
}

// Tokens as printable strings for a terminal (control characters escaped).
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// JSON strings must be valid UTF-8: token strings always are, decoded text is
// (invalid bytes become U+FFFD).
int runTokenize(const Args& a) {
  int modes = a.has("text") + a.has("file") + a.has("decode");
  if (modes != 1) throw ParameterError("give exactly one of --text, --file or --decode");
  // The id list is checked before any file is read.
  const std::vector<long long> decodeIds =
      a.has("decode") ? parseIntList(a.text("decode"), "--decode") : std::vector<long long>();
  auto tok = openTokenizer(a.pos(0, "MODEL_DIR|TOKENIZER_FILE"));
  const bool special = !a.flag("no-special");
  if (a.has("decode")) {
    std::vector<int32_t> ids;
    for (long long v : decodeIds) {
      if (v < 0 || v >= tok->vocabSize()) throw ParameterError("--decode: id " + std::to_string(v) + " is outside the vocabulary [0, " + std::to_string(tok->vocabSize()) + ")");
      ids.push_back(static_cast<int32_t>(v));
    }
    std::string text = tok->decode(ids, a.flag("skip-special"));
    if (a.json()) {
      printJson({{"tokenizer", tok->kind()}, {"ids", ids}, {"text", text}});
    } else {
      std::cout << text << "\n";
    }
    return 0;
  }
  std::string text;
  if (a.has("text")) {
    text = a.text("text");
  } else {
    std::ifstream in(a.text("file"), std::ios::binary);
    if (!in) throw IoError(a.text("file") + ": cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  std::vector<int32_t> ids = tok->encode(text, special);
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) tokens.push_back(tok->idToToken(id));
  if (a.json()) {
    printJson({{"tokenizer", tok->kind()}, {"count", ids.size()}, {"ids", ids}, {"tokens", tokens}});
    return 0;
  }
  std::cout << "tokenizer " << tok->kind() << "\n"
            << "count     " << ids.size() << "\n"
            << "ids       ";
  for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
  std::cout << "\ntokens    ";
  for (size_t i = 0; i < tokens.size(); ++i) std::cout << (i ? " " : "") << "[" << printable(tokens[i]) << "]";
  std::cout << "\n";
  return 0;
}

int runCorpus(const Args& a) {
  auto corpus = Corpus::open(a.pos(0, "CORPUS"), corpusOptionsFrom(a));
  std::unique_ptr<Tokenizer> tok;
  if (!a.text("model").empty()) tok = openTokenizer(a.text("model"));
  auto job = makeCliJob(a);
  job->setStage("corpus");

  const auto& cats = corpus->categories();
  struct Stat {
    int64_t docs = 0, bytes = 0, tokens = 0;
  };
  std::vector<Stat> perCat(cats.size() + 1);  // last: unlabelled
  Stat total;
  int64_t seen = 0;
  corpus->forEachDocument([&](const Document& d) {
    job->checkCancel();
    job->setProgress(static_cast<double>(++seen) / static_cast<double>(corpus->documentCount()));
    Stat& s = perCat[d.category < 0 ? cats.size() : static_cast<size_t>(d.category)];
    int64_t n = tok ? static_cast<int64_t>(tok->encode(d.text, !a.flag("no-special")).size()) : 0;
    for (Stat* t : {&s, &total}) {
      t->docs += 1;
      t->bytes += static_cast<int64_t>(d.text.size());
      t->tokens += n;
    }
    return true;
  });

  nlohmann::json j;
  j["corpus"] = corpus->path().string();
  j["kind"] = corpus->kind();
  j["documents"] = corpus->documentCount();
  j["bytes"] = total.bytes;
  if (tok) {
    j["tokenizer"] = tok->kind();
    j["tokens"] = total.tokens;
  }
  nlohmann::json jc = nlohmann::json::array();
  for (size_t c = 0; c <= cats.size(); ++c) {
    if (c == cats.size() && perCat[c].docs == 0) continue;
    nlohmann::json e = {{"name", c < cats.size() ? nlohmann::json(cats[c]) : nlohmann::json(nullptr)},
                        {"documents", perCat[c].docs},
                        {"bytes", perCat[c].bytes}};
    if (tok) e["tokens"] = perCat[c].tokens;
    jc.push_back(e);
  }
  j["categories"] = jc;

  if (tok && a.has("seq-len")) {
    const SequenceOptions so = sequenceOptionsFrom(a);
    const std::string split = a.text("split");
    job->setStage("sequences");
    int64_t nseq = 0, ntok = 0;
    std::map<int64_t, int> docs;
    forEachSequence(*corpus, *tok, so, [&](const Sequence& s) {
      ++nseq;
      ntok += static_cast<int64_t>(s.ids.size());
      docs[s.docId] = 1;
      return true;
    }, job.get());
    j["sequences"] = {{"seq_len", so.seqLen}, {"stride", so.stride == 0 ? so.seqLen : so.stride}, {"split", split},
                      {"count", nseq}, {"tokens", ntok}, {"documents", docs.size()}};
  }

  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << "corpus     " << j["corpus"].get<std::string>() << " (" << corpus->kind() << ")\n"
            << "documents  " << corpus->documentCount() << "\n"
            << "bytes      " << total.bytes << "\n";
  if (tok) std::cout << "tokenizer  " << tok->kind() << "\n" << "tokens     " << total.tokens << "\n";
  if (!cats.empty()) {
    std::cout << "categories " << cats.size() << "\n";
    for (const auto& e : jc) {
      std::string name = e["name"].is_null() ? "(none)" : e["name"].get<std::string>();
      std::cout << "  " << name << ": " << e["documents"] << " documents";
      if (tok) std::cout << ", " << e["tokens"] << " tokens";
      std::cout << "\n";
    }
  }
  if (j.contains("sequences")) {
    const auto& s = j["sequences"];
    std::cout << "sequences  " << s["count"] << " of <= " << s["seq_len"] << " tokens (stride " << s["stride"] << ", split "
              << s["split"].get<std::string>() << "), " << s["tokens"] << " tokens from " << s["documents"] << " documents\n";
  }
  return 0;
}

const OptionTable& tokenizeOptionTable() {
  static const OptionTable table = [] {
    OptionTable t("tokenize", "encode text to token ids, or decode ids",
                  "moefy tokenize MODEL_DIR|TOKENIZER_FILE (--text \"...\" | --file F | --decode 1,2,3)\n"
                  "                      [--no-special] [--skip-special] [--json]\n",
                  "Loads tokenizer.json (or a SentencePiece tokenizer.model) from a model folder or a file,\n"
                  "and prints the ids and token strings of the text. The post-processor's special tokens\n"
                  "(BOS/EOS, [CLS]/[SEP]) are added unless --no-special. --decode prints the text of a\n"
                  "comma-separated id list (special tokens kept unless --skip-special).\n"
                  "Invalid UTF-8 in the input is replaced by U+FFFD before encoding.\n");
    t.positionals({"MODEL_DIR|TOKENIZER_FILE"}, 1)
        .text("text", "TEXT", std::nullopt, "the text to encode")
        .text("file", "FILE", std::nullopt, "encode the contents of FILE")
        .text("decode", "1,2,3", std::nullopt, "decode a comma-separated id list")
        .flag("no-special", "do not add the post-processor's special tokens")
        .flag("skip-special", "--decode: leave special tokens out of the text")
        .flag("json", "print the result as JSON");
    return t;
  }();
  return table;
}

CommandRegistrar tokenizeCmd(tokenizeOptionTable(), runTokenize);
CommandRegistrar corpusCmd(corpusOptionTable(), runCorpus);

}  // namespace

}  // namespace moefy::cli
