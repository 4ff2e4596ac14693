#pragma once
// Reading MoE exports: a model folder whose config.json carries a
// "moefication" block (see docs/formats.md).
#include <filesystem>
#include <nlohmann/json.hpp>

namespace moefy {

class Model;

/// The config.json "moefication" block of `dir`, or null if the model is dense.
/// Throws FormatError if the block is present but malformed.
nlohmann::json readMoeficationBlock(const std::filesystem::path& dir);

/// Builds the MoE FFNs of a model loaded with LoadOptions::skipFfn from the
/// expert and router tensors in `dir`, and installs them as its FFN override.
void attachMoeFromCheckpoint(Model& model, const nlohmann::json& block, const std::filesystem::path& dir);

}  // namespace moefy
