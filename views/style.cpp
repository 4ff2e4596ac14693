#include "views/style.h"

#include "views/qcp.h"

#include <algorithm>
#include <cmath>

namespace moefy::views {

namespace {
// Key points of matplotlib's viridis and cividis (sampled at 9 stops); linear
// interpolation between them is visually indistinguishable at plot sizes.
const double kViridis[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},   {44, 113, 142}, {33, 144, 141},
                               {39, 173, 129}, {92, 200, 99},  {170, 220, 50},  {253, 231, 37}};
const double kCividis[9][3] = {{0, 34, 78},     {18, 53, 112},  {59, 73, 108},   {87, 93, 109},  {112, 113, 115},
                               {138, 134, 120}, {165, 156, 116}, {195, 179, 105}, {254, 232, 56}};
}  // namespace

QFont figureFont(int pointSize) {
  QFont f("DejaVu Sans");
  f.setStyleHint(QFont::SansSerif);
  f.setPointSize(pointSize);
  return f;
}

QColor mapColor(ColorMap map, double t) {
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0);
  if (map == ColorMap::Greys) {
    int v = static_cast<int>(255 - t * 225);
    return QColor(v, v, v);
  }
  const double(*k)[3] = map == ColorMap::Viridis ? kViridis : kCividis;
  double x = t * 8.0;
  int i = std::min(7, static_cast<int>(x));
  double u = x - i;
  return QColor::fromRgbF(static_cast<float>((k[i][0] * (1 - u) + k[i + 1][0] * u) / 255.0),
                          static_cast<float>((k[i][1] * (1 - u) + k[i + 1][1] * u) / 255.0),
                          static_cast<float>((k[i][2] * (1 - u) + k[i + 1][2] * u) / 255.0));
}

QCPColorGradient gradient(ColorMap map) {
  QCPColorGradient g;
  g.clearColorStops();
  for (int i = 0; i <= 16; ++i) g.setColorStopAt(i / 16.0, mapColor(map, i / 16.0));
  g.setColorInterpolation(QCPColorGradient::ciRGB);
  g.setLevelCount(256);
  return g;
}

QColor activationShade(double value, double maxValue) {
  const double t = maxValue > 0 && std::isfinite(value) ? std::clamp(value / maxValue, 0.0, 1.0) : 0.0;
  auto mix = [t](int to) { return static_cast<int>(std::lround(255 + (to - 255) * t)); };
  return QColor(mix(0xfd), mix(0x8d), mix(0x3c));
}

QColor seriesColor(int i) {
  static const QColor okabeIto[] = {QColor(0, 114, 178), QColor(230, 159, 0), QColor(0, 158, 115),
                                    QColor(204, 121, 167), QColor(86, 180, 233), QColor(213, 94, 0),
                                    QColor(240, 228, 66), QColor(0, 0, 0)};
  return okabeIto[((i % 8) + 8) % 8];
}

Qt::PenStyle seriesDash(int i) {
  static const Qt::PenStyle s[] = {Qt::SolidLine, Qt::DashLine, Qt::DotLine, Qt::DashDotLine, Qt::DashDotDotLine};
  return s[((i % 5) + 5) % 5];
}

QColor expertColor(int e, int E) {
  // Golden-ratio hue steps with alternating lightness, pastel for text backgrounds.
  double h = std::fmod(e * 0.61803398875, 1.0);
  double l = (e % 2) ? 0.78 : 0.88;
  (void)E;
  return QColor::fromHslF(static_cast<float>(h), 0.65f, static_cast<float>(l));
}

QString colorMapName(ColorMap m) {
  switch (m) {
    case ColorMap::Viridis: return "Viridis";
    case ColorMap::Cividis: return "Cividis";
    case ColorMap::Greys: return "Greys";
  }
  return "Viridis";
}

void applyPublicationStyle(QCustomPlot* plot) {
  QFont tick = figureFont(9), label = figureFont(10);
  for (QCPAxisRect* rect : plot->axisRects()) {
    for (QCPAxis* ax : rect->axes()) {
      ax->setTickLabelFont(tick);
      ax->setLabelFont(label);
      ax->setBasePen(QPen(Qt::black, 1));
      ax->setTickPen(QPen(Qt::black, 1));
      ax->setSubTickPen(QPen(Qt::black, 1));
      ax->grid()->setPen(QPen(QColor(215, 215, 215), 1, Qt::DotLine));
      ax->grid()->setSubGridVisible(false);
    }
  }
  if (plot->legend) {
    plot->legend->setFont(figureFont(9));
    plot->legend->setBorderPen(QPen(QColor(160, 160, 160)));
    plot->legend->setBrush(QColor(255, 255, 255, 230));
  }
  plot->setBackground(Qt::white);
}

void addTitle(QCustomPlot* p, const QString& title) {
  p->plotLayout()->insertRow(0);
  auto* t = new QCPTextElement(p, title, QFont(figureFont(11).family(), 11, QFont::Bold));
  p->plotLayout()->addElement(0, 0, t);
}

QCPTextElement* addDataCaption(QCustomPlot* p) {
  p->plotLayout()->insertRow(1);
  auto* caption = new QCPTextElement(p, QString(), figureFont(8));
  caption->setTextColor(QColor(70, 70, 70));
  p->plotLayout()->addElement(1, 0, caption);
  return caption;
}

QString wrapToWidth(const QString& text, const QFont& font, int width) {
  const QFontMetrics fm(font);
  QStringList lines;
  QString line;
  for (const QString& word : text.split(' ', Qt::SkipEmptyParts)) {
    const QString candidate = line.isEmpty() ? word : line + ' ' + word;
    if (!line.isEmpty() && fm.horizontalAdvance(candidate) > width) {
      lines << line;
      line = word;
    } else {
      line = candidate;
    }
  }
  if (!line.isEmpty()) lines << line;
  return lines.join('\n');
}

QCPItemText* addPlotNote(QCustomPlot* plot, const QString& text, int pointSize) {
  auto* note = new QCPItemText(plot);
  note->position->setType(QCPItemPosition::ptAxisRectRatio);
  note->position->setCoords(0.5, 0.5);
  note->setPositionAlignment(Qt::AlignCenter);
  note->setTextAlignment(Qt::AlignCenter);
  note->setFont(figureFont(pointSize));
  note->setColor(QColor(80, 80, 80));
  note->setText(text);
  return note;
}

QSharedPointer<QCPAxisTickerText> logTicker(const QCPRange& range, int pixels, int labelHeight) {
  QSharedPointer<QCPAxisTickerText> t(new QCPAxisTickerText);
  if (!(range.lower > 0 && range.upper > range.lower) || pixels <= 0) return t;
  const double decades = std::log10(range.upper / range.lower), pxPerDecade = pixels / decades;
  const double need = labelHeight + 4;
  // Denser sets first, for ranges under a decade (a perplexity axis of 275-430).
  const std::vector<std::vector<double>> sets{{1, 1.5, 2, 3, 4, 5, 6, 8}, {1, 2, 3, 5}, {1, 2, 5}, {1, 3}, {1}};
  std::vector<double> mantissas{1};
  int decadeStep = 1;
  for (const auto& m : sets) {
    // The closest pair of a set is its smallest log10 ratio between neighbours (wrapping to the next decade).
    double gap = 1;
    for (size_t i = 0; i < m.size(); ++i)
      gap = std::min(gap, std::log10((i + 1 < m.size() ? m[i + 1] : 10 * m[0]) / m[i]));
    if (gap * pxPerDecade >= need) {
      mantissas = m;
      break;
    }
  }
  if (mantissas.size() == 1) decadeStep = std::max(1, int(std::ceil(need / std::max(1e-9, pxPerDecade))));
  for (int k = int(std::floor(std::log10(range.lower))) - 1; k <= int(std::ceil(std::log10(range.upper))); ++k) {
    if (((k % decadeStep) + decadeStep) % decadeStep != 0) continue;
    for (double m : mantissas) {
      const double v = m * std::pow(10.0, k);
      if (v >= range.lower && v <= range.upper) t->addTick(v, QString::number(v, 'g', 6));  // 1500, not 1.5e+03
    }
  }
  return t;
}

std::pair<QCPColorMap*, QCPColorScale*> addHeatmap(QCustomPlot* plot) {
  auto* map = new QCPColorMap(plot->xAxis, plot->yAxis);
  map->setInterpolate(false);
  map->setTightBoundary(false);  // whole first and last cells
  auto* scale = new QCPColorScale(plot);
  plot->plotLayout()->addElement(0, 1, scale);
  scale->setType(QCPAxis::atRight);
  scale->setBarWidth(8);
  map->setColorScale(scale);
  auto* group = new QCPMarginGroup(plot);
  plot->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, group);
  scale->setMarginGroup(QCP::msBottom | QCP::msTop, group);
  plot->yAxis->setRangeReversed(true);
  return {map, scale};
}

}  // namespace moefy::views
