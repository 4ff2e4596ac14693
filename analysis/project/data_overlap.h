#pragma once
// Does an evaluation read documents that the recordings behind it read?
// Follows the evaluation's links (partition, routers, MoE export) down to
// their recordings and compares each recording's data with the evaluation's
// (analysis/eval/eval_data.h dataOverlap). `moefy eval` warns with it, the
// studio shows a badge.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/eval/eval_data.h"
#include "analysis/project/artefact.h"

namespace moefy {

/// The recording folders an artefact was made from: a recording itself; a
/// partition's recording link; a router's partition; an export's partition
/// (and a calibrated export's source export); an evaluation's partition,
/// routers and MoE export. Links are followed without fingerprint checks
/// (artefactLinks with checkFingerprints = false); missing or unreadable
/// targets are skipped. Sorted, without duplicates; at most 8 links deep.
/// Never throws for a broken link; throws the kind reader's errors for an
/// unreadable metadata file of `dir` itself. Thread-safe.
std::vector<std::filesystem::path> recordingsBehind(ArtefactKind kind, const std::filesystem::path& dir);

/// One recording behind an evaluation, compared with its data.
struct RecordingOverlap {
  std::filesystem::path recording;
  DataOverlap overlap;
  /// "recording REC overlaps the evaluation data: <reason>" (one line), or
  /// "... may overlap ..." for DataOverlap::Unknown; "" when disjoint.
  std::string message;
};

/// For the evaluation document `evalDoc` whose links are relative to
/// `evalDir` (a written eval.json's folder, or the working directory for the
/// document runEvaluation returns): every recording behind its source
/// (partition, routers, moe), compared with evalDataSelection(evalDoc,
/// evalDir). When the splits of one corpus differ in seed, the corpus is
/// opened for its document count. Reads only metadata (manifest.json,
/// partition.json, ...). Never throws: an unreadable recording is skipped.
/// Thread-safe.
std::vector<RecordingOverlap> evaluationOverlaps(const nlohmann::json& evalDoc, const std::filesystem::path& evalDir);

/// The same for the evaluation folder `evalDir` (reads eval.json with
/// readEvalFile). Throws the reader's IoError/FormatError naming eval.json.
std::vector<RecordingOverlap> evaluationOverlaps(const std::filesystem::path& evalDir);

}  // namespace moefy
