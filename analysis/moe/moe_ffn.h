#pragma once
// MoeFfn: the sparse Mixture-of-Experts FFN that replaces a model's dense FFNs
// (installed with Model::setFfnOverride). Per token, the layer's router scores
// the experts, the top-k are selected, and only those experts are computed.
//
// Compute paths (F32):
//  - inference: tokens are grouped by expert ("batching by expert"); each
//    selected expert runs one GEMM over its tokens on its contiguous weight
//    blocks (a GEMV when it has a single token, e.g. batch-1 decoding).
//    Experts run in parallel over the runtime's threads, each thread
//    accumulating into its own output buffer; a shared expert runs as pieces
//    of about a routed expert's size, so that it spreads over the threads.
//  - autograd (grad mode on and weights or input requiring grad), and any
//    device other than the CPU (onDevice()): a masked dense computation in
//    ATen ops, so calibration can train the experts and a GPU runs the same
//    arithmetic. It computes every expert and zeroes the unselected ones:
//    exact, not sparse (the speed figures are those of the CPU kernel).
// A layer may have a shared expert (ExpertLayout::shared), computed for every
// token beside the routed top-k. Selecting all experts reproduces the dense
// FFN up to float summation order.
#include <ATen/Tensor.h>

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "analysis/experts/moe_layer.h"
#include "analysis/model/model.h"
#include "analysis/route/router.h"

namespace moefy {

struct MoeLayer {
  std::shared_ptr<const MoeLayerWeights> weights;  ///< null: the layer stays dense
  std::shared_ptr<const LayerRouter> router;
  int topK = 0;  ///< experts per token, in [1, E] (dynamic-k: the most)
};

class MoeFfn : public FfnOverride {
 public:
  /// `layers` and `dense` are indexed by site index (the model layer for
  /// single-stack models; analysis/model/site.h "Site indices"); dense[L] is
  /// used where layers[L].weights is null. `sites` names the site of each
  /// index (encoder-decoder and native MoE models, whose forward calls
  /// forwardSite; siteIndexTable()); empty = blk.L. With a site list an entry
  /// may have neither experts nor dense weights (an index without an FFN of
  /// its own, e.g. the blk.L of a native MoE layer): forward() there throws
  /// ParameterError. Throws ParameterError for a top-k outside [1, E] or a
  /// site list of another length, FormatError for an entry without weights
  /// when there is no site list.
  MoeFfn(std::vector<MoeLayer> layers, std::vector<FfnWeights> dense, std::vector<Site> sites = {});
  /// Shares the weights, routers and sites (not the device copies of onDevice()).
  MoeFfn(const MoeFfn& other) : layers_(other.layers_), dense_(other.dense_), sites_(other.sites_) {}

  /// x [N, d_model] -> [N, d_model]; hidden [N, d_ff] in original neuron order
  /// (zeros for the neurons of unselected experts).
  at::Tensor forward(int layer, const at::Tensor& x, at::Tensor* hidden) const override;
  /// The FFN of a site: forward() at the site's index. ParameterError for a
  /// site this MoE FFN does not cover.
  at::Tensor forwardSite(const Site& site, const at::Tensor& x, at::Tensor* hidden) const override;
  /// The site index of `site`, or -1.
  int indexOf(const Site& site) const;
  /// The site of index L (blk.L without a site list).
  Site siteAt(int layer) const;
  /// Selected experts [N, k] (int64) of x [N, d_model]. Layer must be MoE.
  /// Dynamic-k routers (k = the layer's top-k, the most a token takes) end a
  /// token's row with -1 after its own k experts (dynamicKExperts).
  at::Tensor route(int layer, const at::Tensor& x) const;
  /// The sparse FFN for a given selection sel [N, k] (int64; -1 = no expert),
  /// plus the layer's shared expert when it has one.
  at::Tensor compute(int layer, const at::Tensor& x, const at::Tensor& sel, at::Tensor* hidden) const;

  /// Same experts and routers, other top-k: k[L] per model layer (ignored for dense layers).
  std::shared_ptr<MoeFfn> withTopK(const std::vector<int>& k) const;
  /// top-k = max(1, round(fraction * E)) in every MoE layer (dynamic-k: the
  /// most experts per token; at fraction 1 also the fewest, so every expert runs).
  std::shared_ptr<MoeFfn> withFraction(double fraction) const;
  /// The same MoE with the MoE sites where keep[L] is false turned back into
  /// their dense FFN (the experts unpacked: MoeLayerWeights::unpack), e.g.
  /// the encoder-only or decoder-only variant of an encoder-decoder MoE.
  std::shared_ptr<MoeFfn> withMoeOnly(const std::vector<bool>& keep) const;
  const std::vector<Site>& sites() const { return sites_; }
  /// A copy with every expert weight, layout index, router and dense FFN on
  /// `device`, made once per device and kept while this object lives (eval
  /// sets each candidate on the model for every batch).
  /// Its forward() takes x on that device and runs the masked ATen path;
  /// route() works there too (dynamic-k's selection loop runs on the host
  /// and copies [N, k] ids back). Throws what requireDevice() throws.
  std::shared_ptr<const FfnOverride> onDevice(c10::Device device) const override;

  const std::vector<MoeLayer>& layers() const { return layers_; }
  const std::vector<FfnWeights>& dense() const { return dense_; }
  bool isMoe(int layer) const { return layer >= 0 && layer < static_cast<int>(layers_.size()) && layers_[layer].weights; }

 private:
  std::vector<MoeLayer> layers_;
  std::vector<FfnWeights> dense_;
  std::vector<Site> sites_;  // empty = blk.L
  // onDevice()'s copies by device; guarded by deviceMu_ (onDevice is const and thread-safe).
  mutable std::mutex deviceMu_;
  mutable std::vector<std::pair<c10::Device, std::shared_ptr<const FfnOverride>>> deviceCopies_;
};

/// A dense FFN run through the MoE inference kernel as one expert that holds
/// every neuron (GEMV for one token, one GEMM per projection otherwise, the
/// same activation code as the experts). The like-for-like dense baseline of
/// speed figures: ATen's linear() runs a one-row product as a GEMM, which
/// OpenBLAS does several times slower than a GEMV, and the kernel's
/// vectorised activation is faster than ATen's. Indexed by model layer
/// (single-stack models; Model::setFfnOverride). forward(): x [N, d_model]
/// (any float type; computed in F32) -> [N, d_model] F32; hidden [N, d_ff] in
/// original order when asked. Construction packs (copies) the weights; throws
/// what MoeLayerWeights::pack throws. forward() is const and thread-safe.
class DenseKernelFfn : public FfnOverride {
 public:
  explicit DenseKernelFfn(const std::vector<FfnWeights>& dense);
  /// Every layer of `model` (Model::ffnWeights; ParameterError for a model
  /// without dense FFNs, e.g. a native MoE model).
  explicit DenseKernelFfn(const Model& model);
  at::Tensor forward(int layer, const at::Tensor& x, at::Tensor* hidden) const override;

 private:
  std::vector<std::shared_ptr<MoeLayerWeights>> layers_;
};

/// The site of every site index 0 .. n-1 of `config` (analysis/model/site.h
/// "Site indices" and "Expert site indices"): ffnSites() for dense and
/// encoder-decoder models; for native MoE models blk.L of every layer, then
/// blk.L.exp.E of every (L, E), then blk.L.shared of every L when the model
/// has a shared expert. An entry whose site the model lacks (the blk.L of a
/// MoE layer, the experts of a dense layer) keeps its place, and
/// config.siteIndex() of it is not its index. The index list of MoeFfn's
/// sites and of per-site eval figures. Thread-safe.
std::vector<Site> siteIndexTable(const ModelConfig& config);

/// The inference kernel on raw buffers: x [N, d_model], sel [N, k] (values in
/// [0, E), or -1 for no expert, so tokens may use fewer than k), y [N, d_model]
/// (overwritten, b2 included); hidden [N, d_ff] (original order, overwritten)
/// or null. A layout with a shared expert (ExpertLayout::shared) computes it
/// for every token, in addition to the selected experts. Exposed for
/// benchmarks and tests. Throws ParameterError for an id outside [-1, E).
/// Threads: at::get_num_threads() contiguous ranges of the experts, each
/// summed into its own buffer and then added in range order, so the result
/// depends only on the inputs and that setting (not on which threads run,
/// nor on a nested call's smaller team). Thread-safe: the buffers are the
/// calling thread's (kept between calls up to 4 MiB).
void sparseFfnKernel(const MoeLayerWeights& w, const float* x, int64_t n, const int64_t* sel, int k, float* y,
                     float* hidden);

/// Whether the kernel calls CBLAS directly (else it falls back to ATen matmuls).
bool sparseKernelUsesCblas();
/// Whether the few-token AVX2/FMA expert kernels can run on this CPU.
bool sparseKernelUsesSimd();
/// Whether the few-token kernels use their AVX-512 form (CPU with AVX-512F,
/// d_model % 16 == 0, not disabled by env MOEFY_NO_AVX512 or
/// setFewTokenAvx512(false)); else the AVX2 form. The two sum in different
/// orders, so they differ by float rounding. Settable for tests and benchmarks
/// (process-wide, atomic).
bool sparseKernelUsesAvx512();
void setFewTokenAvx512(bool on);
/// With the AVX-512 form, an expert that a single token picked also takes the
/// few-token kernels (not BLAS's GEMV) when its up block (rows x d_model
/// floats) is at most this many bytes: half the L2 size (sysconf), so that
/// the next matrix's rows requested meanwhile stay in L2.
int64_t oneTokenBytesMax();
/// Experts picked by 2..fewTokenMax() tokens of a batch (1..fewTokenMax()
/// under oneTokenBytesMax()) run through the few-token SIMD kernels, others
/// through BLAS (default 16, from
/// bench_moe_ffn; env MOEFY_FEW_MAX; 0 = BLAS only). Settable for tests.
int64_t fewTokenMax();
void setFewTokenMax(int64_t tokens);

}  // namespace moefy
