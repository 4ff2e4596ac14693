#include "analysis/record/recorder.h"

#include <immintrin.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <omp.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <sstream>

#include "analysis/common/distributed.h"
#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/common/runtime.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/record/coact.h"
#include "analysis/record/exact_sum.h"
#include "analysis/record/recording.h"

namespace moefy {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- ActiveRule

ActiveRule ActiveRule::parse(const std::string& text) {
  ActiveRule r;
  auto number = [&](const std::string& s) {
    try {
      size_t used = 0;
      double v = std::stod(s, &used);
      if (used != s.size() || !std::isfinite(v)) throw std::invalid_argument(s);
      return v;
    } catch (const std::exception&) {
      throw ParameterError("--active: '" + text + "' has a bad number '" + s + "'");
    }
  };
  if (text == "positive") {
    r.kind = Kind::Positive;
  } else if (text.rfind("threshold:", 0) == 0) {
    r.kind = Kind::Threshold;
    r.tau = number(text.substr(10));
    if (r.tau < 0) throw ParameterError("--active: threshold TAU must be >= 0, got " + text.substr(10));
  } else if (text.rfind("top:", 0) == 0) {
    r.kind = Kind::TopP;
    r.p = number(text.substr(4));
    if (!(r.p > 0 && r.p <= 1)) throw ParameterError("--active: top P must be in (0, 1], got " + text.substr(4));
  } else {
    throw ParameterError("--active: expected positive, threshold:TAU or top:P, got '" + text + "'");
  }
  return r;
}

ActiveRule ActiveRule::defaultFor(Activation act, bool gated) {
  if (act == Activation::ReLU && !gated) return ActiveRule{};
  ActiveRule r;
  r.kind = Kind::TopP;
  r.p = 0.1;
  return r;
}

nlohmann::json ActiveRule::toJson() const {
  const char* names[] = {"positive", "threshold", "top_p"};
  return {{"rule", names[static_cast<int>(kind)]}, {"tau", tau}, {"p", p}};
}

ActiveRule ActiveRule::fromJson(const nlohmann::json& j, const std::string& context) {
  if (!j.is_object() || !j.contains("rule") || !j["rule"].is_string())
    throw FormatError(context + ": expected {\"rule\": ...}");
  ActiveRule r;
  const std::string rule = j["rule"].get<std::string>();
  if (rule == "positive")
    r.kind = Kind::Positive;
  else if (rule == "threshold")
    r.kind = Kind::Threshold;
  else if (rule == "top_p")
    r.kind = Kind::TopP;
  else
    throw FormatError(context + ": unknown rule '" + rule + "'");
  r.tau = j.value("tau", 0.0);
  r.p = j.value("p", 0.0);
  return r;
}

std::string ActiveRule::toString() const {
  std::ostringstream s;
  if (kind == Kind::Positive)
    s << "positive";
  else if (kind == Kind::Threshold)
    s << "threshold:" << tau;
  else
    s << "top:" << p;
  return s.str();
}

namespace {

// One neuron under the positive (pos) or threshold rule: the scalar compare.
inline bool activeByRule(float v, bool pos, float tau) { return pos ? v > 0.0f : std::fabs(v) > tau; }

// thresholdBits512, thresholdBitsAvx2, thresholdBitsScalar: the positive (pos)
// or threshold rule of one token, row[j] > 0 or |row[j]| > tau, as bits: bit b
// of out[g] = neuron g * 64 + b (n neurons, G = ceil(n / 64) words; bits past
// n are 0). Ordered compares: a NaN is inactive. Same bits from all three.
__attribute__((target("avx512f"))) void thresholdBits512(const float* row, int64_t n, bool pos, float tau,
                                                         uint64_t* out) {
  const __m512 cut = _mm512_set1_ps(pos ? 0.0f : tau);
  const __m512i absBits = _mm512_set1_epi32(0x7fffffff);
  for (int64_t g = 0; g * 64 < n; ++g) {
    uint64_t word = 0;
    for (int64_t q = 0; q < 4 && g * 64 + q * 16 < n; ++q) {
      const int64_t j = g * 64 + q * 16, rem = n - j;
      const __mmask16 valid = rem >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << rem) - 1u);
      __m512 v = _mm512_maskz_loadu_ps(valid, row + j);
      if (!pos) v = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), absBits));
      word |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(valid, v, cut, _CMP_GT_OQ)) << (q * 16);
    }
    out[g] = word;
  }
}

__attribute__((target("avx2"))) void thresholdBitsAvx2(const float* row, int64_t n, bool pos, float tau,
                                                       uint64_t* out) {
  const __m256 cut = _mm256_set1_ps(pos ? 0.0f : tau);
  const __m256 absBits = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t g = 0; g * 64 < n; ++g) {
    uint64_t word = 0;
    int64_t j = g * 64;
    const int64_t end = std::min(n, j + 64);
    for (; j + 8 <= end; j += 8) {
      __m256 v = _mm256_loadu_ps(row + j);
      if (!pos) v = _mm256_and_ps(v, absBits);
      word |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, cut, _CMP_GT_OQ))) << (j - g * 64);
    }
    for (; j < end; ++j) word |= static_cast<uint64_t>(activeByRule(row[j], pos, tau)) << (j - g * 64);
    out[g] = word;
  }
}

void thresholdBitsScalar(const float* row, int64_t n, bool pos, float tau, uint64_t* out) {
  for (int64_t g = 0; g * 64 < n; ++g) {
    uint64_t word = 0;
    for (int64_t j = g * 64; j < std::min(n, g * 64 + 64); ++j)
      word |= static_cast<uint64_t>(activeByRule(row[j], pos, tau)) << (j - g * 64);
    out[g] = word;
  }
}

// top:P for one token: the k-th largest |row[j]| and how many neurons equal
// to it are taken (the first ones in index order), so that exactly k are
// active. scratch holds n floats.
std::pair<float, int64_t> topKCut(const float* row, int64_t n, int64_t k, std::vector<float>& scratch) {
  for (int64_t j = 0; j < n; ++j) scratch[static_cast<size_t>(j)] = std::fabs(row[j]);
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.begin() + n, std::greater<float>());
  const float thr = scratch[static_cast<size_t>(k - 1)];
  int64_t above = 0;
  for (int64_t j = 0; j < n; ++j) above += std::fabs(row[j]) > thr;
  return {thr, k - above};
}

int64_t topKOf(const ActiveRule& rule, int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(n, std::llround(rule.p * static_cast<double>(n))));
}

}  // namespace

void activeBits(const float* h, int64_t N, int64_t n, const ActiveRule& rule, uint64_t* bits, CoactKernel kernel) {
  const int64_t G = (n + 63) / 64;
  const bool has512 = __builtin_cpu_supports("avx512f"), has2 = __builtin_cpu_supports("avx2");
  if (kernel == CoactKernel::Best)
    kernel = has512 ? CoactKernel::Avx512 : has2 ? CoactKernel::Avx2 : CoactKernel::Scalar;
  if ((kernel == CoactKernel::Avx512 && !has512) || (kernel == CoactKernel::Avx2 && !has2))
    throw ParameterError(std::string("active-bits kernel ") + coactKernelName(kernel) + " does not run on this CPU");
  if (rule.kind == ActiveRule::Kind::TopP) {
    const int64_t k = topKOf(rule, n);
#pragma omp parallel
    {
      std::vector<float> a(static_cast<size_t>(n));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < N; ++t) {
        const float* row = h + t * n;
        auto [thr, ties] = topKCut(row, n, k, a);
        uint64_t* out = bits + t * G;
        std::fill(out, out + G, uint64_t{0});
        for (int64_t j = 0; j < n; ++j) {
          const float v = std::fabs(row[j]);
          bool on = v > thr;
          if (!on && v == thr && ties > 0) on = true, --ties;
          out[j / 64] |= static_cast<uint64_t>(on) << (j % 64);
        }
      }
    }
    return;
  }
  const auto rowBits = kernel == CoactKernel::Avx512 ? thresholdBits512
                       : kernel == CoactKernel::Avx2 ? thresholdBitsAvx2
                                                     : thresholdBitsScalar;
  const bool pos = rule.kind == ActiveRule::Kind::Positive;
  const float tau = static_cast<float>(rule.tau);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < N; ++t) rowBits(h + t * n, n, pos, tau, bits + t * G);
}

fs::path checkpointPath(const fs::path& out) {
  fs::path p = out;
  if (p.filename().empty()) p = p.parent_path();
  p += ".partial";
  return p;
}

namespace {

/// The checkpoint of rank `rank` of `ranks` (mpirun): OUT.partial.rank-R-of-N;
/// OUT.partial for a single process.
fs::path rankCheckpointPath(const fs::path& out, int rank, int ranks) {
  if (ranks <= 1) return checkpointPath(out);
  return fs::path(checkpointPath(out).string() + ".rank-" + std::to_string(rank) + "-of-" + std::to_string(ranks));
}

/// The checkpoint folders of OUT on this file system, of any number of ranks
/// (OUT.partial and OUT.partial.rank-R-of-N), each with the ranks that wrote it.
std::vector<std::pair<fs::path, int>> checkpointsOf(const fs::path& out) {
  std::vector<std::pair<fs::path, int>> found;
  const fs::path single = checkpointPath(out);
  std::error_code ec;
  if (fs::is_directory(single, ec)) found.emplace_back(single, 1);
  const std::string prefix = single.filename().string() + ".rank-";
  const fs::path dir = single.parent_path().empty() ? fs::path(".") : single.parent_path();
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    int r = -1, n = -1;
    char tail = 0;
    if (name.rfind(prefix, 0) == 0 && it->is_directory(ec) &&
        std::sscanf(name.c_str() + prefix.size(), "%d-of-%d%c", &r, &n, &tail) == 2 && r >= 0 && n > 1)
      found.emplace_back(it->path(), n);
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

// ---------------------------------------------------------------- sources

SequenceSource vectorSource(std::vector<Sequence> sequences) {
  auto data = std::make_shared<std::vector<Sequence>>(std::move(sequences));
  return [data](const std::function<bool(const Sequence&)>& fn) {
    for (const auto& s : *data)
      if (!fn(s)) return;
  };
}

SequenceSource tokenFileSource(const fs::path& path, SourceInfo& info, int64_t maxTokens) {
  auto file = SafetensorsFile::open(path);
  const std::string ctx = path.string();
  const TensorInfo* ids = file->find("token_ids");
  if (!ids) throw FormatError(ctx + ": missing tensor 'token_ids' (a pre-tokenised file holds token_ids [N, T])");
  if (ids->shape.size() != 2 || ids->shape[0] == 0 || ids->shape[1] == 0)
    throw FormatError(ctx + ": tensor 'token_ids' has shape " + shapeString(ids->shape) + ", expected [N, T]");
  if (ids->dtype != DType::I32 && ids->dtype != DType::I64)
    throw FormatError(ctx + ": tensor 'token_ids' must be I32 or I64");
  const int64_t N = ids->shape[0], T = ids->shape[1];
  auto vec = [&](const char* name, int64_t fallbackKind) -> at::Tensor {
    const TensorInfo* t = file->find(name);
    if (!t) return {};
    if (t->shape != std::vector<int64_t>{N})
      throw FormatError(ctx + ": tensor '" + name + "' has shape " + shapeString(t->shape) + ", expected [" +
                        std::to_string(N) + "]");
    if (t->dtype != DType::I32 && t->dtype != DType::I64)
      throw FormatError(ctx + ": tensor '" + std::string(name) + "' must be I32 or I64");
    return file->raw(name).to(at::kLong);
  };
  at::Tensor lengths = vec("lengths", 0), docs = vec("doc_id", 0), cats = vec("category", 0);
  at::Tensor idm = file->raw("token_ids").to(at::kLong);
  info.path = path.string();
  info.kind = "tokens";
  info.categories.clear();
  auto meta = file->metadata().find("categories");
  if (meta != file->metadata().end()) {
    const auto j = parseJson(meta->second, ctx + ": metadata 'categories'");
    if (!j.is_array()) throw FormatError(ctx + ": metadata 'categories' must be a JSON list of strings");
    for (const auto& c : j) {
      if (!c.is_string()) throw FormatError(ctx + ": metadata 'categories' must be a JSON list of strings");
      info.categories.push_back(c.get<std::string>());
    }
  }
  const int64_t C = static_cast<int64_t>(info.categories.size());
  for (int64_t i = 0; i < N; ++i) {
    if (lengths.defined() && (lengths[i].item<int64_t>() < 1 || lengths[i].item<int64_t>() > T))
      throw FormatError(ctx + ": lengths[" + std::to_string(i) + "] is outside [1, " + std::to_string(T) + "]");
    if (cats.defined() && (cats[i].item<int64_t>() < -1 || cats[i].item<int64_t>() >= C))
      throw FormatError(ctx + ": category[" + std::to_string(i) + "] = " + std::to_string(cats[i].item<int64_t>()) +
                        " is outside the " + std::to_string(C) + " categories in the metadata");
  }
  // Sequences hold int32 ids: check the stored I64 values in 64 bits before
  // they are narrowed (2^32 + 5 would otherwise be recorded as token 5). The
  // model checks the ids against its vocabulary when it runs them.
  {
    at::Tensor bad = (idm < 0).logical_or_(idm > std::numeric_limits<int32_t>::max());  // [N, T]
    // Padding after a sequence's length is never read, so it is not checked.
    if (lengths.defined()) bad.logical_and_(at::arange(T, at::kLong).unsqueeze(0) < lengths.unsqueeze(1));
    if (bad.any().item<bool>()) {
      const int64_t flat = bad.flatten().nonzero()[0].item<int64_t>();
      throw FormatError(ctx + ": token_ids[" + std::to_string(flat / T) + ", " + std::to_string(flat % T) +
                        "] = " + std::to_string(idm.flatten()[flat].item<int64_t>()) +
                        " is not a valid token id (outside [0, 2^31))");
    }
  }
  return [=](const std::function<bool(const Sequence&)>& fn) {
    int64_t used = 0;
    const int64_t* p = idm.data_ptr<int64_t>();
    for (int64_t i = 0; i < N; ++i) {
      Sequence s;
      int64_t len = lengths.defined() ? lengths[i].item<int64_t>() : T;
      if (maxTokens > 0) len = std::min(len, maxTokens - used);
      if (len <= 0) return;
      s.ids.assign(p + i * T, p + i * T + len);
      s.docId = docs.defined() ? docs[i].item<int64_t>() : i;
      s.category = cats.defined() ? static_cast<int32_t>(cats[i].item<int64_t>()) : -1;
      s.start = 0;
      used += len;
      if (!fn(s)) return;
    }
  };
}

// ---------------------------------------------------------------- state

namespace {

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// Reservoir slot of global token t (Algorithm R with a counter-based RNG, so
/// the decision depends only on seed and t: resume needs no RNG state).
int64_t reservoirSlot(uint64_t seed, int64_t t, int64_t S) {
  if (S <= 0) return -1;
  if (t < S) return t;
  uint64_t r = splitmix(seed * 0x2545f4914f6cdd1dull ^ splitmix(static_cast<uint64_t>(t)));
  uint64_t j = r % static_cast<uint64_t>(t + 1);
  return j < static_cast<uint64_t>(S) ? static_cast<int64_t>(j) : -1;
}

/// fx [n, 3] += a recording's statistic: its exact accumulator `exact` when it
/// has one (bit-exact), else its F64 values `plain` (older recordings: exact
/// from here on, each value truncated to 2^-40 once). exact_sum.h.
void addExact(at::Tensor& fx, const at::Tensor& exact, const at::Tensor& plain) {
  int64_t* f = fx.data_ptr<int64_t>();
  constexpr int kR = exact_sum::kRecordInts;
  if (exact.defined()) {
    const at::Tensor e = exact.contiguous();
    const int64_t* in = e.data_ptr<int64_t>();
    for (int64_t j = 0; j < e.size(0); ++j) exact_sum::combine(in + j * kR, f + j * kR);
    return;
  }
  const at::Tensor v = plain.contiguous();
  const double* p = v.data_ptr<double>();
  for (int64_t j = 0; j < v.numel(); ++j) exact_sum::add(f + j * kR, p[j]);
}

/// MPI reduction of exact accumulators (distributed.h reduceCustomToRoot).
void combineExactRecords(const void* in, void* inout, int64_t records) {
  const auto* a = static_cast<const int64_t*>(in);
  auto* b = static_cast<int64_t*>(inout);
  for (int64_t i = 0; i < records; ++i)
    exact_sum::combine(a + i * exact_sum::kRecordInts, b + i * exact_sum::kRecordInts);
}

struct LayerState {
  at::Tensor count;      // I64 [n]
  at::Tensor sum;        // F64 [n]: the current chunk's partial sum (folded into sumFx at the chunk's end)
  at::Tensor sumsq;      // F64 [n]: the same for the squares
  at::Tensor sumFx;      // I64 [n, 3]: exact accumulator of the chunks' partial sums (exact_sum.h)
  at::Tensor sumsqFx;    // I64 [n, 3]
  at::Tensor max;        // F32 [n]
  at::Tensor hist;       // I64 [n + 1]
  at::Tensor catCount;   // I64 [C, n]
  at::Tensor catTokens;  // I64 [C]
  at::Tensor coact;      // I32 [n, n]; accumulation fills the upper triangle
  at::Tensor coactSoft;  // F32 [n, n] or undefined: the current chunk's soft co-activation (folded at its end)
  at::Tensor coactSoftFx;  // I64 [n, n]: exact sum of the chunks' soft partials in units of 2^-kSoftBits
  at::Tensor sampleIn;   // F16 [S, d_model]; undefined for expert and shared sites (their layer's MoeState has it)
  at::Tensor sampleAct;  // F16 [S, n]
  at::Tensor routed;     // U8 [S], expert sites: 1 = the sampled token was routed to the expert (sampleAct row valid)
};

// The routing statistics of one native MoE layer (docs/formats.md
// "Recording", native MoE models), over the tokens of the stream.
struct MoeState {
  at::Tensor usage;     // I64 [E]: tokens routing to each expert among their top-k
  at::Tensor cooccur;   // I64 [E, E]: tokens choosing both experts (diagonal = usage)
  at::Tensor catUsage;  // I64 [C, E]: usage per category
  at::Tensor sampleIn;  // F16 [S, d_model]: the layer's FFN input (the router's and every expert's input)
};

// A token stream of the recording: the tokens of a single-stack model, or
// those of one stack of an encoder-decoder model (the encoder's source tokens,
// the decoder's teacher-forced input tokens). Each stream has its own token
// count and reservoir; its sample tensors carry its prefix.
struct Stream {
  std::string prefix;  // "" (single stack), "enc." or "dec."
  int64_t tokens = 0;  // the stream position: tokens read so far (by every rank under mpirun)
  int64_t counted = 0;                // tokens this process's statistics count (= tokens without mpirun)
  at::Tensor sTok, sDoc, sPos, sCat;  // I32/I64/I32/I32 [S]
  // I64 [S]: the stream index (0-based token count) of the token each slot
  // holds, -1 = none. Decides, slot by slot, which rank's sample is the
  // single run's (the latest token that Algorithm R put there).
  at::Tensor sIdx;
};

struct State {
  nlohmann::json modelInfo;
  SourceInfo source;
  std::vector<int> layers;  // site indices (ModelConfig::ffnSites order), ascending
  std::vector<Site> sites;  // the site of each entry of `layers`
  bool encDec = false;
  std::vector<Stream> streams;
  nlohmann::json options;  // the manifest's options block
  ActiveRule active;
  bool soft = false;
  bool packCoact = false;    // coact as the packed upper triangle (format version 2; RecordOptions::coactStorage)
  int64_t S = 0;             // reservoir size (--samples): Algorithm R's S, recorded in the manifest
  // Rows allocated per stream: S, or fewer when --tokens caps the stream's
  // tokens below S (a slot is then never past the capacity: slot = t < tokens).
  int64_t capacity = -1;  // -1 = S
  int64_t rows() const { return capacity < 0 ? S : std::min(S, capacity); }
  int n = 0, dModel = 0;     // n: the dense d_ff (model info); the sites' widths are in `width`
  std::map<int, int> width;  // site index -> hidden width (d_ff, d_expert or d_shared)
  // Native MoE models: the MoE layers whose routing statistics are recorded
  // (the layers of the recorded expert and shared sites), E and k.
  std::vector<int> moeLayers;
  std::map<int, MoeState> moe;
  int experts = 0, topK = 0;
  int64_t tokens = 0, sequences = 0, chunks = 0;
  int rank = 0, ranks = 1;  // mpirun: this process's rank among `ranks` (a checkpoint is the rank's)
  // FNV-1a over the recorded sequences (ids, doc id, category, start), in
  // order: the corpus identity that --resume compares. Absent after a merge.
  uint64_t sequencesHash = kFnvOffset;
  bool hasSequencesHash = true;
  bool hasTokenIndex = true;  // write <stream>token_index (false after a merge: its rows come from several streams)
  std::map<int, LayerState> layer;
  std::map<int, size_t> streamOfLayer;  // site index -> index into streams
  std::map<int, Site> siteOfLayer;

  int64_t filled(const Stream& s) const { return std::min(S, s.tokens); }
  int64_t filledTotal() const {
    int64_t f = 0;
    for (const auto& s : streams) f += filled(s);
    return f;
  }
  Stream& streamOf(int L) { return streams[streamOfLayer.at(L)]; }
  /// The tensor name "<site>.<what>" of site index L.
  std::string sname(int L, const char* what) const { return siteOfLayer.at(L).prefix() + what; }
  /// The tensor name "blk.<layer>.<what>" of a MoE layer's routing statistics.
  static std::string mname(int layer, const char* what) { return Site::ofLayer(layer).prefix() + what; }
  /// Tokens a site has seen: the expert's usage count for an expert site, the stream's tokens otherwise.
  int64_t siteTokens(int L) {
    const Site& site = siteOfLayer.at(L);
    if (site.expert >= 0) return moe.at(site.layer).usage[site.expert].item<int64_t>();
    return streamOf(L).tokens;
  }

  /// Sets `sites` and the streams from `layers` (sorted site indices) and
  /// `encDec`; siteList[i] is the site of layers[i].
  void setSites(const std::vector<Site>& siteList) {
    sites.clear();
    streams.clear();
    moeLayers.clear();
    for (size_t i = 0; i < layers.size(); ++i) {
      const int L = layers[i];
      const Site site = siteList.at(i);
      if ((site.expert >= 0 || site.shared) &&
          std::find(moeLayers.begin(), moeLayers.end(), site.layer) == moeLayers.end())
        moeLayers.push_back(site.layer);
      sites.push_back(site);
      siteOfLayer[L] = site;
      const std::string prefix = !encDec ? "" : site.stack == SiteStack::Encoder ? "enc." : "dec.";
      size_t k = 0;
      while (k < streams.size() && streams[k].prefix != prefix) ++k;
      if (k == streams.size()) {
        Stream st;
        st.prefix = prefix;
        streams.push_back(std::move(st));
      }
      streamOfLayer[L] = k;
    }
    std::sort(moeLayers.begin(), moeLayers.end());
  }

  void allocate() {
    const int64_t R = rows();
    const int64_t C = static_cast<int64_t>(source.categories.size());
    for (int L : layers) {
      LayerState& s = layer[L];
      const int64_t n = width.at(L);
      const Site& site = siteOfLayer.at(L);
      s.count = at::zeros({n}, at::kLong);
      s.sum = at::zeros({n}, at::kDouble);
      s.sumsq = at::zeros({n}, at::kDouble);
      s.sumFx = at::zeros({n, exact_sum::kRecordInts}, at::kLong);
      s.sumsqFx = at::zeros({n, exact_sum::kRecordInts}, at::kLong);
      s.max = at::full({n}, -std::numeric_limits<float>::infinity(), at::kFloat);
      s.hist = at::zeros({n + 1}, at::kLong);
      s.catCount = at::zeros({C, n}, at::kLong);
      s.catTokens = at::zeros({C}, at::kLong);
      s.coact = at::zeros({n, n}, at::kInt);
      if (soft) {
        s.coactSoft = at::zeros({n, n}, at::kFloat);
        s.coactSoftFx = at::zeros({n, n}, at::kLong);
      }
      if (site.expert < 0 && !site.shared) s.sampleIn = at::empty({R, dModel}, at::kHalf);
      // Expert sites: rows of sampled tokens not routed to the expert stay zero.
      s.sampleAct = site.expert >= 0 ? at::zeros({R, n}, at::kHalf) : at::empty({R, n}, at::kHalf);
      if (site.expert >= 0) s.routed = at::zeros({R}, at::kByte);
    }
    for (int l : moeLayers) {
      MoeState& m = moe[l];
      m.usage = at::zeros({experts}, at::kLong);
      m.cooccur = at::zeros({experts, experts}, at::kLong);
      m.catUsage = at::zeros({C, experts}, at::kLong);
      m.sampleIn = at::empty({R, dModel}, at::kHalf);
    }
    for (auto& sm : streams) {
      sm.sTok = at::zeros({R}, at::kInt);
      sm.sDoc = at::zeros({R}, at::kLong);
      sm.sPos = at::zeros({R}, at::kInt);
      sm.sCat = at::zeros({R}, at::kInt);
      sm.sIdx = at::full({R}, -1, at::kLong);
    }
  }

  /// Adds every site's chunk partials (sum, sumsq) into its exact
  /// accumulators and clears them: called at the end of each chunk, so that
  /// the totals do not depend on how the chunks are grouped (exact_sum.h).
  void foldPartials() {
    for (int L : layers) {
      LayerState& s = layer.at(L);
      for (auto [partial, fx] : {std::pair{&s.sum, &s.sumFx}, std::pair{&s.sumsq, &s.sumsqFx}}) {
        double* p = partial->data_ptr<double>();
        int64_t* f = fx->data_ptr<int64_t>();
        const int64_t n = partial->numel();
        for (int64_t j = 0; j < n; ++j) {
          exact_sum::add(f + j * exact_sum::kRecordInts, p[j]);
          p[j] = 0;
        }
      }
      if (soft) foldSoft(s.coactSoft, s.coactSoftFx, siteOfLayer.at(L).name());
    }
  }

  /// Soft co-activation partials are exact in units of 2^-kSoftBits
  /// (truncated toward zero): a chunk's partial is at most its 8-token
  /// blocks (each adds at most 1), and the total at most 2^28 blocks, so the
  /// I64 sum (< 2^60) cannot overflow.
  static constexpr int kSoftBits = 32;
  static void foldSoft(at::Tensor& partial, at::Tensor& fx, const std::string& site) {
    float* p = partial.data_ptr<float>();
    int64_t* f = fx.data_ptr<int64_t>();
    const int64_t count = partial.numel();
    bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
    for (int64_t i = 0; i < count; ++i) {
      const float v = p[i];
      if (!(v >= 0.0f && v < 0x1p30f)) {
        finite = false;
        continue;
      }
      f[i] += static_cast<int64_t>(std::ldexp(static_cast<double>(v), kSoftBits));
      p[i] = 0;
    }
    if (!finite)
      throw Error("site " + site +
                  ": the soft co-activation is not finite (the model produced NaN or infinite activations)");
  }
  /// Adds a recording's soft co-activation [n, n] to fx: its exact tensor
  /// when it has one (checkpoints), else its F32 values.
  static void addSoftExact(at::Tensor& fx, const at::Tensor& exact, const at::Tensor& plain, const std::string& site) {
    if (exact.defined()) {
      fx.add_(exact);
      return;
    }
    at::Tensor copy = plain.contiguous().clone();
    foldSoft(copy, fx, site);
  }

  /// The F64 values of an exact accumulator [n, 3] -> [n].
  static at::Tensor exactValues(const at::Tensor& fx) {
    const int64_t n = fx.size(0);
    at::Tensor out = at::empty({n}, at::kDouble);
    exact_sum::values(fx.data_ptr<int64_t>(), n, out.data_ptr<double>());
    return out;
  }

  nlohmann::json manifest(bool complete) const {
    nlohmann::json m;
    m["format"] = "moefy-recording";
    m["version"] = packCoact ? 2 : 1;  // 2: co-activation as the packed upper triangle (recording.h)
    m["tool_version"] = MOEFY_VERSION;
    m["model"] = modelInfo;
    m["corpus"] = {{"path", source.path}, {"kind", source.kind}, {"categories", source.categories}};
    if (hasSequencesHash) m["corpus"]["sequences_hash"] = hex16(sequencesHash);
    if (!source.fingerprint.empty()) m["corpus"]["fingerprint"] = source.fingerprint;
    m["tokens"] = tokens;
    m["sequences"] = sequences;
    m["layers"] = layers;
    m["sites"] = siteNames(sites);
    if (!moeLayers.empty()) m["moe"] = {{"experts", experts}, {"top_k", topK}, {"layers", moeLayers}};
    if (encDec) {
      // Per-stack token and sample counts (docs/formats.md "Recording").
      nlohmann::json stacks = nlohmann::json::object();
      for (const auto& sm : streams)
        stacks[sm.prefix.substr(0, sm.prefix.size() - 1)] = {{"tokens", sm.tokens}, {"samples", filled(sm)}};
      m["stacks"] = stacks;
    }
    m["options"] = options;
    m["chunks_done"] = chunks;
    m["complete"] = complete;
    if (!complete && ranks > 1) {
      // A rank's checkpoint: its statistics count its own chunks' tokens
      // (the reader checks them against these; recording.cpp).
      nlohmann::json ct = nlohmann::json::object();
      for (const auto& sm : streams)
        ct[sm.prefix.empty() ? std::string("single") : sm.prefix.substr(0, sm.prefix.size() - 1)] = sm.counted;
      m["rank"] = {{"rank", rank}, {"ranks", ranks}, {"counted_tokens", ct}};
    }
    m["samples"] = filledTotal();
    return m;
  }

  /// Writes the state into an (empty) folder.
  void write(const fs::path& dir, bool complete, JobContext& job) {
    foldPartials();
    std::vector<std::pair<std::string, at::Tensor>> stats, co, samples;
    // The soft co-activation is written from its exact accumulator through the
    // (folded, so zero) partial buffer, which is cleared again afterwards; the
    // guard is declared before `unpack`, so it runs after the unpacking.
    struct ClearSoft {
      std::vector<at::Tensor> buffers;
      ~ClearSoft() {
        for (at::Tensor& t : buffers) t.zero_();
      }
    } clearSoft;
    if (soft)
      for (int L : layers) {
        LayerState& s = layer.at(L);
        s.coactSoft.copy_(s.coactSoftFx.to(at::kDouble).mul_(std::ldexp(1.0, -kSoftBits)));
        clearSoft.buffers.push_back(s.coactSoft);
      }
    // The co-activation matrices are written as their upper triangles
    // (format version 2), packed in place so that writing needs no second
    // buffer; the guard restores the full matrices when write() returns or
    // throws, so accumulation (a checkpoint's run goes on) sees them as before.
    struct Unpack {
      std::vector<at::Tensor> packed;
      ~Unpack() {
        for (const at::Tensor& t : packed) unpackUpperTriangleInPlace(t);
      }
    } unpack;
    auto packed = [&](const at::Tensor& square) {
      at::Tensor view = packUpperTriangleInPlace(square);
      unpack.packed.push_back(square);
      return view;
    };
    for (int L : layers) {
      LayerState& s = layer.at(L);
      stats.emplace_back(sname(L, "count"), s.count);
      stats.emplace_back(sname(L, "sum"), exactValues(s.sumFx));
      stats.emplace_back(sname(L, "sumsq"), exactValues(s.sumsqFx));
      stats.emplace_back(sname(L, "sum_exact"), s.sumFx);
      stats.emplace_back(sname(L, "sumsq_exact"), s.sumsqFx);
      // max of no tokens is reported as 0 rather than -inf
      stats.emplace_back(sname(L, "max"), siteTokens(L) > 0 ? s.max : at::zeros_like(s.max));
      stats.emplace_back(sname(L, "active_hist"), s.hist);
      stats.emplace_back(sname(L, "category_count"), s.catCount);
      stats.emplace_back(sname(L, "category_tokens"), s.catTokens);
      // Accumulation only touches the upper triangle of the binary counts;
      // unpacking mirrors it onto the lower one (as mirrorUpper did here).
      if (packCoact) {
        co.emplace_back(sname(L, "coact"), packed(s.coact));
        if (soft) co.emplace_back(sname(L, "coact_soft"), packed(s.coactSoft));
      } else {
        // Version 1: the full matrix; mirroring in place keeps the state valid for further accumulation.
        mirrorUpper(s.coact.data_ptr<int32_t>(), width.at(L));
        co.emplace_back(sname(L, "coact"), s.coact);
        if (soft) co.emplace_back(sname(L, "coact_soft"), s.coactSoft);
      }
      // A checkpoint keeps the exact soft sums, so that --resume continues them bit for bit.
      if (soft && !complete) co.emplace_back(sname(L, "coact_soft_exact"), s.coactSoftFx);
    }
    for (int l : moeLayers) {
      const MoeState& m = moe.at(l);
      stats.emplace_back(mname(l, "expert_usage"), m.usage);
      stats.emplace_back(mname(l, "expert_cooccur"), m.cooccur);
      stats.emplace_back(mname(l, "expert_category_usage"), m.catUsage);
    }
    for (const auto& sm : streams) {
      const int64_t F = filled(sm);
      samples.emplace_back(sm.prefix + "token_id", sm.sTok.slice(0, 0, F));
      samples.emplace_back(sm.prefix + "doc_id", sm.sDoc.slice(0, 0, F));
      samples.emplace_back(sm.prefix + "position", sm.sPos.slice(0, 0, F));
      samples.emplace_back(sm.prefix + "category", sm.sCat.slice(0, 0, F));
      if (hasTokenIndex) samples.emplace_back(sm.prefix + "token_index", sm.sIdx.slice(0, 0, F));
    }
    for (int L : layers) {
      const int64_t F = filled(streamOf(L));
      const LayerState& s = layer.at(L);
      if (s.sampleIn.defined()) samples.emplace_back(sname(L, "ffn_in"), s.sampleIn.slice(0, 0, F));
      samples.emplace_back(sname(L, "ffn_act"), s.sampleAct.slice(0, 0, F));
      if (s.routed.defined()) samples.emplace_back(sname(L, "routed"), s.routed.slice(0, 0, F));
    }
    // Native MoE models are single-stack: one stream.
    for (int l : moeLayers)
      samples.emplace_back(mname(l, "ffn_in"), moe.at(l).sampleIn.slice(0, 0, filled(streams[0])));
    // Cancel is polled between the files (the samples file can take seconds).
    job.checkCancel();
    writeSafetensors(dir / "stats.safetensors", stats);
    job.checkCancel();
    writeSafetensors(dir / "coact.safetensors", co);
    job.checkCancel();
    writeSafetensors(dir / "samples.safetensors", samples);
    job.checkCancel();
    writeFileAtomic(dir / "manifest.json", manifest(complete).dump(2) + "\n");
  }

  /// An exact accumulator from a recording (addExact onto zeros).
  static void loadExact(at::Tensor& fx, const at::Tensor& exact, const at::Tensor& plain) {
    fx.zero_();
    addExact(fx, exact, plain);
  }

  /// Loads the accumulators of a recording folder into this (allocated) state.
  void loadFrom(const Recording& r) {
    tokens = r.tokens();
    sequences = r.sequences();
    chunks = r.chunksDone();
    const nlohmann::json rankInfo = r.manifest().value("rank", nlohmann::json::object());
    for (int L : layers) {
      Stream& sm = streamOf(L);
      sm.tokens = r.tokens(L);
      const std::string key = sm.prefix.empty() ? std::string("single") : sm.prefix.substr(0, sm.prefix.size() - 1);
      sm.counted = rankInfo.contains("counted_tokens") ? rankInfo["counted_tokens"].value(key, int64_t{0}) : sm.tokens;
      const int64_t F = r.sampleCount(L);
      if (F > rows())
        throw FormatError(r.dir().string() + ": holds more samples than the sample size " + std::to_string(rows()));
      sm.sTok.slice(0, 0, F).copy_(r.sampleTokenIds(L));
      sm.sDoc.slice(0, 0, F).copy_(r.sampleDocIds(L));
      sm.sPos.slice(0, 0, F).copy_(r.samplePositions(L));
      sm.sCat.slice(0, 0, F).copy_(r.sampleCategories(L));
      if (at::Tensor index = r.sampleTokenIndex(L); index.defined()) sm.sIdx.slice(0, 0, F).copy_(index);
      LayerState& s = layer.at(L);
      s.count.copy_(r.count(L));
      loadExact(s.sumFx, r.sumExact(L), r.sum(L));
      loadExact(s.sumsqFx, r.sumsqExact(L), r.sumsq(L));
      if (r.siteTokens(L) > 0) s.max.copy_(r.max(L));
      s.hist.copy_(r.activeHist(L));
      s.catCount.copy_(r.categoryCount(L));
      s.catTokens.copy_(r.categoryTokens(L));
      s.coact.copy_(r.coact(L));
      if (soft) {
        s.coactSoftFx.zero_();
        addSoftExact(s.coactSoftFx, r.coactSoftExact(L), r.coactSoft(L), r.site(L).name());
      }
      if (s.sampleIn.defined()) s.sampleIn.slice(0, 0, F).copy_(r.sampleFfnIn(L));
      s.sampleAct.slice(0, 0, F).copy_(r.sampleFfnAct(L));
      if (s.routed.defined()) s.routed.slice(0, 0, F).copy_(r.sampleRouted(L));
    }
    for (int l : moeLayers) {
      MoeState& m = moe.at(l);
      m.usage.copy_(r.expertUsage(l));
      m.cooccur.copy_(r.expertCooccurrence(l));
      m.catUsage.copy_(r.expertCategoryUsage(l));
      m.sampleIn.slice(0, 0, r.sampleCount()).copy_(r.sampleMoeFfnIn(l));
    }
  }
};

// Per-batch bookkeeping shared by the hooks of every layer.
struct BatchInfo {
  int64_t N = 0;                      // valid tokens
  at::Tensor valid;                   // I64 [N] flat indices into B*T (undefined = all)
  std::vector<int32_t> cat;           // [N] category per token
  std::vector<SoftBlock> softBlocks;  // (first token, length) of 8-token blocks
  at::Tensor sampleRows;              // I64 [K] rows (in valid order) kept by the reservoir
  at::Tensor sampleSlots;             // I64 [K] their slots
  std::vector<int64_t> rowOf;         // [B * T] flat batch position -> token row, -1 = padding
};

// Receives the FFN hooks of the recorded sites (every forward pass calls the
// site-keyed forms, single-stack models with sites blk.L). Native MoE layers:
// the layer's site blk.L delivers the chosen experts (TopkIds, the routing
// statistics) and the FFN input (the samples); an expert site blk.L.exp.E
// delivers the hidden of its routed tokens (FfnAct) and then their positions
// (ExpertTokens), which select the rows to count; the shared site blk.L.shared
// is a whole-token FFN like blk.L.
class RecordSink : public HookSink {
 public:
  RecordSink(State& st, JobContext& j) : job(&j), st_(st) {
    for (size_t i = 0; i < st.sites.size(); ++i) layerOf_[st.sites[i]] = st.layers[i];
    batch.resize(st.streams.size());
  }
  std::vector<BatchInfo> batch;  // per stream (State::streams)
  JobContext* job;

  bool wants(int, HookPoint) const override { return false; }
  void on(int, HookPoint, const at::Tensor&) override {}

  bool wantsSite(const Site& site, HookPoint p) const override {
    if (!layerOf_.count(site)) {
      // The routing hooks of a MoE layer whose experts are recorded.
      if (site.expert >= 0 || site.shared || !st_.moe.count(site.layer) || site.stack != SiteStack::Single)
        return false;
      return p == HookPoint::TopkIds || (p == HookPoint::FfnIn && st_.S > 0);
    }
    if (site.expert >= 0) return p == HookPoint::FfnAct || p == HookPoint::ExpertTokens;
    if (site.shared) return p == HookPoint::FfnAct;
    return p == HookPoint::FfnAct || (p == HookPoint::FfnIn && st_.S > 0);
  }

  void onSite(const Site& site, HookPoint p, const at::Tensor& xIn) override {
    // The statistics read tensor memory on the host: a model on another
    // device (--device) hands its hooks over once per site and batch here.
    const at::Tensor x = xIn.cpu();
    const auto it = layerOf_.find(site);
    if (it == layerOf_.end()) {
      if (site.expert < 0 && !site.shared && site.stack == SiteStack::Single && st_.moe.count(site.layer))
        onRouting(site.layer, p, x);
      return;
    }
    job->checkCancel();  // a forward pass can take seconds: cancel between layers
    const int layer = it->second;
    if (site.expert >= 0) {
      if (p == HookPoint::FfnAct)
        pendingHidden_ = x;  // its token positions come next (Model::nativeMoe)
      else if (p == HookPoint::ExpertTokens)
        onExpert(layer, x);
      return;
    }
    const BatchInfo& b = batch[st_.streamOfLayer.at(layer)];
    at::Tensor flat = validRows(b, x);  // [N, d]
    LayerState& s = st_.layer.at(layer);
    if (b.sampleRows.defined() && b.sampleRows.numel() > 0) {
      at::Tensor rows = flat.index_select(0, b.sampleRows).to(at::kHalf);
      (p == HookPoint::FfnIn ? s.sampleIn : s.sampleAct).index_copy_(0, b.sampleSlots, rows);
    }
    if (p == HookPoint::FfnAct) accumulate(s, flat, b.cat.data(), b.softBlocks);
  }

 private:
  State& st_;
  std::map<Site, int> layerOf_;  // recorded site -> site index
  std::vector<uint64_t> tokenBits_;  // [N][ceil(n / 64)]: activeBits of the batch
  BitMatrix bits_;
  at::Tensor pendingHidden_;  // the expert hidden [n, d_expert] awaiting its ExpertTokens

  // x [B, T, d] (or [B * T, d]) -> the stream's real tokens [N, d], contiguous.
  // Padding positions are dropped here: only the stream's real tokens are counted.
  static at::Tensor validRows(const BatchInfo& b, const at::Tensor& x) {
    at::Tensor flat = x.reshape({-1, x.size(-1)});
    if (b.valid.defined()) flat = flat.index_select(0, b.valid);
    return flat.contiguous();
  }

  // The routing statistics of MoE layer `layer` from its chosen experts
  // ids [B, T, k] (each token picks an expert at most once), and its FFN
  // input samples.
  void onRouting(int layer, HookPoint p, const at::Tensor& x) {
    const BatchInfo& b = batch[0];  // native MoE models are single-stack
    MoeState& m = st_.moe.at(layer);
    if (p == HookPoint::FfnIn) {
      if (b.sampleRows.defined() && b.sampleRows.numel() > 0)
        m.sampleIn.index_copy_(0, b.sampleSlots, validRows(b, x).index_select(0, b.sampleRows).to(at::kHalf));
      return;
    }
    if (p != HookPoint::TopkIds) return;
    at::Tensor ids = validRows(b, x.to(at::kLong));  // [N, k]
    const int64_t N = ids.size(0), K = ids.size(1), E = st_.experts;
    const int64_t C = m.catUsage.size(0);
    const int64_t* id = ids.data_ptr<int64_t>();
    int64_t* usage = m.usage.data_ptr<int64_t>();
    int64_t* co = m.cooccur.data_ptr<int64_t>();
    int64_t* cu = m.catUsage.data_ptr<int64_t>();
    for (int64_t t = 0; t < N; ++t) {
      const int64_t* r = id + t * K;
      const int32_t c = b.cat[static_cast<size_t>(t)];
      for (int64_t a = 0; a < K; ++a) {
        if (r[a] < 0 || r[a] >= E)
          throw Error("router chose expert " + std::to_string(r[a]) + " of " + std::to_string(E));
        ++usage[r[a]];
        if (c >= 0 && c < C) ++cu[c * E + r[a]];
        for (int64_t q = 0; q < K; ++q) ++co[r[a] * E + r[q]];  // q == a: the diagonal, = usage
      }
    }
  }

  // An expert site: the hidden of the tokens routed to it (pendingHidden_,
  // [n, d_expert]) at flat batch positions `tokens` [n]; padding positions
  // are dropped, the rest counted with their categories. MoEfication's soft
  // co-activation takes blocks of 8 consecutive routed tokens.
  void onExpert(int layer, const at::Tensor& tokens) {
    const BatchInfo& b = batch[st_.streamOfLayer.at(layer)];
    at::Tensor h = pendingHidden_;
    pendingHidden_ = at::Tensor();
    if (!h.defined() || h.size(0) != tokens.numel())
      throw Error("expert site " + st_.siteOfLayer.at(layer).name() + ": hidden and token positions disagree");
    at::Tensor tok = tokens.to(at::kLong).contiguous();
    const int64_t n = tok.numel();
    const int64_t* tp = tok.data_ptr<int64_t>();
    std::vector<int64_t> keep, rows;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = tp[i] >= 0 && tp[i] < static_cast<int64_t>(b.rowOf.size()) ? b.rowOf[tp[i]] : -1;
      if (row >= 0) keep.push_back(i), rows.push_back(row);
    }
    const int64_t m = static_cast<int64_t>(rows.size());
    at::Tensor hk = h.index_select(0, at::tensor(keep, at::kLong)).to(at::kFloat).contiguous();  // [m, d_expert]
    std::vector<int32_t> cat(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) cat[i] = b.cat[static_cast<size_t>(rows[i])];
    std::vector<SoftBlock> blocks;
    if (st_.soft)
      for (int64_t t = 0; t < m; t += 8) blocks.push_back({t, std::min<int64_t>(8, m - t)});
    LayerState& s = st_.layer.at(layer);
    if (b.sampleRows.defined() && b.sampleRows.numel() > 0) {
      // A sampled token not routed to the expert gets a zero row and routed 0.
      std::vector<int64_t> pos(static_cast<size_t>(b.N), -1);
      for (int64_t i = 0; i < m; ++i) pos[rows[i]] = i;
      const int64_t* sr = b.sampleRows.data_ptr<int64_t>();
      const int64_t* ss = b.sampleSlots.data_ptr<int64_t>();
      uint8_t* routed = s.routed.data_ptr<uint8_t>();
      for (int64_t k = 0; k < b.sampleRows.numel(); ++k) {
        const int64_t i = pos[sr[k]];
        routed[ss[k]] = i >= 0;
        if (i >= 0)
          s.sampleAct[ss[k]].copy_(hk[i]);
        else
          s.sampleAct[ss[k]].zero_();
      }
    }
    if (m > 0) accumulate(s, hk, cat.data(), blocks);
  }

  // Adds the tokens h [N, n] (F32, contiguous) with categories cat [N] to a
  // site's statistics.
  void accumulate(LayerState& s, const at::Tensor& h, const int32_t* cat, const std::vector<SoftBlock>& softBlocks) {
    const int64_t N = h.size(0), n = h.size(1);
    const float* hp = h.data_ptr<float>();
    // The active neurons as bits, token-major ([N][G] words, an eighth of a
    // byte mask: 5.5 MiB instead of 43 MiB for 4096 tokens at d_ff 11008),
    // then neuron-major for the co-activation kernel.
    const int64_t G = (n + 63) / 64;
    tokenBits_.resize(static_cast<size_t>(N * G));
    const uint64_t* tb = tokenBits_.data();
    activeBits(hp, N, n, st_.active, tokenBits_.data());
    packTokenBits(tb, N, n, bits_);
    // Per-neuron statistics, parallel over neuron blocks.
    int64_t* cnt = s.count.data_ptr<int64_t>();
    double* sum = s.sum.data_ptr<double>();
    double* sq = s.sumsq.data_ptr<double>();
    float* mx = s.max.data_ptr<float>();
    int64_t* cc = s.catCount.data_ptr<int64_t>();
    const int64_t C = s.catTokens.size(0);
    constexpr int64_t kB = 256;
#pragma omp parallel for schedule(static)
    for (int64_t j0 = 0; j0 < n; j0 += kB) {
      const int64_t j1 = std::min(n, j0 + kB);
      for (int64_t t = 0; t < N; ++t) {
        const float* row = hp + t * n;
        for (int64_t j = j0; j < j1; ++j) {
          const double v = row[j];
          sum[j] += v;
          sq[j] += v * v;
          mx[j] = std::max(mx[j], row[j]);
        }
        // Active counts (and the token's category's) from its bits in this
        // block (kB a multiple of 64: whole words), one increment per active
        // neuron.
        int64_t* ccr = (cat[t] >= 0 && cat[t] < C) ? cc + cat[t] * n : nullptr;
        for (int64_t g = j0 / 64; g * 64 < j1; ++g)
          for (uint64_t w = tb[t * G + g]; w; w &= w - 1) {
            const int64_t j = g * 64 + __builtin_ctzll(w);
            ++cnt[j];
            if (ccr) ++ccr[j];
          }
      }
    }
    static_assert(kB % 64 == 0, "neuron blocks must be whole bit words");
    int64_t* hist = s.hist.data_ptr<int64_t>();
    int64_t* ct = s.catTokens.data_ptr<int64_t>();
    for (int64_t t = 0; t < N; ++t) {
      int64_t a = 0;
      for (int64_t g = 0; g < G; ++g) a += __builtin_popcountll(tb[t * G + g]);
      ++hist[a];
      if (cat[t] >= 0 && cat[t] < C) ++ct[cat[t]];
    }
    accumulateCoact(bits_, s.coact.data_ptr<int32_t>());
    // MoEfication's soft co-activation: per 8-token block b,
    // S += min(1, sum_{t in b} relu(h_t) relu(h_t)^T) (tiled kernel in coact.cpp).
    if (st_.soft) accumulateSoftCoact(hp, N, n, softBlocks, s.coactSoft.data_ptr<float>());
  }
};

nlohmann::json modelInfoOf(const Model& model) {
  const auto& c = model.config();
  // Models built in memory (Model::fromTensors) have no folder.
  const std::string path = model.dir().empty() ? "" : fs::absolute(model.dir()).lexically_normal().string();
  nlohmann::json j = {{"path", path},
                      {"fingerprint", model.fingerprint()},
                      {"arch", archName(c.arch)},
                      {"layers", c.nLayer},
                      {"d_model", c.dModel},
                      {"d_ff", c.dFF},
                      {"activation", activationName(c.act)},
                      {"ffn_kind", c.ffnKind()}};
  // Encoder-decoder models: `layers` counts the encoder's blocks (as
  // ModelConfig::nLayer); the decoder's follow in the site indices.
  if (c.encoderDecoder) j["decoder_layers"] = c.nDecoderLayer;
  // Native MoE models: what the expert site indices and widths derive from.
  if (c.expertCount > 0) {
    std::vector<int> moeLayers;
    for (int L = 0; L < c.nLayer; ++L)
      if (c.moeLayer(L)) moeLayers.push_back(L);
    j["experts"] = c.expertCount;
    j["top_k"] = c.expertTopK;
    j["d_expert"] = c.dExpert;
    j["d_shared"] = c.dShared;
    j["moe_layers"] = moeLayers;
  }
  return j;
}

/// Continues the corpus identity hash over one recorded sequence (and the
/// decoder input of a pair, when it has one: single-stack hashes are unchanged).
uint64_t hashSequence(uint64_t h, const SequencePair& p) {
  const Sequence& s = p.source;
  const int64_t n = static_cast<int64_t>(s.ids.size());
  h = fnv1a(h, &n, sizeof n);
  if (n > 0) h = fnv1a(h, s.ids.data(), s.ids.size() * sizeof(s.ids[0]));
  h = fnv1a(h, &s.docId, sizeof s.docId);
  h = fnv1a(h, &s.category, sizeof s.category);
  h = fnv1a(h, &s.start, sizeof s.start);
  if (!p.decoder.empty()) {
    const int64_t m = static_cast<int64_t>(p.decoder.size());
    h = fnv1a(h, &m, sizeof m);
    h = fnv1a(h, p.decoder.data(), p.decoder.size() * sizeof(p.decoder[0]));
  }
  return h;
}

/// Bytes the recorder allocates for `layers` layers (statistics, the dense
/// co-activation matrices, the reservoir), before any is allocated.
double recorderBytes(int64_t layers, int64_t n, int64_t dModel, int64_t C, int64_t S, bool soft) {
  const double dn = static_cast<double>(n), dS = static_cast<double>(S);
  const double perLayer = dn * (8 + 8 + 8 + 4) + (dn + 1) * 8 + static_cast<double>(C) * (dn + 1) * 8 +
                          dn * dn * (4 + (soft ? 4 + 8 : 0)) + dS * static_cast<double>(dModel + n) * 2;
  return static_cast<double>(layers) * perLayer + dS * (4 + 8 + 4 + 4);
}

/// The options that must match between a checkpoint and a resumed run.
nlohmann::json resumeKey(const nlohmann::json& manifest) {
  nlohmann::json k;
  k["model.fingerprint"] = manifest["model"]["fingerprint"];
  k["corpus.path"] = manifest["corpus"]["path"];
  k["corpus.categories"] = manifest["corpus"]["categories"];
  k["layers"] = manifest["layers"];
  for (auto& [key, v] : manifest["options"].items()) k["options." + key] = v;
  return k;
}

}  // namespace

// ---------------------------------------------------------------- record

void requireRecordable(const ModelConfig& c, const std::string& where) {
  // The dense co-activation matrix of a site holds d^2 I32 counts: d <= 46340
  // keeps d^2 within 2^31 (the row-major index arithmetic of the kernels).
  for (const Site& site : c.indexedSites())
    if (c.siteWidth(site) > 46340)
      throw ParameterError(where + ": the FFN site " + site.name() + " has width " + std::to_string(c.siteWidth(site)) +
                           ", too large for a dense co-activation matrix (at most 46340)");
}

namespace {

// The site of a site index (ModelConfig::siteIndex's inverse).
Site siteAtIndex(const ModelConfig& c, int index) {
  for (const Site& site : c.indexedSites())
    if (c.siteIndex(site) == index) return site;
  throw ParameterError("the model (" + c.modelType + ") has no FFN site index " + std::to_string(index));
}

// The expert and shared sites of native MoE layer L (what --sites blk.L and --layers L select).
void addMoeLayerSites(const ModelConfig& c, int L, std::vector<int>& out) {
  for (const Site& s : c.indexedSites())
    if (s.layer == L && (s.expert >= 0 || s.shared)) out.push_back(c.siteIndex(s));
}

}  // namespace

std::vector<int> resolveRecordSites(const ModelConfig& c, const std::vector<int>& layers,
                                    const std::vector<std::string>& sites) {
  const std::vector<Site> all = c.indexedSites();
  std::vector<int> out;
  if (!layers.empty() && !sites.empty()) throw ParameterError("--layers and --sites: give one of them");
  if (!layers.empty()) {
    if (c.encoderDecoder)
      throw ParameterError("--layers: " + c.modelType +
                           " is an encoder-decoder model; name its FFN sites with --sites (enc, dec, enc.blk.L, "
                           "dec.blk.L)");
    for (int L : layers) {
      if (L < 0 || L >= c.nLayer)
        throw ParameterError("--layers: layer " + std::to_string(L) + " is outside the model's " +
                             std::to_string(c.nLayer) + " layers");
      if (c.moeLayer(L))
        addMoeLayerSites(c, L, out);
      else
        out.push_back(L);
    }
  } else if (!sites.empty()) {
    for (const std::string& item : sites) {
      // A stack group: every whole-FFN site of that stack.
      std::optional<SiteStack> group;
      if (item == "enc")
        group = SiteStack::Encoder;
      else if (item == "dec")
        group = SiteStack::Decoder;
      else if (item == "blk")
        group = SiteStack::Single;
      if (group) {
        size_t before = out.size();
        for (const Site& s : all)
          if (s.stack == *group) out.push_back(c.siteIndex(s));
        if (out.size() == before)
          throw ParameterError("--sites: the model (" + c.modelType + ") has no '" + item + "' FFN sites" +
                               (c.encoderDecoder ? " (it has enc and dec)" : " (it has blk)"));
        continue;
      }
      const std::optional<Site> site = Site::tryParse(item);
      if (!site)
        throw ParameterError("--sites: '" + item +
                             "' is not an FFN site (enc, dec, blk, or a name such as "
                             "enc.blk.0, dec.blk.1, blk.2)");
      if (site->stack == SiteStack::Single && site->expert < 0 && !site->shared && c.moeLayer(site->layer)) {
        addMoeLayerSites(c, site->layer, out);  // the layer of a native MoE block: its experts
        continue;
      }
      const int index = c.siteIndex(*site);
      if (index < 0) {
        const std::string range = c.encoderDecoder
                                      ? "enc.blk.0..enc.blk." + std::to_string(c.nLayer - 1) +
                                            " and dec.blk.0..dec.blk." + std::to_string(c.nDecoderLayer - 1)
                                      : "blk.0..blk." + std::to_string(c.nLayer - 1);
        const std::string experts = c.expertCount > 0
                                        ? ", blk.L.exp.0..blk.L.exp." + std::to_string(c.expertCount - 1) +
                                              (c.dShared > 0 ? " and blk.L.shared" : "") + " of its MoE layers"
                                        : "";
        throw ParameterError("--sites: the model (" + c.modelType + ") has no FFN site " + item + " (it has " + range +
                             experts + ")");
      }
      out.push_back(index);
    }
  } else {
    for (const Site& s : all) out.push_back(c.siteIndex(s));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

namespace {

// Combines the ranks' states onto rank 0 (mpirun; distributed.h): integer
// statistics, co-activation counts, maxima and the exact sum accumulators
// add up bit-exactly to the single run's; the soft co-activation (F32) is
// summed in MPI's order, equal within F32 rounding. Reservoir slot s keeps
// the sample of the rank that holds the latest token put there (sIdx):
// Algorithm R's choice in the single run, so the samples are equal too.
void reduceAcrossRanks(State& st) {
  using dist::ReduceOp;
  constexpr int64_t kRecordBytes = exact_sum::kRecordInts * sizeof(int64_t);
  for (int L : st.layers) {
    LayerState& s = st.layer.at(L);
    dist::reduceToRoot(s.count, ReduceOp::Sum);
    dist::reduceCustomToRoot(s.sumFx, kRecordBytes, &combineExactRecords);
    dist::reduceCustomToRoot(s.sumsqFx, kRecordBytes, &combineExactRecords);
    dist::reduceToRoot(s.max, ReduceOp::Max);
    dist::reduceToRoot(s.hist, ReduceOp::Sum);
    dist::reduceToRoot(s.catCount, ReduceOp::Sum);
    dist::reduceToRoot(s.catTokens, ReduceOp::Sum);
    dist::reduceToRoot(s.coact, ReduceOp::Sum);
    if (s.coactSoftFx.defined()) dist::reduceToRoot(s.coactSoftFx, ReduceOp::Sum);
  }
  for (int l : st.moeLayers) {
    MoeState& m = st.moe.at(l);
    dist::reduceToRoot(m.usage, ReduceOp::Sum);
    dist::reduceToRoot(m.cooccur, ReduceOp::Sum);
    dist::reduceToRoot(m.catUsage, ReduceOp::Sum);
  }
  for (size_t k = 0; k < st.streams.size(); ++k) {
    Stream& sm = st.streams[k];
    if (st.S == 0) continue;
    const at::Tensor local = sm.sIdx.clone();
    dist::allReduce(sm.sIdx, ReduceOp::Max);
    // Rows this rank does not own become zeros; OR-ing the ranks' buffers
    // then leaves each slot's owner's bytes.
    const at::Tensor foreign = at::logical_not(local.eq(sm.sIdx) & local.ge(0)).nonzero().flatten();
    auto keepOwn = [&](const at::Tensor& t) {
      if (!t.defined()) return;
      if (foreign.numel() > 0) t.index_fill_(0, foreign, 0);
      dist::reduceToRoot(t, ReduceOp::BitOr);
    };
    keepOwn(sm.sTok);
    keepOwn(sm.sDoc);
    keepOwn(sm.sPos);
    keepOwn(sm.sCat);
    for (int L : st.layers) {
      if (st.streamOfLayer.at(L) != k) continue;
      LayerState& s = st.layer.at(L);
      keepOwn(s.sampleIn);
      keepOwn(s.sampleAct);
      keepOwn(s.routed);
    }
    if (k == 0)
      for (int l : st.moeLayers) keepOwn(st.moe.at(l).sampleIn);
  }
}

RecordSummary recordActivationsImpl(const Model& model, const PairSource& source, const SourceInfo& info,
                                    const RecordOptions& options, const fs::path& out, JobContext& job) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto& c = model.config();
  // Under mpirun (analysis/common/distributed.h) every rank reads the whole
  // source in the same order and runs the forward passes of the chunks
  // c with c % ranks == rank; the others only advance the stream counters, so
  // that every token keeps the index (and reservoir slot) it has in a single
  // run. Rank 0 alone locks and writes OUT; each rank checkpoints to its own
  // OUT.partial.rank-R-of-N.
  const int ranks = dist::size(), rank = dist::rank();
  State st;
  st.rank = rank;
  st.ranks = ranks;
  bool decoderSites = false;
  int chunkSeq = 1;
  std::optional<OutputLock> outputLock;
  const fs::path partial = rankCheckpointPath(out, rank, ranks);
  std::string resumeHash;  // the checkpoint's corpus identity ("" = none recorded)
  // Setup: every rank runs it; an error on any rank stops all of them with its
  // message (dist::agree) before any work.
  std::exception_ptr setupError;
  try {
    requireRecordable(c, model.dir().empty() ? std::string("model") : model.dir().string());
    if (options.batch < 1) throw ParameterError("--batch must be >= 1");
    if (options.seqLen < 1) throw ParameterError("--seq-len must be >= 1");
    if (options.samples < 0) throw ParameterError("--samples must be >= 0");
    if (options.maxTokens < 0) throw ParameterError("--tokens must be >= 0");
    if (c.pos == PosKind::Learned && options.seqLen > c.maxPos)
      throw ParameterError("--seq-len " + std::to_string(options.seqLen) + " exceeds the model's " +
                           std::to_string(c.maxPos) + " positions");
    // The output is locked for the whole run (a second `record` of the same
    // REC_DIR, e.g. two --resume, is refused) and checked before any work.
    if (rank == 0) {
      outputLock.emplace(out);
      std::vector<fs::path> inputs;
      if (!model.dir().empty()) inputs.push_back(model.dir());
      if (!info.path.empty()) inputs.push_back(info.path);
      checkOutput(out, options.force, "recording", inputs);
    }

    st.modelInfo = modelInfoOf(model);
    st.source = info;
    st.n = c.dFF;
    st.dModel = c.dModel;
    st.S = options.samples;
    // --tokens bounds every stream's tokens (a pair of an encoder-decoder model
    // is recorded whole: one side of at most --seq-len more), so no slot past
    // that is ever filled.
    if (options.maxTokens > 0) st.capacity = options.maxTokens + options.seqLen;
    st.layers = resolveRecordSites(c, options.layers, options.sites);
    st.encDec = c.encoderDecoder;
    st.experts = c.expertCount;
    st.topK = c.expertTopK;
    {
      std::vector<Site> chosen;
      for (int L : st.layers) {
        chosen.push_back(siteAtIndex(c, L));
        st.width[L] = c.siteWidth(chosen.back());
      }
      st.setSites(chosen);
    }
    for (const Site& site : st.sites) decoderSites = decoderSites || site.stack == SiteStack::Decoder;
    st.active = options.active ? *options.active : ActiveRule::defaultFor(c.act, c.gated);
    st.soft = options.softCoact;
    {
      int wide = 0;
      for (const auto& [index, w] : st.width) wide = std::max(wide, w);
      st.packCoact =
          options.coactStorage == RecordOptions::CoactStorage::Triangle ||
          (options.coactStorage == RecordOptions::CoactStorage::Auto && wide > RecordOptions::kPackCoactAbove);
    }
    chunkSeq = ((std::max(1, options.chunkSequences) + options.batch - 1) / options.batch) * options.batch;
    st.options = {{"seq_len", options.seqLen},
                  {"batch", options.batch},
                  {"active", st.active.toJson()},
                  {"soft_coact", st.soft},
                  {"samples", st.S},
                  {"seed", options.seed},
                  {"split", options.split},
                  {"max_tokens", options.maxTokens},
                  {"chunk_sequences", chunkSeq},
                  {"shuffle", options.shuffle}};
    {
      // Refuse before allocating what cannot fit (an allocator's failure would
      // name neither the option nor the size).
      const int64_t L = static_cast<int64_t>(st.layers.size()), C = static_cast<int64_t>(info.categories.size());
      // Sites of several widths (native MoE: experts, shared expert, dense
      // layers) are bounded by the widest.
      int wide = 0;
      for (const auto& [index, w] : st.width) wide = std::max(wide, w);
      const double counts = recorderBytes(L, wide, st.dModel, C, 0, st.soft);
      const double reservoir = recorderBytes(L, wide, st.dModel, C, st.rows(), st.soft) - counts;
      // One batch's activations at every recorded site, F32, held while the
      // batch is accumulated (the forward's own temporaries are of the same order).
      const double batch = 2.0 * options.batch * options.seqLen * static_cast<double>(st.dModel + wide) * 4 * L;
      // The ranks on this node (mpirun) each hold a whole state.
      const int local = dist::launchedLocalSize();
      const double need = (counts + reservoir + batch) * local;
      // The model is loaded by now, so what is available excludes it.
      const double have = availableMemoryBytes();
      if (have > 0 && need > have) {
        const char* biggest = reservoir >= counts && reservoir >= batch ? "--samples"
                              : batch >= counts                         ? "--batch"
                                                : (options.layers.empty() ? "--sites" : "--layers");
        throw ParameterError(std::string(biggest) + ": recording " + std::to_string(L) + " sites of d_ff " +
                             std::to_string(wide) + " needs about " + byteSize(need) +
                             " (statistics and co-activation " + byteSize(counts) + ", sample reservoir " +
                             byteSize(reservoir) + ", batch activations " + byteSize(batch) + ")" +
                             (local > 1 ? " per rank, x " + std::to_string(local) + " ranks on this node," : "") +
                             " but " + byteSize(have) +
                             " is available; record fewer --layers/--sites per run and --merge them, use fewer "
                             "--samples or a smaller --batch" +
                             (local > 1 ? ", or start fewer ranks per node" : ""));
      }
    }
    job.setStage("record: allocate");
    st.allocate();

    if (options.resume) {
      if (!fs::exists(partial)) {
        // Checkpoints written by another number of ranks resume only with that number.
        std::string others;
        for (const auto& [path, n] : checkpointsOf(out))
          if (n != ranks && others.find("by " + std::to_string(n) + " ") == std::string::npos)
            others +=
                std::string(others.empty() ? "" : "; ") + "there are checkpoints written by " + std::to_string(n) +
                " " +
                (n == 1 ? "process (" + path.filename().string() + "): resume it without mpirun"
                        : "ranks (" + path.filename().string() + ", ...): resume with mpirun -np " + std::to_string(n));
        throw IoError(partial.string() + ": no checkpoint to resume" +
                      (others.empty() ? std::string(" (run without --resume to start afresh)") : "; " + others));
      }
      Recording r = Recording::open(partial, true);
      nlohmann::json want = resumeKey(st.manifest(false)), have = resumeKey(r.manifest());
      for (auto& [key, v] : want.items()) {
        if (!have.contains(key) || have[key] != v)
          throw ParameterError("--resume: option " + key + " is " + v.dump() + " but the checkpoint " +
                               partial.string() + " was recorded with " +
                               (have.contains(key) ? have[key].dump() : std::string("(absent)")) +
                               "; rerun with the original options or without --resume");
      }
      st.loadFrom(r);
      resumeHash = r.manifest()["corpus"].value("sequences_hash", std::string());
      job.log("resuming " + partial.string() + " after " + std::to_string(st.chunks) + " chunks (" +
              std::to_string(st.tokens) + " tokens)");
    }
  } catch (...) {
    setupError = std::current_exception();
  }
  dist::agree(setupError);
  dist::workStarted();

  RecordSink sink(st, job);
  const int64_t skip = st.sequences;  // sequences already in the checkpoint
  int64_t seen = 0;
  std::vector<SequencePair> pending;
  int64_t chunkCounter = 0;
  auto lastCheckpoint = std::chrono::steady_clock::now();
  const int64_t expected = options.maxTokens;
  // Progress counts processed tokens against the tokens this run will see: the
  // budget, or fewer when the corpus ends first. The corpus's total is
  // extrapolated from the tokens the source has yielded and the share of its
  // documents visited (Sequence::sourceFraction), and is exact once the source
  // is exhausted; a budget larger than the corpus no longer stalls the bar.
  double expectedTotal = static_cast<double>(expected);
  auto reportProgress = [&] {
    if (expectedTotal > 0) job.setProgress(std::min(1.0, static_cast<double>(st.tokens) / expectedTotal));
  };

  auto requireTokenLimit = [](int64_t streamTokens) {
    if (streamTokens > std::numeric_limits<int32_t>::max())
      throw ParameterError(
          "--tokens: a recording holds at most 2^31 - 1 tokens (the limit of its I32 "
          "co-activation counts); record fewer tokens");
  };

  // Reservoir and bookkeeping of one stream's sequences for the coming
  // forward pass; returns the stream's real (unpadded) tokens.
  auto prepareStream = [&](Stream& sm, BatchInfo& bi, const std::vector<const Sequence*>& seqs) -> int64_t {
    int64_t T = 0;
    for (const Sequence* s : seqs) T = std::max<int64_t>(T, static_cast<int64_t>(s->ids.size()));
    bi = BatchInfo{};
    bi.rowOf.assign(seqs.size() * static_cast<size_t>(T), -1);
    std::vector<int64_t> valid, rows, slots;
    bool full = true;
    int64_t r = 0;
    for (size_t q = 0; q < seqs.size(); ++q) {
      const Sequence& s = *seqs[q];
      const int64_t len = static_cast<int64_t>(s.ids.size());
      if (len < T) full = false;
      for (int64_t t = 0; t < len; ++t, ++r) {
        valid.push_back(static_cast<int64_t>(q) * T + t);
        bi.rowOf[static_cast<size_t>(q * T + t)] = r;
        bi.cat.push_back(s.category);
        const int64_t slot = reservoirSlot(options.seed, sm.tokens + r, st.S);
        if (slot >= 0) {
          rows.push_back(r);
          slots.push_back(slot);
          sm.sTok.data_ptr<int32_t>()[slot] = s.ids[static_cast<size_t>(t)];
          sm.sDoc.data_ptr<int64_t>()[slot] = s.docId;
          sm.sPos.data_ptr<int32_t>()[slot] = s.start + static_cast<int32_t>(t);
          sm.sCat.data_ptr<int32_t>()[slot] = s.category;
          sm.sIdx.data_ptr<int64_t>()[slot] = sm.tokens + r;
        }
      }
      if (st.soft)
        for (int64_t t = 0; t < len; t += 8) bi.softBlocks.push_back({r - len + t, std::min<int64_t>(8, len - t)});
    }
    bi.N = r;
    requireTokenLimit(sm.tokens + r);
    if (!full) bi.valid = at::tensor(valid, at::kLong);
    // If a slot is hit twice in one batch the later token wins (as sequential Algorithm R).
    std::map<int64_t, int64_t> last;
    for (size_t i = 0; i < rows.size(); ++i) last[slots[i]] = rows[i];
    std::vector<int64_t> rr, ss;
    for (auto& [slot, row] : last) rr.push_back(row), ss.push_back(slot);
    if (!rr.empty()) {
      bi.sampleRows = at::tensor(rr, at::kLong);
      bi.sampleSlots = at::tensor(ss, at::kLong);
    }
    return r;
  };

  auto idsOf = [](const std::vector<const Sequence*>& seqs) {
    std::vector<std::vector<int64_t>> ids;
    for (const Sequence* s : seqs) ids.emplace_back(s->ids.begin(), s->ids.end());
    return ids;
  };

  // Moves the streams' token counters, the sequence count and the corpus hash
  // past `pairs` (streamTokens[k]: stream k's tokens in them).
  auto advance = [&](const std::vector<SequencePair>& pairs, const std::vector<int64_t>& streamTokens) {
    int64_t added = 0;
    for (size_t k = 0; k < st.streams.size(); ++k) {
      st.streams[k].tokens += streamTokens[k];
      added += streamTokens[k];
    }
    st.tokens += added;
    st.sequences += static_cast<int64_t>(pairs.size());
    for (const auto& p : pairs) st.sequencesHash = hashSequence(st.sequencesHash, p);
  };

  // Another rank's chunk: the counters move past it as if it had run here.
  auto skipPairs = [&](const std::vector<SequencePair>& pairs) {
    std::vector<int64_t> streamTokens(st.streams.size(), 0);
    for (size_t k = 0; k < st.streams.size(); ++k) {
      for (const auto& p : pairs)
        streamTokens[k] +=
            static_cast<int64_t>(st.streams[k].prefix == "dec." ? p.decoder.size() : p.source.ids.size());
      requireTokenLimit(st.streams[k].tokens + streamTokens[k]);
    }
    advance(pairs, streamTokens);
  };

  auto runBatch = [&](const std::vector<SequencePair>& pairs) {
    std::vector<const Sequence*> src;
    std::vector<Sequence> decSeqs;
    for (const auto& p : pairs) {
      src.push_back(&p.source);
      if (decoderSites) {
        // The decoder's tokens: the teacher-forced input, at positions 0..T_dec-1.
        Sequence d;
        d.ids = p.decoder;
        d.docId = p.source.docId;
        d.category = p.source.category;
        decSeqs.push_back(std::move(d));
      }
    }
    std::vector<const Sequence*> dec;
    for (const auto& d : decSeqs) dec.push_back(&d);
    std::vector<int64_t> streamTokens(st.streams.size(), 0);
    for (size_t k = 0; k < st.streams.size(); ++k)
      streamTokens[k] = prepareStream(st.streams[k], sink.batch[k], st.streams[k].prefix == "dec." ? dec : src);
    Batch b = makeBatch(idsOf(src), 0);
    if (!st.encDec) {
      model.forwardHidden(b, &sink);
    } else {
      at::Tensor encoderOut = model.encode(b, &sink);  // [B, T_src, d_model]
      if (decoderSites) model.decodeHidden(encoderOut, b.mask, makeBatch(idsOf(dec), 0), &sink);
    }
    for (size_t k = 0; k < st.streams.size(); ++k) st.streams[k].counted += streamTokens[k];
    advance(pairs, streamTokens);
  };

  auto writeCheckpoint = [&]() {
    job.log("checkpoint after " + std::to_string(st.chunks) + " chunks (" + std::to_string(st.tokens) + " tokens) -> " +
            partial.string());
    writeFolderAtomic(partial, true, [&](const fs::path& tmp) { st.write(tmp, false, job); });
    lastCheckpoint = std::chrono::steady_clock::now();
  };

  [[maybe_unused]] auto lastTrim = std::chrono::steady_clock::now();  // see runChunk
  auto runChunk = [&]() {
    if (st.chunks % ranks != rank) {
      skipPairs(pending);
    } else {
      for (size_t i = 0; i < pending.size(); i += static_cast<size_t>(options.batch)) {
        job.checkCancel();
        std::vector<SequencePair> part(
            pending.begin() + static_cast<long>(i),
            pending.begin() + static_cast<long>(std::min(pending.size(), i + options.batch)));
        runBatch(part);
        // glibc keeps the batch's freed mid-sized blocks (1-32 MiB, below
        // its dynamic mmap threshold) resident in each thread's arena; with
        // two threads that was 50-100 MiB above what the recording holds at
        // d_ff 11008 (docs/recording-and-splitting.md). Handing the free
        // pages back after a batch keeps the peak at the counts plus the
        // batch. At most once a second: a trim took 0.4-2 ms on the bundled
        // model, where a one-sequence batch takes a few ms.
#if defined(__GLIBC__)
        if (std::chrono::steady_clock::now() - lastTrim >= std::chrono::seconds(1)) {
          malloc_trim(0);
          lastTrim = std::chrono::steady_clock::now();
        }
#endif
        reportProgress();
      }
      st.foldPartials();
    }
    pending.clear();
    ++st.chunks;
    ++chunkCounter;
    job.checkCancel();
    const bool due = options.checkpointEvery > 0
                         ? (chunkCounter % options.checkpointEvery == 0)
                         : (options.checkpointSeconds > 0 &&
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - lastCheckpoint).count() >=
                                options.checkpointSeconds);
    if (due) writeCheckpoint();
  };

  // --resume: the sequences already in the checkpoint are skipped, but
  // hashed; they must be the ones it recorded (an edited, reordered or
  // shortened corpus is refused instead of silently mixed in).
  uint64_t skippedHash = kFnvOffset;
  bool corpusChecked = skip == 0;
  auto checkCorpus = [&]() {
    corpusChecked = true;
    // The checkpoint's sequences are exactly the skipped ones: the hash chain
    // continues from them, so a resumed run ends with the uninterrupted run's hash.
    if (skip > 0) st.sequencesHash = skippedHash;
    if (resumeHash.empty()) return;  // checkpoints of older versions carry no hash
    if (seen < skip)
      throw ParameterError("--resume: the corpus " + info.path + " now yields " + std::to_string(seen) +
                           " sequences, fewer than the " + std::to_string(skip) + " the checkpoint " +
                           partial.string() + " already recorded; it changed since (rerun without --resume)");
    if (hex16(skippedHash) != resumeHash)
      throw ParameterError("--resume: the corpus " + info.path + " changed since the checkpoint " + partial.string() +
                           " was written (its first " + std::to_string(skip) +
                           " sequences differ from the recorded ones); rerun without --resume");
  };
  job.setStage("record");
  int64_t budgetUsed = st.tokens;
  bool budgetDone = expected > 0 && budgetUsed >= expected;
  if (!budgetDone) {
    source([&](const SequencePair& p0) {
      job.checkCancel();
      const Sequence& s0 = p0.source;
      if (s0.ids.empty()) return true;
      if (seen < skip) {
        ++seen;
        skippedHash = hashSequence(skippedHash, p0);
        return true;
      }
      if (!corpusChecked) checkCorpus();
      if (static_cast<int64_t>(s0.ids.size()) > options.seqLen)
        throw ParameterError("sequence of document " + std::to_string(s0.docId) + " has " +
                             std::to_string(s0.ids.size()) + " tokens, more than --seq-len " +
                             std::to_string(options.seqLen));
      if (decoderSites && p0.decoder.empty())
        throw ParameterError("pair " + std::to_string(s0.docId) +
                             " has no decoder input; the decoder's sites need a "
                             "parallel corpus");
      if (static_cast<int64_t>(p0.decoder.size()) > options.seqLen)
        throw ParameterError("the target of pair " + std::to_string(s0.docId) + " has " +
                             std::to_string(p0.decoder.size()) + " tokens, more than --seq-len " +
                             std::to_string(options.seqLen));
      SequencePair pr = p0;
      pr.source.sourceFraction = s0.sourceFraction;
      if (!decoderSites) pr.decoder.clear();
      Sequence& s = pr.source;
      if (!st.encDec) {
        if (expected > 0 && budgetUsed + static_cast<int64_t>(s.ids.size()) > expected)
          s.ids.resize(static_cast<size_t>(expected - budgetUsed));
        budgetUsed += static_cast<int64_t>(s.ids.size());
      } else {
        // Pairs are recorded whole; the budget counts the tokens of the
        // recorded streams (source, decoder input or both), as st.tokens does.
        for (const auto& sm : st.streams)
          budgetUsed += static_cast<int64_t>(sm.prefix == "dec." ? pr.decoder.size() : s.ids.size());
      }
      if (s0.sourceFraction > 0) {
        const double corpusEstimate = static_cast<double>(budgetUsed) / s0.sourceFraction;
        expectedTotal = expected > 0 ? std::min(static_cast<double>(expected), corpusEstimate) : corpusEstimate;
      }
      pending.push_back(std::move(pr));
      if (static_cast<int>(pending.size()) >= chunkSeq) runChunk();
      return !(expected > 0 && budgetUsed >= expected);
    });
  }
  if (!corpusChecked && !budgetDone) checkCorpus();
  expectedTotal = static_cast<double>(budgetUsed);  // the source is exhausted: its total is known
  if (!pending.empty()) runChunk();
  reportProgress();
  if (st.tokens == 0) throw ParameterError("the corpus yielded no tokens to record");

  if (ranks > 1) {
    // Every rank must have read the same sequences (the same corpus file on
    // every node); a rank that read another corpus would add other counts.
    const std::vector<uint64_t> hashes = dist::allGather(st.sequencesHash);
    std::exception_ptr mismatch;
    for (int r = 1; r < ranks && !mismatch && rank == 0; ++r)
      if (hashes[static_cast<size_t>(r)] != hashes[0])
        mismatch = std::make_exception_ptr(FormatError(
            "rank " + std::to_string(r) + " read other sequences from " + info.path + " than rank 0 (corpus hash " +
            hex16(hashes[static_cast<size_t>(r)]) + " vs " + hex16(hashes[0]) +
            "); every rank must read the same corpus (the same content at the same path)"));
    dist::agree(mismatch);
    job.setStage("record: reduce");
    reduceAcrossRanks(st);
  }
  std::exception_ptr writeError;
  try {
    job.setStage("record: write");
    if (rank == 0) writeFolderAtomic(out, options.force, [&](const fs::path& tmp) { st.write(tmp, true, job); });
  } catch (...) {
    writeError = std::current_exception();
  }
  dist::agree(writeError);  // the ranks' checkpoints stay until OUT is written
  std::error_code ec;
  fs::remove_all(partial, ec);
  // OUT is complete: checkpoints of it left by runs with another number of
  // ranks (or without mpirun) can never be resumed into it again.
  if (rank == 0)
    for (const auto& [path, n] : checkpointsOf(out)) {
      job.log("removing the stale checkpoint " + path.string() + " (written by " + std::to_string(n) +
              (n == 1 ? " process)" : " ranks)"));
      fs::remove_all(path, ec);
    }
  RecordSummary sum;
  sum.tokens = st.tokens;
  sum.sequences = st.sequences;
  sum.chunks = st.chunks;
  sum.out = out;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace

RecordSummary recordActivations(const Model& model, const SequenceSource& source, const SourceInfo& info,
                                const RecordOptions& options, const fs::path& out, JobContext& job) {
  // A monolingual corpus feeds the encoder (or the single stack) only.
  const auto& c = model.config();
  if (c.encoderDecoder)
    for (int index : resolveRecordSites(c, options.layers, options.sites)) {
      const Site site = c.ffnSites()[static_cast<size_t>(index)];
      if (site.stack == SiteStack::Decoder)
        throw ParameterError("--sites: " + site.name() + " is a decoder site, and " +
                             (info.path.empty() ? std::string("the corpus") : info.path) +
                             " is a monolingual corpus; the decoder's sites need a parallel corpus (.tsv, .jsonl or "
                             "--target FILE), or record --sites enc");
    }
  PairSource pairs = [source](const std::function<bool(const SequencePair&)>& fn) {
    source([&](const Sequence& s) {
      SequencePair p;
      p.source = s;
      return fn(p);
    });
  };
  return recordSeq2SeqActivations(model, pairs, info, options, out, job);
}

RecordSummary recordSeq2SeqActivations(const Model& model, const PairSource& source, const SourceInfo& info,
                                       const RecordOptions& options, const fs::path& out, JobContext& job) {
  std::error_code ec;
  const bool outExisted = fs::exists(fs::symlink_status(out, ec));
  try {
    return recordActivationsImpl(model, source, info, options, out, job);
  } catch (const CancelledError&) {
    // Say what is on disk: the output is only ever replaced whole, so it is
    // untouched; the last checkpoint (if one was due) allows --resume.
    std::string note = outExisted ? out.string() + " is unchanged" : out.string() + " was not written";
    const fs::path partial = rankCheckpointPath(out, dist::rank(), dist::size());
    if (fs::exists(partial / "manifest.json", ec)) {
      std::string chunks;
      try {
        chunks =
            std::to_string(nlohmann::json::parse(readFile(partial / "manifest.json")).at("chunks_done").get<int64_t>());
      } catch (const std::exception&) {
        chunks = "?";
      }
      note += "; the checkpoint " + partial.string() + " (" + chunks + " chunks) is kept: continue with --resume";
    } else {
      note += "; no checkpoint was due, nothing else is on disk";
    }
    throw CancelledError(note);
  }
}

// ---------------------------------------------------------------- merge

void mergeRecordings(const std::vector<fs::path>& inputs, const fs::path& out, bool force, JobContext& job) {
  if (inputs.size() < 2) throw ParameterError("--merge needs at least two recordings");
  OutputLock outputLock(out);
  checkOutput(out, force, "recording", inputs);
  job.setStage("merge: check");
  std::vector<Recording> recs;
  for (const auto& p : inputs) recs.push_back(Recording::open(p));
  const Recording& a = recs[0];
  auto mustMatch = [&](const Recording& b, const std::string& what, const nlohmann::json& va,
                       const nlohmann::json& vb) {
    if (va != vb)
      throw FormatError(b.dir().string() + ": " + what + " " + vb.dump() + " differs from " + a.dir().string() + "'s " +
                        va.dump() + "; only recordings of the same model and options can be merged");
  };
  for (size_t i = 1; i < recs.size(); ++i) {
    const Recording& b = recs[i];
    mustMatch(b, "model fingerprint", a.fingerprint(), b.fingerprint());
    mustMatch(b, "layers", a.manifest()["layers"], b.manifest()["layers"]);
    mustMatch(b, "active rule", a.manifest()["options"]["active"], b.manifest()["options"]["active"]);
    mustMatch(b, "soft_coact", a.hasSoftCoact(), b.hasSoftCoact());
    mustMatch(b, "categories", a.manifest()["corpus"]["categories"], b.manifest()["corpus"]["categories"]);
    mustMatch(b, "sample size", a.manifest()["options"]["samples"], b.manifest()["options"]["samples"]);
  }
  if (a.encoderDecoder())
    throw ParameterError(a.dir().string() +
                         ": --merge covers single-stack recordings so far; this one records an "
                         "encoder-decoder model (enc/dec sites with a reservoir per stack)");
  if (a.nativeMoe())
    throw ParameterError(a.dir().string() +
                         ": --merge covers dense recordings so far; this one records a native MoE model's experts "
                         "(routing statistics and expert sites)");
  State st;
  st.hasSequencesHash = false;  // the shards' streams are not one sequence
  st.hasTokenIndex = false;
  st.modelInfo = a.manifest()["model"];
  st.source.categories = a.categories();
  nlohmann::json paths = nlohmann::json::array();
  std::string kind = a.manifest()["corpus"].value("kind", "");
  for (const auto& r : recs) paths.push_back(r.manifest()["corpus"]["path"]);
  st.source.kind = kind;
  st.layers = a.layers();
  std::vector<Site> siteList;
  for (int L : st.layers) {
    siteList.push_back(Site::ofLayer(L));
    st.width[L] = a.dFF();
  }
  st.setSites(siteList);
  st.active = a.activeRule();
  st.soft = a.hasSoftCoact();
  // Merge takes no storage option: a packed input keeps the result packed, else the Auto rule.
  st.packCoact = a.dFF() > RecordOptions::kPackCoactAbove;
  for (const Recording& r : recs) st.packCoact = st.packCoact || r.formatVersion() == 2;
  st.S = a.manifest()["options"]["samples"].get<int64_t>();
  st.n = a.dFF();
  st.dModel = a.dModel();
  st.options = a.manifest()["options"];
  st.options["merged_from"] = nlohmann::json::array();
  for (const auto& p : inputs) st.options["merged_from"].push_back(fs::absolute(p).string());
  st.allocate();

  job.setStage("merge");
  int64_t total = 0;
  for (const auto& r : recs) total += r.tokens();
  if (total > std::numeric_limits<int32_t>::max())
    throw ParameterError("merged recording would exceed 2^31 tokens (the I32 co-activation count limit)");
  for (size_t i = 0; i < recs.size(); ++i) {
    job.checkCancel();
    const Recording& r = recs[i];
    st.tokens += r.tokens();
    st.streams[0].tokens += r.tokens();
    st.sequences += r.sequences();
    for (int L : st.layers) {
      LayerState& s = st.layer.at(L);
      s.count.add_(r.count(L));
      addExact(s.sumFx, r.sumExact(L), r.sum(L));
      addExact(s.sumsqFx, r.sumsqExact(L), r.sumsq(L));
      if (r.tokens() > 0) s.max = at::maximum(s.max, r.max(L));
      s.hist.add_(r.activeHist(L));
      s.catCount.add_(r.categoryCount(L));
      s.catTokens.add_(r.categoryTokens(L));
      s.coact.add_(r.coact(L));
      if (st.soft) State::addSoftExact(s.coactSoftFx, r.coactSoftExact(L), r.coactSoft(L), r.site(L).name());
    }
    job.setProgress(static_cast<double>(i + 1) / static_cast<double>(recs.size()));
  }
  st.source.path = paths.dump();
  // Samples: all of them if they fit, else a weighted sample without
  // replacement (Efraimidis-Spirakis keys; weight = tokens represented per row).
  std::vector<std::pair<size_t, int64_t>> chosen;  // (recording, row)
  int64_t rowsTotal = 0;
  for (const auto& r : recs) rowsTotal += r.sampleCount();
  if (rowsTotal <= st.S) {
    for (size_t i = 0; i < recs.size(); ++i)
      for (int64_t k = 0; k < recs[i].sampleCount(); ++k) chosen.emplace_back(i, k);
  } else {
    std::mt19937_64 rng(a.manifest()["options"].value("seed", 0ull) ^ 0x6d65726765ull);
    std::uniform_real_distribution<double> U(1e-300, 1.0);
    std::vector<std::tuple<double, size_t, int64_t>> keys;
    for (size_t i = 0; i < recs.size(); ++i) {
      const double w = static_cast<double>(recs[i].tokens()) / std::max<int64_t>(1, recs[i].sampleCount());
      for (int64_t k = 0; k < recs[i].sampleCount(); ++k) keys.emplace_back(std::log(U(rng)) / w, i, k);
    }
    std::partial_sort(keys.begin(), keys.begin() + st.S, keys.end(),
                      [](const auto& x, const auto& y) { return std::get<0>(x) > std::get<0>(y); });
    keys.resize(static_cast<size_t>(st.S));
    std::sort(keys.begin(), keys.end(), [](const auto& x, const auto& y) {
      return std::tie(std::get<1>(x), std::get<2>(x)) < std::tie(std::get<1>(y), std::get<2>(y));
    });
    for (const auto& [key, i, k] : keys) chosen.emplace_back(i, k);
  }
  // Gather per recording.
  int64_t slot = 0;
  for (size_t i = 0; i < recs.size(); ++i) {
    std::vector<int64_t> rows;
    for (const auto& [ri, k] : chosen)
      if (ri == i) rows.push_back(k);
    if (rows.empty()) continue;
    at::Tensor idx = at::tensor(rows, at::kLong);
    const int64_t K = idx.numel();
    const Recording& r = recs[i];
    Stream& sm = st.streams[0];
    sm.sTok.slice(0, slot, slot + K).copy_(r.sampleTokenIds().index_select(0, idx));
    sm.sDoc.slice(0, slot, slot + K).copy_(r.sampleDocIds().index_select(0, idx));
    sm.sPos.slice(0, slot, slot + K).copy_(r.samplePositions().index_select(0, idx));
    sm.sCat.slice(0, slot, slot + K).copy_(r.sampleCategories().index_select(0, idx));
    for (int L : st.layers) {
      st.layer.at(L).sampleIn.slice(0, slot, slot + K).copy_(r.sampleFfnIn(L).index_select(0, idx));
      st.layer.at(L).sampleAct.slice(0, slot, slot + K).copy_(r.sampleFfnAct(L).index_select(0, idx));
    }
    slot += K;
  }
  // filled() is min(S, tokens); it equals `slot` in both branches above.
  job.setStage("merge: write");
  writeFolderAtomic(
      out, force, [&](const fs::path& tmp) { st.write(tmp, true, job); }, inputs);
}

}  // namespace moefy
