#include "analysis/project/project.h"

#include <algorithm>
#include <set>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"

namespace moefy {

namespace fs = std::filesystem;

const std::vector<std::string>& Workspace::folderKinds() {
  static const std::vector<std::string> k{"recordings", "partitions", "routers",    "evaluations", "fronts",
                                          "analyses",   "exports",    "calibrated", "figures"};
  return k;
}

fs::path Workspace::resolve(const std::string& path) const {
  if (path.empty()) return {};
  fs::path p(path);
  if (p.is_absolute()) return p.lexically_normal();
  return (dir / p).lexically_normal();
}

fs::path Workspace::folder(const std::string& kindFolder) const {
  auto it = folders.find(kindFolder);
  return resolve(it != folders.end() ? it->second : kindFolder);
}

Workspace Workspace::load(const fs::path& d) {
  const fs::path file = d / "workspace.json";
  if (!fs::is_regular_file(file)) throw IoError(file.string() + ": missing (not a workspace folder)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(readFile(file));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(file.string() + ": invalid JSON (" + e.what() + ")");
  }
  if (!j.is_object() || j.value("format", std::string()) != "moefy-workspace")
    throw FormatError(file.string() + ": not a moefy-workspace file (\"format\" is missing or different)");
  Workspace ws;
  ws.dir = fs::absolute(d).lexically_normal();
  if (ws.dir.has_filename() == false) ws.dir = ws.dir.parent_path();  // "a/b/" -> "a/b"
  auto str = [&](const char* key, const std::string& dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_string()) throw FormatError(file.string() + ": '" + key + "' must be a string");
    return it->get<std::string>();
  };
  ws.name = str("name", ws.dir.filename().string());
  ws.modelPath = str("model", "");
  ws.corpusPath = str("corpus", "");
  if (j.contains("settings") && j["settings"].is_object()) ws.settings = j["settings"];
  ws.evalCorpusPath = str("eval_corpus", "");
  // `moefy demo` before the key existed wrote it into the settings.
  if (ws.evalCorpusPath.empty() && ws.settings.contains("eval_corpus") && ws.settings["eval_corpus"].is_string())
    ws.evalCorpusPath = ws.settings["eval_corpus"].get<std::string>();
  for (const auto& k : folderKinds()) ws.folders[k] = k;
  if (j.contains("folders") && j["folders"].is_object())
    for (auto& [k, v] : j["folders"].items())
      if (v.is_string()) ws.folders[k] = v.get<std::string>();
  return ws;
}

Workspace Workspace::create(const fs::path& d, const std::string& name, const std::string& model,
                            const std::string& corpus) {
  Workspace ws;
  ws.dir = fs::absolute(d).lexically_normal();
  if (!ws.dir.has_filename()) ws.dir = ws.dir.parent_path();
  ws.name = name;
  ws.modelPath = model;
  ws.corpusPath = corpus;
  for (const auto& k : folderKinds()) ws.folders[k] = k;
  return ws;
}

nlohmann::json Workspace::toJson() const {
  nlohmann::json j;
  j["format"] = "moefy-workspace";
  j["version"] = 1;
  j["tool_version"] = MOEFY_VERSION;
  j["name"] = name;
  j["model"] = modelPath;
  j["corpus"] = corpusPath;
  if (!evalCorpusPath.empty()) j["eval_corpus"] = evalCorpusPath;
  j["settings"] = settings;
  nlohmann::json f = nlohmann::json::object();
  for (const auto& [k, v] : folders) f[k] = v;
  j["folders"] = f;
  return j;
}

void Workspace::save() const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(dir.string() + ": cannot create (" + ec.message() + ")");
  writeFileAtomic(dir / "workspace.json", toJson().dump(2) + "\n");
  for (const auto& [k, v] : folders) fs::create_directories(resolve(v), ec);  // best effort: scan tolerates absence
}

namespace {

// In-progress atomic writes (NAME.tmp-XXXX) and recording checkpoints
// (REC_DIR.partial, finished by `moefy record --resume`) are not artefacts.
bool inProgress(const fs::path& p) {
  const std::string n = p.filename().string();
  return n.find(".tmp-") != std::string::npos || (n.size() > 8 && n.compare(n.size() - 8, 8, ".partial") == 0);
}

// Artefact folders at and below `root` (depth 0 = root itself), skipping
// in-progress writes. A front is one artefact: the recording, partitions,
// routers and evaluations inside it are its parts (front.json lists them and
// the Front view shows them), written once by `moefy front` and never into
// by another step, so the scan does not descend into it. Listing them would
// put a front's seven or more inner folders among the workspace's own
// artefacts under names ("plain", "shared", "recording") that say nothing of
// which front they belong to (a front written into a kind folder that is
// itself a front is found, one level down). Every other artefact is descended into (the
// demo's kind folders are themselves artefacts: issue 20, defect 2).
void collect(const fs::path& root, int depth, std::vector<std::pair<fs::path, ArtefactKind>>& out) {
  std::error_code ec;
  if (inProgress(root) || !fs::is_directory(root, ec)) return;
  const std::optional<ArtefactKind> kind = identifyArtefact(root);
  if (kind && *kind != ArtefactKind::Workspace) out.emplace_back(root, *kind);
  if (kind == ArtefactKind::Front) {
    // A kind folder that is itself a front (the demo's `front/`): the fronts
    // written into it appear, its parts do not (they are not fronts).
    if (depth == 0)
      for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec) && !inProgress(it->path()) && identifyArtefact(it->path()) == ArtefactKind::Front)
          out.emplace_back(it->path(), ArtefactKind::Front);
    return;
  }
  if (depth >= 3) return;
  std::vector<fs::path> subs;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) subs.push_back(it->path());
  std::sort(subs.begin(), subs.end());
  for (const auto& s : subs) collect(s, depth + 1, out);
}

}  // namespace

void Project::scan(bool describe) {
  artefacts_.clear();
  std::vector<std::pair<fs::path, ArtefactKind>> found;
  std::set<fs::path> roots;
  for (const auto& [k, v] : ws_.folders) {
    if (k == "figures") continue;
    const fs::path root = ws_.resolve(v);
    if (root == ws_.dir || !roots.insert(root).second) continue;  // the workspace folder itself is not scanned whole
    collect(root, 0, found);
  }
  std::set<fs::path> seen;
  for (const auto& [dir, kind] : found) {
    if (!seen.insert(dir).second) continue;
    ProjectArtefact a{kind, dir, dir.filename().string(), {}, true};
    if (describe) {
      try {
        a.summary = artefactKindInfo(kind).describe(dir);
      } catch (const std::exception& e) {
        a.summary = std::string("unreadable: ") + e.what();
        a.readable = false;
      }
    }
    artefacts_.push_back(std::move(a));
  }
  std::stable_sort(artefacts_.begin(), artefacts_.end(), [](const ProjectArtefact& a, const ProjectArtefact& b) {
    return a.kind != b.kind ? a.kind < b.kind : a.name < b.name;
  });
}

std::vector<fs::path> Project::paths(ArtefactKind kind) const {
  std::vector<fs::path> out;
  for (const auto& a : artefacts_)
    if (a.kind == kind) out.push_back(a.dir);
  return out;
}

std::vector<LinkStatus> Project::checkLinks() const {
  std::vector<LinkStatus> out;
  for (const auto& a : artefacts_) {
    if (!a.readable) continue;
    for (auto& l : artefactLinks(a.kind, a.dir)) out.push_back(std::move(l));
  }
  return out;
}

std::vector<LinkStatus> Project::linkProblems() const {
  std::vector<LinkStatus> out;
  for (auto& l : checkLinks())
    if (l.state == LinkStatus::Missing || l.state == LinkStatus::Stale) out.push_back(std::move(l));
  return out;
}

}  // namespace moefy
