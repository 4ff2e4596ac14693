// The core's workspace layer (analysis/project, analysis/io/links.h): the
// artefact kind table, the Project scan (artefacts nested in an artefact-holding
// kind folder appear: issue 20 defect 2), the one-line summaries (a router's
// per-layer expert list: issue 20 defect 7), and links relative to the
// artefact folder with content fingerprints (issue 11 item 3).
#include <QtTest>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/links.h"
#include "analysis/model/site.h"
#include "analysis/project/project.h"
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
  }
};

QTEST_GUILESS_MAIN(TestProject)
#include "test_project.moc"
