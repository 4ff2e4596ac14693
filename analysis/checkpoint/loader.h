#pragma once
// loadModel(): the one entry point the CLI and GUI use to open a model folder.
// It loads dense checkpoints and MoE exports alike (a config.json with a
// "moefication" block), and finds the folder's tokenizer.
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "analysis/model/model.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  ///< null if the folder has none
  std::string tokenizerError;            ///< why it is null (for messages)
  nlohmann::json moefication;            ///< the MoE block, null for dense models
  bool isMoe() const { return !moefication.is_null(); }
};

/// Loads a checkpoint folder (dense or MoE export) onto `device`
/// (LoadOptions::device; a MoE export's experts and routers go there too).
/// Throws Error subclasses naming the file and tensor, ParameterError for a
/// device this build cannot use.
LoadedModel loadModel(const std::filesystem::path& dir, c10::Device device = c10::Device(c10::kCPU));

/// The architecture summary as JSON (what `moefy inspect --json` prints).
/// For a MoE export, "parameters" counts the experts and routers in
/// moe.safetensors too ("expert_parameters", "router_parameters" give the
/// split; the neuron labels are not counted), "moefication" is the config's
/// block and "moefication_summary" its one-line summary (moeficationSummary).
nlohmann::json describeModel(const LoadedModel& loaded);

/// One line for a MoE export's moefication block, e.g. "MoEfied: 16 experts
/// of 64 neurons in 4 of 4 layers (0-3), top-4, mlp router" (expert counts
/// and top-k that differ between layers show as a range, "8-16").
std::string moeficationSummary(const nlohmann::json& block, const ModelConfig& c);

/// The same summary from config.json, the safetensors headers and the
/// tokenizer files only: no weight is read, so it is cheap on a 7B model.
/// "parameters" counts the stored tensors (MoE experts and routers included
/// as in describeModel, the architecture's ignorable buffers excluded); "fingerprint" is left out (it
/// samples weight values; loadModel computes it). Throws FormatError/IoError
/// naming config.json or the weights file.
nlohmann::json describeModelFiles(const std::filesystem::path& dir);

}  // namespace moefy
