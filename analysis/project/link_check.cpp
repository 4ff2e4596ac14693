#include "analysis/project/link_check.h"

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/links.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

nlohmann::json readMeta(const fs::path& file) {
  try {
    return nlohmann::json::parse(readFile(file));
  } catch (const nlohmann::json::exception&) {
    throw FormatError(file.string() + ": malformed JSON");
  }
}

bool artefactRole(const std::string& role) {
  return role == "recording" || role == "partition" || role == "router" || role == "moe";
}

void addLink(std::vector<LinkStatus>& out, const fs::path& dir, const std::string& role, const nlohmann::json& link,
             bool checkFingerprints, const std::string& fingerprint = {}) {
  LinkStatus s;
  s.role = role;
  s.path = resolveLinkPath(dir, link);
  if (s.path.empty()) return;  // not recorded (e.g. a fixture without paths)
  if (link.is_object() && link.contains("fingerprint") && link["fingerprint"].is_string())
    s.fingerprint = link["fingerprint"].get<std::string>();
  else
    s.fingerprint = fingerprint;
  const std::string what = dir.filename().string() + ": " + role + " link to " + s.path.string();
  std::error_code ec;
  if (!fs::exists(s.path, ec)) {
    s.state = LinkStatus::Missing;
    s.message = what + " is broken (no such folder)";
  } else if (checkFingerprints && artefactRole(role) && link.is_object() && !s.fingerprint.empty()) {
    std::string now;
    try {
      now = folderFingerprint(s.path);
    } catch (const Error& e) {
      now = std::string("unreadable: ") + e.what();
    }
    s.state = now == s.fingerprint ? LinkStatus::Ok : LinkStatus::Stale;
    s.message = what + (s.state == LinkStatus::Ok ? " is intact"
                                                  : " is stale (its content fingerprint is " + now +
                                                        ", the link recorded " + s.fingerprint + ")");
  } else {
    s.state = LinkStatus::Unchecked;
    s.message = what + " exists";
  }
  out.push_back(std::move(s));
}

}  // namespace

std::vector<LinkStatus> artefactLinks(ArtefactKind kind, const fs::path& dir, bool checkFingerprints) {
  std::vector<LinkStatus> out;
  const ArtefactKindInfo& info = artefactKindInfo(kind);
  const nlohmann::json j = readMeta(dir / info.metadataFile);
  if (!j.is_object()) throw FormatError((dir / info.metadataFile).string() + ": not a JSON object");
  auto get = [](const nlohmann::json& o, const char* key) {
    return o.is_object() && o.contains(key) ? o[key] : nlohmann::json();
  };
  switch (kind) {
    case ArtefactKind::Recording:
      addLink(out, dir, "model", get(j, "model"), checkFingerprints);
      addLink(out, dir, "corpus", get(j, "corpus"), checkFingerprints);
      break;
    case ArtefactKind::Partition:
      addLink(out, dir, "recording", get(j, "recording"), checkFingerprints);
      addLink(out, dir, "model", get(j, "model"), checkFingerprints);
      break;
    case ArtefactKind::Router:
      addLink(out, dir, "partition", get(j, "partition"), checkFingerprints);
      break;
    case ArtefactKind::Evaluation: {
      addLink(out, dir, "model", get(j, "model"), checkFingerprints);
      addLink(out, dir, "corpus", get(j, "corpus"), checkFingerprints);
      const nlohmann::json src = get(j, "source");
      addLink(out, dir, "partition", get(src, "partition"), checkFingerprints);
      addLink(out, dir, "moe", get(src, "moe"), checkFingerprints);
      const nlohmann::json routers = get(src, "routers");
      if (routers.is_array())
        for (const auto& r : routers) addLink(out, dir, "router", r, checkFingerprints);
      break;
    }
    case ArtefactKind::Front:
      // front.json: the model ({path, fingerprint}) and both corpora (paths).
      addLink(out, dir, "model", get(j, "model"), checkFingerprints);
      addLink(out, dir, "corpus", get(j, "train_corpus"), checkFingerprints);
      addLink(out, dir, "corpus", get(j, "heldout_corpus"), checkFingerprints);
      break;
    case ArtefactKind::Analysis: {
      // analysis.json: the analysed model folder (model.dir, its model
      // fingerprint) and the corpus (corpus.path; null when weights only).
      addLink(out, dir, "model", get(get(j, "model"), "dir"), checkFingerprints);
      addLink(out, dir, "corpus", get(get(j, "corpus"), "path"), checkFingerprints);
      break;
    }
    case ArtefactKind::MoeExport:
    case ArtefactKind::CalibratedExport: {
      const nlohmann::json b = get(j, "moefication");
      addLink(out, dir, "model", get(b, "source_model"), checkFingerprints);
      addLink(out, dir, "partition", get(b, "partition"), checkFingerprints);
      const nlohmann::json cal = get(b, "calibration");
      addLink(out, dir, "moe", get(cal, "source"), checkFingerprints);
      break;
    }
    case ArtefactKind::Workspace:
      addLink(out, dir, "model", get(j, "model"), checkFingerprints);
      addLink(out, dir, "corpus", get(j, "corpus"), checkFingerprints);
      break;
  }
  return out;
}

}  // namespace moefy
