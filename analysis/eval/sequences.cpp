#include "analysis/eval/sequences.h"

#include <fstream>
#include <sstream>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval.h"
#include "analysis/io/input_file.h"
#include "analysis/jobs/job.h"
#include "analysis/text/parallel_corpus.h"
#include "analysis/text/tokenizer.h"

namespace moefy {

namespace fs = std::filesystem;

std::vector<std::vector<int64_t>> readSequences(const fs::path& corpus, const LoadedModel& loaded, int seqLen,
                                                int64_t budget, Split split, JobContext* job) {
  if (seqLen < 2) throw ParameterError("--seq-len must be at least 2");
  // Reading a text corpus reports documents visited as progress: label it
  // (the progress lines were "[0.3s]  0%" without a stage before).
  if (job) job->setStage("read corpus " + corpus.filename().string());
  if (!fs::exists(corpus)) throw IoError(corpus.string() + ": no such corpus");
  std::vector<std::vector<int64_t>> out;
  int64_t total = 0;
  auto add = [&](std::vector<int64_t> ids) {
    for (size_t s = 0; s < ids.size() && (budget == 0 || total < budget); s += seqLen) {
      size_t n = std::min<size_t>(seqLen, ids.size() - s);
      if (budget) n = std::min<size_t>(n, static_cast<size_t>(budget - total));
      if (n < 2) break;
      out.emplace_back(ids.begin() + s, ids.begin() + s + n);
      total += static_cast<int64_t>(n);
    }
  };
  const int vocab = loaded.model->config().vocab;
  if (corpus.extension() == ".ids") {
    requireInputFile(corpus);  // a FIFO would block std::ifstream
    std::ifstream in(corpus);
    std::string line;
    int lineNo = 0;
    while (std::getline(in, line) && (budget == 0 || total < budget)) {
      ++lineNo;
      std::istringstream ls(line);
      std::vector<int64_t> ids;
      std::string tok;
      while (ls >> tok) {
        try {
          size_t used = 0;
          long long v = std::stoll(tok, &used);
          if (used != tok.size()) throw std::invalid_argument(tok);
          if (v < 0 || v >= vocab)
            throw FormatError(corpus.string() + ":" + std::to_string(lineNo) + ": token id " + tok +
                              " outside the vocabulary [0, " + std::to_string(vocab) + ")");
          ids.push_back(v);
        } catch (const std::logic_error&) {
          throw FormatError(corpus.string() + ":" + std::to_string(lineNo) + ": '" + tok + "' is not a token id");
        }
      }
      if (!ids.empty()) add(std::move(ids));
    }
    if (out.empty()) throw FormatError(corpus.string() + ": no sequences of at least 2 tokens");
    return out;
  }
  if (!loaded.tokenizer)
    throw FormatError(loaded.model->dir().string() + ": a text corpus needs the model's tokenizer (" +
                      loaded.tokenizerError + ")");
  auto c = Corpus::open(corpus);
  SequenceOptions so;
  so.seqLen = seqLen;
  so.tokenBudget = budget;
  so.split = split;
  forEachSequence(
      *c, *loaded.tokenizer, so,
      [&](const Sequence& s) {
        if (s.ids.size() >= 2) out.emplace_back(s.ids.begin(), s.ids.end());
        return true;
      },
      job);
  if (out.empty())
    throw FormatError(corpus.string() + ": no sequences of at least 2 tokens in the " +
                      (split == Split::HeldOut ? "held-out"
                       : split == Split::Train ? "training"
                                               : "whole") +
                      " split");
  for (const auto& s : out)
    for (int64_t id : s)
      if (id < 0 || id >= vocab)
        throw FormatError(corpus.string() + ": the tokenizer produced id " + std::to_string(id) +
                          " outside the model's vocabulary [0, " + std::to_string(vocab) + ")");
  return out;
}

Split parseSplitName(const std::string& s, const std::string& option) {
  if (s == "heldout" || s == "held-out" || s == "held_out") return Split::HeldOut;
  if (s == "train") return Split::Train;
  if (s == "all") return Split::All;
  throw ParameterError(option + " must be heldout, train or all, got '" + s + "'");
}

const char* splitName(Split split) {
  return split == Split::HeldOut ? "heldout" : split == Split::Train ? "train" : "all";
}

int64_t maskTokenIdOf(const LoadedModel& loaded) {
  if (!loaded.tokenizer) return -1;
  auto id = loaded.tokenizer->tokenToId("[MASK]");
  if (!id) id = loaded.tokenizer->tokenToId("<mask>");
  return id ? *id : -1;
}

std::vector<Seq2SeqExample> readSeq2SeqPairs(const std::filesystem::path& corpus, const std::string& targetFile,
                                             const std::string& sourceField, const std::string& targetField,
                                             const LoadedModel& loaded, int seqLen, int64_t budget, Split split,
                                             JobContext* job) {
  const ModelConfig& c = loaded.model->config();
  if (!c.encoderDecoder) throw ParameterError(corpus.string() + ": pairs feed encoder-decoder models only");
  if (seqLen < 2) throw ParameterError("--seq-len must be >= 2");
  if (!loaded.tokenizer)
    throw FormatError(loaded.model->dir().string() + ": has no usable tokenizer (" + loaded.tokenizerError +
                      "); a parallel corpus is tokenised with the model's tokenizer");
  std::unique_ptr<ParallelCorpus> pc;
  if (!targetFile.empty()) {
    pc = ParallelCorpus::openAligned(corpus, targetFile);
  } else {
    ParallelCorpusOptions po;
    po.sourceField = sourceField;
    po.targetField = targetField;
    pc = ParallelCorpus::open(corpus, po);
  }
  Seq2SeqOptions so;
  so.decoderStartId = c.decoderStartId;
  so.split = split;
  std::vector<Seq2SeqExample> out;
  int64_t used = 0;
  const size_t cut = static_cast<size_t>(seqLen);
  forEachTokenizedPair(
      *pc, *loaded.tokenizer, so,
      [&](const TokenizedPair& tp) {
        Seq2SeqExample e;
        e.source.assign(tp.ids.source.begin(), tp.ids.source.begin() + std::min(cut, tp.ids.source.size()));
        const size_t n = std::min(cut, tp.ids.labels.size());
        e.labels.assign(tp.ids.labels.begin(), tp.ids.labels.begin() + n);
        e.decoderInput.assign(tp.ids.decoderInput.begin(), tp.ids.decoderInput.begin() + n);
        e.target = pc->pair(tp.id).target;  // BLEU's reference (eval --generate): the text, not the cut ids
        used += static_cast<int64_t>(n);
        out.push_back(std::move(e));
        return !(budget > 0 && used >= budget);
      },
      job);
  if (out.empty())
    throw FormatError(corpus.string() + ": no pairs in the " +
                      std::string(split == Split::HeldOut ? "held-out"
                                  : split == Split::Train ? "training"
                                                          : "whole") +
                      " split");
  return out;
}

}  // namespace moefy
