// moefy inspect / moefy forward: open a checkpoint, describe it, run it.
#include <torch/torch.h>

#include <algorithm>
#include <iostream>
#include <sstream>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/generate.h"
#include "analysis/io/safetensors.h"
#include "analysis/model/device.h"
#include "analysis/model/model.h"
#include "analysis/moe/moe_checkpoint.h"
#include "analysis/project/artefact.h"
#include "analysis/text/parallel_corpus.h"
#include "analysis/text/tokenizer.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {

// A JSON value as text for the moefication summary: strings unquoted, small
// lists on one line ("[16, 16, 16, 16]" -> "16,16,16,16").
std::string plain(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array() && std::all_of(v.begin(), v.end(), [](const nlohmann::json& x) { return x.is_primitive(); })) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + plain(x);
    return s;
  }
  return v.dump();
}

// A link of the moefication block ({path, absolute, fingerprint, ...}) as
// "PATH (key value, ...)".
std::string linkText(const nlohmann::json& link) {
  if (!link.is_object()) return plain(link);
  std::string s = link.value("path", std::string());
  std::string extra;
  for (const char* k : {"arch", "method", "fingerprint"})
    if (link.contains(k) && link[k].is_string() && !link[k].get<std::string>().empty())
      extra += (extra.empty() ? "" : ", ") + std::string(k) + " " + link[k].get<std::string>();
  return extra.empty() ? s : s + " (" + extra + ")";
}

// The moefication block of a MoE export, one field a line ("moefication" and
// indented "key  value" lines); expert_sizes and provenance are summarised.
void printMoefication(const nlohmann::json& b) {
  std::cout << "moefication\n";
  auto line = [](const std::string& key, const std::string& value) {
    std::cout << "  " << key << std::string(key.size() < 16 ? 16 - key.size() : 1, ' ') << value << "\n";
  };
  for (const auto& [k, v] : b.items()) {
    if (k == "source_model" || k == "partition") {
      line(k, linkText(v));
    } else if (k == "expert_sizes" && v.is_array()) {
      // Per layer, the expert sizes: "64" when equal, "60-68" when not.
      std::string s;
      for (const auto& layer : v) {
        int64_t lo = 0, hi = 0;
        bool first = true;
        if (layer.is_array())
          for (const auto& x : layer)
            if (x.is_number_integer()) {
              const int64_t n = x.get<int64_t>();
              lo = first ? n : std::min(lo, n);
              hi = first ? n : std::max(hi, n);
              first = false;
            }
        s += (s.empty() ? "" : ",") + (lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi));
      }
      line(k, s + " (per layer)");
    } else if (k == "provenance" && v.is_object()) {
      line(k, v.value("step", std::string("?")) + " with moefy " + v.value("tool_version", std::string("?")));
    } else {
      line(k, plain(v));
    }
  }
}

int runInspect(const Args& a) {
  const std::filesystem::path dir = a.pos(0, "MODEL_DIR");
  // Another artefact (a recording, partition, router, evaluation, ...) is not
  // a checkpoint: say what it is, with its reader's one-line summary.
  if (!std::filesystem::exists(dir / "config.json"))
    if (const auto kind = identifyArtefact(dir);
        kind && *kind != ArtefactKind::MoeExport && *kind != ArtefactKind::CalibratedExport) {
      const ArtefactKindInfo& info = artefactKindInfo(*kind);
      const std::string summary = info.describe(dir);
      if (a.json()) {
        printJson({{"path", dir.string()}, {"artefact", info.name}, {"summary", summary}});
      } else {
        std::cout << dir.string() << ": a " << info.name << " (" << info.metadataFile << "), not a model folder\n  "
                  << summary << "\n";
      }
      return 0;
    }
  // Headers only (config, safetensors headers, tokenizer): a 14 GB dense
  // checkpoint is described and validated without reading its weights.
  // --fingerprint loads it as every other command does and hashes it.
  // A MoE export is loaded too: its moefication block is checked against the
  // model and its experts (moe_checkpoint.cpp), which needs them.
  const bool load = a.flag("fingerprint") || !readMoeficationBlock(dir).is_null();
  std::unique_ptr<Model> held;
  nlohmann::json j;
  if (load) {
    auto loaded = loadModel(dir);
    j = describeModel(loaded);
    held = std::move(loaded.model);
  } else {
    // Every tensor's name, shape and dtype is still checked against the
    // architecture, from the headers (LoadOptions::headersOnly).
    LoadOptions headers;
    headers.headersOnly = true;
    LoadedModel loaded;
    loaded.model = Model::load(dir, headers);
    try {
      loaded.tokenizer = Tokenizer::fromModelDir(dir);
    } catch (const Error& e) {
      loaded.tokenizerError = e.what();
    }
    j = describeModel(loaded);
    j.erase("fingerprint");
    held = std::move(loaded.model);
  }
  if (a.json()) {
    printJson(j);
    return 0;
  }
  const ModelConfig& c = held->config();
  const bool isMoe = j.contains("moefication");
  std::cout << "model       " << held->dir().string() << "\n"
            << "family      " << archName(c.arch) << " ("
            << (c.encoderDecoder ? "encoder-decoder"
                : c.causal       ? "decoder"
                                 : "encoder")
            << ")\n"
            << "layers      " << c.nLayer
            << (c.encoderDecoder ? " encoder + " + std::to_string(c.nDecoderLayer) + " decoder" : std::string()) << "\n"
            << "stacks      " << c.stackSummary() << "\n"
            << "d_model     " << c.dModel << "\n"
            << "d_ff        " << c.dFF << "\n"
            << "heads       " << c.nHead << " (kv " << c.nKVHead << ", head dim " << c.headDim << ")\n"
            << "ffn         " << c.ffnKind() << ", " << activationName(c.act) << "\n"
            << "vocab       " << c.vocab << "\n"
            << "positions   " << c.ropeSummary() << "\n"
            << "norms       " << c.normSummary() << "\n"
            << "window      " << c.windowPattern() << "\n"
            << "attention   " << c.attentionSummary() << "\n"
            << "experts     "
            << (c.expertCount == 0 && isMoe ? j["moefication_summary"].get<std::string>() : c.moeSummary()) << "\n"
            << (c.expertCount > 0 ? "moe layers  " + c.moeLayerSummary() + "\n" : std::string()) << "parameters  "
            << j["parameters"].get<int64_t>()
            << (isMoe ? " (experts " + std::to_string(j["expert_parameters"].get<int64_t>()) + ", routers " +
                            std::to_string(j["router_parameters"].get<int64_t>()) + ")"
                      : std::string())
            << "\n"
            << "dtype       " << j["dtype"].get<std::string>() << "\n"
            << "tokenizer   " << j["tokenizer"].get<std::string>() << "\n"
            << "fingerprint "
            << (!held->fingerprint().empty()
                    ? held->fingerprint()
                    : std::string("not computed (--fingerprint reads and hashes every weight)"))
            << "\n";
  if (j.contains("moefication")) printMoefication(j["moefication"]);
  return 0;
}

// Captures every layer's hooks into named tensors for --dump (blk.L.* for
// single-stack models, enc.blk.L.* and dec.blk.L.* for encoder-decoder ones,
// and blk.L.router_logits / topk_* / exp.E.* / shared.* for native MoE layers).
class DumpSink : public HookSink {
 public:
  explicit DumpSink(bool every = false) : every_(every) {}
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  bool allExperts() const override { return every_; }
  bool wants(int, HookPoint) const override { return true; }
  void on(int layer, HookPoint p, const at::Tensor& x) override { tensors.emplace_back(hookName(layer, p), host(x)); }
  bool wantsSite(const Site&, HookPoint) const override { return true; }
  void onSite(const Site& site, HookPoint p, const at::Tensor& x) override {
    tensors.emplace_back(hookName(site, p), host(x));
  }
  // A host copy (the hook tensor is valid only during the call; --device puts it on the model's device).
  static at::Tensor host(const at::Tensor& x) { return x.is_cpu() ? x.clone() : x.cpu(); }

 private:
  bool every_;
};

// The end-of-sequence id that T5's tokenizers append: the tokenizer's, else
// the config's eos_token_id. `what` names the option in the error.
int32_t modelEos(const LoadedModel& loaded, const std::string& what) {
  if (auto e = loaded.tokenizer->eosId()) return *e;
  const auto& raw = loaded.model->config().raw;
  auto it = raw.find("eos_token_id");
  if (it != raw.end() && it->is_number_integer() && it->get<int64_t>() >= 0 &&
      it->get<int64_t>() < loaded.model->config().vocab)
    return static_cast<int32_t>(it->get<int64_t>());
  throw FormatError(what + ": " + loaded.model->dir().string() +
                    ": neither the tokenizer nor config.json (eos_token_id) names an end-of-sequence token");
}

// forward --generate N: greedy decoding of each source (an encoder-decoder
// model), batched, with the decoder KV cache (greedyGenerateSeq2Seq).
int runGenerate(const Args& a, const LoadedModel& loaded, const std::vector<std::vector<int64_t>>& sources) {
  const Model& m = *loaded.model;
  const ModelConfig& c = m.config();
  if (!c.encoderDecoder)
    throw ParameterError("--generate: " + m.dir().string() + " is not an encoder-decoder model (" + archName(c.arch) +
                         "); --generate decodes encoder-decoder models (t5)");
  for (const char* other : {"decoder-ids", "decoder-text", "dump"})
    if (a.has(other))
      throw ParameterError(std::string("--generate decodes from decoder_start_token_id: give no --") + other);
  if (a.flag("all-experts")) throw ParameterError("--generate: --all-experts is for native MoE models' forward");
  Seq2SeqGenerateOptions o;
  o.maxNewTokens = a.int32("generate");
  const Seq2SeqGeneration g = greedyGenerateSeq2Seq(m, sources, o);
  nlohmann::json j;
  j["batch"] = sources.size();
  j["max_new_tokens"] = o.maxNewTokens;
  j["decoder_start_token_id"] = g.decoderStartId;
  j["generated"] = g.tokens;
  j["stopped"] = g.stopped;
  std::vector<std::string> texts;
  if (loaded.tokenizer)
    for (const auto& t : g.tokens) texts.push_back(loaded.tokenizer->decode(std::vector<int32_t>(t.begin(), t.end())));
  if (loaded.tokenizer) j["text"] = texts;
  if (a.json()) {
    printJson(j);
    return 0;
  }
  std::cout << "generated " << sources.size() << " sequence" << (sources.size() == 1 ? "" : "s")
            << " greedily (max_new_tokens " << o.maxNewTokens << ", decoder_start_token_id " << g.decoderStartId
            << ")\n";
  for (size_t b = 0; b < g.tokens.size(); ++b) {
    std::cout << "  seq " << b << ": " << j["generated"][b].dump() << " ("
              << (g.stopped[b] ? "stopped at eos" : "max_new_tokens reached") << ")\n";
    if (loaded.tokenizer) std::cout << "  text " << b << ": " << texts[b] << "\n";
  }
  return 0;
}

int runForward(const Args& a) {
  // The id lists are checked before any file is read.
  std::vector<std::vector<int64_t>> seqs;
  for (const auto& s : a.all("ids")) {
    auto v = parseIntList(s, "--ids");
    seqs.emplace_back(v.begin(), v.end());
  }
  std::vector<std::vector<int64_t>> decoderSeqs;
  for (const auto& s : a.all("decoder-ids")) {
    auto v = parseIntList(s, "--decoder-ids");
    decoderSeqs.emplace_back(v.begin(), v.end());
  }
  const c10::Device device = deviceOption(a);
  auto loaded = loadModel(a.pos(0, "MODEL_DIR"), device);
  const Model& m = *loaded.model;
  const ModelConfig& c = m.config();
  for (const auto& text : a.all("text")) {
    if (!loaded.tokenizer) throw FormatError(m.dir().string() + ": --text needs a tokenizer in the model folder");
    // Encoder-decoder models: the source ends with eos, as HF's T5 tokenizers encode it (tokenizePair).
    auto ids = c.encoderDecoder ? encodeWithEos(*loaded.tokenizer, text, modelEos(loaded, "--text"))
                                : loaded.tokenizer->encode(text, true);
    if (ids.empty()) throw ParameterError("--text: encodes to no tokens");
    seqs.emplace_back(ids.begin(), ids.end());
  }
  if (seqs.empty()) throw ParameterError("give at least one --ids or --text sequence");
  // Encoder-decoder models: the source sequences go to the encoder, the
  // --decoder-ids (teacher-forced decoder inputs) or the decoder inputs made
  // from --decoder-text to the decoder, in order.
  if (a.has("decoder-ids") && a.has("decoder-text"))
    throw ParameterError("give either --decoder-ids or --decoder-text, not both");
  const std::string decoderFlag = a.has("decoder-text") ? "--decoder-text" : "--decoder-ids";
  std::vector<std::vector<int32_t>> labels;  // --decoder-text: the target ids + eos
  if (a.has("decoder-text") && !c.encoderDecoder)
    throw ParameterError("--decoder-text: " + m.dir().string() + " is not an encoder-decoder model (" +
                         archName(c.arch) + ")");
  for (const auto& text : a.all("decoder-text")) {
    if (!loaded.tokenizer)
      throw FormatError(m.dir().string() + ": --decoder-text needs a tokenizer in the model folder");
    // HF's tokenizer(text_target=...) (target ids + eos), then T5's _shift_right (teacher forcing).
    labels.push_back(encodeWithEos(*loaded.tokenizer, text, modelEos(loaded, "--decoder-text")));
    auto in = shiftRight(labels.back(), c.decoderStartId);
    decoderSeqs.emplace_back(in.begin(), in.end());
  }
  if (a.has("generate")) return runGenerate(a, loaded, seqs);
  if (c.encoderDecoder && decoderSeqs.empty())
    throw ParameterError(m.dir().string() + " is an encoder-decoder model (" + archName(c.arch) +
                         "): give --decoder-ids or --decoder-text for each source sequence (decoder inputs, starting "
                         "with decoder_start_token_id " +
                         std::to_string(c.decoderStartId) + ")");
  if (!c.encoderDecoder && !decoderSeqs.empty())
    throw ParameterError("--decoder-ids: " + m.dir().string() + " is not an encoder-decoder model (" +
                         archName(c.arch) + ")");
  if (decoderSeqs.size() != (c.encoderDecoder ? seqs.size() : 0))
    throw ParameterError(decoderFlag +
                         ": give one per source sequence (source sequences: " + std::to_string(seqs.size()) +
                         ", decoder sequences: " + std::to_string(decoderSeqs.size()) + ")");
  if (a.flag("all-experts") && c.expertCount == 0)
    throw ParameterError("--all-experts: " + m.dir().string() + " is not a native MoE model (" + archName(c.arch) +
                         ")");
  Batch batch = makeBatch(seqs, 0);
  DumpSink sink(a.flag("all-experts"));
  at::Tensor logits;  // [B, T, vocab]; T = decoder length for encoder-decoder models
  if (c.encoderDecoder) {
    logits = m.forwardSeq2Seq(batch, makeBatch(decoderSeqs, 0), &sink);
  } else {
    logits = m.forward(batch, &sink);
  }
  logits = logits.cpu();  // read on the host below (--device)
  // The sequences the logits belong to.
  const auto& outSeqs = c.encoderDecoder ? decoderSeqs : seqs;
  if (a.has("dump")) {
    auto out = sink.tensors;
    out.emplace(out.begin(), "logits", logits);
    writeSafetensors(a.text("dump"), out, {{"model", m.dir().string()}, {"fingerprint", m.fingerprint()}});
  }
  // Report the greedy next token at each sequence end.
  nlohmann::json j;
  j["batch"] = batch.batchSize();
  j["seq_len"] = batch.seqLen();
  if (c.encoderDecoder) j["decoder_len"] = logits.size(1);
  j["logits_shape"] = logits.sizes().vec();
  nlohmann::json next = nlohmann::json::array();
  for (size_t b = 0; b < outSeqs.size(); ++b) {
    int64_t last = static_cast<int64_t>(outSeqs[b].size()) - 1;
    next.push_back(logits[b][last].argmax().item<int64_t>());
  }
  j["next_token"] = next;
  if (c.encoderDecoder) {
    // The decoder inputs fed (with --decoder-text: made from the text) and, with --decoder-text, their labels.
    j["decoder_ids"] = decoderSeqs;
    if (!labels.empty()) j["labels"] = labels;
  }
  if (a.has("dump")) j["dump"] = a.text("dump");
  if (a.json()) {
    printJson(j);
  } else {
    std::cout << "ran batch " << batch.batchSize() << " x " << batch.seqLen()
              << (c.encoderDecoder ? " (decoder " + std::to_string(logits.size(1)) + ")" : std::string()) << ", logits "
              << shapeString(logits) << "\n";
    for (size_t b = 0; b < seqs.size(); ++b) std::cout << "  seq " << b << ": greedy next token " << next[b] << "\n";
    for (size_t b = 0; b < labels.size(); ++b)
      std::cout << "  seq " << b << ": decoder input " << j["decoder_ids"][b].dump() << ", labels "
                << j["labels"][b].dump() << "\n";
    if (a.has("dump")) std::cout << "wrote " << a.text("dump") << " (" << sink.tensors.size() + 1 << " tensors)\n";
  }
  return 0;
}

const OptionTable& inspectOptionTable() {
  static const OptionTable table = [] {
    OptionTable t("inspect", "describe a checkpoint folder", "moefy inspect MODEL_DIR [--fingerprint] [--json]\n",
                  "Prints the architecture, layer count, the stacks with their FFN sites (single: blk.L;\n"
                  "encoder-decoder: enc.blk.L and dec.blk.L), d_model, d_ff, heads (kv heads, head dim), FFN kind\n"
                  "and activation; the positions line (learned, relative bias, or the RoPE type: default,\n"
                  "linear, dynamic, llama3 or yarn, with theta, scaling parameters and rotated dims; Gemma 3\n"
                  "adds the RoPE of its sliding layers); the norms line (rmsnorm, rmsnorm (1 + w) or\n"
                  "layernorm, epsilon, pre-norm / post-norm / pre+post-norm / output-norm placement, q/k\n"
                  "norms); the window line (none, every layer, or the window and the local/global layer\n"
                  "pattern, e.g. LG); the attention line (score scale, soft-capping, embedding scaling); then\n"
                  "parameter count, stored dtype and tokenizer. For a dense checkpoint it reads the config and\n"
                  "the safetensors headers only (every tensor's name, shape and dtype checked against the\n"
                  "architecture, no weight read); --fingerprint also reads the weights (refusing NaN/Inf) and\n"
                  "prints the model fingerprint that recordings and partitions carry (a MoE export is always\n"
                  "loaded, to check its moefication block against its experts). --json gives these as fields\n"
                  "(rope, position_encoding, norms, window_pattern, attention, stacks, stack_summary,\n"
                  "ffn_sites, ...). Native MoE models show their experts (count, d_expert, top-k, whether the\n"
                  "top-k weights are renormalised), shared expert, and on the moe layers line which layers are\n"
                  "MoE (with their expert sites blk.L.exp.E and blk.L.shared) or dense (--json: native_moe with\n"
                  "experts, experts_per_token, expert_d_ff, norm_topk_prob, shared_expert_d_ff, moe_layers,\n"
                  "dense_layers, expert_sites, summary, layer_summary). MoE exports show the\n"
                  "MoEfication on the experts line (experts per layer, layers, top-k, router kind), count\n"
                  "the experts and routers in the parameters (with the split: experts N, routers N) and\n"
                  "list their moefication block one field a line (--json: moefication, moefication_summary,\n"
                  "expert_parameters, router_parameters). Given another artefact (a recording, partition,\n"
                  "router, evaluation, front, analysis or workspace folder), it says which and prints its\n"
                  "one-line summary (--json: path, artefact, summary).\n");
    t.positionals({"MODEL_DIR"}, 1)
        .flag("json", "print the description as JSON")
        .flag("fingerprint", "load the weights (every tensor validated) and print the model fingerprint");
    return t;
  }();
  return table;
}

const OptionTable& forwardOptionTable() {
  static const OptionTable table = [] {
    OptionTable t("forward", "run token sequences and dump logits and FFN hooks",
                  "moefy forward MODEL_DIR (--ids 1,2,3 | --text \"...\") [--ids ...]\n"
                  "                        [--decoder-ids 0,4,5 ... | --decoder-text \"...\" ...]\n"
                  "                        [--dump OUT.safetensors] [--all-experts] [--generate N] [--json]\n",
                  "Several --ids/--text make a right-padded batch. --dump writes logits [B, T, vocab],\n"
                  "blk.{L}.ffn_in [B, T, d_model] and blk.{L}.ffn_act [B, T, d_ff] for every layer.\n"
                  "Encoder-decoder models (T5) take one --decoder-ids per source sequence (the\n"
                  "teacher-forced decoder inputs) or one --decoder-text: its labels are the tokenizer's\n"
                  "ids of the text plus eos unless the tokenizer already ended them with it (as HF's\n"
                  "tokenizer(text_target=...)), and the decoder is fed decoder_start_token_id followed by\n"
                  "the labels without their last id (HF's T5 _shift_right): labels 4,55,1 are fed as\n"
                  "0,4,55 (--json lists decoder_ids and labels). A --text source of such a model ends\n"
                  "with eos the same way. The logits are then [B, T_dec, vocab] and the hooks\n"
                  "enc.blk.{L}.* [B, T_src, ..] and dec.blk.{L}.* [B, T_dec, ..]. Native MoE layers add\n"
                  "blk.{L}.router_logits [B, T, E], blk.{L}.topk_ids / topk_weights [B, T, k],\n"
                  "blk.{L}.exp.{E}.ffn_act [n, d_expert] with blk.{L}.exp.{E}.tokens [n] (flat positions\n"
                  "b * T + t of the tokens routed to E; padding positions of a right-padded batch are\n"
                  "routed too, as in HF) and blk.{L}.shared.ffn_act; their blk.{L}.ffn_act is\n"
                  "[B, T, E * d_expert] (expert e's hidden in columns e * d_expert.., zero where the token\n"
                  "did not choose e); --all-experts runs every token through every expert for these\n"
                  "hooks without changing the logits.\n"
                  "--generate N (encoder-decoder models, instead of decoder inputs) decodes every source\n"
                  "greedily as HF's generate() with num_beams 1: from decoder_start_token_id, the argmax\n"
                  "each step, a sequence ending at eos_token_id or after N new tokens; the sources are\n"
                  "one padded batch and the decoder keeps a KV cache (cross-attention keys/values computed\n"
                  "once per source). Prints each sequence's ids and, with a tokenizer, its text (--json:\n"
                  "generated, stopped, text).\n");
    t.positionals({"MODEL_DIR"}, 1)
        .text("ids", "1,2,3", std::nullopt, "one sequence of token ids", true)
        .text("text", "TEXT", std::nullopt, "one sequence as text, encoded with the model's tokenizer", true)
        .text("decoder-ids", "0,4,5", std::nullopt,
              "decoder input ids of an encoder-decoder model, one per source sequence in order", true)
        .text("decoder-text", "TEXT", std::nullopt,
              "target text of an encoder-decoder model, one per source sequence in order: labels = its "
              "ids + eos, fed as decoder_start_token_id + the labels but the last",
              true)
        .text("dump", "OUT.safetensors", std::nullopt, "write the logits and every layer's hooks")
        .integerNoDefault("generate", "N", 1, 1 << 16,
                          "encoder-decoder models: decode each source greedily, at most N new tokens")
        .flag("all-experts", "native MoE models: every expert's hidden for every token in the expert hooks")
        .flag("json", "print the result as JSON");
    addDeviceOption(t);
    return t;
  }();
  return table;
}

CommandRegistrar inspectCmd(inspectOptionTable(), runInspect);
CommandRegistrar forwardCmd(forwardOptionTable(), runForward);

}  // namespace

}  // namespace moefy::cli
