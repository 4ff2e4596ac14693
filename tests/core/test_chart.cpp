// Headless charts: PNG, PDF and SVG outputs are valid files with the expected
// structure, and bad parameters are clear errors.
#include <QXmlStreamReader>
#include <QtTest>

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

  void pdfIsWellFormedWithEmbeddedFont() {
    auto dir = test::freshDir("chart_pdf");
    writePdf(lineChart(), dir / "a.pdf");
    std::string pdf = readFile(dir / "a.pdf");
    QVERIFY(pdf.rfind("%PDF-1.4", 0) == 0);
    QVERIFY(pdf.find("/FontFile2") != std::string::npos);
    QVERIFY(pdf.size() > 10000);  // the font is really embedded
    // startxref points at the xref table, and every object offset is right.
    auto sx = pdf.rfind("startxref\n");
    QVERIFY(sx != std::string::npos);
    size_t xref = std::stoul(pdf.substr(sx + 10));
    QCOMPARE(pdf.substr(xref, 4), std::string("xref"));
    for (int obj = 1; obj <= 7; ++obj) {
      size_t entry = xref + pdf.substr(xref).find('\n', 5) + 1 + 20 * obj;
      size_t off = std::stoul(pdf.substr(entry, 10));
      QCOMPARE(pdf.substr(off, std::to_string(obj).size() + 6), std::to_string(obj) + " 0 obj");
    }
    QVERIFY(pdf.find("%%EOF") != std::string::npos);
  }

  void svgParsesAndHasLabels() {
    Chart c = lineChart();
    c.kind = Chart::Kind::Bar;
    c.categories = {"a", "b<&>", "c"};
    for (auto& s : c.series) s.y.resize(3);
    std::string svg = toSvg(c);
    QXmlStreamReader xml(QByteArray::fromStdString(svg));
    int texts = 0, polys = 0;
    while (!xml.atEnd()) {
      xml.readNext();
      if (xml.isStartElement() && xml.name() == u"text") ++texts;
      if (xml.isStartElement() && xml.name() == u"polygon") ++polys;
    }
    QVERIFY2(!xml.hasError(), qPrintable(xml.errorString()));
    QVERIFY(texts >= 3 + 3 + 3);  // categories, legend, labels
    QVERIFY(polys >= 9);          // one bar per series and category
    QVERIFY(svg.find("b&lt;&amp;&gt;") != std::string::npos);
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
