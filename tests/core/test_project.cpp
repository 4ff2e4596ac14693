// The core's workspace layer (analysis/project, analysis/io/links.h): the
// artefact kind table, the Project scan (artefacts nested in an artefact-holding
// kind folder appear: issue 20 defect 2), the one-line summaries (a router's
// per-layer expert list: issue 20 defect 7), and links relative to the
// artefact folder with content fingerprints (issue 11 item 3), and the front
// (issue 17): identified by front.json, one artefact whose inner artefacts the
// scan does not list, a damaged one unreadable with the reader's message, and
// the MoE analysis (issue 16): identified by analysis.json in its "analyses"
// kind folder, summarised by readMoeAnalysis, a damaged one unreadable naming
// the missing tensor.
#include <QtTest>

#include <ATen/ATen.h>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/links.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/site.h"
#include "analysis/project/project.h"
#include "front_fixture.h"
#include "testutil.h"

using namespace moefy;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
void writeJson(const fs::path& p, const json& j) {
  fs::create_directories(p.parent_path());
  writeFileAtomic(p, j.dump(2));
}
json oracleRouter(const std::string& partitionLink) {
  return {{"format", "moefy-router"},
          {"version", 1},
          {"kind", "oracle"},
          {"layers", {0, 1}},
          {"top_k", {2, 2}},
          {"experts", {8, 8}},
          {"model_fingerprint", "0123456789abcdef"},
          {"partition", {{"path", partitionLink}, {"labels_hash", "fedcba9876543210"}}}};
}
}  // namespace

class TestProject : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void kindTableIdentifiesByMetadataFile() {
    const fs::path root = test::freshDir("project_identify");
    writeJson(root / "r" / "router.json", oracleRouter(""));
    writeJson(root / "m" / "config.json", {{"model_type", "gpt2"}});
    writeJson(root / "x" / "config.json", {{"model_type", "gpt2"}, {"moefication", {{"format", "moefy-moe"}}}});
    writeJson(root / "c" / "config.json",
              {{"model_type", "gpt2"}, {"moefication", {{"format", "moefy-moe"}, {"calibration", {{"steps", 3}}}}}});
    QCOMPARE(int(*identifyArtefact(root / "r")), int(ArtefactKind::Router));
    QVERIFY(!identifyArtefact(root / "m"));  // a dense model folder is an input, not an artefact
    QCOMPARE(int(*identifyArtefact(root / "x")), int(ArtefactKind::MoeExport));
    QCOMPARE(int(*identifyArtefact(root / "c")), int(ArtefactKind::CalibratedExport));
    QVERIFY(!identifyArtefact(root / "missing"));
    for (const auto& k : artefactKinds()) QCOMPARE(artefactKindByName(k.name), &k);
    // The router summary reads the per-layer expert list (the studio's tooltip
    // read "type must be number, but is array").
    const std::string line = artefactKindInfo(ArtefactKind::Router).describe(root / "r");
    qInfo() << line.c_str();
    QCOMPARE(QString::fromStdString(line), QString("oracle router, E=8, top-k [2,2]"));
    // A foreign file gets the reader's one-line error naming the file.
    writeJson(root / "bad" / "router.json", {{"format", "something-else"}});
    try {
      artefactKindInfo(ArtefactKind::Router).describe(root / "bad");
      QFAIL("a foreign router.json was accepted");
    } catch (const FormatError& e) {
      QVERIFY(std::string(e.what()).find("bad/router.json") != std::string::npos);
    }
  }

  void scanFindsArtefactsInsideAnArtefactFolder() {
    // The demo workspace maps "recordings" to DEMO/recording, itself one
    // artefact; a recording written into it must appear too.
    const fs::path root = test::freshDir("project_scan");
    const fs::path ws = root / "ws";
    Workspace w = Workspace::create(ws, "scan", "", "");
    w.folders["routers"] = "../demo/router";
    w.save();
    writeJson(root / "demo" / "router" / "router.json", oracleRouter(""));
    writeJson(root / "demo" / "router" / "new-router" / "router.json", oracleRouter(""));
    writeJson(root / "demo" / "router" / "half.tmp-abc" / "router.json", oracleRouter(""));   // in-progress write
    writeJson(ws / "partitions" / "p1" / "partition.json", {{"format", "moefy-partition"}});  // unreadable: no labels
    Project p(Workspace::load(ws));
    p.scan(true);
    QCOMPARE(p.paths(ArtefactKind::Router).size(), size_t(2));
    bool nested = false;
    for (const auto& r : p.paths(ArtefactKind::Router)) nested |= r.filename() == "new-router";
    QVERIFY(nested);
    QCOMPARE(p.paths(ArtefactKind::Partition).size(), size_t(1));
    for (const auto& a : p.artefacts())
      if (a.kind == ArtefactKind::Partition) {
        QVERIFY(!a.readable);
        QVERIFY2(a.summary.rfind("unreadable: ", 0) == 0, a.summary.c_str());
      }
  }

  void scanIdentifiesAFrontAndNotItsParts() {
    const fs::path root = fs::absolute(test::freshDir("project_front")).lexically_normal();
    const ArtefactKindInfo* info = artefactKindByName("front");
    QVERIFY(info);
    QCOMPARE(int(info->kind), int(ArtefactKind::Front));
    QCOMPARE(std::string(info->folder), std::string("fronts"));
    QCOMPARE(std::string(info->metadataFile), std::string("front.json"));
    // The demo's layout: the "fronts" kind folder is itself one front
    // (DEMO/front), holding the artefacts it made.
    const fs::path front = root / "demo" / "front";
    json doc = test::frontDocument((root / "gone-corpus").string());
    test::writeFront(front, doc);
    writeJson(front / "routers" / "plain-mlp" / "router.json", oracleRouter(""));
    writeJson(front / "routers" / "per-layer" / "b0.25" / "router.json", oracleRouter(""));
    writeJson(front / "partitions" / "plain" / "partition.json", {{"format", "moefy-partition"}});
    writeJson(front / "eval" / "plain" / "eval.json", {{"format", "moefy-eval"}, {"results", json::array()}});
    QCOMPARE(int(*identifyArtefact(front)), int(ArtefactKind::Front));
    Workspace w = Workspace::create(root / "ws", "front", "", "");
    QCOMPARE(w.folders.count("fronts"), size_t(1));  // every workspace has the kind folder
    w.folders["fronts"] = "../demo/front";
    w.folders["evaluations"] = "../demo/front/eval";  // even mapped onto a front's part: that part is listed
    w.save();
    Project p(Workspace::load(root / "ws"));
    p.scan(true);
    QCOMPARE(p.paths(ArtefactKind::Front).size(), size_t(1));
    QCOMPARE(p.paths(ArtefactKind::Front)[0], front);
    // The front's routers and partitions are its parts, not workspace artefacts.
    QCOMPARE(p.paths(ArtefactKind::Router).size(), size_t(0));
    QCOMPARE(p.paths(ArtefactKind::Partition).size(), size_t(0));
    // A kind folder mapped into a front is scanned as any kind folder.
    QCOMPARE(p.paths(ArtefactKind::Evaluation).size(), size_t(1));
    for (const auto& a : p.artefacts())
      if (a.kind == ArtefactKind::Front) {
        qInfo() << "front summary:" << a.summary.c_str();
        QVERIFY2(a.readable, a.summary.c_str());
        QVERIFY2(a.summary.find("front of plain") == 0, a.summary.c_str());
        QVERIFY2(a.summary.find("dense perplexity 100") != std::string::npos, a.summary.c_str());
        QVERIFY2(a.summary.find("best at 0.25: ") != std::string::npos, a.summary.c_str());
      }
    // A front written into the kind folder that is itself a front (what the
    // Start page's `moefy front ... --out DEMO/front/front1` does) is found;
    // found in a new-user trial: it never appeared.
    test::writeFront(front / "front1", doc);
    p.scan(false);
    QCOMPARE(p.paths(ArtefactKind::Front).size(), size_t(2));
    QCOMPARE(p.paths(ArtefactKind::Partition).size(), size_t(0));
    fs::remove_all(front / "front1");
    p.scan(false);
    // Its links: the held-out corpus it names is gone, and the check says so by name.
    bool named = false;
    for (const auto& l : p.linkProblems()) {
      qInfo() << l.message.c_str();
      named |= l.path == root / "gone-corpus" && l.message.find("front: corpus link to") == 0;
    }
    QVERIFY(named);

    // Damaged fronts in a plain "fronts" folder: unreadable, with the reader's
    // one-line message naming the file and the key.
    const fs::path ws2 = root / "ws2";
    Workspace::create(ws2, "front2", "", "").save();
    test::writeFront(ws2 / "fronts" / "good", test::frontDocument());
    json bad = test::frontDocument();
    bad["methods"][0]["points"][1]["perplexity"] = "high";
    test::writeFront(ws2 / "fronts" / "bad-value", bad);
    fs::create_directories(ws2 / "fronts" / "truncated");
    writeFileAtomic(ws2 / "fronts" / "truncated" / "front.json", "{\"format\": \"moefy-fr");
    Project p2(Workspace::load(ws2));
    p2.scan(true);
    QCOMPARE(p2.paths(ArtefactKind::Front).size(), size_t(3));
    int unreadable = 0;
    for (const auto& a : p2.artefacts()) {
      QCOMPARE(int(a.kind), int(ArtefactKind::Front));
      qInfo() << a.name.c_str() << a.summary.c_str();
      if (a.name == "good") {
        QVERIFY2(a.readable, a.summary.c_str());
        continue;
      }
      ++unreadable;
      QVERIFY(!a.readable);
      QVERIFY2(a.summary.rfind("unreadable: ", 0) == 0, a.summary.c_str());
      QVERIFY2(a.summary.find(a.name + "/front.json") != std::string::npos, a.summary.c_str());
      if (a.name == "bad-value")
        QVERIFY2(a.summary.find("methods[0].points[1].perplexity") != std::string::npos, a.summary.c_str());
    }
    QCOMPARE(unreadable, 2);
    QVERIFY_THROWS_EXCEPTION(FormatError, info->describe(ws2 / "fronts" / "bad-value"));
  }

  void scanIdentifiesAMoeAnalysis() {
    const fs::path root = fs::absolute(test::freshDir("project_analysis")).lexically_normal();
    const ArtefactKindInfo* info = artefactKindByName("analysis");
    QVERIFY(info);
    QCOMPARE(int(info->kind), int(ArtefactKind::Analysis));
    QCOMPARE(std::string(info->folder), std::string("analyses"));
    QCOMPARE(std::string(info->metadataFile), std::string("analysis.json"));
    Workspace w = Workspace::create(root / "ws", "analysis", "", "");
    QCOMPARE(w.folders.count("analyses"), size_t(1));  // every workspace has the kind folder
    w.save();
    // A weights-only analysis of 2 experts at blk.1, in the format
    // analyzeMoeModel writes (docs/formats.md "MoE analysis").
    auto write = [&](const fs::path& dir, bool listExtra) {
      json doc = {
          {"format", "moefy-moe-analysis"},
          {"version", 1},
          {"model", {{"dir", (root / "gone-model").string()}, {"model_type", "mixtral"}, {"experts", 2}, {"top_k", 1}}},
          {"corpus", nullptr},
          {"sites", {{"blk.1", {{"experts", 2}}}}},
          {"tensors", {{"blk.1.sim.gate", {2, 2}}}}};
      if (listExtra) doc["tensors"]["blk.1.router_sim"] = {2, 2};  // listed but not written
      fs::create_directories(dir);
      writeSafetensors(dir / "analysis.safetensors", {{"blk.1.sim.gate", at::eye(2, at::kDouble)}},
                       {{"format", "moefy-moe-analysis"}});
      writeFileAtomic(dir / "analysis.json", doc.dump(2));
    };
    write(root / "ws" / "analyses" / "good", false);
    write(root / "ws" / "analyses" / "damaged", true);
    QCOMPARE(int(*identifyArtefact(root / "ws" / "analyses" / "good")), int(ArtefactKind::Analysis));
    Project p(Workspace::load(root / "ws"));
    p.scan(true);
    QCOMPARE(p.paths(ArtefactKind::Analysis).size(), size_t(2));
    int seen = 0;
    for (const auto& a : p.artefacts()) {
      QCOMPARE(int(a.kind), int(ArtefactKind::Analysis));
      qInfo() << a.name.c_str() << a.summary.c_str();
      ++seen;
      if (a.name == "good") {
        QVERIFY2(a.readable, a.summary.c_str());
        QCOMPARE(QString::fromStdString(a.summary),
                 QString("MoE analysis of mixtral, E=2 top-1, sites blk.1, weights only"));
      } else {
        QVERIFY(!a.readable);
        QVERIFY2(a.summary.rfind("unreadable: ", 0) == 0, a.summary.c_str());
        QVERIFY2(a.summary.find("'blk.1.router_sim'") != std::string::npos, a.summary.c_str());
      }
    }
    QCOMPARE(seen, 2);
    // Its model link: the model folder named in analysis.json is gone.
    bool named = false;
    for (const auto& l : p.linkProblems()) {
      qInfo() << l.message.c_str();
      named |= l.path == root / "gone-model" && l.message.find("good: model link to") == 0;
    }
    QVERIFY(named);
  }

  void linksSurviveCopyAndRenameAndDetectStaleTargets() {
    const fs::path root = fs::absolute(test::freshDir("project_links")).lexically_normal();
    const fs::path tree = root / "tree", part = tree / "partitions" / "p", router = tree / "routers" / "r";
    writeJson(part / "partition.json", {{"format", "moefy-partition"}, {"seed", 1}});
    const std::string fp = folderFingerprint(part);
    QCOMPARE(fp.size(), size_t(16));
    const json link = makeLink(router, part, fp);
    QCOMPARE(link["path"].get<std::string>(), std::string("../../partitions/p"));
    QCOMPARE(link["absolute"].get<std::string>(), fs::absolute(part).lexically_normal().generic_string());
    json rj = oracleRouter("");
    rj["partition"] = link;
    writeJson(router / "router.json", rj);
    // Inside a temporary atomic-write folder only the relative path is kept.
    QVERIFY(!makeLink(root / "out.tmp-1" / "r", root / "out.tmp-1" / "p", "")["path"].is_null());
    QVERIFY(!makeLink(root / "out.tmp-1" / "r", root / "out.tmp-1" / "p", "").contains("absolute"));

    // Copy and rename the tree: the link resolves inside each copy, intact.
    fs::copy(tree, root / "copy", fs::copy_options::recursive);
    fs::rename(tree, root / "renamed");
    for (const char* name : {"copy", "renamed"}) {
      const auto links = artefactLinks(ArtefactKind::Router, root / name / "routers" / "r");
      QCOMPARE(links.size(), size_t(1));
      QCOMPARE(links[0].path, (root / name / "partitions" / "p").lexically_normal());
      QCOMPARE(int(links[0].state), int(LinkStatus::Ok));
    }
    // A replaced target is stale; a removed one broken; both named.
    writeJson(root / "copy" / "partitions" / "p" / "partition.json", {{"format", "moefy-partition"}, {"seed", 2}});
    auto links = artefactLinks(ArtefactKind::Router, root / "copy" / "routers" / "r");
    QCOMPARE(int(links[0].state), int(LinkStatus::Stale));
    qInfo() << links[0].message.c_str();
    QVERIFY(links[0].message.find("r: partition link") != std::string::npos);
    fs::remove_all(root / "renamed" / "partitions");
    links = artefactLinks(ArtefactKind::Router, root / "renamed" / "routers" / "r");
    QCOMPARE(int(links[0].state), int(LinkStatus::Missing));
    QVERIFY(links[0].message.find("broken") != std::string::npos);

    // An input outside the copied tree (a model folder) is found through the
    // recorded absolute path.
    const fs::path model = root / "model", art = root / "ws" / "a";
    fs::create_directories(model);
    fs::create_directories(art);
    const json ml = makeLink(art, model, "");
    fs::create_directories(root / "far" / "away");
    fs::copy(root / "ws", root / "far" / "away" / "ws", fs::copy_options::recursive);
    QCOMPARE(resolveLinkPath(root / "far" / "away" / "ws" / "a", ml), fs::absolute(model).lexically_normal());

    // Version 1: absolute strings, and paths into a renamed temporary folder.
    fs::create_directories(root / "demo" / "partitions" / "coact");
    QCOMPARE(resolveLinkPath(root, json((root / "demo.tmp-xyz" / "partitions" / "coact").string())),
             (root / "demo" / "partitions" / "coact").lexically_normal());
    QVERIFY(resolveLinkPath(root, json("")).empty());
  }

  void sitesFormatAndParse() {
    const std::vector<std::pair<Site, std::string>> cases = {{Site::ofLayer(3), "blk.3"},
                                                             {Site{SiteStack::Encoder, 0, -1, false}, "enc.blk.0"},
                                                             {Site{SiteStack::Decoder, 11, -1, false}, "dec.blk.11"},
                                                             {Site{SiteStack::Single, 2, 7, false}, "blk.2.exp.7"},
                                                             {Site{SiteStack::Decoder, 1, 0, false}, "dec.blk.1.exp.0"},
                                                             {Site{SiteStack::Single, 5, -1, true}, "blk.5.shared"}};
    for (const auto& [site, name] : cases) {
      QCOMPARE(QString::fromStdString(site.name()), QString::fromStdString(name));
      QVERIFY(Site::parse(name) == site);
      QCOMPARE(QString::fromStdString(Site::parse(name).prefix()), QString::fromStdString(name + "."));
    }
    for (const char* bad : {"", "blk", "blk.", "blk.-1", "blk.01", "blk.3.", "blk.3.exp", "blk.3.exp.x", "enc.3",
                            "blk.3.shared.1", "xblk.3", "blk.3 "}) {
      QVERIFY2(!Site::tryParse(bad), bad);
      QVERIFY_THROWS_EXCEPTION(ParameterError, Site::parse(bad));
    }
    // Version 1 artefacts key per-layer JSON by the bare layer number.
    QVERIFY(parseSiteKey("4") == Site::ofLayer(4));
    QVERIFY(parseSiteKey("blk.4") == Site::ofLayer(4));
    QVERIFY(!parseSiteKey("x4"));
    QCOMPARE(siteNames({0, 2}), (std::vector<std::string>{"blk.0", "blk.2"}));
    // Partition metrics read under either key.
    const json v1 = {{"metrics", {{"1", {{"balance", 1.0}, {"recall_at_k", {0.5, 1.0}}}}}}};
    const json v2 = {{"metrics", {{"blk.1", {{"balance", 1.0}, {"recall_at_k", {0.5, 1.0}}}}}}};
    for (const json& j : {v1, v2}) {
      QCOMPARE(partitionMetric(j, 1, "balance"), 1.0);
      QVERIFY(std::isnan(partitionMetric(j, 0, "balance")));
      QCOMPARE(partitionRecallAtK(j, 1).size(), size_t(2));
    }
  }

  void fingerprintIsContentNotLocation() {
    const fs::path root = test::freshDir("project_fingerprint");
    writeJson(root / "a" / "x.json", {{"v", 1}});
    {
      std::ofstream big(root / "a" / "big.bin", std::ios::binary);
      std::string chunk(1 << 20, 'z');
      for (int i = 0; i < 20; ++i) big << chunk;  // 20 MiB: hashed by head and tail
    }
    fs::copy(root / "a", root / "b", fs::copy_options::recursive);
    QCOMPARE(folderFingerprint(root / "a"), folderFingerprint(root / "b"));
    writeJson(root / "b" / "x.json", {{"v", 2}});
    QVERIFY(folderFingerprint(root / "a") != folderFingerprint(root / "b"));
    // An artefact written inside the folder (the demo workspace's kind folders
    // are artefacts themselves) is not its content: links to it stay fresh.
    // A plain sub-folder (a corpus category) is content.
    const std::string before = folderFingerprint(root / "a");
    writeJson(root / "a" / "rec1" / "manifest.json", {{"format", "moefy-recording"}});
    writeJson(root / "a" / "nested" / "deeper" / "router.json", {{"format", "moefy-router"}});
    QCOMPARE(folderFingerprint(root / "a"), before);
    writeJson(root / "a" / "category" / "doc.json", {{"v", 3}});
    QVERIFY(folderFingerprint(root / "a") != before);
  }
};

QTEST_GUILESS_MAIN(TestProject)
#include "test_project.moc"
