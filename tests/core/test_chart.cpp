// Headless charts: PNG, PDF and SVG outputs are valid files with the expected
// structure, and bad parameters are clear errors.
#include <QXmlStreamReader>
#include <QtTest>
#include <cstdio>
#include <map>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"
#include "analysis/report/chart.h"
#include "testutil.h"

using namespace moefy;
using namespace moefy::report;

namespace {
Chart lineChart() {
  Chart c;
  c.title = "Recall@k";
  c.xLabel = "k";
  c.yLabel = "mass";
  for (int m = 0; m < 3; ++m) {
    Series s{"method " + std::to_string(m), {}, {}};
    for (int k = 1; k <= 16; ++k) s.x.push_back(k), s.y.push_back(1.0 - 1.0 / (k + m));
    c.series.push_back(s);
  }
  return c;
}
/// The decompressed contents of every FlateDecode stream of a PDF.
std::vector<std::string> pdfStreams(const std::string& pdf) {
  std::vector<std::string> out;
  for (size_t at = pdf.find("stream"); at != std::string::npos; at = pdf.find("stream", at + 6)) {
    if (at >= 3 && pdf.compare(at - 3, 3, "end") == 0) continue;
    size_t begin = at + 6;
    if (pdf[begin] == '\r') ++begin;
    if (pdf[begin] == '\n') ++begin;
    const size_t end = pdf.find("endstream", begin);
    if (end == std::string::npos) break;
    const size_t dict = pdf.rfind("<<", at);
    if (pdf.substr(dict, at - dict).find("/FlateDecode") == std::string::npos) continue;
    // qUncompress wants zlib data behind a 4-byte big-endian size hint.
    QByteArray z = QByteArray("\x00\x10\x00\x00", 4) + QByteArray::fromStdString(pdf.substr(begin, end - begin));
    out.push_back(qUncompress(z).toStdString());
  }
  return out;
}
/// ToUnicode CMap: code (hex digits) -> UTF-8 text, from bfchar and bfrange entries.
void parseCmap(const std::string& cmap, std::map<std::string, std::string>& map) {
  auto utf8 = [](const std::string& hex) {
    QString s;
    for (size_t i = 0; i + 4 <= hex.size(); i += 4) s += QChar(char16_t(std::stoul(hex.substr(i, 4), nullptr, 16)));
    return s.toStdString();
  };
  auto hexes = [](const std::string& s) {
    std::vector<std::string> v;
    for (size_t a = s.find('<'); a != std::string::npos; a = s.find('<', a + 1)) {
      size_t b = s.find('>', a);
      v.push_back(s.substr(a + 1, b - a - 1));
      a = b;
    }
    return v;
  };
  for (size_t a = cmap.find("beginbfchar"); a != std::string::npos; a = cmap.find("beginbfchar", a + 1)) {
    auto h = hexes(cmap.substr(a, cmap.find("endbfchar", a) - a));
    for (size_t i = 0; i + 1 < h.size(); i += 2) map[h[i]] = utf8(h[i + 1]);
  }
  for (size_t a = cmap.find("beginbfrange"); a != std::string::npos; a = cmap.find("beginbfrange", a + 1)) {
    auto h = hexes(cmap.substr(a, cmap.find("endbfrange", a) - a));
    for (size_t i = 0; i + 2 < h.size(); i += 3) {
      const unsigned lo = std::stoul(h[i], nullptr, 16), hi = std::stoul(h[i + 1], nullptr, 16);
      const unsigned dst = std::stoul(h[i + 2], nullptr, 16);
      for (unsigned c = lo; c <= hi; ++c) {
        char code[16], u[8];
        std::snprintf(code, sizeof code, "%0*x", int(h[i].size()), c);
        std::snprintf(u, sizeof u, "%04x", dst + (c - lo));
        map[code] = utf8(u);
      }
    }
  }
}
/// The text a content stream shows (the strings of Tj/TJ inside BT..ET,
/// literal or hex), one text object per line, decoded with the ToUnicode map.
std::string shownText(const std::string& content, const std::map<std::string, std::string>& map) {
  const size_t codeLen = map.empty() ? 2 : map.begin()->first.size();
  auto decode = [&](const std::string& hex, std::string& out) {
    for (size_t i = 0; i + codeLen <= hex.size(); i += codeLen) {
      auto it = map.find(hex.substr(i, codeLen));
      out += it == map.end() ? "?" : it->second;
    }
  };
  std::string out;
  for (size_t bt = content.find("BT"); bt != std::string::npos; bt = content.find("BT", bt + 2)) {
    const size_t et = content.find("ET", bt);
    const std::string obj = content.substr(bt, et - bt);
    std::string hex;
    for (size_t i = 0; i < obj.size(); ++i) {
      if (obj[i] == '<') {
        const size_t b = obj.find('>', i);
        hex = obj.substr(i + 1, b - i - 1);
        for (char& ch : hex) ch = char(std::tolower(static_cast<unsigned char>(ch)));
        decode(hex, out);
        i = b;
      } else if (obj[i] == '(') {
        hex.clear();
        for (++i; i < obj.size() && obj[i] != ')'; ++i) {
          int byte = static_cast<unsigned char>(obj[i]);
          if (obj[i] == '\\') {
            ++i;
            if (obj[i] >= '0' && obj[i] <= '7') {
              byte = 0;
              for (int d = 0; d < 3 && obj[i] >= '0' && obj[i] <= '7'; ++d, ++i) byte = byte * 8 + (obj[i] - '0');
              --i;
            } else {
              byte = obj[i] == 'n'   ? '\n'
                     : obj[i] == 'r' ? '\r'
                     : obj[i] == 't' ? '\t'
                                     : static_cast<unsigned char>(obj[i]);
            }
          }
          char h[4];
          std::snprintf(h, sizeof h, "%02x", byte);
          hex += h;
        }
        decode(hex, out);
      }
    }
    out += "\n";
  }
  return out;
}
uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint8_t(s[at + 3]);
}
}  // namespace

class TestChart : public QObject {
  Q_OBJECT
 private Q_SLOTS:
  void pngHasHeaderAndDpiScaledSize() {
    auto dir = test::freshDir("chart_png");
    Chart c = lineChart();
    writePng(c, dir / "a.png", 144);
    std::string png = readFile(dir / "a.png");
    QVERIFY(png.size() > 1000);
    QCOMPARE(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    // IHDR width/height = points * dpi / 72.
    QCOMPARE(be32(png, 16), uint32_t(std::ceil(c.width * 2)));
    QCOMPARE(be32(png, 20), uint32_t(std::ceil(c.height * 2)));
  }

  void pdfIsWellFormedWithSelectableText() {
    auto dir = test::freshDir("chart_pdf");
    Chart c = lineChart();
    c.title = "Recall@k per layer";
    writePdf(c, dir / "a.pdf");
    std::string pdf = readFile(dir / "a.pdf");
    QVERIFY(pdf.rfind("%PDF-", 0) == 0);
    QVERIFY(pdf.find("%%EOF") != std::string::npos);
    // startxref points at the xref table.
    auto sx = pdf.rfind("startxref");
    QVERIFY(sx != std::string::npos);
    size_t xref = std::stoul(pdf.substr(sx + 10));
    QCOMPARE(pdf.substr(xref, 4), std::string("xref"));
    // The font is embedded and has a ToUnicode map: the text is selectable.
    QVERIFY(pdf.find("/FontFile") != std::string::npos);
    QVERIFY(pdf.find("/ToUnicode") != std::string::npos);
    // Decode the page's text operators through the ToUnicode map and find the
    // title and a legend entry, as a PDF viewer's text selection would.
    std::vector<std::string> streams = pdfStreams(pdf);
    std::map<std::string, std::string> toUnicode;
    for (const auto& st : streams)
      if (st.find("begincmap") != std::string::npos) parseCmap(st, toUnicode);
    QVERIFY(!toUnicode.empty());
    std::string text;
    for (const auto& st : streams)
      if (st.find(" Tf") != std::string::npos && st.find("begincmap") == std::string::npos)
        text += shownText(st, toUnicode);
    qInfo() << "PDF text:" << text.c_str();
    QVERIFY(text.find("Recall@k per layer") != std::string::npos);
    QVERIFY(text.find("method 2") != std::string::npos);
  }

  void svgParsesAndDrawsEveryLabel() {
    Chart c = lineChart();
    c.kind = Chart::Kind::Bar;
    c.categories = {"a", "b<&>", "c"};
    for (auto& s : c.series) s.y = {0.2, 0.5, 0.9};
    std::string svg = toSvg(c);
    QXmlStreamReader xml(QByteArray::fromStdString(svg));
    int glyphs = 0, paths = 0;
    while (!xml.atEnd()) {
      xml.readNext();
      // Cairo draws text as glyph outlines: one <use> of a glyph symbol per character.
      if (xml.isStartElement() && xml.name() == u"use") ++glyphs;
      if (xml.isStartElement() && xml.name() == u"path") ++paths;
    }
    QVERIFY2(!xml.hasError(), qPrintable(xml.errorString()));
    size_t chars = 0;
    for (const std::string& s :
         {c.title, c.xLabel, c.yLabel, std::string("ab<&>c"), std::string("method 0method 1method 2")})
      for (char ch : s) chars += ch != ' ';
    qInfo() << "SVG glyphs" << glyphs << "label characters" << chars << "paths" << paths;
    QVERIFY(size_t(glyphs) >= chars);
    QVERIFY(paths >= 9);  // at least one bar per series and category
  }

  void logScaleAndErrors() {
    Chart c = lineChart();
    c.logY = true;
    QVERIFY(toSvg(c).find("<svg") != std::string::npos);
    Chart empty;
    QVERIFY_THROWS_EXCEPTION(ParameterError, toSvg(empty));
    auto dir = test::freshDir("chart_err");
    QVERIFY_THROWS_EXCEPTION(ParameterError, writePng(lineChart(), dir / "x.png", 5));
    QVERIFY(!std::filesystem::exists(dir / "x.png"));
  }
};

QTEST_GUILESS_MAIN(TestChart)
#include "test_chart.moc"
