#include "analysis/record/recording.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/io/json_input.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/model.h"
#include "analysis/record/exact_sum.h"

namespace moefy {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- packed co-activation

int64_t upperTriangleSize(int64_t n) { return n * (n + 1) / 2; }

int64_t upperTriangleIndex(int64_t n, int64_t i, int64_t j) { return i * n - i * (i - 1) / 2 + (j - i); }

namespace {

// The element size of a tensor the triangle helpers accept (4 or 8 bytes:
// they move bit patterns, so I32/F32 and I64/F64 are handled alike).
size_t triangleElement(const at::Tensor& t, const char* what) {
  const size_t e = t.element_size();
  if (e != 4 && e != 8)
    throw ParameterError(std::string(what) + ": elements of " + std::to_string(e) +
                         " bytes (I32, F32, I64 or F64 expected)");
  return e;
}

int64_t squareSide(const at::Tensor& t, const char* what) {
  if (t.dim() != 2 || t.size(0) != t.size(1))
    throw ParameterError(std::string(what) + ": a square [n, n] tensor expected, got " + shapeString(t));
  return t.size(0);
}

// m[i][j] = m[j][i] for j < i on a contiguous [n, n] matrix, in 64 x 64 tiles
// on and below the diagonal (the source tile is read transposed; tile rows in
// parallel).
template <typename T>
void mirrorUpperTiled(T* m, int64_t n) {
  constexpr int64_t kT = 64;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i0 = 0; i0 < n; i0 += kT) {
    const int64_t i1 = std::min(n, i0 + kT);
    for (int64_t j0 = 0; j0 <= i0; j0 += kT)
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t j1 = std::min(i, j0 + kT);
        for (int64_t j = j0; j < j1; ++j) m[i * n + j] = m[j * n + i];
      }
  }
}

void mirrorUpperBytes(void* m, int64_t n, size_t e) {
  if (e == 4)
    mirrorUpperTiled(static_cast<uint32_t*>(m), n);
  else
    mirrorUpperTiled(static_cast<uint64_t*>(m), n);
}

}  // namespace

at::Tensor packUpperTriangle(const at::Tensor& square) {
  const int64_t n = squareSide(square, "packUpperTriangle");
  const size_t e = triangleElement(square, "packUpperTriangle");
  const at::Tensor src = square.contiguous();
  at::Tensor out = at::empty({upperTriangleSize(n)}, src.options());
  const auto* s = static_cast<const uint8_t*>(src.data_ptr());
  auto* d = static_cast<uint8_t*>(out.data_ptr());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(d + upperTriangleIndex(n, i, i) * e, s + (i * n + i) * e, static_cast<size_t>(n - i) * e);
  return out;
}

at::Tensor unpackUpperTriangle(const at::Tensor& packed, int64_t n) {
  if (n < 0 || packed.dim() != 1 || packed.size(0) != upperTriangleSize(n))
    throw ParameterError("unpackUpperTriangle: a 1-D tensor of n(n+1)/2 = " + std::to_string(upperTriangleSize(n)) +
                         " elements expected for n = " + std::to_string(n) + ", got " + shapeString(packed));
  const size_t e = triangleElement(packed, "unpackUpperTriangle");
  const at::Tensor src = packed.contiguous();
  at::Tensor out = at::empty({n, n}, src.options());
  const auto* s = static_cast<const uint8_t*>(src.data_ptr());
  auto* d = static_cast<uint8_t*>(out.data_ptr());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(d + (i * n + i) * e, s + upperTriangleIndex(n, i, i) * e, static_cast<size_t>(n - i) * e);
  mirrorUpperBytes(d, n, e);
  return out;
}

at::Tensor packUpperTriangleInPlace(const at::Tensor& square) {
  const int64_t n = squareSide(square, "packUpperTriangleInPlace");
  const size_t e = triangleElement(square, "packUpperTriangleInPlace");
  if (!square.is_contiguous()) throw ParameterError("packUpperTriangleInPlace: the tensor is not contiguous");
  auto* d = static_cast<uint8_t*>(square.data_ptr());
  // Row i moves down to k(i, i) <= i*n + i; rows in ascending order never
  // overwrite a row not yet moved (row i ends at k(i+1, i+1) <= (i+1)*n + i+1).
  for (int64_t i = 1; i < n; ++i)
    std::memmove(d + upperTriangleIndex(n, i, i) * e, d + (i * n + i) * e, static_cast<size_t>(n - i) * e);
  return square.view({-1}).narrow(0, 0, upperTriangleSize(n));
}

void unpackUpperTriangleInPlace(const at::Tensor& square) {
  const int64_t n = squareSide(square, "unpackUpperTriangleInPlace");
  const size_t e = triangleElement(square, "unpackUpperTriangleInPlace");
  auto* d = static_cast<uint8_t*>(square.data_ptr());
  // The reverse of the packing: rows in descending order move back up.
  for (int64_t i = n - 1; i >= 1; --i)
    std::memmove(d + (i * n + i) * e, d + upperTriangleIndex(n, i, i) * e, static_cast<size_t>(n - i) * e);
  mirrorUpperBytes(d, n, e);
}

namespace {

const nlohmann::json& req(const nlohmann::json& j, const char* key, const std::string& ctx) {
  if (!j.is_object() || !j.contains(key)) throw FormatError(ctx + ": missing key '" + key + "'");
  return j.at(key);
}

int64_t reqInt(const nlohmann::json& j, const char* key, const std::string& ctx) {
  const auto& v = req(j, key, ctx);
  if (!v.is_number_integer()) throw FormatError(ctx + ": key '" + key + "' must be an integer");
  return v.get<int64_t>();
}

std::string reqStr(const nlohmann::json& j, const char* key, const std::string& ctx) {
  const auto& v = req(j, key, ctx);
  if (!v.is_string()) throw FormatError(ctx + ": key '" + key + "' must be a string");
  return v.get<std::string>();
}

void checkTensor(const SafetensorsFile& f, const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                 const std::string& note = "") {
  const TensorInfo* t = f.find(name);
  if (!t) throw FormatError(f.path().string() + ": missing tensor '" + name + "'");
  if (t->dtype != dtype)
    throw FormatError(f.path().string() + ": tensor '" + name + "' has dtype " + dtypeName(t->dtype) + ", expected " +
                      dtypeName(dtype));
  if (t->shape != shape)
    throw FormatError(f.path().string() + ": tensor '" + name + "' has shape " + shapeString(t->shape) + ", expected " +
                      shapeString(shape) + note);
}

// "<site prefix><what>": the name of a site's tensor (P = Site::prefix()).
std::string lname(const std::string& P, const char* what) { return P + what; }

// The optional exact accumulators of a site (`sum_exact`, `sumsq_exact`)
// must be the F64 statistics they stand for: an edited sum would otherwise
// come back from the accumulator on the next --merge or --resume.
void checkExactSums(const SafetensorsFile& stats, const std::string& P, int64_t n) {
  for (const char* what : {"sum", "sumsq"}) {
    const std::string exact = lname(P, what) + "_exact";
    if (!stats.contains(exact)) continue;
    checkTensor(stats, exact, DType::I64, {n, exact_sum::kRecordInts});
    const at::Tensor fx = stats.raw(exact).contiguous(), plain = stats.raw(lname(P, what)).contiguous();
    std::vector<double> values(static_cast<size_t>(n));
    exact_sum::values(fx.data_ptr<int64_t>(), n, values.data());
    const double* v = plain.data_ptr<double>();
    for (int64_t j = 0; j < n; ++j) {
      const double want = values[static_cast<size_t>(j)];
      if (!(want == v[j] || (std::isnan(want) && std::isnan(v[j]))))
        throw FormatError(stats.path().string() + ": tensor '" + exact + "' disagrees with '" + lname(P, what) +
                          "' at neuron " + std::to_string(j) + " (" + std::to_string(want) + " vs " +
                          std::to_string(v[j]) + ")");
    }
  }
}

// The invariants that tie a site's tensors together and to its stream's
// token count (docs/formats.md "Recording"). O(d_ff^2) per layer, far cheaper
// than any use of the recording; an impossible recording (negative or
// asymmetric counts, counts above the token count) would otherwise be split
// or routed without a word. `coact` and `coactSoft` are the full [n, n]
// matrices (a version 2 file's expanded from its packed triangles; undefined
// soft when not recorded), `cp` the file they come from.
void checkLayerInvariants(const SafetensorsFile& stats, const std::string& cp, const std::string& P, int64_t n,
                          int64_t tokens, const at::Tensor& coact, const at::Tensor& coactSoft) {
  const std::string sp = stats.path().string();
  auto fail = [&](const std::string& file, const std::string& what) { throw FormatError(file + ": " + what); };
  const std::string tok = " (the manifest's tokens is " + std::to_string(tokens) + ")";
  at::Tensor count = stats.raw(lname(P, "count")).contiguous();
  const int64_t* cnt = count.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    if (cnt[i] < 0 || cnt[i] > tokens)
      fail(sp, "tensor '" + lname(P, "count") + "'[" + std::to_string(i) + "] = " + std::to_string(cnt[i]) +
                   " is outside [0, tokens]" + tok);
  at::Tensor hist = stats.raw(lname(P, "active_hist")).contiguous();
  const int64_t* hp = hist.data_ptr<int64_t>();
  int64_t histTotal = 0, activeTotal = 0, countTotal = 0;
  for (int64_t a = 0; a <= n; ++a) {
    if (hp[a] < 0)
      fail(sp, "tensor '" + lname(P, "active_hist") + "'[" + std::to_string(a) + "] = " + std::to_string(hp[a]) +
                   " is negative");
    histTotal += hp[a];
    activeTotal += hp[a] * a;
  }
  for (int64_t i = 0; i < n; ++i) countTotal += cnt[i];
  if (histTotal != tokens)
    fail(sp, "tensor '" + lname(P, "active_hist") + "' counts " + std::to_string(histTotal) + " tokens" + tok);
  if (activeTotal != countTotal)
    fail(sp, "tensor '" + lname(P, "active_hist") + "' holds " + std::to_string(activeTotal) + " activations but '" +
                 lname(P, "count") + "' sums to " + std::to_string(countTotal));
  at::Tensor catTok = stats.raw(lname(P, "category_tokens")).contiguous();
  at::Tensor catCnt = stats.raw(lname(P, "category_count")).contiguous();
  const int64_t C = catTok.size(0);
  const int64_t* ct = catTok.data_ptr<int64_t>();
  const int64_t* cc = catCnt.data_ptr<int64_t>();
  int64_t catTotal = 0;
  for (int64_t c = 0; c < C; ++c) {
    if (ct[c] < 0 || ct[c] > tokens)
      fail(sp, "tensor '" + lname(P, "category_tokens") + "'[" + std::to_string(c) + "] = " + std::to_string(ct[c]) +
                   " is outside [0, tokens]" + tok);
    catTotal += ct[c];
    for (int64_t i = 0; i < n; ++i)
      if (cc[c * n + i] < 0 || cc[c * n + i] > ct[c] || cc[c * n + i] > cnt[i])
        fail(sp, "tensor '" + lname(P, "category_count") + "'[" + std::to_string(c) + ", " + std::to_string(i) +
                     "] = " + std::to_string(cc[c * n + i]) + " is outside [0, min(category_tokens, count)]");
  }
  if (catTotal > tokens)
    fail(sp, "tensor '" + lname(P, "category_tokens") + "' sums to " + std::to_string(catTotal) + tok);
  for (const char* name : {"sum", "sumsq"}) {
    at::Tensor t = stats.raw(lname(P, name)).contiguous();
    const double* v = t.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(v[i]) || (name[3] == 's' && v[i] < 0))
        fail(sp, "tensor '" + lname(P, name) + "'[" + std::to_string(i) + "] = " + std::to_string(v[i]) +
                     (std::isfinite(v[i]) ? " is negative" : " is not finite"));
  }
  {
    at::Tensor mx = stats.raw(lname(P, "max")).contiguous();
    const float* v = mx.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(v[i])) fail(sp, "tensor '" + lname(P, "max") + "'[" + std::to_string(i) + "] is not finite");
  }
  at::Tensor co = coact.contiguous();
  const int32_t* m = co.data_ptr<int32_t>();
  // 64 x 64 tiles (the symmetry test reads the transposed tile; row by row
  // it would stride through memory), tile rows in parallel; the row of the
  // first violation found is then re-examined to name it.
  std::atomic<int64_t> badRow{n};
  constexpr int64_t kT = 64;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i0 = 0; i0 < n; i0 += kT) {
    const int64_t i1 = std::min(n, i0 + kT);
    for (int64_t j0 = 0; j0 < n; j0 += kT) {
      const int64_t j1 = std::min(n, j0 + kT);
      for (int64_t i = i0; i < i1; ++i) {
        const int32_t* r = m + i * n;
        bool bad = i >= j0 && i < j1 && r[i] != cnt[i];
        for (int64_t j = j0; j < j1 && !bad; ++j) bad = r[j] < 0 || r[j] != m[j * n + i] || r[j] > cnt[i];
        if (bad) {
          int64_t cur = badRow.load();
          while (i < cur && !badRow.compare_exchange_weak(cur, i)) {
          }
        }
      }
    }
  }
  if (badRow.load() < n) {
    const int64_t i = badRow.load();
    const int32_t* r = m + i * n;
    const std::string t = "tensor '" + lname(P, "coact") + "'";
    if (r[i] != cnt[i])
      fail(cp, t + "[" + std::to_string(i) + ", " + std::to_string(i) + "] = " + std::to_string(r[i]) +
                   " differs from '" + lname(P, "count") + "'[" + std::to_string(i) + "] = " + std::to_string(cnt[i]) +
                   " (the diagonal must equal the per-neuron active counts)");
    for (int64_t j = 0; j < n; ++j) {
      const std::string where = "[" + std::to_string(i) + ", " + std::to_string(j) + "] = " + std::to_string(r[j]);
      if (r[j] < 0) fail(cp, t + where + " is negative");
      if (r[j] != m[j * n + i])
        fail(cp, t + " is not symmetric: " + where + " but [" + std::to_string(j) + ", " + std::to_string(i) +
                     "] = " + std::to_string(m[j * n + i]));
      if (r[j] > cnt[i]) fail(cp, t + where + " exceeds the neuron's active count " + std::to_string(cnt[i]));
    }
  }
  if (coactSoft.defined()) {
    at::Tensor sc = coactSoft.contiguous();
    const float* v = sc.data_ptr<float>();
    for (int64_t k = 0; k < n * n; ++k)
      if (!(v[k] >= 0) || !std::isfinite(v[k]))
        fail(cp, "tensor '" + lname(P, "coact_soft") + "'[" + std::to_string(k / n) + ", " + std::to_string(k % n) +
                     "] = " + std::to_string(v[k]) + " is negative or not finite");
  }
}

// The routing statistics of MoE layer `layer` (prefix P = "blk.L."): usage
// U [E], co-occurrence M [E, E], category usage Q [C, E] over `tokens`
// tokens that each choose k distinct experts. Then U >= 0 with sum k tokens;
// M >= 0, symmetric, diag(M) = U and sum_j M[i, j] = k U[i] (each of the
// U[i] tokens choosing i chooses k - 1 others); 0 <= Q and sum_c Q[c, e] <= U[e].
void checkRoutingInvariants(const SafetensorsFile& stats, const std::string& P, int64_t E, int64_t k, int64_t tokens) {
  const std::string sp = stats.path().string();
  auto fail = [&](const std::string& what) { throw FormatError(sp + ": " + what); };
  at::Tensor usage = stats.raw(lname(P, "expert_usage")).contiguous();
  at::Tensor co = stats.raw(lname(P, "expert_cooccur")).contiguous();
  at::Tensor cat = stats.raw(lname(P, "expert_category_usage")).contiguous();
  const int64_t* u = usage.data_ptr<int64_t>();
  const int64_t* m = co.data_ptr<int64_t>();
  const int64_t* q = cat.data_ptr<int64_t>();
  const std::string un = "tensor '" + lname(P, "expert_usage") + "'",
                    cn = "tensor '" + lname(P, "expert_cooccur") + "'",
                    qn = "tensor '" + lname(P, "expert_category_usage") + "'";
  int64_t total = 0;
  for (int64_t e = 0; e < E; ++e) {
    if (u[e] < 0 || u[e] > tokens)
      fail(un + "[" + std::to_string(e) + "] = " + std::to_string(u[e]) + " is outside [0, tokens] (tokens " +
           std::to_string(tokens) + ")");
    total += u[e];
  }
  if (total != tokens * k)
    fail(un + " sums to " + std::to_string(total) + ", not to tokens x top-k = " + std::to_string(tokens) + " x " +
         std::to_string(k));
  for (int64_t i = 0; i < E; ++i) {
    int64_t row = 0;
    for (int64_t j = 0; j < E; ++j) {
      const std::string where =
          "[" + std::to_string(i) + ", " + std::to_string(j) + "] = " + std::to_string(m[i * E + j]);
      if (m[i * E + j] < 0) fail(cn + where + " is negative");
      if (m[i * E + j] != m[j * E + i])
        fail(cn + " is not symmetric: " + where + " but [" + std::to_string(j) + ", " + std::to_string(i) +
             "] = " + std::to_string(m[j * E + i]));
      row += m[i * E + j];
    }
    if (m[i * E + i] != u[i])
      fail(cn + "[" + std::to_string(i) + ", " + std::to_string(i) + "] = " + std::to_string(m[i * E + i]) +
           " differs from " + un + "[" + std::to_string(i) + "] = " + std::to_string(u[i]) +
           " (the diagonal must equal the expert usage)");
    if (row != k * u[i])
      fail(cn + " row " + std::to_string(i) + " sums to " + std::to_string(row) +
           ", not to top-k x usage = " + std::to_string(k) + " x " + std::to_string(u[i]));
  }
  const int64_t C = cat.size(0);
  for (int64_t e = 0; e < E; ++e) {
    int64_t col = 0;
    for (int64_t c = 0; c < C; ++c) {
      if (q[c * E + e] < 0)
        fail(qn + "[" + std::to_string(c) + ", " + std::to_string(e) + "] = " + std::to_string(q[c * E + e]) +
             " is negative");
      col += q[c * E + e];
    }
    if (col > u[e])
      fail(qn + " column " + std::to_string(e) + " sums to " + std::to_string(col) + ", more than " + un + "[" +
           std::to_string(e) + "] = " + std::to_string(u[e]));
  }
}

}  // namespace

Recording Recording::open(const fs::path& dir, bool allowPartial) {
  Recording r;
  r.dir_ = dir;
  if (!fs::is_directory(dir)) throw IoError(dir.string() + ": not a recording folder (no such directory)");
  const fs::path mpath = dir / "manifest.json";
  if (!fs::exists(mpath)) throw FormatError(mpath.string() + ": missing (not a recording folder)");
  const std::string ctx = mpath.string();
  r.manifest_ = readJsonFile(mpath);
  const auto& m = r.manifest_;
  if (!m.is_object()) throw FormatError(ctx + ": not a JSON object");
  if (reqStr(m, "format", ctx) != "moefy-recording")
    throw FormatError(ctx + ": format is '" + m["format"].get<std::string>() + "', expected 'moefy-recording'");
  // Version 1: full co-activation matrices; 2: their packed upper triangles.
  const int64_t version = reqInt(m, "version", ctx);
  if (version != 1 && version != 2)
    throw FormatError(ctx + ": unsupported version " + std::to_string(version) + " (this build reads 1 and 2)");
  r.version_ = static_cast<int>(version);
  std::vector<int64_t> counted;  // per stream: the tokens its statistics count (below)
  try {
    const auto& model = req(m, "model", ctx);
    r.fingerprint_ = reqStr(model, "fingerprint", ctx + ": model");
    r.modelPath_ = reqStr(model, "path", ctx + ": model");
    // Range-checked in 64 bits before narrowing (2^32 + 64 must not read as 64).
    constexpr int kMaxDim = 1 << 30;
    r.dFF_ = jsonInt(req(model, "d_ff", ctx + ": model"), 1, kMaxDim, ctx + ": model.d_ff");
    r.dModel_ = jsonInt(req(model, "d_model", ctx + ": model"), 1, kMaxDim, ctx + ": model.d_model");
    r.modelLayers_ = jsonInt(req(model, "layers", ctx + ": model"), 1, kMaxDim, ctx + ": model.layers");
    // Encoder-decoder recordings: `layers` counts the encoder's blocks, decoder_layers the decoder's.
    if (model.contains("decoder_layers")) {
      r.encoderDecoder_ = true;
      r.decoderLayers_ = jsonInt(model.at("decoder_layers"), 0, kMaxDim, ctx + ": model.decoder_layers");
    }
    if (r.dFF_ <= 0 || r.dModel_ <= 0 || r.modelLayers_ <= 0)
      throw FormatError(ctx + ": model dimensions must be positive");
    // Native MoE recordings: the expert count and widths the expert sites derive from.
    if (model.contains("experts")) {
      r.experts_ = jsonInt(model.at("experts"), 1, kMaxDim, ctx + ": model.experts");
      r.topK_ = jsonInt(req(model, "top_k", ctx + ": model"), 1, r.experts_, ctx + ": model.top_k");
      r.dExpert_ = jsonInt(req(model, "d_expert", ctx + ": model"), 1, kMaxDim, ctx + ": model.d_expert");
      r.dShared_ = jsonInt(req(model, "d_shared", ctx + ": model"), 0, kMaxDim, ctx + ": model.d_shared");
      const auto& ml = req(model, "moe_layers", ctx + ": model");
      if (!ml.is_array()) throw FormatError(ctx + ": model.moe_layers must be a list");
      for (const auto& l : ml) r.moeLayers_.push_back(jsonInt(l, 0, r.modelLayers_ - 1, ctx + ": model.moe_layers"));
      if (r.encoderDecoder_) throw FormatError(ctx + ": model.experts in an encoder-decoder recording");
    }
    const auto& corpus = req(m, "corpus", ctx);
    const auto& cats = req(corpus, "categories", ctx + ": corpus");
    if (!cats.is_array()) throw FormatError(ctx + ": corpus.categories must be a list");
    for (const auto& c : cats) {
      if (!c.is_string()) throw FormatError(ctx + ": corpus.categories must hold strings");
      r.categories_.push_back(c.get<std::string>());
    }
    r.tokens_ = reqInt(m, "tokens", ctx);
    r.sequences_ = reqInt(m, "sequences", ctx);
    r.chunksDone_ = reqInt(m, "chunks_done", ctx);
    if (r.tokens_ < 0 || r.sequences_ < 0) throw FormatError(ctx + ": negative token or sequence count");
    const auto& layers = req(m, "layers", ctx);
    if (!layers.is_array() || layers.empty()) throw FormatError(ctx + ": 'layers' must be a non-empty list");
    // Expert site indices follow the whole-FFN ones (site.h "Expert site indices").
    const int64_t siteCount =
        static_cast<int64_t>(r.modelLayers_) * (1 + r.experts_ + (r.dShared_ > 0 ? 1 : 0)) + r.decoderLayers_;
    for (const auto& l : layers) {
      // Checked in 64 bits: a layer 2^32 must not become layer 0.
      if (!l.is_number_integer() || jsonInteger(l, INT64_MIN, INT64_MAX, ctx) < 0 || l.get<int64_t>() >= siteCount)
        throw FormatError(ctx + ": layer " + l.dump() + " is outside the model's " + std::to_string(siteCount) +
                          (r.encoderDecoder_ ? " FFN sites" : " layers"));
      const int layer = static_cast<int>(l.get<int64_t>());
      if (std::find(r.layers_.begin(), r.layers_.end(), layer) != r.layers_.end())
        throw FormatError(ctx + ": layer " + l.dump() + " is listed twice");
      r.layers_.push_back(layer);
    }
    // `sites` (site names parallel to `layers`) is optional for single-stack
    // recordings (older ones have none) and required for encoder-decoder ones.
    if (m.contains("sites")) {
      const auto& sites = m.at("sites");
      if (!sites.is_array() || sites.size() != layers.size())
        throw FormatError(ctx + ": 'sites' must be a list of site names as long as 'layers'");
      for (size_t i = 0; i < sites.size(); ++i) {
        const std::optional<Site> site =
            sites[i].is_string() ? Site::tryParse(sites[i].get<std::string>()) : std::nullopt;
        const bool expertLike = site && (site->expert >= 0 || site->shared);
        const bool moeLayer =
            site && std::find(r.moeLayers_.begin(), r.moeLayers_.end(), site->layer) != r.moeLayers_.end();
        const int index = !site        ? -1
                          : expertLike ? (moeLayer && (!site->shared || r.dShared_ > 0)
                                              ? expertSiteIndexOf(*site, r.modelLayers_, r.experts_)
                                              : -1)
                          : moeLayer   ? -1
                                       : siteIndexOf(*site, r.modelLayers_);
        if (!site || index < 0 || index != r.layers_[i] || (site->stack == SiteStack::Single) == r.encoderDecoder_)
          throw FormatError(ctx + ": sites[" + std::to_string(i) + "] = " + sites[i].dump() +
                            " is not the FFN site of layers[" + std::to_string(i) +
                            "] = " + std::to_string(r.layers_[i]));
        r.sites_.push_back(*site);
      }
    } else {
      if (r.encoderDecoder_)
        throw FormatError(ctx + ": missing key 'sites' (an encoder-decoder recording names its sites)");
      if (r.experts_ > 0) throw FormatError(ctx + ": missing key 'sites' (a native MoE recording names its sites)");
      for (int L : r.layers_) r.sites_.push_back(Site::ofLayer(L));
    }
    for (const Site& site : r.sites_)
      r.widths_.push_back(site.shared ? r.dShared_ : site.expert >= 0 ? r.dExpert_ : r.dFF_);
    // The MoE layers with routing statistics: exactly those of the expert and shared sites.
    if (m.contains("moe")) {
      const auto& moe = m.at("moe");
      if (r.experts_ == 0) throw FormatError(ctx + ": key 'moe' in the recording of a dense model");
      if (jsonInt(req(moe, "experts", ctx + ": moe"), 0, INT32_MAX, ctx + ": moe.experts") != r.experts_ ||
          jsonInt(req(moe, "top_k", ctx + ": moe"), 0, INT32_MAX, ctx + ": moe.top_k") != r.topK_)
        throw FormatError(ctx + ": moe.experts / moe.top_k differ from model.experts / model.top_k");
      const auto& rl = req(moe, "layers", ctx + ": moe");
      if (!rl.is_array()) throw FormatError(ctx + ": moe.layers must be a list");
      for (const auto& l : rl) r.routingLayers_.push_back(jsonInt(l, 0, r.modelLayers_ - 1, ctx + ": moe.layers"));
    }
    {
      std::vector<int> want;
      for (const Site& site : r.sites_)
        if ((site.expert >= 0 || site.shared) && std::find(want.begin(), want.end(), site.layer) == want.end())
          want.push_back(site.layer);
      std::sort(want.begin(), want.end());
      if (want != r.routingLayers_)
        throw FormatError(ctx + ": moe.layers " + nlohmann::json(r.routingLayers_).dump() +
                          " is not the list of the recorded expert sites' layers " + nlohmann::json(want).dump());
    }
    // Token streams: one per stack of an encoder-decoder recording (manifest
    // `stacks`), else one.
    for (const Site& site : r.sites_) {
      const std::string prefix = !r.encoderDecoder_ ? "" : site.stack == SiteStack::Encoder ? "enc." : "dec.";
      size_t k = 0;
      while (k < r.streams_.size() && r.streams_[k].prefix != prefix) ++k;
      if (k == r.streams_.size()) r.streams_.push_back(Stream{prefix});
      r.streamOf_.push_back(k);
    }
    const auto& opts = req(m, "options", ctx);
    r.active_ = ActiveRule::fromJson(req(opts, "active", ctx + ": options"), ctx + ": options.active");
    const auto& soft = req(opts, "soft_coact", ctx + ": options");
    if (!soft.is_boolean()) throw FormatError(ctx + ": options.soft_coact must be true or false");
    r.soft_ = soft.get<bool>();
    r.complete_ = m.value("complete", true);
    if (!r.encoderDecoder_) {
      r.streams_[0].tokens = r.tokens_;
    } else {
      const auto& stacks = req(m, "stacks", ctx);
      int64_t total = 0;
      for (auto& sm : r.streams_) {
        const std::string key = sm.prefix.substr(0, sm.prefix.size() - 1);
        const auto& e = req(stacks, key.c_str(), ctx + ": stacks");
        sm.tokens = reqInt(e, "tokens", ctx + ": stacks." + key);
        if (sm.tokens < 0) throw FormatError(ctx + ": stacks." + key + ".tokens is negative");
        total += sm.tokens;
      }
      if (total != r.tokens_)
        throw FormatError(ctx + ": the stacks' tokens sum to " + std::to_string(total) + ", not to tokens " +
                          std::to_string(r.tokens_));
    }
    // The tokens each stream's statistics count: all of its tokens, but in a
    // rank's checkpoint under mpirun (docs/scale.md) only the rank's own
    // chunks' ("rank": {"counted_tokens": {STACK: n}}; STACK "single", "enc"
    // or "dec"), while `tokens` is the stream position every rank shares.
    counted.clear();
    for (const auto& sm : r.streams_) counted.push_back(sm.tokens);
    if (!r.complete_ && m.contains("rank")) {
      const auto& ct = req(req(m, "rank", ctx), "counted_tokens", ctx + ": rank");
      for (size_t k = 0; k < r.streams_.size(); ++k) {
        const std::string& prefix = r.streams_[k].prefix;
        const std::string key = prefix.empty() ? "single" : prefix.substr(0, prefix.size() - 1);
        counted[k] = reqInt(ct, key.c_str(), ctx + ": rank.counted_tokens");
        if (counted[k] < 0 || counted[k] > r.streams_[k].tokens)
          throw FormatError(ctx + ": rank.counted_tokens." + key + " is outside [0, tokens]");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(ctx + ": malformed manifest (" + std::string(e.what()) + ")");
  }
  if (!r.complete_ && !allowPartial)
    throw FormatError(ctx + ": this is an unfinished checkpoint; finish it with `moefy record ... --resume`");

  r.stats_ = SafetensorsFile::open(dir / "stats.safetensors");
  r.coact_ = SafetensorsFile::open(dir / "coact.safetensors");
  r.sampleFile_ = SafetensorsFile::open(dir / "samples.safetensors");
  const int64_t C = static_cast<int64_t>(r.categories_.size());
  for (int l : r.routingLayers_) {
    const std::string P = Site::ofLayer(l).prefix();
    const int64_t E = r.experts_;
    checkTensor(*r.stats_, lname(P, "expert_usage"), DType::I64, {E});
    checkTensor(*r.stats_, lname(P, "expert_cooccur"), DType::I64, {E, E});
    checkTensor(*r.stats_, lname(P, "expert_category_usage"), DType::I64, {C, E});
    checkRoutingInvariants(*r.stats_, P, E, r.topK_, counted[0]);
  }
  for (size_t i = 0; i < r.layers_.size(); ++i) {
    const std::string P = r.sites_[i].prefix();
    const int64_t n = r.widths_[i];
    checkTensor(*r.stats_, lname(P, "count"), DType::I64, {n});
    checkTensor(*r.stats_, lname(P, "sum"), DType::F64, {n});
    checkTensor(*r.stats_, lname(P, "sumsq"), DType::F64, {n});
    checkTensor(*r.stats_, lname(P, "max"), DType::F32, {n});
    checkTensor(*r.stats_, lname(P, "active_hist"), DType::I64, {n + 1});
    checkTensor(*r.stats_, lname(P, "category_count"), DType::I64, {C, n});
    checkTensor(*r.stats_, lname(P, "category_tokens"), DType::I64, {C});
    // Version 2 holds the packed upper triangles (n(n+1)/2 elements); the
    // invariants are checked on the expanded matrices, one site at a time.
    const std::vector<int64_t> coactShape =
        r.version_ == 1 ? std::vector<int64_t>{n, n} : std::vector<int64_t>{upperTriangleSize(n)};
    const std::string coactNote = r.version_ == 1
                                      ? std::string()
                                      : " (version 2: the upper triangle of the site's [" + std::to_string(n) + ", " +
                                            std::to_string(n) + "] matrix, n(n+1)/2 elements)";
    checkTensor(*r.coact_, lname(P, "coact"), DType::I32, coactShape, coactNote);
    if (r.soft_) checkTensor(*r.coact_, lname(P, "coact_soft"), DType::F32, coactShape, coactNote);
    if (r.soft_ && r.coact_->contains(lname(P, "coact_soft_exact")))
      checkTensor(*r.coact_, lname(P, "coact_soft_exact"), DType::I64, {n, n});
    checkLayerInvariants(*r.stats_, r.coact_->path().string(), P, n,
                         r.sites_[i].expert >= 0 ? r.siteTokens(r.layers_[i]) : counted[r.streamOf_[i]],
                         r.coactTensor(P + "coact", n), r.soft_ ? r.coactTensor(P + "coact_soft", n) : at::Tensor());
    checkExactSums(*r.stats_, P, n);
  }
  const std::string sp = (dir / "samples.safetensors").string();
  for (auto& sm : r.streams_) {
    const std::string tidName = sm.prefix + "token_id";
    const TensorInfo* tid = r.sampleFile_->find(tidName);
    if (!tid) throw FormatError(sp + ": missing tensor '" + tidName + "'");
    if (tid->shape.size() != 1) throw FormatError(sp + ": tensor '" + tidName + "' must be 1-D");
    sm.samples = tid->shape[0];
    if (sm.samples > sm.tokens)
      throw FormatError(sp + ": holds " + std::to_string(sm.samples) + " sampled tokens, more than the " +
                        std::to_string(sm.tokens) + " recorded tokens");
    const int64_t S = sm.samples;
    checkTensor(*r.sampleFile_, sm.prefix + "token_id", DType::I32, {S});
    checkTensor(*r.sampleFile_, sm.prefix + "doc_id", DType::I64, {S});
    checkTensor(*r.sampleFile_, sm.prefix + "position", DType::I32, {S});
    checkTensor(*r.sampleFile_, sm.prefix + "category", DType::I32, {S});
    if (r.sampleFile_->contains(sm.prefix + "token_index"))
      checkTensor(*r.sampleFile_, sm.prefix + "token_index", DType::I64, {S});
  }
  r.samples_ = r.streams_[r.streamOf_[0]].samples;
  for (size_t i = 0; i < r.layers_.size(); ++i) {
    const std::string P = r.sites_[i].prefix();
    const int64_t S = r.streams_[r.streamOf_[i]].samples;
    const Site& site = r.sites_[i];
    // Expert and shared sites read their MoE layer's FFN input (checked below).
    if (site.expert < 0 && !site.shared)
      checkTensor(*r.sampleFile_, lname(P, "ffn_in"), DType::F16, {S, static_cast<int64_t>(r.dModel_)});
    checkTensor(*r.sampleFile_, lname(P, "ffn_act"), DType::F16, {S, static_cast<int64_t>(r.widths_[i])});
    if (site.expert >= 0) {
      checkTensor(*r.sampleFile_, lname(P, "routed"), DType::U8, {S});
      at::Tensor routed = r.sampleFile_->raw(lname(P, "routed")).contiguous();
      const uint8_t* v = routed.data_ptr<uint8_t>();
      for (int64_t j = 0; j < S; ++j)
        if (v[j] > 1)
          throw FormatError(sp + ": tensor '" + lname(P, "routed") + "'[" + std::to_string(j) +
                            "] = " + std::to_string(v[j]) + " is not 0 or 1");
    }
  }
  for (int l : r.routingLayers_)
    checkTensor(*r.sampleFile_, lname(Site::ofLayer(l).prefix(), "ffn_in"), DType::F16,
                {r.streams_[0].samples, static_cast<int64_t>(r.dModel_)});
  return r;
}

Site Recording::site(int layer) const {
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i] == layer) return sites_[i];
  requireLayer(layer);  // throws, naming the recorded sites
  return Site{};
}

int Recording::layerOf(const Site& s) const {
  for (size_t i = 0; i < sites_.size(); ++i)
    if (sites_[i] == s) return layers_[i];
  return -1;
}

const Recording::Stream& Recording::streamOfLayer(int layer) const {
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i] == layer) return streams_[streamOf_[i]];
  requireLayer(layer);
  return streams_.front();
}

int64_t Recording::tokens(int layer) const { return streamOfLayer(layer).tokens; }

int64_t Recording::siteTokens(int layer) const {
  const Site s = site(layer);
  if (s.expert < 0) return tokens(layer);
  return stats_->raw(lname(Site::ofLayer(s.layer).prefix(), "expert_usage")).contiguous().data_ptr<int64_t>()[s.expert];
}

int Recording::width(int layer) const {
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i] == layer) return widths_[i];
  requireLayer(layer);
  return 0;
}

void Recording::requireRouting(int l) const {
  if (std::find(routingLayers_.begin(), routingLayers_.end(), l) == routingLayers_.end())
    throw ParameterError(
        dir_.string() + ": layer " + std::to_string(l) +
        " has no recorded routing statistics (recorded MoE layers: " + nlohmann::json(routingLayers_).dump() + ")");
}

at::Tensor Recording::expertUsage(int l) const {
  requireRouting(l);
  return stats_->raw(lname(Site::ofLayer(l).prefix(), "expert_usage"));
}
at::Tensor Recording::expertCooccurrence(int l) const {
  requireRouting(l);
  return stats_->raw(lname(Site::ofLayer(l).prefix(), "expert_cooccur"));
}
at::Tensor Recording::expertCategoryUsage(int l) const {
  requireRouting(l);
  return stats_->raw(lname(Site::ofLayer(l).prefix(), "expert_category_usage"));
}
at::Tensor Recording::sampleMoeFfnIn(int l) const {
  requireRouting(l);
  return sampleFile_->raw(lname(Site::ofLayer(l).prefix(), "ffn_in"));
}
at::Tensor Recording::sampleRouted(int L) const {
  if (site(L).expert < 0)
    throw ParameterError(dir_.string() + ": site " + site(L).name() + " is not an expert site (no routed samples)");
  return sampleFile_->raw(tname(L, "routed"));
}
int64_t Recording::sampleCount(int layer) const { return streamOfLayer(layer).samples; }
at::Tensor Recording::sampleTokenIds(int L) const { return sampleFile_->raw(streamOfLayer(L).prefix + "token_id"); }
at::Tensor Recording::sampleDocIds(int L) const { return sampleFile_->raw(streamOfLayer(L).prefix + "doc_id"); }
at::Tensor Recording::samplePositions(int L) const { return sampleFile_->raw(streamOfLayer(L).prefix + "position"); }
at::Tensor Recording::sampleCategories(int L) const { return sampleFile_->raw(streamOfLayer(L).prefix + "category"); }

at::Tensor Recording::sampleTokenIndex(int L) const {
  const std::string name = streamOfLayer(L).prefix + "token_index";
  return sampleFile_->contains(name) ? sampleFile_->raw(name) : at::Tensor();
}

bool Recording::hasLayer(int layer) const { return std::find(layers_.begin(), layers_.end(), layer) != layers_.end(); }

void Recording::requireLayer(int layer) const {
  if (!hasLayer(layer)) {
    std::string list;
    for (size_t i = 0; i < layers_.size(); ++i)
      list += (list.empty() ? "" : ",") + (encoderDecoder_ ? sites_[i].name() : std::to_string(layers_[i]));
    const std::string what = encoderDecoder_ ? "site index " : "layer ";
    throw ParameterError(dir_.string() + ": " + what + std::to_string(layer) + " was not recorded (recorded: " + list +
                         ")");
  }
}

at::Tensor Recording::count(int L) const {
  requireLayer(L);
  return stats_->raw(tname(L, "count"));
}
at::Tensor Recording::sum(int L) const {
  requireLayer(L);
  return stats_->raw(tname(L, "sum"));
}
at::Tensor Recording::sumsq(int L) const {
  requireLayer(L);
  return stats_->raw(tname(L, "sumsq"));
}
at::Tensor Recording::sumExact(int L) const {
  requireLayer(L);
  return stats_->contains(tname(L, "sum_exact")) ? stats_->raw(tname(L, "sum_exact")) : at::Tensor();
}
at::Tensor Recording::sumsqExact(int L) const {
  requireLayer(L);
  return stats_->contains(tname(L, "sumsq_exact")) ? stats_->raw(tname(L, "sumsq_exact")) : at::Tensor();
}
at::Tensor Recording::max(int L) const {
  requireLayer(L);
  return stats_->raw(tname(L, "max"));
}
at::Tensor Recording::activeHist(int L) const {
  requireLayer(L);
  return stats_->raw(tname(L, "active_hist"));
}
at::Tensor Recording::categoryCount(int L) const {
  requireLayer(L);
  return stats_->raw(tname(L, "category_count"));
}
at::Tensor Recording::categoryTokens(int L) const {
  requireLayer(L);
  return stats_->raw(tname(L, "category_tokens"));
}
at::Tensor Recording::coactTensor(const std::string& name, int64_t n) const {
  at::Tensor t = coact_->raw(name);
  return version_ == 1 ? t : unpackUpperTriangle(t, n);
}
at::Tensor Recording::coact(int L) const {
  requireLayer(L);
  return coactTensor(tname(L, "coact"), width(L));
}
at::Tensor Recording::coactSoft(int L) const {
  requireLayer(L);
  return soft_ ? coactTensor(tname(L, "coact_soft"), width(L)) : at::Tensor();
}
at::Tensor Recording::coactSoftExact(int L) const {
  requireLayer(L);
  const std::string name = tname(L, "coact_soft_exact");
  return soft_ && coact_->contains(name) ? coact_->raw(name) : at::Tensor();
}
at::Tensor Recording::sampleTokenIds() const { return sampleTokenIds(layers_.front()); }
at::Tensor Recording::sampleDocIds() const { return sampleDocIds(layers_.front()); }
at::Tensor Recording::samplePositions() const { return samplePositions(layers_.front()); }
at::Tensor Recording::sampleCategories() const { return sampleCategories(layers_.front()); }
at::Tensor Recording::sampleFfnIn(int L) const {
  const Site s = site(L);
  if (s.expert >= 0 || s.shared) return sampleMoeFfnIn(s.layer);  // the MoE layer's input is every expert's
  return sampleFile_->raw(tname(L, "ffn_in"));
}
at::Tensor Recording::sampleFfnAct(int L) const {
  requireLayer(L);
  return sampleFile_->raw(tname(L, "ffn_act"));
}

void Recording::checkModel(const Model& model) const {
  const auto& c = model.config();
  if (model.fingerprint() != fingerprint_)
    throw ParameterError(dir_.string() + ": recording was made with model " + modelPath_ + " (fingerprint " +
                         fingerprint_ + "), not with " + model.dir().string() + " (fingerprint " + model.fingerprint() +
                         ")");
  if (c.dFF != dFF_ || c.dModel != dModel_ || c.nLayer != modelLayers_ || c.nDecoderLayer != decoderLayers_ ||
      c.expertCount != experts_ || (experts_ > 0 && (c.dExpert != dExpert_ || c.dShared != dShared_)))
    throw ParameterError(dir_.string() + ": recording shape (d_ff " + std::to_string(dFF_) + ", d_model " +
                         std::to_string(dModel_) + ") does not match model " + model.dir().string());
}

}  // namespace moefy
