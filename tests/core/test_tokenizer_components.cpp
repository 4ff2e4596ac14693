// Tokenizer components whose behaviour the parity files do not pin down, with
// expectations derived by hand from the Rust `tokenizers` crate's semantics
// (and Python's unicodedata for the Unicode normalization forms).
#include <QtTest>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "analysis/common/error.h"
#include "analysis/text/hf_components.h"
#include "analysis/text/hf_tokenizer.h"
#include "analysis/text/tokenizer.h"
#include "analysis/text/unicode.h"
#include "analysis/text/utf8.h"
#include "testutil.h"

using namespace moefy;
using json = nlohmann::json;

namespace {

std::vector<std::string> preTokenize(const json& j, const std::string& text) {
  auto p = hf::makePreTokenizer(j, "test");
  hf::Pieces pieces{{text, true}};
  p->apply(pieces);
  std::vector<std::string> out;
  for (auto& x : pieces) out.push_back(x.text);
  return out;
}

std::string joinPieces(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "[" + x + "]";
  return s;
}

// A character-level BPE tokenizer over a small alphabet (no merges unless given).
json charTokenizer(const json& added, const json& merges = json::array()) {
  json vocab = json::object();
  int id = 0;
  for (const char* t : {"a", "b", "c", " ", "<mask>", "ab", "x", "\xE2\x96\x81"}) vocab[t] = id++;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr}};
}

json addedTok(const std::string& content, int id, bool lstrip, bool rstrip, bool singleWord, bool special = true) {
  return {{"id", id}, {"content", content}, {"single_word", singleWord}, {"lstrip", lstrip}, {"rstrip", rstrip},
          {"normalized", false}, {"special", special}};
}

std::string ids(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

}  // namespace

class TestTokenizerComponents : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void splitBehaviors() {
    const std::string text = "a-b--c-";
    auto split = [&](const char* behavior, bool invert = false) {
      return joinPieces(preTokenize({{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}}, text));
    };
    QCOMPARE(split("Removed"), std::string("[a][b][c]"));
    QCOMPARE(split("Isolated"), std::string("[a][-][b][-][-][c][-]"));
    QCOMPARE(split("MergedWithPrevious"), std::string("[a-][b-][-][c-]"));
    QCOMPARE(split("MergedWithNext"), std::string("[a][-b][-][-c][-]"));
    QCOMPARE(split("Contiguous"), std::string("[a][-][b][--][c][-]"));
    // invert: the non-matches are what the behaviour acts on.
    json digits = {{"type", "Split"}, {"pattern", {{"Regex", "\\d+"}}}, {"behavior", "Removed"}, {"invert", true}};
    QCOMPARE(joinPieces(preTokenize(digits, "ab12cd3")), std::string("[12][3]"));
    digits["invert"] = false;
    QCOMPARE(joinPieces(preTokenize(digits, "ab12cd3")), std::string("[ab][cd]"));
    QVERIFY_THROWS_EXCEPTION(FormatError, preTokenize({{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", "Sideways"}}, "a"));
  }

  void onigurumaWhitespace() {
    // GPT-2's regex as the Rust crate runs it (Oniguruma): \s is White_Space,
    // which has U+0085 and not U+FEFF. (The JS reference differs here.)
    const char* gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    json split = {{"type", "Split"}, {"pattern", {{"Regex", gpt2}}}, {"behavior", "Isolated"}, {"invert", false}};
    QCOMPARE(joinPieces(preTokenize(split, " \xC2\x85x")), std::string("[ ][\xC2\x85][x]"));
    QCOMPARE(joinPieces(preTokenize(split, "a \xEF\xBB\xBF" "b")), std::string("[a][ \xEF\xBB\xBF][b]"));
    QCOMPARE(joinPieces(preTokenize(split, "I'm  fine")), std::string("[I]['m][ ][ fine]"));
    // ByteLevel maps bytes to GPT-2's printable characters.
    QCOMPARE(joinPieces(preTokenize({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}, "hi\n")),
             std::string("[\xC4\xA0hi][\xC4\x8A]"));
    // Case-insensitive group, as in Llama-3's pattern.
    json ci = {{"type", "Split"}, {"pattern", {{"Regex", "(?i:'s|'ll)|\\p{L}+"}}}, {"behavior", "Isolated"}};
    QCOMPARE(joinPieces(preTokenize(ci, "IT'S WE'LL")), std::string("[IT]['S][ ][WE]['LL]"));
    QVERIFY_THROWS_EXCEPTION(FormatError, preTokenize({{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}}, "a"));
  }

  void otherPreTokenizers() {
    const std::string mw = "\xE2\x96\x81";  // U+2581
    json meta = {{"type", "Metaspace"}, {"replacement", mw}, {"prepend_scheme", "always"}, {"split", true}};
    QCOMPARE(joinPieces(preTokenize(meta, "hello  world")), "[" + mw + "hello][" + mw + "][" + mw + "world]");
    meta["split"] = false;
    QCOMPARE(joinPieces(preTokenize(meta, "a b")), "[" + mw + "a" + mw + "b]");
    meta["prepend_scheme"] = "never";
    QCOMPARE(joinPieces(preTokenize(meta, "a b")), "[a" + mw + "b]");
    QCOMPARE(joinPieces(preTokenize({{"type", "Whitespace"}}, "Hello, wörld!! 42")), std::string("[Hello][,][wörld][!!][42]"));
    QCOMPARE(joinPieces(preTokenize({{"type", "WhitespaceSplit"}}, " a\tb\xE3\x80\x80" "c ")), std::string("[a][b][c]"));
    QCOMPARE(joinPieces(preTokenize({{"type", "Digits"}, {"individual_digits", true}}, "ab123c")), std::string("[ab][1][2][3][c]"));
    QCOMPARE(joinPieces(preTokenize({{"type", "Digits"}, {"individual_digits", false}}, "ab123c\xD9\xA3")), std::string("[ab][123][c][\xD9\xA3]"));
    QCOMPARE(joinPieces(preTokenize({{"type", "Punctuation"}, {"behavior", "Isolated"}}, "hi!?x")), std::string("[hi][!][?][x]"));
    QCOMPARE(joinPieces(preTokenize({{"type", "BertPreTokenizer"}}, " Don't stop. ")), std::string("[Don]['][t][stop][.]"));
    json seq = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}, {"individual_digits", true}}}}};
    QCOMPARE(joinPieces(preTokenize(seq, "x12 y")), std::string("[x][1][2][y]"));
    QVERIFY_THROWS_EXCEPTION(FormatError, preTokenize({{"type", "Nonexistent"}}, "a"));
  }

  void normalizers() {
    auto norm = [](const json& j, std::string s) {
      auto n = hf::makeNormalizer(j, "test");
      n->apply(s);
      return s;
    };
    QCOMPARE(norm({{"type", "Lowercase"}}, "ÀBC İ ΣΑΣ"), std::string("àbc i\xCC\x87 σασ"));  // per character, as Rust
    QCOMPARE(norm({{"type", "StripAccents"}}, "e\xCC\x81" "a\xCC\x88"), std::string("ea"));
    QCOMPARE(norm({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, " \t a b "), std::string("a b "));
    QCOMPARE(norm({{"type", "Prepend"}, {"prepend", "_"}}, "ab"), std::string("_ab"));
    QCOMPARE(norm({{"type", "Prepend"}, {"prepend", "_"}}, ""), std::string(""));
    QCOMPARE(norm({{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", "_"}}, "a  b c"), std::string("a_b_c"));
    json bert = {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true}, {"strip_accents", nullptr}, {"lowercase", true}};
    QCOMPARE(norm(bert, "Héllo\x01\tW\xE4\xB8\xAD"), std::string("hello w \xE4\xB8\xAD "));
    // clean_text drops Cc, Cf (U+200B) and Co (U+E000) but keeps unassigned U+0378, as the Rust crate
    // (unicode_categories' is_other() has no Cn).
    const std::string cn = "\xCD\xB8", co = "\xEE\x80\x80", cf = "\xE2\x80\x8B";
    QCOMPARE(norm(bert, "a" + cn + "b" + co + "c" + cf + "d"), "a" + cn + "bcd");
    json seq = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}};
    QCOMPARE(norm(seq, "\xEF\xBC\xA1\xE2\x91\xA0"), std::string("a1"));  // fullwidth A, circled 1
    QCOMPARE(norm({{"type", "Nmt"}}, "a\x01\tb\xE2\x80\x8B" "c\x7F"), std::string("a b c"));
    QCOMPARE(norm({{"type", "ByteLevel"}}, "a b\n"), std::string("a\xC4\xA0" "b\xC4\x8A"));
    QVERIFY_THROWS_EXCEPTION(FormatError, norm({{"type", "Bogus"}}, "a"));
  }

  void unicodeNormalizationAgainstPython() {
    // Strings with composition, reordering, Hangul and compatibility cases;
    // Python's unicodedata.normalize is the reference.
    std::vector<std::string> cases = {
        "e\xCC\x81", "\xC3\xA9", "a\xCC\x81\xCC\xA3", "a\xCC\xA3\xCC\x81", "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81",
        "\xEF\xAC\x81", "\xE2\x91\xA0\xE2\x85\xAB", "\xC3\x85ngstr\xC3\xB6m \xE2\x84\xAB", "o\xCC\x88\xCC\x84 \xE1\xB9\x8F",
        "\xE0\xA4\x95\xE0\xA4\xBC", "\xEF\xBD\xB6\xEF\xBE\x9E", "x\xCD\x8F\xCC\x81y", "\xE2\x80\xA6\xC2\xBD\xC2\xB2",
        "Ti\xE1\xBA\xBFng Vi\xE1\xBB\x87t", "\xCE\x90\xCF\x93", "\xF0\x9D\x90\x80\xF0\x9F\x98\x80"};
    // Add random mixtures of letters and combining marks.
    std::mt19937 rng(7);
    const char32_t pool[] = {U'a', U'e', U'o', U'A', U'\u0300', U'\u0301', U'\u0308', U'\u0323', U'\u0327', U'\u031B',
                             U'\u1100', U'\u1161', U'\u11A8', U'\uAC00', U'\u00C5', U'\u212B', U'\uFB01', U'\u0345', U'\u0399'};
    for (int k = 0; k < 300; ++k) {
      std::u32string u;
      for (int n = 1 + static_cast<int>(rng() % 8); n > 0; --n) u.push_back(pool[rng() % (sizeof pool / sizeof pool[0])]);
      cases.push_back(utf8::encode(u));
    }
    auto dir = test::freshDir("unicode_nf");
    {
      std::ofstream out(dir / "in.json");
      out << json(cases).dump();
    }
    std::ofstream(dir / "ref.py") << "import json, sys, unicodedata as u\n"
                                     "c = json.load(open(sys.argv[1], encoding='utf-8'))\n"
                                     "json.dump({f: [u.normalize(f, s) for s in c] for f in ['NFC','NFD','NFKC','NFKD']},"
                                     " open(sys.argv[2], 'w', encoding='utf-8'))\n";
    auto r = test::runPython({QString::fromStdString((dir / "ref.py").string()), QString::fromStdString((dir / "in.json").string()),
                              QString::fromStdString((dir / "out.json").string())});
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    json ref = json::parse(std::ifstream(dir / "out.json"));
    int mismatches = 0;
    const std::pair<const char*, uni::Form> forms[] = {{"NFC", uni::Form::NFC}, {"NFD", uni::Form::NFD}, {"NFKC", uni::Form::NFKC}, {"NFKD", uni::Form::NFKD}};
    for (auto [name, form] : forms)
      for (size_t i = 0; i < cases.size(); ++i)
        if (uni::normalize(cases[i], form) != ref[name][i].get<std::string>()) ++mismatches;
    qInfo("unicode normalization: %d mismatches of %zu strings x 4 forms against Python unicodedata", mismatches, cases.size());
    QCOMPARE(mismatches, 0);
  }

  void addedTokens() {
    // <mask> with lstrip/rstrip absorbs the neighbouring whitespace.
    auto t = HfTokenizer::fromJson(charTokenizer(json::array({addedTok("<mask>", 4, true, false, false)})).dump(), "t.json");
    QCOMPARE(ids(t->encode("a <mask> b")), std::string("0,4,3,1"));
    t = HfTokenizer::fromJson(charTokenizer(json::array({addedTok("<mask>", 4, true, true, false)})).dump(), "t.json");
    QCOMPARE(ids(t->encode("a <mask> b")), std::string("0,4,1"));
    t = HfTokenizer::fromJson(charTokenizer(json::array({addedTok("<mask>", 4, false, false, false)})).dump(), "t.json");
    QCOMPARE(ids(t->encode("a <mask> b")), std::string("0,3,4,3,1"));
    QCOMPARE(t->decode(t->encode("a <mask> b"), true), std::string("a     b"));
    QCOMPARE(t->decode(t->encode("a <mask> b"), false), std::string("a   <mask>   b"));  // no decoder: tokens joined by spaces
    // single_word: only where not inside a word.
    t = HfTokenizer::fromJson(charTokenizer(json::array({addedTok("ab", 5, false, false, true, false)})).dump(), "t.json");
    QCOMPARE(ids(t->encode("ab cab ab")), std::string("5,3,2,0,1,3,5"));
    // Leftmost-longest among overlapping added tokens.
    t = HfTokenizer::fromJson(charTokenizer(json::array({addedTok("a", 0, false, false, false), addedTok("ab", 5, false, false, false)})).dump(), "t.json");
    QCOMPARE(ids(t->encode("aab")), std::string("0,5"));
  }

  void bpeMerges() {
    // Rank order decides, not length: with merges [b c] then [a b], "abc" -> a + bc.
    json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
    json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"b c", "a b", "a bc"}}}}, {"added_tokens", json::array()}};
    auto t = HfTokenizer::fromJson(j.dump(), "t.json");
    QCOMPARE(ids(t->encode("abc")), std::string("5"));
    j["model"]["merges"] = {"b c", "a b"};
    t = HfTokenizer::fromJson(j.dump(), "t.json");
    QCOMPARE(ids(t->encode("abc")), std::string("0,4"));
    // Ties at equal rank: leftmost first ("aaa" with [a a] -> aa + a).
    json v2 = {{"a", 0}, {"aa", 1}};
    json j2 = {{"model", {{"type", "BPE"}, {"vocab", v2}, {"merges", {"a a"}}}}, {"added_tokens", json::array()}};
    QCOMPARE(ids(HfTokenizer::fromJson(j2.dump(), "t.json")->encode("aaa")), std::string("1,0"));
    // byte_fallback for characters outside the vocabulary.
    json v3 = {{"<unk>", 0}, {"a", 1}, {"<0xC3>", 2}, {"<0xA9>", 3}};
    json j3 = {{"model", {{"type", "BPE"}, {"vocab", v3}, {"merges", json::array()}, {"unk_token", "<unk>"}, {"byte_fallback", true}}},
               {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}}};
    auto t3 = HfTokenizer::fromJson(j3.dump(), "t.json");
    QCOMPARE(ids(t3->encode("a\xC3\xA9z")), std::string("1,2,3,0"));
    QCOMPARE(t3->decode({1, 2, 3}), std::string("a\xC3\xA9"));
    QCOMPARE(t3->decode({2, 1}), std::string("\xEF\xBF\xBD" "a"));  // a lone lead byte decodes to U+FFFD
    // Errors name the file and the merge.
    j["model"]["merges"] = {"b q"};
    try {
      HfTokenizer::fromJson(j.dump(), "bad.json");
      QFAIL("expected FormatError");
    } catch (const FormatError& e) {
      QVERIFY(std::string(e.what()).find("bad.json: BPE merge 0") != std::string::npos);
    }
    QVERIFY_THROWS_EXCEPTION(FormatError, HfTokenizer::fromJson("{\"model\": ", "trunc.json"));
    QVERIFY_THROWS_EXCEPTION(FormatError, HfTokenizer::fromJson("{\"x\": 1}", "nomodel.json"));
  }

  void postProcessorsAndDecoders() {
    json vocab = {{"[CLS]", 0}, {"[SEP]", 1}, {"[UNK]", 2}, {"hello", 3}, {"##s", 4}, {"world", 5}, {".", 6}};
    json j = {{"model", {{"type", "WordPiece"}, {"vocab", vocab}, {"unk_token", "[UNK]"}}},
              {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
              {"post_processor", {{"type", "BertProcessing"}, {"cls", {"[CLS]", 0}}, {"sep", {"[SEP]", 1}}}},
              {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
              {"added_tokens", {addedTok("[CLS]", 0, false, false, false), addedTok("[SEP]", 1, false, false, false)}}};
    auto t = HfTokenizer::fromJson(j.dump(), "t.json");
    QCOMPARE(ids(t->encode("hellos world .")), std::string("0,3,4,5,6,1"));
    QCOMPARE(ids(t->encode("hellos xyz", false)), std::string("3,4,2"));
    QCOMPARE(t->decode({0, 3, 4, 5, 6, 1}), std::string("hellos world."));
    QCOMPARE(t->bosId().value_or(-1), 0);
    QCOMPARE(t->eosId().value_or(-1), 1);
    j["post_processor"] = {{"type", "Sequence"}, {"processors", {{{"type", "ByteLevel"}}, {{"type", "RobertaProcessing"}, {"cls", {"[CLS]", 0}}, {"sep", {"[SEP]", 1}}}}}};
    QCOMPARE(ids(HfTokenizer::fromJson(j.dump(), "t.json")->encode("world")), std::string("0,5,1"));
    // Decoders on token lists.
    auto dec = [](const json& d, std::vector<std::string> toks) {
      hf::makeDecoder(d, "test")->apply(toks);
      std::string s;
      for (auto& x : toks) s += x;
      return s;
    };
    QCOMPARE(dec({{"type", "BPEDecoder"}, {"suffix", "</w>"}}, {"hel", "lo</w>", "you</w>"}), std::string("hello you"));
    QCOMPARE(dec({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}, {" a ", "  b  "}), std::string("a b "));
    QCOMPARE(dec({{"type", "CTC"}, {"pad_token", "<pad>"}, {"word_delimiter_token", "|"}, {"cleanup", true}}, {"h", "h", "<pad>", "i", "|", "y"}), std::string("hi y"));
    QCOMPARE(dec({{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "always"}}, {"\xE2\x96\x81hi", "\xE2\x96\x81you"}), std::string("hi you"));
    QCOMPARE(dec({{"type", "ByteLevel"}}, {"\xC4\xA0hi", "\xC4\x8A"}), std::string(" hi\n"));
  }

  void llamaClassAddBosToken() {
    // transformers' LlamaTokenizerFast/GemmaTokenizerFast rebuild the
    // post-processor from tokenizer_config.json's add_bos_token (default true)
    // and add_eos_token (default false), whatever tokenizer.json says.
    json vocab = {{"<s>", 0}, {"</s>", 1}, {"h", 2}, {"i", 3}, {"<bos>", 4}, {"<eos>", 5}};
    json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
               {"added_tokens",
                {addedTok("<s>", 0, false, false, false), addedTok("</s>", 1, false, false, false),
                 addedTok("<bos>", 4, false, false, false), addedTok("<eos>", 5, false, false, false)}},
               {"post_processor",
                {{"type", "TemplateProcessing"},
                 {"single",
                  {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                 {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {0}}, {"tokens", {"<s>"}}}}}}}}};
    auto dir = test::freshDir("tok_llama_class");
    std::ofstream(dir / "tokenizer.json") << tj.dump();
    auto encodeWith = [&](const json& config) {
      if (config.is_null())
        std::filesystem::remove(dir / "tokenizer_config.json");
      else
        std::ofstream(dir / "tokenizer_config.json") << config.dump();
      return ids(Tokenizer::fromModelDir(dir)->encode("hi", true));
    };
    QCOMPARE(encodeWith(nullptr), std::string("0,2,3"));  // no config: tokenizer.json's <s> $A
    // Phi-3: tokenizer.json adds <s>, the config turns it off.
    QCOMPARE(encodeWith({{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", false}}), std::string("2,3"));
    QCOMPARE(encodeWith({{"tokenizer_class", "LlamaTokenizerFast"}, {"add_eos_token", true}}), std::string("0,2,3,1"));
    QCOMPARE(encodeWith({{"tokenizer_class", "GemmaTokenizerFast"}}), std::string("4,2,3"));  // class default <bos>
    QCOMPARE(encodeWith({{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "h"}, {"add_bos_token", true}}),
             std::string("2,2,3"));
    // Other classes keep tokenizer.json's post-processor, whatever the flags.
    QCOMPARE(encodeWith({{"tokenizer_class", "PreTrainedTokenizerFast"}, {"add_bos_token", false}}),
             std::string("0,2,3"));
    // A bos that is not a token, or a flag that is not a boolean: one-line error naming the file.
    for (const json& bad : {json{{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "<nope>"}},
                            json{{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", "yes"}}}) {
      try {
        encodeWith(bad);
        QFAIL("expected FormatError");
      } catch (const FormatError& e) {
        QVERIFY2(std::string(e.what()).find("tokenizer_config.json") != std::string::npos, e.what());
      }
    }
  }

  void invalidUtf8() {
    // Documented behaviour: each maximal ill-formed subpart becomes one U+FFFD
    // (as the WHATWG decoder, Rust's from_utf8_lossy and the JS reference).
    QCOMPARE(utf8::sanitized("a\xE2\x82" "b"), std::string("a\xEF\xBF\xBD" "b"));
    QCOMPARE(utf8::sanitized("\xE0\x80\xAF"), std::string("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
    QCOMPARE(utf8::sanitized("\xED\xA0\x80"), std::string("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
    QCOMPARE(utf8::sanitized("\xF0\x9F\x98"), std::string("\xEF\xBF\xBD"));
    QCOMPARE(utf8::sanitized("\xF4\x90\x80\x80"), std::string("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
    QCOMPARE(utf8::sanitized("ok \xC3\xA9"), std::string("ok \xC3\xA9"));
    // Random bytes through a byte-level BPE tokenizer: never a crash, and the
    // same ids as the repaired text.
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[hf::byteToUnicode(static_cast<uint8_t>(b))] = b;
    json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"decoder", {{"type", "ByteLevel"}}}};
    auto t = HfTokenizer::fromJson(j.dump(), "bytes.json");
    std::mt19937 rng(42);
    int checked = 0;
    for (int k = 0; k < 2000; ++k) {
      std::string s;
      for (int n = static_cast<int>(rng() % 40); n > 0; --n) s.push_back(static_cast<char>(rng() % 256));
      auto a = t->encode(s);
      auto b = t->encode(utf8::sanitized(s));
      QCOMPARE(a, b);
      QVERIFY(utf8::isValid(t->decode(a)));
      QCOMPARE(t->decode(a), utf8::sanitized(s));
      ++checked;
    }
    qInfo("invalid UTF-8: %d random byte strings encoded and round-tripped to their repaired text", checked);
  }
};

QTEST_GUILESS_MAIN(TestTokenizerComponents)
#include "test_tokenizer_components.moc"
