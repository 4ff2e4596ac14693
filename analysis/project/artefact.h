#pragma once
// The artefact kinds and their one table: kind -> workspace folder ->
// metadata file -> validating reader. Every consumer (the CLI, the studio's
// tree and views, the Project scan) identifies and opens artefacts through
// this table, so a bad or foreign artefact gives the same one-line error
// everywhere. Adding a kind is one row here plus its reader in its step's
// folder (docs/DEVELOPING.md).
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace moefy {

enum class ArtefactKind {
  Recording,
  Partition,
  Router,
  Evaluation,
  Front,
  Analysis,
  MoeExport,
  CalibratedExport,
  Workspace
};

struct ArtefactKindInfo {
  ArtefactKind kind;
  const char* name;          ///< "recording", "partition", "router", "evaluation", "front", "analysis", "export",
                             ///< "calibrated", "workspace"
  const char* folder;        ///< default workspace sub-folder ("recordings", ...; "" for the workspace itself)
  const char* metadataFile;  ///< the file that identifies the kind ("manifest.json", ...)
  const char* format;        ///< its "format" value ("moefy-recording", ...)
  /// Opens `dir` with the kind's validating core reader and returns a one-line
  /// summary for lists and tooltips. Throws FormatError/IoError naming the file.
  std::string (*describe)(const std::filesystem::path& dir);
};

/// Every kind, in pipeline order.
const std::vector<ArtefactKindInfo>& artefactKinds();
const ArtefactKindInfo& artefactKindInfo(ArtefactKind kind);
/// The row whose name is `name`, nullptr if none.
const ArtefactKindInfo* artefactKindByName(const std::string& name);

/// The kind of the artefact in `dir`, from its metadata file alone (cheap: no
/// tensors are opened); nullopt for a folder that holds none (a plain model
/// folder is not an artefact). A config.json with a "moefication" block is an
/// export, calibrated when the block has "calibration". Never throws.
std::optional<ArtefactKind> identifyArtefact(const std::filesystem::path& dir);

/// What readMoeExport() returns: the validated "moefication" block.
struct MoeExportInfo {
  nlohmann::json block;  ///< config.json's "moefication"
  bool calibrated = false;
  std::string router;  ///< router kind
  std::vector<int> layers, experts, topK;
};
/// Validates an export's metadata without loading weights: config.json's
/// moefication block (format, version, same-length layer lists, top-k in
/// [1, E], checksum) and that the weights file exists and carries the same
/// checksum in its header. Throws FormatError/IoError naming the file.
MoeExportInfo readMoeExport(const std::filesystem::path& dir);

}  // namespace moefy

namespace moefy {

/// A per-site value of partition.json's "metrics" (site index `layer`, keyed by
/// siteJsonKey of its site: docs/formats.md), NaN when absent or not a number.
double partitionMetric(const nlohmann::json& partitionJson, int layer, const std::string& key);
/// The site's oracle recall@k list (k = 1..E, as partitionMetric), empty when absent.
std::vector<double> partitionRecallAtK(const nlohmann::json& partitionJson, int layer);

}  // namespace moefy
