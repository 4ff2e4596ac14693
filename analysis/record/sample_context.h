#pragma once
// The text around a recorded sample and one neuron's activations over it
// (the studio's neuron page, issue 20; usable from the CLI too).
//
// A sampled token (samples.safetensors: doc_id, position, docs/formats.md)
// is token `position` of document `doc_id`'s encoding with the special
// tokens, which the recorder cut into windows of seq_len tokens
// (forEachSequence with stride = seq_len, record_options.h textCorpusSource):
// its recorded activation comes from the forward pass of that window alone.
// These functions cut the same windows, so the activations they compute are
// the ones the recorder saw (up to the F16 rounding of samples.safetensors),
// for causal and bidirectional models alike.
#include <cstdint>
#include <vector>

#include "analysis/model/site.h"

namespace moefy {

class Corpus;
class Tokenizer;
class Model;
class JobContext;

/// Tokens of document `docId` of `corpus` as the recorder read them:
/// tokenizer.encode(text, true) (forEachSequence's addSpecialTokens).
/// Throws the corpus's errors for an unknown id (naming the corpus).
/// Thread-safe (Corpus::document and Tokenizer::encode are const).
std::vector<int32_t> recordedDocumentTokens(const Corpus& corpus, const Tokenizer& tokenizer, int64_t docId);

/// Where a sampled token lies in its document (token offsets, half-open).
struct SampleWindow {
  int64_t position = 0;     ///< p, the sampled token
  int64_t windowBegin = 0;  ///< the recorder's sequence holding p: floor(p / seq_len) * seq_len
  int64_t windowEnd = 0;    ///< min(windowBegin + seq_len, document tokens)
  int64_t shownBegin = 0;   ///< the context: max(windowBegin, p - before) (the model saw nothing earlier)
  int64_t shownEnd = 0;     ///< min(windowEnd, p + after + 1)
};

/// The recorder's window of token `position` of a document of
/// `documentTokens` tokens cut into windows of `seqLen`, and the context of
/// `before` tokens before and `after` after it inside that window. Throws
/// ParameterError for seqLen < 1, before or after < 0, or a position outside
/// [0, documentTokens) (the corpus or tokenizer changed since the recording).
SampleWindow recordedSampleWindow(int64_t documentTokens, int64_t position, int seqLen, int before, int after);

/// The FFN hidden activation (after the activation function) of neuron
/// `neuron` at `site` for document tokens [begin, end) of `ids` (the
/// document's recorded encoding, recordedDocumentTokens), computed window by
/// window as the recorder did: every window [w, min(w + seqLen, ids.size()))
/// with w a multiple of seqLen that overlaps [begin, end) runs through
/// `model` once (batch of one, no padding). Returns [end - begin] floats,
/// element i for token begin + i.
///
/// Throws ParameterError for a site that is not a whole-FFN site of a
/// single-stack model (encoder-decoder stacks and native expert or shared
/// sites have no per-document window here), a dense layer index outside the
/// model, a neuron outside the site's width, begin/end outside [0, ids.size()],
/// seqLen < 1, or a window longer than the model's learned positions;
/// FormatError for ids outside the vocabulary. Checks job->checkCancel()
/// before each window. Thread-safe (the model's forward is const).
std::vector<float> neuronActivationsInWindows(const Model& model, const Site& site, int neuron,
                                              const std::vector<int32_t>& ids, int64_t begin, int64_t end, int seqLen,
                                              JobContext* job = nullptr);

}  // namespace moefy
