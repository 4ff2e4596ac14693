#include "analysis/moe/moe_checkpoint.h"

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"

namespace moefy {

nlohmann::json readMoeficationBlock(const std::filesystem::path& dir) {
  auto cfg = dir / "config.json";
  if (!std::filesystem::exists(cfg)) return nullptr;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(readFile(cfg));
  } catch (const nlohmann::json::exception&) {
    return nullptr;  // Model::load reports the malformed config with its context
  }
  if (!j.is_object() || !j.contains("moefication")) return nullptr;
  return j["moefication"];
}

// TODO(issue 5): expert loading. Until MoE export lands, MoE folders are refused clearly.
void attachMoeFromCheckpoint(Model&, const nlohmann::json&, const std::filesystem::path& dir) {
  throw FormatError((dir / "config.json").string() + ": MoE checkpoints are not supported by this build yet");
}

}  // namespace moefy
