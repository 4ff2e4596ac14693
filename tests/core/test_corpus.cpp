// Corpora: .txt / directory / .jsonl readers, their errors, and the
// tokenisation into fixed-length sequences; plus the tokenize/corpus CLI.
#include <QtTest>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/text/corpus.h"
#include "analysis/text/hf_components.h"
#include "analysis/text/hf_tokenizer.h"
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

// Byte-level tokenizer without merges: one id per byte, plus <s> and </s>
// added by a template. Token counts are then byte counts (+2).
fs::path byteTokenizer(const fs::path& dir) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[hf::byteToUnicode(static_cast<uint8_t>(b))] = b;
  vocab["<s>"] = 256;
  vocab["</s>"] = 257;
  json tmpl = {{"type", "TemplateProcessing"},
               {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
               {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {256}}, {"tokens", {"<s>"}}}}, {"</s>", {{"id", "</s>"}, {"ids", {257}}, {"tokens", {"</s>"}}}}}}};
  json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
            {"post_processor", tmpl},
            {"decoder", {{"type", "ByteLevel"}}},
            {"added_tokens", {{{"id", 256}, {"content", "<s>"}, {"special", true}}, {{"id", 257}, {"content", "</s>"}, {"special", true}}}}};
  fs::path p = dir / "tokenizer.json";
  write(p, j.dump());
  return p;
}

}  // namespace

class TestCorpus : public QObject {
  Q_OBJECT
  fs::path dir_;
  std::unique_ptr<Tokenizer> tok_;

 private Q_SLOTS:
  void initTestCase() {
    dir_ = test::freshDir("corpus");
    tok_ = Tokenizer::fromFile(byteTokenizer(dir_));
    QCOMPARE(tok_->bosId().value_or(-1), 256);
    QCOMPARE(tok_->eosId().value_or(-1), 257);
  }

  void txtCorpus() {
    write(dir_ / "a.txt", "\xEF\xBB\xBF" "First doc line one.\nline two\n\n\n  \nSecond doc.\r\n\r\nThird\n");
    auto c = Corpus::open(dir_ / "a.txt");
    QCOMPARE(c->kind(), std::string("txt"));
    QCOMPARE(c->documentCount(), int64_t(3));
    std::vector<Document> docs;
    c->forEachDocument([&](const Document& d) {
      docs.push_back(d);
      return true;
    });
    QCOMPARE(docs.size(), size_t(3));
    QCOMPARE(docs[0].text, std::string("First doc line one.\nline two"));
    QCOMPARE(docs[1].text, std::string("Second doc."));
    QCOMPARE(docs[2].text, std::string("Third"));
    QCOMPARE(docs[1].source, (dir_ / "a.txt").string() + ":6");
    QCOMPARE(docs[2].id, int64_t(2));
    QCOMPARE(c->document(1).text, docs[1].text);
    QCOMPARE(c->document(2).source, docs[2].source);
    QVERIFY_THROWS_EXCEPTION(ParameterError, c->document(3));
  }

  void dirCorpus() {
    write(dir_ / "tree" / "news" / "1.txt", "news one");
    write(dir_ / "tree" / "news" / "deep" / "2.txt", "news two\nline");
    write(dir_ / "tree" / "fiction" / "x.txt", "story");
    write(dir_ / "tree" / "top.txt", "unlabelled");
    write(dir_ / "tree" / ".hidden" / "h.txt", "skip me");
    write(dir_ / "tree" / "empty.txt", "");
    auto c = Corpus::open(dir_ / "tree");
    QCOMPARE(c->kind(), std::string("dir"));
    QCOMPARE(c->documentCount(), int64_t(4));
    QCOMPARE(c->categories(), (std::vector<std::string>{"fiction", "news"}));
    std::map<std::string, int32_t> cat;
    c->forEachDocument([&](const Document& d) {
      cat[d.text] = d.category;
      return true;
    });
    QCOMPARE(cat["story"], 0);
    QCOMPARE(cat["news one"], 1);
    QCOMPARE(cat["news two\nline"], 1);
    QCOMPARE(cat["unlabelled"], -1);
    QCOMPARE(cat.count("skip me"), size_t(0));
  }

  void dirCorpusWithSymbolicLinks() {
    // Category = the first-level folder a file is listed under, whatever a
    // link points to; linked folders are read; a link loop is refused.
    auto counts = [](const fs::path& root) {
      auto c = Corpus::open(root);
      std::map<std::string, int> n;
      c->forEachDocument([&](const Document& d) {
        ++n[d.category < 0 ? std::string("-") : c->categories()[static_cast<size_t>(d.category)]];
        return true;
      });
      return n;
    };
    // A hub-cache snapshot: every file is a relative link into blobs/.
    const fs::path hub = dir_ / "hub";
    const std::vector<std::pair<std::string, std::string>> docs = {
        {"news", "News one."}, {"news", "News two."}, {"fiction", "Once upon a time."}, {"fiction", "The end."}};
    for (size_t i = 0; i < docs.size(); ++i) {
      write(hub / "blobs" / ("b" + std::to_string(i)), docs[i].second);
      fs::create_directories(hub / "snap" / "train" / docs[i].first);
      fs::create_symlink("../../../blobs/b" + std::to_string(i),
                         hub / "snap" / "train" / docs[i].first / ("doc" + std::to_string(i) + ".txt"));
    }
    QCOMPARE(counts(hub / "snap" / "train"), (std::map<std::string, int>{{"fiction", 2}, {"news", 2}}));
    // A file shared by two categories counts in both.
    write(dir_ / "cross" / "cat_a" / "y.txt", "Shared document.");
    write(dir_ / "cross" / "cat_b" / "z.txt", "Own document.");
    fs::create_symlink("../cat_a/y.txt", dir_ / "cross" / "cat_b" / "x.txt");
    QCOMPARE(counts(dir_ / "cross"), (std::map<std::string, int>{{"cat_a", 1}, {"cat_b", 2}}));
    // A category folder that is itself a link.
    write(dir_ / "elsewhere" / "ext" / "e1.txt", "External one.");
    write(dir_ / "elsewhere" / "ext" / "e2.txt", "External two.");
    write(dir_ / "dirlink" / "local" / "l1.txt", "Local one.");
    fs::create_symlink(dir_ / "elsewhere" / "ext", dir_ / "dirlink" / "ext");
    QCOMPARE(counts(dir_ / "dirlink"), (std::map<std::string, int>{{"ext", 2}, {"local", 1}}));
    // A link to a parent folder would walk forever: refused, naming it.
    fs::create_symlink("..", dir_ / "dirlink" / "local" / "up");
    try {
      Corpus::open(dir_ / "dirlink");
      QFAIL("a link loop was accepted");
    } catch (const FormatError& e) {
      qInfo() << e.what();
      QVERIFY2(std::string(e.what()).find("up: is a link to one of its own parent folders") != std::string::npos,
               e.what());
    }
  }

  void jsonlCorpus() {
    write(dir_ / "c.jsonl", "\xEF\xBB\xBF{\"text\": \"alpha\", \"genre\": \"a\"}\n\n{\"text\": \"beta\", \"genre\": \"b\"}\n{\"text\": \"gamma\", \"genre\": \"a\", \"x\": 1}\n");
    CorpusOptions o;
    o.labelField = "genre";
    auto c = Corpus::open(dir_ / "c.jsonl", o);
    QCOMPARE(c->documentCount(), int64_t(3));
    QCOMPARE(c->categories(), (std::vector<std::string>{"a", "b"}));
    QCOMPARE(c->document(2).text, std::string("gamma"));
    QCOMPARE(c->document(2).category, 0);
    QCOMPARE(c->document(1).source, (dir_ / "c.jsonl").string() + ":3");
    auto plain = Corpus::open(dir_ / "c.jsonl");
    QVERIFY(plain->categories().empty());
    QCOMPARE(plain->document(1).category, -1);
  }

  void badInput() {
    const std::string p = dir_.string();
    write(dir_ / "empty.txt", "\n  \n\n");
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "empty.txt"); }), p + "/empty.txt: empty corpus (no non-blank lines)");
    write(dir_ / "bin.txt", std::string("ok\nab\0cd\n", 9));
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "bin.txt"); }), p + "/bin.txt:2: binary file (NUL byte at column 3)");
    write(dir_ / "latin1.txt", "fine\ncaf\xE9\n");
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "latin1.txt"); }), p + "/latin1.txt:2: invalid UTF-8 at column 4");
    write(dir_ / "nofield.jsonl", "{\"text\": \"a\"}\n{\"body\": \"b\"}\n");
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "nofield.jsonl"); }), p + "/nofield.jsonl:2: missing field 'text'");
    write(dir_ / "nolabel.jsonl", "{\"text\": \"a\", \"y\": 1}\n{\"text\": \"b\"}\n");
    CorpusOptions o;
    o.labelField = "y";
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "nolabel.jsonl", o); }), p + "/nolabel.jsonl:2: missing label field 'y'");
    write(dir_ / "badjson.jsonl", "{\"text\": \"a\"}\n{\"text\": \n");
    QVERIFY(errorOf([&] { Corpus::open(dir_ / "badjson.jsonl"); }).rfind(p + "/badjson.jsonl:2: malformed JSON", 0) ==
            0);
    write(dir_ / "empty.jsonl", "\n");
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "empty.jsonl"); }), p + "/empty.jsonl: empty corpus (no JSON lines)");
    fs::create_directories(dir_ / "emptydir" / "sub");
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "emptydir"); }), p + "/emptydir: directory has no text files");
    write(dir_ / "bindir" / "cat" / "img.png", std::string("\x89PNG\r\n\x1a\n\0\0", 10));
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "bindir"); }), p + "/bindir/cat/img.png:3: binary file (NUL byte at offset 8)");
    QCOMPARE(errorOf([&] { Corpus::open(dir_ / "missing.txt"); }), p + "/missing.txt: no such file or directory");
  }

  void sequences() {
    // Documents of 10, 3 and 30 bytes -> 12, 5 and 32 tokens with <s> </s>.
    write(dir_ / "s.txt", "0123456789\n\nabc\n\n" + std::string(30, 'x') + "\n");
    auto c = Corpus::open(dir_ / "s.txt");
    SequenceOptions o;
    o.seqLen = 8;
    auto seqs = collectSequences(*c, *tok_, o);
    // doc0: [0,8) [8,12); doc1: [0,5); doc2: [0,8) [8,16) [16,24) [24,32)
    QCOMPARE(seqs.size(), size_t(7));
    QCOMPARE(seqs[0].ids.front(), 256);
    QCOMPARE(seqs[1].ids.back(), 257);
    QCOMPARE(seqs[1].start, 8);
    QCOMPARE(seqs[1].ids.size(), size_t(4));
    QCOMPARE(seqs[2].docId, int64_t(1));
    QCOMPARE(seqs[6].start, 24);
    int64_t total = 0;
    for (auto& s : seqs) total += static_cast<int64_t>(s.ids.size());
    QCOMPARE(total, int64_t(12 + 5 + 32));
    // Stride: overlapping windows; the last one ends at the document end.
    o.stride = 4;
    seqs = collectSequences(*c, *tok_, o);
    std::vector<int> starts0;
    for (auto& s : seqs)
      if (s.docId == 0) starts0.push_back(s.start);
    QCOMPARE(starts0, (std::vector<int>{0, 4}));
    // Without special tokens and with a minimum length.
    o.stride = 0;
    o.addSpecialTokens = false;
    o.minLength = 4;
    seqs = collectSequences(*c, *tok_, o);
    for (auto& s : seqs) QVERIFY(s.ids.size() >= 4 && s.ids.front() != 256);
    // doc0: [0,8) kept, [8,10) dropped; doc1 (3 tokens) dropped; doc2: 8, 8, 8, 6.
    QCOMPARE(seqs.size(), size_t(5));
  }

  void budgetShuffleHeldOut() {
    std::string text;
    for (int d = 0; d < 200; ++d) text += "document number " + std::to_string(d) + "\n\n";
    write(dir_ / "many.txt", text);
    auto c = Corpus::open(dir_ / "many.txt");
    QCOMPARE(c->documentCount(), int64_t(200));
    SequenceOptions o;
    o.seqLen = 16;
    o.tokenBudget = 1000;
    int64_t total = 0;
    forEachSequence(*c, *tok_, o, [&](const Sequence& s) {
      total += static_cast<int64_t>(s.ids.size());
      return true;
    });
    QCOMPARE(total, int64_t(1000));
    // Every budget is met exactly, with no window under minLength: a budget
    // whose last window would have left a single token lost it before
    // (record --tokens 20000 --seq-len 128 recorded 19,999).
    for (int64_t budget = 2; budget <= 120; ++budget) {
      o.tokenBudget = budget;
      int64_t got = 0, shortest = 1 << 30;
      forEachSequence(*c, *tok_, o, [&](const Sequence& s) {
        got += static_cast<int64_t>(s.ids.size());
        shortest = std::min<int64_t>(shortest, static_cast<int64_t>(s.ids.size()));
        return true;
      });
      if (got != budget) qWarning() << "budget" << budget << "gave" << got << "tokens";
      QCOMPARE(got, budget);
      QVERIFY(shortest >= o.minLength);
    }
    // Seeded shuffle: deterministic, a permutation, different from corpus order.
    o.tokenBudget = 0;
    o.shuffle = true;
    o.seed = 11;
    auto order = [&](uint64_t seed) {
      o.seed = seed;
      std::vector<int64_t> ids;
      forEachSequence(*c, *tok_, o, [&](const Sequence& s) {
        if (s.start == 0) ids.push_back(s.docId);
        return true;
      });
      return ids;
    };
    auto a = order(11), b = order(11), d = order(12);
    QCOMPARE(a, b);
    QVERIFY(a != d);
    QCOMPARE(std::set<int64_t>(a.begin(), a.end()).size(), size_t(200));
    std::vector<int64_t> sorted = a;
    std::sort(sorted.begin(), sorted.end());
    QVERIFY(sorted != a);
    // Held-out split by document: disjoint, complete, about the fraction.
    o.shuffle = false;
    o.heldOutFraction = 0.2;
    std::set<int64_t> train, held;
    o.split = Split::Train;
    forEachSequence(*c, *tok_, o, [&](const Sequence& s) {
      train.insert(s.docId);
      return true;
    });
    o.split = Split::HeldOut;
    forEachSequence(*c, *tok_, o, [&](const Sequence& s) {
      held.insert(s.docId);
      return true;
    });
    for (int64_t id : held) QVERIFY(!train.count(id));
    QCOMPARE(train.size() + held.size(), size_t(200));
    qInfo("held-out split: %zu of 200 documents at fraction 0.2", held.size());
    QVERIFY(held.size() >= 20 && held.size() <= 60);
    for (int64_t id = 0; id < 200; ++id) QCOMPARE(isHeldOut(id, o.seed, 0.2), held.count(id) > 0);
    // Cancel between documents.
    JobContext job;
    job.cancel();
    QVERIFY_THROWS_EXCEPTION(CancelledError, forEachSequence(*c, *tok_, o, [](const Sequence&) { return true; }, &job));
    // Bad parameters.
    o.seqLen = 0;
    QVERIFY_THROWS_EXCEPTION(ParameterError, forEachSequence(*c, *tok_, o, [](const Sequence&) { return true; }));
  }

  void cli() {
    auto tj = (dir_ / "tokenizer.json").string();
    auto r = test::runCli({"tokenize", QString::fromStdString(tj), "--text", "hi", "--json"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    auto j = json::parse(r.out);
    QCOMPARE(j["ids"].dump(), std::string("[256,104,105,257]"));
    r = test::runCli({"tokenize", QString::fromStdString(tj), "--decode", "104,105", "--json"});
    QCOMPARE(json::parse(r.out)["text"].get<std::string>(), std::string("hi"));
    r = test::runCli({"tokenize", QString::fromStdString(tj), "--decode", "999"});
    QCOMPARE(r.exitCode, 2);
    r = test::runCli({"corpus", QString::fromStdString((dir_ / "tree").string()), "--model", QString::fromStdString(tj), "--json", "--quiet"});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    j = json::parse(r.out);
    QCOMPARE(j["documents"].get<int>(), 4);
    QCOMPARE(j["categories"].size(), size_t(3));
    QCOMPARE(j["tokens"].get<int>(), (8 + 2) + (13 + 2) + (5 + 2) + (10 + 2));
    r = test::runCli({"corpus", QString::fromStdString((dir_ / "nofield.jsonl").string())});
    QCOMPARE(r.exitCode, 1);
    QVERIFY(r.err.find("nofield.jsonl:2: missing field 'text'") != std::string::npos);
  }
};

QTEST_GUILESS_MAIN(TestCorpus)
#include "test_corpus.moc"
