#pragma once
// Checking the links an artefact records (analysis/io/links.h): broken
// (missing target) and stale (the target's content fingerprint changed).
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/project/artefact.h"

namespace moefy {

/// One link an artefact records, and what is at its end now.
struct LinkStatus {
  enum State { Ok, Missing, Stale, Unchecked };
  std::string role;            ///< "recording", "partition", "model", "router", "moe", "corpus"
  std::filesystem::path path;  ///< resolved absolute target ("" if none)
  std::string fingerprint;     ///< recorded ("" for version 1 links)
  State state = Unchecked;     ///< Unchecked: no fingerprint recorded, or a model/corpus (checked when loaded)
  std::string message;         ///< one line naming the artefact, the role and the target
};

/// Every link the artefact `dir` of `kind` records (version 1 and 2 layouts),
/// each checked: Missing when the target does not exist, Stale when an
/// artefact target's folderFingerprint differs from the recorded one (only
/// with `checkFingerprints`; without, existing targets are Unchecked and no
/// target file is read). Throws the kind reader's errors for an unreadable
/// metadata file.
std::vector<LinkStatus> artefactLinks(ArtefactKind kind, const std::filesystem::path& dir,
                                      bool checkFingerprints = true);

}  // namespace moefy
