#pragma once
// Recording: read access to a recording folder (docs/formats.md "Recording").
// open() validates the manifest and the presence and shape of every tensor it
// promises, so later accessors cannot fail on a malformed folder.
#include <ATen/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "analysis/model/site.h"
#include "analysis/record/recorder.h"

namespace moefy {

class Model;
class SafetensorsFile;

// ---------------------------------------------------------------- packed co-activation
//
// Recording format version 2 (docs/formats.md "Recording") stores each
// symmetric [n, n] co-activation matrix (`<site>.coact` I32, `<site>.coact_soft`
// F32) as its row-major upper triangle including the diagonal: a 1-D tensor
// of n(n+1)/2 elements in which row i holds columns i..n-1. Element (i, j),
// i <= j, sits at
//   k(i, j) = i*n - i*(i-1)/2 + (j - i)
// (rows 0..i-1 hold n + (n-1) + ... + (n-i+1) = i*n - i*(i-1)/2 elements);
// (j, i) is the same element. Version 1 stored the full [n, n] matrix, twice
// the bytes. These helpers are the only place that packs or unpacks; the
// recorder writes with them and Recording reads with them.

/// n(n+1)/2, the packed length of an [n, n] matrix (n >= 0).
int64_t upperTriangleSize(int64_t n);
/// k(i, j) above: the packed index of (i, j), for 0 <= i <= j < n (not checked).
int64_t upperTriangleIndex(int64_t n, int64_t i, int64_t j);
/// The upper triangle of a square [n, n] tensor as a new contiguous 1-D
/// tensor of n(n+1)/2 elements of its dtype (the lower triangle is not read).
/// Elements of 4 or 8 bytes (I32, F32, I64, F64). Throws ParameterError for
/// other shapes or dtypes. Thread-safe; parallel over rows (OpenMP).
at::Tensor packUpperTriangle(const at::Tensor& square);
/// The symmetric [n, n] matrix of a packed 1-D tensor of n(n+1)/2 elements, as
/// a new contiguous tensor of its dtype. Throws ParameterError when `packed`
/// is not 1-D of that length or its elements are not 4 or 8 bytes (readers
/// check the shape first, to name the file). Thread-safe; O(n^2), parallel.
at::Tensor unpackUpperTriangle(const at::Tensor& packed, int64_t n);
/// In place, for the writer (no second buffer): moves the upper triangle of a
/// contiguous [n, n] tensor into its first n(n+1)/2 elements and returns a
/// view of them. The tensor does not hold the matrix until
/// unpackUpperTriangleInPlace. Throws ParameterError as packUpperTriangle, and
/// for a non-contiguous tensor. Not thread-safe on the same tensor.
at::Tensor packUpperTriangleInPlace(const at::Tensor& square);
/// Undoes packUpperTriangleInPlace: the [n, n] tensor holds the symmetric
/// matrix again (upper triangle restored, lower triangle mirrored from it).
/// Precondition: the tensor was packed in place and not resized since.
void unpackUpperTriangleInPlace(const at::Tensor& square);

/// Per-site data is indexed by site index (analysis/model/site.h "Site
/// indices": the layer for single-stack models; enc.blk.L -> L, dec.blk.L ->
/// modelLayers() + L for encoder-decoder models). `layers()` lists the
/// recorded site indices, `sites()` their sites. Encoder-decoder recordings
/// keep one token stream per stack (its token count and reservoir): the
/// per-site forms tokens(L), sampleCount(L), sampleTokenIds(L), ... give the
/// figures of the site's stack; the forms without a site give the first
/// recorded site's stream (the only one of a single-stack recording), except
/// tokens(), the total over the streams.
///
/// Native MoE recordings (nativeMoe()) hold expert sites blk.L.exp.E and
/// shared sites blk.L.shared (site.h "Expert site indices"), each of its own
/// width (width()); an expert site counts the tokens routed to it
/// (siteTokens()). Their MoE layers (routingLayers()) carry the routing
/// statistics (expertUsage(), expertCooccurrence(), expertCategoryUsage())
/// and the layer's FFN input samples (sampleMoeFfnIn(), which sampleFfnIn()
/// of their expert and shared sites returns). open() checks them: shapes,
/// non-negative, co-occurrence symmetric with the usage on its diagonal and
/// k - 1 times the usage off it per row, usage summing to tokens x k.
class Recording {
 public:
  /// Opens and validates REC_DIR. Checkpoint folders (manifest "complete":
  /// false) are refused unless allowPartial. Throws FormatError/IoError naming
  /// the file and key or tensor.
  static Recording open(const std::filesystem::path& dir, bool allowPartial = false);

  const std::filesystem::path& dir() const { return dir_; }
  const nlohmann::json& manifest() const { return manifest_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& modelPath() const { return modelPath_; }
  int dFF() const { return dFF_; }
  int dModel() const { return dModel_; }
  int modelLayers() const { return modelLayers_; }
  /// Decoder blocks of an encoder-decoder model (0 for single-stack models).
  int decoderLayers() const { return decoderLayers_; }
  bool encoderDecoder() const { return encoderDecoder_; }
  const std::vector<int>& layers() const { return layers_; }
  /// The recorded sites, parallel to layers().
  const std::vector<Site>& sites() const { return sites_; }
  /// The site of a recorded site index (ParameterError if not recorded).
  Site site(int layer) const;
  /// The site index of a recorded site, or -1.
  int layerOf(const Site& site) const;
  bool hasLayer(int layer) const;
  int64_t tokens() const { return tokens_; }
  /// Tokens of the site's stream (== tokens() for single-stack recordings).
  int64_t tokens(int layer) const;
  /// Tokens a site's statistics count: an expert site's usage (the tokens
  /// routed to it), tokens(layer) for every other site.
  int64_t siteTokens(int layer) const;
  /// Hidden width of a recorded site (d_ff; d_expert or d_shared for the
  /// expert and shared sites of a native MoE recording).
  int width(int layer) const;
  int64_t sequences() const { return sequences_; }
  int64_t chunksDone() const { return chunksDone_; }
  bool complete() const { return complete_; }
  const std::vector<std::string>& categories() const { return categories_; }
  ActiveRule activeRule() const { return active_; }
  bool hasSoftCoact() const { return soft_; }
  /// The manifest's format version: 1 (full co-activation matrices) or 2
  /// (packed upper triangles); both read the same through coact().
  int formatVersion() const { return version_; }

  // Statistics of one recorded layer (throws ParameterError for other layers).
  at::Tensor count(int layer) const;           ///< I64 [d_ff]
  at::Tensor sum(int layer) const;             ///< F64 [d_ff]
  at::Tensor sumsq(int layer) const;           ///< F64 [d_ff]
  at::Tensor max(int layer) const;             ///< F32 [d_ff]
  at::Tensor activeHist(int layer) const;      ///< I64 [d_ff + 1]
  at::Tensor categoryCount(int layer) const;   ///< I64 [n_categories, d_ff]
  at::Tensor categoryTokens(int layer) const;  ///< I64 [n_categories]
  /// The exact accumulators behind sum() and sumsq(): I64 [d_ff, 3] records
  /// (lo, hi, flags) of a signed 128-bit fixed-point sum with 40 fractional
  /// bits (analysis/record/exact_sum.h; docs/formats.md "Recording"). Adding
  /// them is exact and order-independent, which --resume, --merge and the
  /// reduction across mpirun's ranks rely on. Undefined (not an error) for
  /// recordings written before these accumulators existed and merges of such.
  at::Tensor sumExact(int layer) const;
  at::Tensor sumsqExact(int layer) const;
  /// I32 [d_ff, d_ff], symmetric: a zero-copy view of a version 1 file, a new
  /// tensor expanded from the packed upper triangle of a version 2 file
  /// (O(d_ff^2) per call; callers that reuse it keep it).
  at::Tensor coact(int layer) const;
  /// F32 [d_ff, d_ff] as coact(), undefined if not recorded.
  at::Tensor coactSoft(int layer) const;
  /// I64 [d_ff, d_ff]: a checkpoint's exact soft co-activation sums, in units
  /// of 2^-32 (what --resume continues); undefined in complete recordings and
  /// when not recorded.
  at::Tensor coactSoftExact(int layer) const;

  // Reservoir samples (the same S tokens for every layer).
  int64_t sampleCount() const { return samples_; }
  at::Tensor sampleTokenIds() const;    ///< I32 [S]
  at::Tensor sampleDocIds() const;      ///< I64 [S]
  at::Tensor samplePositions() const;   ///< I32 [S]
  at::Tensor sampleCategories() const;  ///< I32 [S]
  // The same, for the stream of a recorded site (its stack's reservoir; the
  // decoder's positions are decoder input positions, its doc ids pair ids).
  int64_t sampleCount(int layer) const;
  at::Tensor sampleTokenIds(int layer) const;
  at::Tensor sampleDocIds(int layer) const;
  at::Tensor samplePositions(int layer) const;
  at::Tensor sampleCategories(int layer) const;
  at::Tensor sampleFfnIn(int layer) const;   ///< F16 [S, d_model]
  at::Tensor sampleFfnAct(int layer) const;  ///< F16 [S, d_ff]
  /// I64 [S]: the index of each sample row's token in its stream (the order
  /// the recorder saw the tokens, from 0): which token Algorithm R kept in
  /// the slot. Undefined when absent (older recordings, merges).
  at::Tensor sampleTokenIndex(int layer) const;

  // Native MoE recordings.
  bool nativeMoe() const { return experts_ > 0; }
  int experts() const { return experts_; }  ///< E (0 for dense models)
  int topK() const { return topK_; }        ///< k
  /// The MoE layers whose routing statistics are recorded, ascending.
  const std::vector<int>& routingLayers() const { return routingLayers_; }
  /// Routing statistics of a MoE layer (ParameterError if not recorded):
  at::Tensor expertUsage(int moeLayer) const;          ///< I64 [E]: tokens routing to each expert
  at::Tensor expertCooccurrence(int moeLayer) const;   ///< I64 [E, E], symmetric, diagonal = usage
  at::Tensor expertCategoryUsage(int moeLayer) const;  ///< I64 [n_categories, E]
  at::Tensor sampleMoeFfnIn(int moeLayer) const;       ///< F16 [S, d_model]: the layer's FFN input
  /// U8 [S] of an expert site: 1 where the sampled token was routed to the
  /// expert (its sampleFfnAct row holds the hidden; zeros elsewhere).
  at::Tensor sampleRouted(int layer) const;

  /// Throws ParameterError (CLI exit 2) if `model` is not the model this recording was made
  /// with (fingerprint or shape mismatch), naming both.
  void checkModel(const Model& model) const;

 private:
  std::filesystem::path dir_;
  nlohmann::json manifest_;
  std::string fingerprint_, modelPath_;
  int dFF_ = 0, dModel_ = 0, modelLayers_ = 0, decoderLayers_ = 0;
  bool encoderDecoder_ = false;
  std::vector<int> layers_;
  std::vector<Site> sites_;
  std::vector<int> widths_;  // parallel to layers_
  int experts_ = 0, topK_ = 0, dExpert_ = 0, dShared_ = 0;
  std::vector<int> moeLayers_;      // the model's MoE layers (manifest model.moe_layers)
  std::vector<int> routingLayers_;  // those with recorded routing statistics (manifest moe.layers)
  void requireRouting(int moeLayer) const;
  // Token streams: prefix of the sample tensors ("", "enc.", "dec."), tokens, samples.
  struct Stream {
    std::string prefix;
    int64_t tokens = 0, samples = 0;
  };
  std::vector<Stream> streams_;
  std::vector<size_t> streamOf_;  // parallel to layers_
  const Stream& streamOfLayer(int layer) const;
  std::string tname(int layer, const char* what) const { return site(layer).prefix() + what; }
  int64_t tokens_ = 0, sequences_ = 0, chunksDone_ = 0, samples_ = 0;
  bool complete_ = true, soft_ = false;
  int version_ = 2;
  std::vector<std::string> categories_;
  ActiveRule active_;
  std::shared_ptr<SafetensorsFile> stats_, coact_, sampleFile_;
  // The full [n, n] matrix of coact.safetensors tensor `name` (shape checked by open()).
  at::Tensor coactTensor(const std::string& name, int64_t n) const;
  void requireLayer(int layer) const;
};

}  // namespace moefy
