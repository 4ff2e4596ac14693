#include "analysis/project/data_overlap.h"

#include <algorithm>
#include <set>

#include "analysis/common/error.h"
#include "analysis/eval/eval_file.h"
#include "analysis/io/json_input.h"
#include "analysis/io/links.h"
#include "analysis/project/link_check.h"
#include "analysis/text/corpus.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

bool leadsToRecording(const std::string& role) {
  return role == "recording" || role == "partition" || role == "router" || role == "moe";
}

void collectRecordings(const fs::path& dir, int depth, std::set<fs::path>& seen, std::set<fs::path>& out) {
  if (depth > 8 || !seen.insert(dir).second) return;
  const auto kind = identifyArtefact(dir);
  if (!kind) return;
  if (*kind == ArtefactKind::Recording) {
    out.insert(dir);
    return;
  }
  std::vector<LinkStatus> links;
  try {
    links = artefactLinks(*kind, dir, false);
  } catch (const Error&) {
    return;  // an unreadable artefact behind the evaluation: its own reader reports it
  }
  for (const LinkStatus& l : links)
    if (l.state != LinkStatus::Missing && leadsToRecording(l.role))
      collectRecordings(fs::absolute(l.path).lexically_normal(), depth + 1, seen, out);
}

}  // namespace

std::vector<fs::path> recordingsBehind(ArtefactKind kind, const fs::path& dir) {
  std::set<fs::path> seen, out;
  const fs::path root = fs::absolute(dir).lexically_normal();
  if (kind == ArtefactKind::Recording) return {root};
  seen.insert(root);
  for (const LinkStatus& l : artefactLinks(kind, root, false))
    if (l.state != LinkStatus::Missing && leadsToRecording(l.role))
      collectRecordings(fs::absolute(l.path).lexically_normal(), 1, seen, out);
  return {out.begin(), out.end()};
}

std::vector<RecordingOverlap> evaluationOverlaps(const nlohmann::json& doc, const fs::path& evalDir) {
  std::set<fs::path> seen, recordings;
  const nlohmann::json src = doc.is_object() && doc.contains("source") ? doc["source"] : nlohmann::json();
  std::vector<nlohmann::json> links;
  if (src.is_object()) {
    for (const char* key : {"partition", "moe"})
      if (src.contains(key)) links.push_back(src[key]);
    if (src.contains("routers") && src["routers"].is_array())
      for (const auto& r : src["routers"]) links.push_back(r);
  }
  for (const auto& link : links) {
    const fs::path target = resolveLinkPath(evalDir, link);
    if (!target.empty()) collectRecordings(target, 1, seen, recordings);
  }
  const DataSelection ev = evalDataSelection(doc, evalDir);
  int64_t documents = -2;  // -2: not looked up yet; -1: unknown
  std::vector<RecordingOverlap> out;
  for (const fs::path& rec : recordings) {
    DataSelection r;
    try {
      r = recordingDataSelection(readJsonFile(rec / "manifest.json"));
    } catch (const Error&) {
      continue;
    }
    DataOverlap o = dataOverlap(r, ev);
    // Train against held-out with different split seeds: count the documents in both.
    if (o.verdict == DataOverlap::Overlap && o.sharedDocuments < 0 && r.split && ev.split && *r.split != *ev.split &&
        *r.split != Split::All && *ev.split != Split::All && !r.wholeFile && !ev.wholeFile) {
      if (documents == -2) {
        documents = -1;
        try {
          documents = Corpus::open(ev.corpus)->documentCount();
        } catch (const Error&) {
        }
      }
      if (documents > 0) o = dataOverlap(r, ev, documents);
    }
    RecordingOverlap ro{rec, o, ""};
    if (o.verdict == DataOverlap::Overlap)
      ro.message = "recording " + rec.string() + " overlaps the evaluation data: " + o.reason;
    else if (o.verdict == DataOverlap::Unknown)
      ro.message = "recording " + rec.string() + " may overlap the evaluation data: " + o.reason;
    out.push_back(std::move(ro));
  }
  return out;
}

std::vector<RecordingOverlap> evaluationOverlaps(const fs::path& evalDir) {
  return evaluationOverlaps(readEvalFile(evalDir / "eval.json"), evalDir);
}

}  // namespace moefy
