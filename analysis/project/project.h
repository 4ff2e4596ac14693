#pragma once
// A workspace (docs/studio.md, docs/formats.md "Workspace"): workspace.json
// with the model and corpus references, settings and one folder per artefact
// kind; and the Project, the scanned list of its artefacts.
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/project/artefact.h"
#include "analysis/project/link_check.h"

namespace moefy {

/// workspace.json. Paths are stored as written (relative to the workspace
/// folder or absolute) and resolved against `dir`, so a moved or copied
/// workspace keeps finding what lies inside it.
struct Workspace {
  std::filesystem::path dir;  ///< absolute folder of workspace.json
  std::string name;
  std::string modelPath;   ///< as stored
  std::string corpusPath;  ///< as stored: the training corpus (record, route)
  /// The evaluation corpus as stored ("" = the training corpus, read by its
  /// held-out split). workspace.json key "eval_corpus" (older workspaces:
  /// settings.eval_corpus, as `moefy demo` wrote it).
  std::string evalCorpusPath;
  nlohmann::json settings = nlohmann::json::object();
  std::map<std::string, std::string> folders;  ///< kind folder ("recordings", ...) -> sub-folder as stored

  /// The kind folders a workspace has: recordings, partitions, routers,
  /// evaluations, fronts, analyses, exports, calibrated, figures.
  static const std::vector<std::string>& folderKinds();
  /// `path` resolved against dir (absolute paths are only normalised).
  std::filesystem::path resolve(const std::string& path) const;
  std::filesystem::path model() const { return resolve(modelPath); }
  std::filesystem::path corpus() const { return resolve(corpusPath); }
  /// The evaluation corpus resolved: evalCorpusPath, else the training corpus.
  std::filesystem::path evalCorpus() const { return evalCorpusPath.empty() ? corpus() : resolve(evalCorpusPath); }
  /// Whether evaluations read a corpus of their own (true) or the held-out
  /// split of the training corpus (false). Lexical comparison of the resolved paths.
  bool separateEvalCorpus() const { return !evalCorpusPath.empty() && evalCorpus() != corpus(); }
  /// The folder of a kind folder name ("recordings"), resolved.
  std::filesystem::path folder(const std::string& kindFolder) const;

  /// Reads DIR/workspace.json. Throws IoError (missing) or FormatError naming
  /// the file and key.
  static Workspace load(const std::filesystem::path& dir);
  /// A new workspace description (not yet written).
  static Workspace create(const std::filesystem::path& dir, const std::string& name, const std::string& model,
                          const std::string& corpus);
  nlohmann::json toJson() const;
  /// Writes workspace.json atomically and creates the kind folders. Throws IoError.
  void save() const;
};

/// One artefact found in a workspace.
struct ProjectArtefact {
  ArtefactKind kind;
  std::filesystem::path dir;  ///< absolute folder
  std::string name;           ///< folder name
  std::string summary;        ///< the kind's describe() line, or "unreadable: <error>"
  bool readable = true;
};

/// The artefacts of a workspace. scan() looks in every kind folder: the folder
/// itself when it is one artefact (the layout `moefy demo` writes:
/// DIR/recording/manifest.json) and every sub-folder that is one, at any
/// depth up to 3 (so artefacts written into an artefact-holding kind folder
/// appear too), except inside a front (ArtefactKind::Front): its recording,
/// partitions, routers and evaluations are parts of the front, listed by its
/// front.json, not artefacts of the workspace. In-progress atomic writes
/// (".tmp-") and recording checkpoints (".partial") are skipped. Each found
/// folder is identified by its metadata file (identifyArtefact), so an
/// artefact in the wrong kind folder still appears under its real kind.
class Project {
 public:
  explicit Project(Workspace ws) : ws_(std::move(ws)) {}
  const Workspace& workspace() const { return ws_; }
  /// Scans (again). describe: also open every artefact with its reader for
  /// the summary (slower: reads metadata and tensor headers).
  void scan(bool describe = true);
  const std::vector<ProjectArtefact>& artefacts() const { return artefacts_; }
  /// Folders of one kind, sorted by name.
  std::vector<std::filesystem::path> paths(ArtefactKind kind) const;
  /// The links of every scanned readable artefact (link_check.h
  /// artefactLinks), each with its state; messages name the artefact folder,
  /// the role and the target. Reads every linked artefact's files for its
  /// fingerprint (at most 16 MiB per file).
  std::vector<LinkStatus> checkLinks() const;
  /// Only the broken (Missing) and stale links of checkLinks().
  std::vector<LinkStatus> linkProblems() const;

 private:
  Workspace ws_;
  std::vector<ProjectArtefact> artefacts_;
};

}  // namespace moefy
