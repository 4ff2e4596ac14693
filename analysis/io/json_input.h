#pragma once
// The one JSON parser for untrusted input. Every JSON reader of the core
// (config.json, tokenizer.json, tokenizer_config.json, the safetensors
// header, every artefact's metadata, corpus .jsonl lines, MoE config blocks)
// parses through parseJson() / readJsonFile(), so that all of them:
//   - refuse nesting deeper than kMaxJsonDepth at parse time (a file nested
//     200,000 levels deep is a one-line error, not a stack overflow in a later
//     recursive copy, comparison or dump);
//   - refuse an object that names one key twice (nlohmann::json keeps the last
//     entry silently; the safetensors reference reader and SentencePiece refuse
//     duplicates, and a guess is never right for a vocabulary or a tensor);
//   - report syntax errors as one line naming the file, line and column.
// Integer fields are read with jsonInteger(), which checks the range in 64
// bits before any narrowing (nlohmann's get<int>() truncates 2^32 to 0).
//
// Free of libtorch: the libFuzzer targets link this file alone.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace moefy {

/// A string taken from an input file, made safe to quote in a one-line
/// message: control bytes become \xNN and text past `max` bytes becomes "...".
std::string inputExcerpt(std::string_view s, size_t max = 80);

/// Deepest nesting of arrays/objects accepted (real files use fewer than 10).
constexpr int kMaxJsonDepth = 256;

/// Parses `text`. `where` names the source in messages ("config.json",
/// "corpus.jsonl:17"). Throws FormatError: "WHERE: malformed JSON (parse
/// error at line L, column C: ...)", "WHERE: JSON nested deeper than 256
/// levels", "WHERE: key 'K' appears twice in one object". Thread-safe.
nlohmann::json parseJson(std::string_view text, const std::string& where);

/// readInputFile(path) (regular files only, never blocks) + parseJson with the
/// path as `where`. Throws IoError or FormatError naming the path.
nlohmann::json readJsonFile(const std::filesystem::path& path);

/// The integer value of `v`, checked to lie in [lo, hi] before narrowing.
/// Throws FormatError "WHAT must be an integer" or "WHAT = 4294967296 is
/// outside [lo, hi]". `what` names the file and key.
int64_t jsonInteger(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& what);

/// jsonInteger for an int (the common case): range [lo, hi] within int.
int jsonInt(const nlohmann::json& v, int lo, int hi, const std::string& what);

/// A JSON array of integers, each checked as by jsonInt. Throws FormatError
/// "WHAT must be a list of integers" for anything else.
std::vector<int> jsonIntList(const nlohmann::json& v, int lo, int hi, const std::string& what);

/// A finite number (an integer or a float; NaN/Inf cannot be written in JSON,
/// but 1e999 parses as Inf). Throws FormatError "WHAT must be a number" or
/// "WHAT = inf is not finite".
double jsonFinite(const nlohmann::json& v, const std::string& what);

}  // namespace moefy
