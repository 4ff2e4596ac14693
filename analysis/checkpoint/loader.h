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

/// Loads a checkpoint folder (dense or MoE export). Throws Error subclasses
/// naming the file and tensor.
LoadedModel loadModel(const std::filesystem::path& dir);

/// The architecture summary as JSON (what `moefy inspect --json` prints).
nlohmann::json describeModel(const LoadedModel& loaded);

/// The same summary from config.json, the safetensors headers and the
/// tokenizer files only: no weight is read, so it is cheap on a 7B model.
/// "parameters" counts the stored tensors (MoE experts included, the
/// architecture's ignorable buffers excluded); "fingerprint" is left out (it
/// samples weight values; loadModel computes it). Throws FormatError/IoError
/// naming config.json or the weights file.
nlohmann::json describeModelFiles(const std::filesystem::path& dir);

}  // namespace moefy
