// Which data an evaluation is on, and whether the recordings behind it read
// the same documents (issue 20, defect 4): analysis/eval/eval_data.h
// (DataSelection, describeData, dataOverlap), the data block of eval.json
// (written by evalDocumentFor, read and validated by EvalResults::read),
// analysis/project/data_overlap.h (evaluationOverlaps through the links), the
// workspace's evaluation corpus, and contentFingerprint of a corpus file.
#include <QtTest>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/eval/eval_data.h"
#include "analysis/eval/eval_results.h"
#include "analysis/eval/eval_run.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/links.h"
#include "analysis/project/data_overlap.h"
#include "analysis/project/project.h"
#include "analysis/text/corpus.h"
#include "error_of.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// An artefact's metadata file DIR/FILE (the folder made first).
void writeMeta(const fs::path& dir, const char* file, const json& j) {
  fs::create_directories(dir);
  writeFileAtomic(dir / file, j.dump(2));
}

DataSelection sel(const fs::path& corpus, std::optional<Split> split, uint64_t splitSeed = 0,
                  const std::string& fingerprint = "") {
  DataSelection d;
  d.corpus = corpus;
  d.split = split;
  d.splitSeed = splitSeed;
  d.fingerprint = fingerprint;
  return d;
}

// A minimal eval.json as runEvaluation assembles it (before evalDocumentFor).
json evalDoc(const fs::path& corpus, const std::string& split, const json& source) {
  json j;
  j["format"] = "moefy-eval";
  j["version"] = 1;
  j["seed"] = 3;
  j["model"] = {{"path", ""}, {"fingerprint", "0123456789abcdef"}};
  j["corpus"] = {{"path", corpus.string()}, {"split", split}, {"split_seed", 0}, {"held_out_fraction", 0.05},
                 {"sequences", 32},         {"tokens", 4000}, {"seq_len", 128}};
  j["source"] = source;
  j["reference"] = {{"loss", 3.0}, {"perplexity", 20.0855}};
  j["results"] = json::array({{{"router", "mlp"}, {"fraction", 0.25}, {"loss", 3.2}, {"perplexity", 24.5}}});
  return j;
}

// A recording manifest (docs/formats.md "Recording") with only what the overlap reads.
json manifest(const fs::path& corpus, const std::string& split, int seed, const std::string& fingerprint = "") {
  json m = {{"format", "moefy-recording"},
            {"version", 1},
            {"corpus", {{"path", corpus.string()}, {"kind", "dir"}, {"categories", json::array()}}},
            {"tokens", 1000},
            {"sequences", 8},
            {"options", {{"split", split}, {"seed", seed}, {"seq_len", 128}}}};
  if (!fingerprint.empty()) m["corpus"]["fingerprint"] = fingerprint;
  return m;
}

}  // namespace

class TestEvalData : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void splitsOfOneCorpusOverlapUnlessComplementary() {
    const fs::path c = "/data/brown/train";
    // Train against held-out with the same split seed and fraction: disjoint.
    DataOverlap o = dataOverlap(sel(c, Split::Train, 0), sel(c, Split::HeldOut, 0));
    qInfo() << o.reason.c_str();
    QCOMPARE(int(o.verdict), int(DataOverlap::Disjoint));
    QCOMPARE(o.sharedDocuments, int64_t(0));
    // A recording of everything, or the same split, overlaps.
    QCOMPARE(int(dataOverlap(sel(c, Split::All), sel(c, Split::HeldOut)).verdict), int(DataOverlap::Overlap));
    QCOMPARE(int(dataOverlap(sel(c, Split::Train), sel(c, Split::All)).verdict), int(DataOverlap::Overlap));
    QCOMPARE(int(dataOverlap(sel(c, Split::HeldOut), sel(c, Split::HeldOut)).verdict), int(DataOverlap::Overlap));
    o = dataOverlap(sel(c, Split::Train), sel(c, Split::Train));
    QCOMPARE(int(o.verdict), int(DataOverlap::Overlap));
    QVERIFY2(o.reason.find("training split") != std::string::npos, o.reason.c_str());
    // An evaluation that does not record its split (written before the field): cannot tell.
    o = dataOverlap(sel(c, Split::Train), sel(c, std::nullopt));
    QCOMPARE(int(o.verdict), int(DataOverlap::Unknown));
    QVERIFY2(o.reason.find("does not record its split") != std::string::npos, o.reason.c_str());
    // ... unless the recording read every document.
    QCOMPARE(int(dataOverlap(sel(c, Split::All), sel(c, std::nullopt)).verdict), int(DataOverlap::Overlap));
    // A token-id file is read whole.
    DataSelection ids = sel(c, Split::HeldOut);
    ids.wholeFile = true;
    QCOMPARE(int(dataOverlap(sel(c, Split::Train), ids).verdict), int(DataOverlap::Overlap));
  }

  void differentSplitSeedsAreCountedDocumentByDocument() {
    // The recorder splits with its --seed, the evaluation with seed 0: the
    // training split of seed 7 and the held-out split of seed 0 share documents.
    const fs::path c = "/data/corpus";
    const int64_t n = 2000;
    DataOverlap o = dataOverlap(sel(c, Split::Train, 7), sel(c, Split::HeldOut, 0), n);
    int64_t expect = 0, heldOut = 0;
    for (int64_t d = 0; d < n; ++d) {
      const bool evalDoc = isHeldOut(d, 0, 0.05), recDoc = !isHeldOut(d, 7, 0.05);
      heldOut += evalDoc;
      expect += evalDoc && recDoc;
    }
    qInfo() << "train(seed 7) x heldout(seed 0) of" << n << "documents:" << o.sharedDocuments << "shared, expected"
            << expect << "; held out" << heldOut << ";" << o.reason.c_str();
    QCOMPARE(o.sharedDocuments, expect);
    QVERIFY(expect > 0 && expect < heldOut);  // most held-out documents of seed 0 are training documents of seed 7
    QCOMPARE(int(o.verdict), int(DataOverlap::Overlap));
    // Without a document count the verdict stands, uncounted.
    o = dataOverlap(sel(c, Split::Train, 7), sel(c, Split::HeldOut, 0));
    QCOMPARE(int(o.verdict), int(DataOverlap::Overlap));
    QCOMPARE(o.sharedDocuments, int64_t(-1));
    // Another held-out fraction also breaks the complement.
    DataSelection ev = sel(c, Split::HeldOut, 0);
    ev.heldOutFraction = 0.2;
    QCOMPARE(int(dataOverlap(sel(c, Split::Train, 0), ev, n).verdict), int(DataOverlap::Overlap));
  }

  void corporaAreComparedByContentAndFolder() {
    // Different corpora (the demo's train/ and heldout/ folders): disjoint.
    DataOverlap o = dataOverlap(sel("/data/brown/train", Split::All), sel("/data/brown/heldout", Split::All));
    QCOMPARE(int(o.verdict), int(DataOverlap::Disjoint));
    // The same content under another path (a copied corpus): the same corpus.
    o = dataOverlap(sel("/a/corpus", Split::All, 0, "00000000000000aa"),
                    sel("/b/corpus", Split::HeldOut, 0, "00000000000000aa"));
    QCOMPARE(int(o.verdict), int(DataOverlap::Overlap));
    // An evaluation corpus inside the recorded corpus folder: the recording read it all.
    o = dataOverlap(sel("/data/brown", Split::All), sel("/data/brown/heldout", Split::All));
    QCOMPARE(int(o.verdict), int(DataOverlap::Overlap));
    QVERIFY2(o.reason.find("lies inside") != std::string::npos, o.reason.c_str());
    // ... or only its training split, whose document ids are not the sub-folder's: cannot tell.
    QCOMPARE(int(dataOverlap(sel("/data/brown", Split::Train), sel("/data/brown/heldout", Split::All)).verdict),
             int(DataOverlap::Unknown));
    // A sibling whose name merely starts the same is not inside.
    QCOMPARE(int(dataOverlap(sel("/data/brown", Split::All), sel("/data/brownish", Split::All)).verdict),
             int(DataOverlap::Disjoint));
    // Nothing recorded: cannot tell.
    QCOMPARE(int(dataOverlap(sel("", Split::All), sel("/x", Split::All)).verdict), int(DataOverlap::Unknown));
  }

  void evalJsonRecordsAndReadsItsData() {
    const fs::path root = test::freshDir("eval_data_roundtrip");
    const fs::path corpus = root / "corpus.txt";
    writeFileAtomic(corpus, "one document\n\nanother document\n");
    const std::string fp = contentFingerprint(corpus);
    QCOMPARE(fp.size(), size_t(16));
    // The fingerprint follows the content, not the name.
    writeFileAtomic(root / "copy.txt", "one document\n\nanother document\n");
    QCOMPARE(contentFingerprint(root / "copy.txt"), fp);
    writeFileAtomic(root / "other.txt", "one document\n\nanother documenT\n");
    QVERIFY(contentFingerprint(root / "other.txt") != fp);
    QVERIFY(!test::errorOf([&] { contentFingerprint(root / "missing.txt"); }).empty());

    json doc = evalDoc(corpus, "heldout", json::object());
    doc["corpus"]["fingerprint"] = fp;
    writeEvalFolder(root / "evaluations" / "e1", false, doc);
    const EvalResults e = EvalResults::read(root / "evaluations" / "e1");
    // The corpus link is relative to the evaluation folder and resolves back.
    QCOMPARE(e.data.corpus.string(), fs::absolute(corpus).lexically_normal().string());
    QCOMPARE(e.data.fingerprint, fp);
    QVERIFY(e.data.split && *e.data.split == Split::HeldOut);
    QCOMPARE(e.data.sequences, int64_t(32));
    QCOMPARE(e.data.tokens, int64_t(4000));
    QCOMPARE(e.data.seqLen, 128);
    QCOMPARE(e.data.seed, int64_t(3));
    const std::string caption = e.dataCaption(), brief = e.dataCaption(true);
    qInfo() << "caption:" << caption.c_str() << "| brief:" << brief.c_str();
    QVERIFY2(caption.find("held-out split") != std::string::npos, caption.c_str());
    QVERIFY2(caption.find(corpus.string()) != std::string::npos, caption.c_str());
    QVERIFY2(caption.find("32 sequences") != std::string::npos, caption.c_str());
    QVERIFY2(caption.find("seed 3") != std::string::npos, caption.c_str());
    QVERIFY2(caption.find(fp) != std::string::npos, caption.c_str());
    QVERIFY2(brief.find("held-out split of corpus.txt, 32 sequences") == 0, brief.c_str());
    QVERIFY2(brief.find(fp) == std::string::npos, brief.c_str());

    // Evaluations written before the data block still open and say so.
    json old = evalDoc(corpus, "heldout", json::object());
    old.erase("seed");
    old["corpus"].erase("split");
    old["corpus"].erase("split_seed");
    old["corpus"].erase("held_out_fraction");
    writeEvalFolder(root / "evaluations" / "old", false, old);
    const EvalResults eo = EvalResults::read(root / "evaluations" / "old");
    QVERIFY(!eo.data.split);
    QVERIFY2(eo.dataCaption().find("split not recorded") == 0, eo.dataCaption().c_str());
    QVERIFY2(eo.dataCaption().find("seed not recorded") != std::string::npos, eo.dataCaption().c_str());
    QCOMPARE(describeData(DataSelection{}),
             std::string("not recorded (written before evaluations recorded their data)"));
  }

  void readerRefusesBadDataBlocks() {
    const fs::path root = test::freshDir("eval_data_bad");
    const fs::path corpus = root / "corpus.txt";
    writeFileAtomic(corpus, "text\n");
    struct Case {
      const char* name;
      std::function<void(json&)> edit;
      const char* needle;
    };
    const std::vector<Case> cases = {
        {"split", [](json& j) { j["corpus"]["split"] = "validation"; }, "corpus.split must be"},
        {"fingerprint", [](json& j) { j["corpus"]["fingerprint"] = "XYZ"; }, "corpus.fingerprint must be"},
        {"sequences", [](json& j) { j["corpus"]["sequences"] = 0; }, "corpus.sequences"},
        {"huge", [](json& j) { j["corpus"]["tokens"] = 1e300; }, "corpus.tokens"},
        {"fraction", [](json& j) { j["corpus"]["held_out_fraction"] = 1.5; }, "held_out_fraction"},
        {"seed", [](json& j) { j["seed"] = -1; }, "seed"},
        {"corpus", [](json& j) { j["corpus"] = "a string"; }, "corpus must be an object"},
    };
    for (const Case& c : cases) {
      json doc = evalDoc(corpus, "all", json::object());
      c.edit(doc);
      const fs::path dir = root / c.name;
      fs::create_directories(dir);
      writeFileAtomic(dir / "eval.json", doc.dump(2));
      const std::string err = test::errorOf([&] { EvalResults::read(dir); });
      qInfo() << c.name << ":" << err.c_str();
      QVERIFY2(err.find(c.needle) != std::string::npos, (std::string(c.name) + ": " + err).c_str());
      QVERIFY2(err.find("eval.json") != std::string::npos, err.c_str());
    }
  }

  // Issue 20 (the Compare view's per-layer heatmap): the reader copies each
  // result's layer_rel_error (null -> NaN), names the sites (blk.L; the linked
  // partition's sites for an encoder-decoder evaluation, else "site L") and
  // refuses a negative error naming the entry.
  void readerCopiesLayerRelError() {
    const fs::path root = test::freshDir("eval_layer_error");
    const fs::path corpus = root / "corpus.txt";
    writeFileAtomic(corpus, "text\n");
    json doc = evalDoc(corpus, "all", json::object());
    doc["results"] = json::array({{{"router", "mlp"},
                                   {"fraction", 0.5},
                                   {"loss", 3.1},
                                   {"perplexity", 22.2},
                                   {"layer_rel_error", {0.75, nullptr, 0.125}}},
                                  {{"router", "mlp"}, {"fraction", 0.25}, {"loss", 3.2}, {"perplexity", 24.5}}});
    writeMeta(root / "e1", "eval.json", doc);
    const EvalResults e = EvalResults::read(root / "e1");
    QCOMPARE(e.series.size(), size_t(1));
    const auto& pts = e.series[0].points;  // ascending fraction
    QCOMPARE(pts.size(), size_t(2));
    QVERIFY(pts[0].layerRelError.empty());  // not recorded
    QCOMPARE(pts[1].layerRelError.size(), size_t(3));
    QCOMPARE(pts[1].layerRelError[0], 0.75);
    QVERIFY(std::isnan(pts[1].layerRelError[1]));
    QCOMPARE(pts[1].layerRelError[2], 0.125);
    QCOMPARE(e.siteNames, (std::vector<std::string>{"blk.0", "blk.1", "blk.2"}));

    // Encoder-decoder results (site_group): "site L" without a partition; the
    // linked partition's decoder site gives the encoder's layer count, so
    // every index is named.
    json t5 = doc;
    for (auto& r : t5["results"]) r["site_group"] = "both";
    t5["results"][0]["layer_rel_error"] = {0.5, 0.25, nullptr};
    writeMeta(root / "t5-unlinked", "eval.json", t5);
    QCOMPARE(EvalResults::read(root / "t5-unlinked").siteNames,
             (std::vector<std::string>{"site 0", "site 1", "site 2"}));
    writeMeta(root / "part", "partition.json",
              {{"format", "moefy-partition"}, {"layers", {0, 2}}, {"sites", {"enc.blk.0", "dec.blk.0"}}});
    t5["source"] = {{"partition", (root / "part").string()}};
    writeMeta(root / "t5", "eval.json", t5);
    const EvalResults et5 = EvalResults::read(root / "t5");
    QCOMPARE(et5.siteNames, (std::vector<std::string>{"enc.blk.0", "enc.blk.1", "dec.blk.0"}));
    QCOMPARE(et5.series[0].router, std::string("mlp (both)"));

    // A negative relative error is no evaluation's: refused, naming the entry.
    json bad = doc;
    bad["results"][0]["layer_rel_error"][2] = -0.5;
    writeMeta(root / "bad", "eval.json", bad);
    const std::string err = test::errorOf([&] { EvalResults::read(root / "bad"); });
    qInfo() << "negative layer_rel_error:" << err.c_str();
    QVERIFY2(err.find("layer_rel_error[2]") != std::string::npos, err.c_str());
    QVERIFY2(err.find("eval.json") != std::string::npos, err.c_str());
  }

  void overlapsFollowTheLinksToTheRecording() {
    const fs::path root = test::freshDir("eval_data_links");
    const fs::path corpus = root / "corpus";
    fs::create_directories(corpus);
    writeFileAtomic(corpus / "a.txt", "alpha\n");
    const fs::path other = root / "other-corpus";
    fs::create_directories(other);
    writeFileAtomic(other / "b.txt", "beta\n");
    const fs::path ws = root / "ws";
    // recording (all of `corpus`) <- partition <- router <- evaluation
    writeMeta(ws / "recordings" / "rec", "manifest.json", manifest(corpus, "all", 0, contentFingerprint(corpus)));
    writeMeta(ws / "partitions" / "part", "partition.json",
              {{"format", "moefy-partition"}, {"version", 1}, {"recording", (ws / "recordings" / "rec").string()}});
    writeMeta(ws / "routers" / "r", "router.json",
              {{"format", "moefy-router"},
               {"version", 1},
               {"kind", "oracle"},
               {"partition", {{"path", (ws / "partitions" / "part").string()}}}});
    const json source = {{"partition", (ws / "partitions" / "part").string()},
                         {"routers", {(ws / "routers" / "r").string()}}};
    QCOMPARE(recordingsBehind(ArtefactKind::Router, ws / "routers" / "r").size(), size_t(1));

    // Evaluated on the corpus the recording read: flagged, naming the recording.
    writeEvalFolder(ws / "evaluations" / "same", false, evalDoc(corpus, "all", source));
    auto found = evaluationOverlaps(ws / "evaluations" / "same");
    QCOMPARE(found.size(), size_t(1));
    qInfo() << found[0].message.c_str();
    QCOMPARE(int(found[0].overlap.verdict), int(DataOverlap::Overlap));
    QCOMPARE(found[0].recording, fs::absolute(ws / "recordings" / "rec").lexically_normal());
    QVERIFY2(found[0].message.find("overlaps the evaluation data") != std::string::npos, found[0].message.c_str());
    // On another corpus: nothing to flag.
    writeEvalFolder(ws / "evaluations" / "other", false, evalDoc(other, "all", source));
    found = evaluationOverlaps(ws / "evaluations" / "other");
    QCOMPARE(found.size(), size_t(1));
    QCOMPARE(int(found[0].overlap.verdict), int(DataOverlap::Disjoint));
    QVERIFY(found[0].message.empty());
    // A training-split recording against the held-out split, both seed 0: disjoint.
    writeMeta(ws / "recordings" / "rec", "manifest.json", manifest(corpus, "train", 0));
    writeEvalFolder(ws / "evaluations" / "held", false, evalDoc(corpus, "heldout", source));
    found = evaluationOverlaps(ws / "evaluations" / "held");
    QCOMPARE(found.size(), size_t(1));
    QCOMPARE(int(found[0].overlap.verdict), int(DataOverlap::Disjoint));
    // The same with a recording split by seed 7: overlap, counted over the corpus's documents.
    writeMeta(ws / "recordings" / "rec", "manifest.json", manifest(corpus, "train", 7));
    found = evaluationOverlaps(ws / "evaluations" / "held");
    QCOMPARE(found.size(), size_t(1));
    qInfo() << found[0].message.c_str();
    QVERIFY(found[0].overlap.verdict != DataOverlap::Unknown);
    QVERIFY(found[0].overlap.sharedDocuments >= 0);  // the corpus folder was opened for its document count
    // A broken link is skipped, not an error.
    json broken = evalDoc(corpus, "all", {{"partition", (root / "nowhere").string()}});
    QVERIFY(evaluationOverlaps(broken, root).empty());
  }

  void workspaceHasAnEvaluationCorpus() {
    const fs::path root = test::freshDir("eval_data_workspace");
    Workspace ws = Workspace::create(root / "ws", "w", "/models/m", "corpus/train");
    QCOMPARE(ws.evalCorpus(), ws.corpus());  // none: the training corpus (its held-out split)
    QVERIFY(!ws.separateEvalCorpus());
    ws.evalCorpusPath = "corpus/heldout";
    ws.save();
    const Workspace back = Workspace::load(root / "ws");
    QCOMPARE(back.evalCorpusPath, std::string("corpus/heldout"));
    QCOMPARE(back.evalCorpus(), (root / "ws" / "corpus" / "heldout").lexically_normal());
    QVERIFY(back.separateEvalCorpus());
    // `moefy demo` before the key: settings.eval_corpus.
    writeMeta(
        root / "old", "workspace.json",
        {{"format", "moefy-workspace"}, {"corpus", "/data/train"}, {"settings", {{"eval_corpus", "/data/heldout"}}}});
    const Workspace old = Workspace::load(root / "old");
    QCOMPARE(old.evalCorpus(), fs::path("/data/heldout"));
    QVERIFY(old.separateEvalCorpus());
  }
};

QTEST_GUILESS_MAIN(TestEvalData)
#include "test_eval_data.moc"
