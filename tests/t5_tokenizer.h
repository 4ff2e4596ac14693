#pragma once
// A small T5-shaped tokenizer.json for the encoder-decoder tests, with ids
// known by hand.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace moefy::test {

/// Writes a tokenizer.json shaped like t5-small's: <pad> 0, </s> 1, <unk> 2
/// (special, added tokens), then `pieces` (piece, Unigram score) from id 3;
/// a Unigram model over Metaspace pieces (WhitespaceSplit first), the template
/// "$A </s>" and a Metaspace decoder.
inline void writeT5Tokenizer(const std::filesystem::path& path,
                             const std::vector<std::pair<std::string, double>>& pieces) {
  using json = nlohmann::json;
  json vocab = json::array({json::array({"<pad>", 0.0}), json::array({"</s>", 0.0}), json::array({"<unk>", 0.0})});
  for (const auto& [piece, score] : pieces) vocab.push_back(json::array({piece, score}));
  json added = json::array();
  for (int id = 0; id < 3; ++id)
    added.push_back({{"id", id},
                     {"content", vocab[id][0]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const json a = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, b = {{"Sequence", {{"id", "B"}, {"type_id", 0}}}};
  const json eos = {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}};
  const json metaspace = {
      {"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}, {"split", true}};
  json j = {{"version", "1.0"},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {{{"type", "WhitespaceSplit"}}, metaspace}}}},
            {"post_processor",
             {{"type", "TemplateProcessing"},
              {"single", {a, eos}},
              {"pair", {a, eos, b, eos}},
              {"special_tokens", {{"</s>", {{"id", "</s>"}, {"ids", {1}}, {"tokens", {"</s>"}}}}}}}},
            {"decoder", metaspace},
            {"model", {{"type", "Unigram"}, {"unk_id", 2}, {"vocab", vocab}, {"byte_fallback", false}}}};
  std::ofstream(path) << j.dump();
}

}  // namespace moefy::test
