#pragma once
// Assembling a MoE model from artefacts (partition + routers), and exporting
// it as a Hugging Face-style folder that loadModel() reloads (docs/moe.md).
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "analysis/moe/moe_ffn.h"
#include "analysis/route/route_inputs.h"
#include "analysis/route/router.h"

namespace moefy {

class JobContext;
class Model;

/// Checks that routers belong to this model and partition: fingerprint, layer
/// list, expert counts, labels hash, router tensor shapes. Throws ParameterError
/// / FormatError naming the artefact and the layer.
void checkRouterSet(const Model& model, const PartitionData& part, const RouterSet& routers);

/// Builds the MoE FFN of a dense model from a partition and its routers.
/// topK > 0 overrides the routers' top-k in every layer (must be in [1, E]).
std::shared_ptr<MoeFfn> buildMoeFfn(const Model& model, const PartitionData& part, const RouterSet& routers,
                                    int topK = 0);

struct ExportOptions {
  int topK = 0;        ///< 0 = the router's
  bool force = false;  ///< replace an existing output folder
};

/// Writes MOE_DIR atomically: config.json (+ "moefication" block),
/// model.safetensors (all non-expert tensors, F32), moe.safetensors (experts,
/// routers, labels) and the source's tokenizer files. Returns the block.
/// Encoder-decoder (T5) exports name their MoE sites (moefication.sites:
/// enc.blk.L / dec.blk.L, which also prefix their tensors). Throws
/// ParameterError for a native MoE model (Mixtral, Qwen2-MoE, OLMoE: not
/// supported yet, the expert sites named first) and FormatError/IoError from
/// the readers and the write.
nlohmann::json exportMoe(const Model& model, const PartitionData& part, const RouterSet& routers,
                         const std::filesystem::path& out, const ExportOptions& options, JobContext& job);

/// Writes a MoE folder for `model` (its non-expert tensors) with the experts
/// and routers of `moe`. `block` carries caller fields (source_model,
/// partition, calibration, ...); the structural fields and the checksum are
/// filled in. Returns the final block.
nlohmann::json writeMoeFolder(const Model& model, const MoeFfn& moe, RouterKind kind, nlohmann::json block,
                              const std::filesystem::path& out, bool force, JobContext& job);

/// The checksum stored in (and checked against) a moefication block: a hash of
/// the block without its "checksum" key.
std::string moeficationChecksum(const nlohmann::json& block);

}  // namespace moefy
