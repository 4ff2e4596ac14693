#pragma once
// Links between artefacts and their provenance (docs/formats.md "Links and
// provenance", format version 2).
//
// An artefact records each input it was made from as a link
//   {"path": "<the input's folder, relative to the artefact's own folder>",
//    "fingerprint": "<16 hex digits>"}
// so that a workspace moved, copied or renamed as a whole still resolves (the
// relative path does not change), and a link whose target was replaced is
// detected (the fingerprint differs) rather than silently followed. Artefact
// targets carry their content fingerprint (folderFingerprint); model folders
// carry the model fingerprint (Model::fingerprint). Version 1 artefacts hold
// absolute path strings; resolveLinkPath reads both. Project::checkLinks
// (analysis/project/link_check.h) reports broken and stale links by name.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace moefy {

/// Content fingerprint of a folder: FNV-1a over the sorted relative names,
/// sizes and bytes of its regular files (recursively, except sub-folders that
/// are artefacts or workspaces of their own: those holding manifest.json,
/// partition.json, router.json, eval.json, front.json, analysis.json,
/// workspace.json or config.json; files over 16 MiB contribute their first
/// and last MiB, which for safetensors include the header). 16 hex digits. Throws IoError naming an unreadable file.
/// Cost: reads at most 16 MiB per file.
std::string folderFingerprint(const std::filesystem::path& dir);

/// Content fingerprint of an input that may be a folder or a single file (a
/// corpus: a folder of documents, a .txt, .jsonl or .ids file): a folder's is
/// folderFingerprint, a regular file's is FNV-1a over its size and bytes (the
/// same 16 MiB rule). 16 hex digits. Throws IoError naming a missing or
/// unreadable path. Thread-safe.
std::string contentFingerprint(const std::filesystem::path& path);

/// The link an artefact that will live in `artefactDir` (its final folder, or
/// the temporary sibling an atomic write fills: both give the same relative
/// path) records to `target`. The path is relative when both lie under a
/// common folder other than the filesystem root, else absolute.
nlohmann::json makeLink(const std::filesystem::path& artefactDir, const std::filesystem::path& target,
                        const std::string& fingerprint);

/// The same link as recorded by an artefact in `fromDir`, re-expressed for an
/// artefact in `toDir` (calibration copies an export's block into a new
/// folder). Keys other than "path" and "absolute" are kept; an empty link is
/// returned unchanged.
nlohmann::json relink(const std::filesystem::path& fromDir, const std::filesystem::path& toDir,
                      const nlohmann::json& link);

/// The provenance block every version 2 artefact carries:
/// {"step", "options" (every option, defaults included), "inputs" ({role:
/// fingerprint}), "tool_version"}.
nlohmann::json provenanceBlock(const std::string& step, const nlohmann::json& options, const nlohmann::json& inputs);

/// Resolves a link an artefact in `fromDir` recorded to another artefact or a
/// model folder. Version 2 links are {"path": relative to fromDir,
/// "absolute": the target's absolute path when written (absent for targets
/// inside a temporary atomic-write folder), "fingerprint": ...} (or a relative
/// string): the relative path wins when it exists (the tree was moved, copied
/// or renamed as a whole), else the absolute one when it exists (an input
/// outside the copied tree, such as a model folder); version 1 links are absolute
/// path strings, used as they are, except that a path into a temporary
/// atomic-write folder ("NAME.tmp-XXXX/...", as `moefy demo` of version 1
/// could leave) falls back to the final folder when that exists. Returns the
/// absolute, normalised path ("" for an empty link); never throws.
std::filesystem::path resolveLinkPath(const std::filesystem::path& fromDir, const nlohmann::json& link);

}  // namespace moefy
