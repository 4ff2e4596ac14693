#include "analysis/record/sample_context.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/model/model.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

std::vector<int32_t> recordedDocumentTokens(const Corpus& corpus, const Tokenizer& tokenizer, int64_t docId) {
  const Document d = corpus.document(docId);
  return tokenizer.encode(d.text, true);
}

SampleWindow recordedSampleWindow(int64_t documentTokens, int64_t position, int seqLen, int before, int after) {
  if (seqLen < 1) throw ParameterError("seq-len must be >= 1 (got " + std::to_string(seqLen) + ")");
  if (before < 0 || after < 0) throw ParameterError("the context before and after a sample must be >= 0 tokens");
  if (position < 0 || position >= documentTokens)
    throw ParameterError("sample position " + std::to_string(position) + " is outside the document's " +
                         std::to_string(documentTokens) +
                         " tokens (the corpus or the tokenizer changed since the recording)");
  SampleWindow w;
  w.position = position;
  w.windowBegin = position / seqLen * seqLen;
  w.windowEnd = std::min<int64_t>(w.windowBegin + seqLen, documentTokens);
  w.shownBegin = std::max<int64_t>(w.windowBegin, position - before);
  w.shownEnd = std::min<int64_t>(w.windowEnd, position + after + 1);
  return w;
}

namespace {

// Copies one neuron's column of a whole-FFN site's hidden, batch row 0.
class NeuronCapture : public HookSink {
 public:
  NeuronCapture(int layer, int neuron) : layer_(layer), neuron_(neuron) {}
  at::Tensor column;  // [T] F32
  bool wants(int layer, HookPoint point) const override { return layer == layer_ && point == HookPoint::FfnAct; }
  void on(int, HookPoint, const at::Tensor& x) override {
    // x is [1, T, d_ff]; keep a copy: it is valid only during the call.
    column = x[0].select(1, neuron_).to(at::kFloat).contiguous().clone();
  }

 private:
  int layer_, neuron_;
};

}  // namespace

std::vector<float> neuronActivationsInWindows(const Model& model, const Site& site, int neuron,
                                              const std::vector<int32_t>& ids, int64_t begin, int64_t end, int seqLen,
                                              JobContext* job) {
  const ModelConfig& c = model.config();
  if (c.encoderDecoder || site.stack != SiteStack::Single || site.expert >= 0 || site.shared)
    throw ParameterError("site " + site.name() +
                         ": document activations need a whole-FFN site of a single-stack model");
  if (site.layer < 0 || site.layer >= c.nLayer || c.moeLayer(site.layer))
    throw ParameterError("the model has no dense FFN site " + site.name());
  if (neuron < 0 || neuron >= c.dFF)
    throw ParameterError("neuron " + std::to_string(neuron) + " is outside " + site.name() + "'s width " +
                         std::to_string(c.dFF));
  const auto n = static_cast<int64_t>(ids.size());
  if (begin < 0 || end > n || begin > end)
    throw ParameterError("token range [" + std::to_string(begin) + ", " + std::to_string(end) +
                         ") is outside the document's " + std::to_string(n) + " tokens");
  if (seqLen < 1) throw ParameterError("seq-len must be >= 1 (got " + std::to_string(seqLen) + ")");
  if (c.pos == PosKind::Learned && c.maxPos > 0 && std::min<int64_t>(seqLen, n) > c.maxPos)
    throw ParameterError("a window of " + std::to_string(std::min<int64_t>(seqLen, n)) +
                         " tokens exceeds the model's " + std::to_string(c.maxPos) + " positions");
  for (int32_t id : ids)
    if (id < 0 || id >= c.vocab)
      throw FormatError("token id " + std::to_string(id) + " is outside the model's vocabulary [0, " +
                        std::to_string(c.vocab) + ")");
  std::vector<float> out(static_cast<size_t>(end - begin), 0.0f);
  for (int64_t w = begin / seqLen * seqLen; w < end; w += seqLen) {
    if (job) job->checkCancel();
    const int64_t wEnd = std::min<int64_t>(w + seqLen, n);
    NeuronCapture cap(site.layer, neuron);
    model.forwardHidden(makeBatch({std::vector<int64_t>(ids.begin() + w, ids.begin() + wEnd)}), &cap);
    if (!cap.column.defined() || cap.column.size(0) != wEnd - w)
      throw FormatError("site " + site.name() + " reported no FFN activations");
    const float* col = cap.column.data_ptr<float>();
    for (int64_t t = std::max(w, begin); t < std::min(wEnd, end); ++t) out[static_cast<size_t>(t - begin)] = col[t - w];
  }
  return out;
}

}  // namespace moefy
