// Parallel corpora (issue 13): the .tsv, .jsonl (source/target fields, dotted
// paths such as translation.de) and line-aligned two-file forms, every
// refusal (empty, non-UTF-8, NUL, truncated, wrong shape, mis-paired), the
// held-out split (the corpus one, by pair id, deterministic and the same in
// every form), and the T5 tokenisation of pairs (source + eos, labels =
// target + eos, decoder input = decoder_start + labels shifted right).
#include <QtTest>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/text/corpus.h"
#include "analysis/text/hf_components.h"
#include "analysis/text/parallel_corpus.h"
#include "analysis/text/tokenizer.h"
#include "error_of.h"
#include "testutil.h"

using namespace moefy;
using moefy::test::errorOf;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

// Byte-level tokenizer without merges: one id per byte (the id is the byte),
// plus <s> 256 and </s> 257; with `tmpl` a template adds <s> .. </s> (as
// test_corpus.cpp), without it encode() adds nothing (as T5's SentencePiece
// tokenizer before its eos). With `specials` false there is no </s> at all.
fs::path byteTokenizer(const fs::path& dir, bool tmpl, bool specials = true) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[hf::byteToUnicode(static_cast<uint8_t>(b))] = b;
  json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
            {"decoder", {{"type", "ByteLevel"}}}};
  if (specials) {
    j["model"]["vocab"]["<s>"] = 256;
    j["model"]["vocab"]["</s>"] = 257;
    j["added_tokens"] = {{{"id", 256}, {"content", "<s>"}, {"special", true}},
                         {{"id", 257}, {"content", "</s>"}, {"special", true}}};
  }
  if (tmpl)
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single",
                            {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                             {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
                           {"special_tokens",
                            {{"<s>", {{"id", "<s>"}, {"ids", {256}}, {"tokens", {"<s>"}}}},
                             {"</s>", {{"id", "</s>"}, {"ids", {257}}, {"tokens", {"</s>"}}}}}}};
  fs::path p = dir / "tokenizer.json";
  write(p, j.dump());
  return p;
}

bool startsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

std::vector<SentencePair> allPairs(const ParallelCorpus& c, Split split = Split::All, uint64_t seed = 0,
                                   double fraction = 0.05) {
  std::vector<SentencePair> out;
  c.forEachPair(
      [&](const SentencePair& p) {
        out.push_back(p);
        return true;
      },
      split, seed, fraction);
  return out;
}

std::vector<int64_t> ids(const std::vector<SentencePair>& pairs) {
  std::vector<int64_t> out;
  for (const auto& p : pairs) out.push_back(p.id);
  return out;
}

using Ids = std::vector<int32_t>;

}  // namespace

class TestParallelCorpus : public QObject {
  Q_OBJECT
  fs::path dir_;
  std::string p_;  // dir_ as a string, for the expected messages

 private Q_SLOTS:
  void initTestCase() {
    dir_ = test::freshDir("parallel_corpus");
    p_ = dir_.string();
  }

  void tsv() {
    // Byte order mark, \r\n, a blank line (skipped), UTF-8 text, spaces kept.
    write(dir_ / "p.tsv",
          "\xEF\xBB\xBF"
          "Das Haus.\tThe house.\r\n\n  \ngrün \t green\nx\ty");
    auto c = ParallelCorpus::open(dir_ / "p.tsv");
    QCOMPARE(c->kind(), std::string("tsv"));
    QCOMPARE(c->pairCount(), int64_t(3));
    QVERIFY(c->targetPath().empty());
    auto pairs = allPairs(*c);
    QCOMPARE(pairs.size(), size_t(3));
    QCOMPARE(pairs[0].source, std::string("Das Haus."));
    QCOMPARE(pairs[0].target, std::string("The house."));
    QCOMPARE(pairs[0].line, int64_t(1));
    QCOMPARE(pairs[1].id, int64_t(1));
    QCOMPARE(pairs[1].line, int64_t(4));
    QCOMPARE(pairs[1].where, p_ + "/p.tsv:4");
    QCOMPARE(pairs[1].source, std::string("grün "));
    QCOMPARE(pairs[1].target, std::string(" green"));
    QCOMPARE(pairs[2].target, std::string("y"));  // last line without '\n'
    // Random access gives the streamed pairs.
    for (const auto& want : pairs) {
      SentencePair got = c->pair(want.id);
      QCOMPARE(got.source, want.source);
      QCOMPARE(got.target, want.target);
      QCOMPARE(got.line, want.line);
      QCOMPARE(got.where, want.where);
    }
    QVERIFY_THROWS_EXCEPTION(ParameterError, c->pair(3));
    QVERIFY_THROWS_EXCEPTION(ParameterError, c->pair(-1));
    // Early stop.
    int seen = 0;
    c->forEachPair([&](const SentencePair&) { return ++seen < 2; });
    QCOMPARE(seen, 2);
  }

  void jsonl() {
    write(dir_ / "p.jsonl",
          "{\"source\": \"ein\\tTab\", \"target\": \"a\\ttab\", \"id\": 7}\n\n{\"target\": \"two\", \"source\": "
          "\"zwei\"}\n");
    auto c = ParallelCorpus::open(dir_ / "p.jsonl");
    QCOMPARE(c->kind(), std::string("jsonl"));
    auto pairs = allPairs(*c);
    QCOMPARE(pairs.size(), size_t(2));
    QCOMPARE(pairs[0].source, std::string("ein\tTab"));  // a tab inside a JSON string is text
    QCOMPARE(pairs[0].target, std::string("a\ttab"));
    QCOMPARE(pairs[1].source, std::string("zwei"));
    QCOMPARE(pairs[1].line, int64_t(3));
    QCOMPARE(c->pair(1).where, p_ + "/p.jsonl:3");
    // Fields by name, the translation form by dotted path; a key with a dot is itself first.
    write(dir_ / "wmt.ndjson",
          "{\"translation\": {\"de\": \"Haus\", \"en\": \"house\"}}\n"
          "{\"translation\": {\"en\": \"cat\", \"de\": \"Katze\"}, \"translation.de\": \"wins\"}\n");
    ParallelCorpusOptions o;
    o.sourceField = "translation.de";
    o.targetField = "translation.en";
    auto w = ParallelCorpus::open(dir_ / "wmt.ndjson", o);
    pairs = allPairs(*w);
    QCOMPARE(pairs.size(), size_t(2));
    QCOMPARE(pairs[0].source, std::string("Haus"));
    QCOMPARE(pairs[0].target, std::string("house"));
    QCOMPARE(pairs[1].source, std::string("wins"));
    QCOMPARE(pairs[1].target, std::string("cat"));
    // Swapped fields swap the direction.
    o.sourceField = "translation.en";
    o.targetField = "translation.de";
    QCOMPARE(ParallelCorpus::open(dir_ / "wmt.ndjson", o)->pair(0).source, std::string("house"));
  }

  void aligned() {
    // \r\n in one file, no final newline in the other: both have 3 lines.
    write(dir_ / "al" / "src.de", "eins\r\nzwei\r\ndrei\r\n");
    write(dir_ / "al" / "tgt.en", "one\ntwo\nthree");
    auto c = ParallelCorpus::openAligned(dir_ / "al" / "src.de", dir_ / "al" / "tgt.en");
    QCOMPARE(c->kind(), std::string("aligned"));
    QCOMPARE(c->pairCount(), int64_t(3));
    QCOMPARE(c->path().string(), p_ + "/al/src.de");
    QCOMPARE(c->targetPath().string(), p_ + "/al/tgt.en");
    auto pairs = allPairs(*c);
    QCOMPARE(pairs.size(), size_t(3));
    QCOMPARE(pairs[1].source, std::string("zwei"));
    QCOMPARE(pairs[1].target, std::string("two"));
    QCOMPARE(pairs[1].line, int64_t(2));
    QCOMPARE(pairs[2].target, std::string("three"));
    QCOMPARE(pairs[2].where, p_ + "/al/src.de:3 / " + p_ + "/al/tgt.en:3");
    for (const auto& want : pairs) {
      SentencePair got = c->pair(want.id);
      QCOMPARE(got.source, want.source);
      QCOMPARE(got.target, want.target);
      QCOMPARE(got.where, want.where);
    }
  }

  void refusals() {
    const std::string& p = p_;
    auto open = [&](const std::string& name, const std::string& text, const ParallelCorpusOptions& o = {}) {
      write(dir_ / "bad" / name, text);
      return errorOf([&] { ParallelCorpus::open(dir_ / "bad" / name, o); });
    };
    const std::string b = p + "/bad/";
    // Empty.
    QCOMPARE(open("empty.tsv", ""), b + "empty.tsv: empty parallel corpus (no non-blank lines)");
    QCOMPARE(open("blank.tsv", "\n \n\t\n"), b + "blank.tsv: empty parallel corpus (no non-blank lines)");
    QCOMPARE(open("empty.jsonl", "\n"), b + "empty.jsonl: empty parallel corpus (no JSON lines)");
    // .tsv shape: no tab, several tabs (a tab inside a text), an empty side.
    QCOMPARE(open("notab.tsv", "a\tb\njust one column\n"),
             b + "notab.tsv:2: no tab (a .tsv line is source<TAB>target)");
    std::string e = open("tabs.tsv", "a\tb\nc\td\n1\t2\t3\n");
    QVERIFY2(startsWith(e, b + "tabs.tsv:3: 2 tabs (a .tsv line is source<TAB>target; a tab inside a text cannot"),
             e.c_str());
    QVERIFY2(e.find("use .jsonl or two line-aligned files") != std::string::npos, e.c_str());
    QCOMPARE(open("nosrc.tsv", "a\tb\n\tb\n"), b + "nosrc.tsv:2: empty source text");
    QCOMPARE(open("notgt.tsv", "a\t \n"), b + "notgt.tsv:1: empty target text");
    // Not text: NUL byte, invalid UTF-8, a file cut inside a character.
    QCOMPARE(open("nul.tsv", std::string("a\tb\nc\td\0e\n", 10)), b + "nul.tsv:2: binary file (NUL byte at column 4)");
    QCOMPARE(open("latin1.tsv", "caf\xE9\tcoffee\n"), b + "latin1.tsv:1: invalid UTF-8 at column 4");
    QCOMPARE(open("cut.tsv", "ok\tfine\nsrc\tcaf\xC3"), b + "cut.tsv:2: invalid UTF-8 at column 8");
    // .jsonl shape: a line cut short, not an object, a missing or non-string field, an empty text.
    e = open("cut.jsonl", "{\"source\": \"a\", \"target\": \"b\"}\n{\"source\": \"a\", \"tar");
    QVERIFY2(startsWith(e, b + "cut.jsonl:2: malformed JSON"), e.c_str());
    QCOMPARE(open("array.jsonl", "[\"a\", \"b\"]\n"), b + "array.jsonl:1: expected a JSON object");
    QCOMPARE(open("nofield.jsonl", "{\"source\": \"a\", \"target\": \"b\"}\n{\"source\": \"a\"}\n"),
             b + "nofield.jsonl:2: missing field 'target'");
    QCOMPARE(open("number.jsonl", "{\"source\": 5, \"target\": \"b\"}\n"),
             b + "number.jsonl:1: field 'source' is not a string");
    QCOMPARE(open("null.jsonl", "{\"source\": \"a\", \"target\": null}\n"),
             b + "null.jsonl:1: field 'target' is not a string");
    QCOMPARE(open("emptytext.jsonl", "{\"source\": \"a\", \"target\": \"\"}\n"),
             b + "emptytext.jsonl:1: empty target text");
    ParallelCorpusOptions o;
    o.sourceField = "translation.de";
    o.targetField = "translation.en";
    QCOMPARE(open("path.jsonl", "{\"translation\": {\"de\": \"a\", \"en\": \"b\"}}\n{\"translation\": \"x\"}\n", o),
             b + "path.jsonl:2: missing field 'translation.de'");
    // Options that cannot apply.
    QCOMPARE(open("fields.tsv", "a\tb\n", o),
             b + "fields.tsv: source and target fields only apply to .jsonl parallel corpora");
    o.targetField = o.sourceField;
    QCOMPARE(open("same.jsonl", "{}\n", o), b + "same.jsonl: the source and target fields are both 'translation.de'");
    o.targetField = "";
    QCOMPARE(open("nofieldname.jsonl", "{}\n", o),
             b + "nofieldname.jsonl: the source and target field names must not be empty");
    e = open("plain.txt", "a\tb\n");
    QVERIFY2(startsWith(e, b + "plain.txt: a parallel corpus is a .tsv (source<TAB>target) or .jsonl file"), e.c_str());
    QCOMPARE(errorOf([&] { ParallelCorpus::open(dir_ / "bad" / "missing.tsv"); }),
             b + "missing.tsv: no such file or directory");
    fs::create_directories(dir_ / "bad" / "folder.tsv");
    QVERIFY(!errorOf([&] { ParallelCorpus::open(dir_ / "bad" / "folder.tsv"); }).empty());
    QVERIFY_THROWS_EXCEPTION(ParameterError, ParallelCorpus::open(dir_ / "bad" / "plain.txt"));
    QVERIFY_THROWS_EXCEPTION(FormatError, ParallelCorpus::open(dir_ / "bad" / "notab.tsv"));

    // Line-aligned files: unequal counts name both files and counts; a blank
    // line (an empty sentence) and bad text name the file and line.
    auto aligned = [&](const std::string& src, const std::string& tgt) {
      write(dir_ / "bad" / "a.src", src);
      write(dir_ / "bad" / "a.tgt", tgt);
      return errorOf([&] { ParallelCorpus::openAligned(dir_ / "bad" / "a.src", dir_ / "bad" / "a.tgt"); });
    };
    QCOMPARE(aligned("a\nb\nc\n", "x\ny\n"),
             b + "a.src has 3 lines, " + b +
                 "a.tgt has 2 lines: line-aligned source and target files must have the same number of lines");
    QCOMPARE(aligned("a\nb\n", "x\ny\nz"),
             b + "a.src has 2 lines, " + b +
                 "a.tgt has 3 lines: line-aligned source and target files must have the same number of lines");
    e = aligned("a\n\nc\n", "x\ny\nz\n");
    QVERIFY2(startsWith(e, b + "a.src:2: empty line (line-aligned files pair line N of both files"), e.c_str());
    e = aligned("a\nb\n", "x\n  \n");
    QVERIFY2(startsWith(e, b + "a.tgt:2: empty line"), e.c_str());
    QCOMPARE(aligned("a\nb\n", std::string("x\ny\0\n", 5)), b + "a.tgt:2: binary file (NUL byte at column 2)");
    QCOMPARE(aligned("a\nb\xFF\n", "x\ny\n"), b + "a.src:2: invalid UTF-8 at column 2");
    QCOMPARE(aligned("", ""), b + "a.src: empty parallel corpus (no lines)");
    QCOMPARE(errorOf([&] { ParallelCorpus::openAligned(dir_ / "bad" / "a.src", dir_ / "bad" / "a.src"); }),
             b + "a.src: the source and target files are the same file");
    QCOMPARE(errorOf([&] { ParallelCorpus::openAligned(dir_ / "bad" / "a.src", dir_ / "bad" / "none"); }),
             b + "none: no such file or directory");
  }

  // The held-out split is the corpus one (isHeldOut of the pair id):
  // deterministic, disjoint and complete, and the same pairs in every form.
  void split() {
    std::string tsv, src, tgt, jsonl;
    for (int i = 0; i < 200; ++i) {
      const std::string s = "quelle " + std::to_string(i), t = "target " + std::to_string(i);
      tsv += s + "\t" + t + "\n";
      src += s + "\n";
      tgt += t + "\n";
      jsonl += json({{"source", s}, {"target", t}}).dump() + "\n";
      if (i % 50 == 0) {
        tsv += "\n";  // blank lines do not shift the ids of .tsv and .jsonl pairs
        jsonl += "\n";
      }
    }
    write(dir_ / "split" / "p.tsv", tsv);
    write(dir_ / "split" / "p.jsonl", jsonl);
    write(dir_ / "split" / "src.txt", src);
    write(dir_ / "split" / "tgt.txt", tgt);
    auto t = ParallelCorpus::open(dir_ / "split" / "p.tsv");
    auto j = ParallelCorpus::open(dir_ / "split" / "p.jsonl");
    auto a = ParallelCorpus::openAligned(dir_ / "split" / "src.txt", dir_ / "split" / "tgt.txt");
    const uint64_t seed = 7;
    const double fraction = 0.2;
    auto train = allPairs(*t, Split::Train, seed, fraction);
    auto held = allPairs(*t, Split::HeldOut, seed, fraction);
    QCOMPARE(train.size() + held.size(), size_t(200));
    std::set<int64_t> heldIds;
    for (const auto& p : held) heldIds.insert(p.id);
    for (const auto& p : train) QVERIFY(!heldIds.count(p.id));
    for (int64_t id = 0; id < 200; ++id) QCOMPARE(isHeldOut(id, seed, fraction), heldIds.count(id) > 0);
    qInfo("held-out split: %zu of 200 pairs at fraction 0.2", held.size());
    QVERIFY(held.size() >= 20 && held.size() <= 60);
    // The text of a pair follows its id.
    for (const auto& p : held) QCOMPARE(p.target, "target " + std::to_string(p.id));
    // Deterministic, the same in every form; another seed gives another split.
    QCOMPARE(ids(allPairs(*t, Split::HeldOut, seed, fraction)), ids(held));
    QCOMPARE(ids(allPairs(*j, Split::HeldOut, seed, fraction)), ids(held));
    QCOMPARE(ids(allPairs(*a, Split::HeldOut, seed, fraction)), ids(held));
    QCOMPARE(ids(allPairs(*a, Split::Train, seed, fraction)), ids(train));
    QVERIFY(ids(allPairs(*t, Split::HeldOut, seed + 1, fraction)) != ids(held));
    QCOMPARE(allPairs(*j, Split::All).size(), size_t(200));
    QVERIFY_THROWS_EXCEPTION(ParameterError, allPairs(*t, Split::Train, seed, 1.5));
  }

  void tokenisation() {
    // shiftRight is HF's T5 _shift_right: start, then the labels but the last.
    QCOMPARE(shiftRight({4, 55, 1}, 0), (Ids{0, 4, 55}));
    QCOMPARE(shiftRight({1}, 3), (Ids{3}));
    QCOMPARE(shiftRight({}, 3), (Ids{3}));
    // A template that ends with </s> already: eos is not doubled.
    auto withTmpl = Tokenizer::fromFile(byteTokenizer(dir_ / "tok_tmpl", true));
    QCOMPARE(withTmpl->eosId().value_or(-1), 257);
    QCOMPARE(encodeWithEos(*withTmpl, "ab", 257), (Ids{256, 97, 98, 257}));
    // No template (T5's SentencePiece tokenizer): eos appended.
    auto plain = Tokenizer::fromFile(byteTokenizer(dir_ / "tok_plain", false));
    QCOMPARE(plain->eosId().value_or(-1), 257);
    QCOMPARE(plain->encode("ab", true), (Ids{97, 98}));
    QCOMPARE(encodeWithEos(*plain, "ab", 257), (Ids{97, 98, 257}));
    QCOMPARE(encodeWithEos(*plain, "", 257), (Ids{257}));
    QVERIFY_THROWS_EXCEPTION(ParameterError, encodeWithEos(*plain, "ab", -1));
    // A pair: source + eos, labels = target + eos, decoder input = start + labels shifted right.
    Seq2SeqOptions o;
    o.decoderStartId = 0;
    Seq2SeqIds s = tokenizePair(*plain, "hi", "ok!", o);
    QCOMPARE(s.source, (Ids{'h', 'i', 257}));
    QCOMPARE(s.labels, (Ids{'o', 'k', '!', 257}));
    QCOMPARE(s.decoderInput, (Ids{0, 'o', 'k', '!'}));
    QCOMPARE(s.decoderInput.size(), s.labels.size());
    o.decoderStartId = 5;
    o.eosId = 3;  // an explicit eos wins over the tokenizer's
    s = tokenizePair(*withTmpl, "hi", "ok", o);
    QCOMPARE(s.source, (Ids{256, 'h', 'i', 257, 3}));
    QCOMPARE(s.decoderInput, (Ids{5, 256, 'o', 'k', 257}));
    // A tokenizer without any eos and no explicit one.
    auto noEos = Tokenizer::fromFile(byteTokenizer(dir_ / "tok_noeos", false, false));
    QVERIFY(!noEos->eosId());
    QVERIFY2(errorOf([&] { tokenizePair(*noEos, "a", "b", Seq2SeqOptions{}); }).find("no end-of-sequence token") !=
                 std::string::npos,
             "no eos");

    // A corpus, streamed with its split.
    std::string tsv;
    for (int i = 0; i < 60; ++i) tsv += "src " + std::to_string(i) + "\ttgt " + std::to_string(i) + "\n";
    write(dir_ / "tok.tsv", tsv);
    auto c = ParallelCorpus::open(dir_ / "tok.tsv");
    Seq2SeqOptions co;
    co.decoderStartId = 0;
    co.split = Split::HeldOut;
    co.seed = 7;
    co.heldOutFraction = 0.2;
    std::vector<int64_t> seen;
    int64_t differ = 0;
    forEachTokenizedPair(*c, *plain, co, [&](const TokenizedPair& t) {
      seen.push_back(t.id);
      const SentencePair p = c->pair(t.id);
      Seq2SeqIds want = tokenizePair(*plain, p.source, p.target, co);
      if (t.ids.source != want.source || t.ids.labels != want.labels || t.ids.decoderInput != want.decoderInput ||
          t.line != p.line || t.line != t.id + 1)
        ++differ;
      return true;
    });
    QCOMPARE(differ, int64_t(0));
    QVERIFY(!seen.empty());
    QCOMPARE(seen, ids(allPairs(*c, Split::HeldOut, 7, 0.2)));
    JobContext job;
    job.cancel();
    QVERIFY_THROWS_EXCEPTION(CancelledError, forEachTokenizedPair(
                                                 *c, *plain, co, [](const TokenizedPair&) { return true; }, &job));
  }
};

QTEST_GUILESS_MAIN(TestParallelCorpus)
#include "test_parallel_corpus.moc"
