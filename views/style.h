#pragma once
// Publication style shared by every plot: fonts, sizes, pens, and colour maps
// that survive greyscale printing (viridis, cividis: monotone in lightness).
#include <QColor>
#include <QFont>
#include <QSharedPointer>
#include <QString>
#include <utility>
#include <vector>

class QCustomPlot;
class QCPAxisTickerText;
class QCPColorMap;
class QCPColorScale;
class QCPRange;
class QCPColorGradient;
class QCPAxis;
class QCPTextElement;
class QCPItemText;
class QFont;

namespace moefy::views {

enum class ColorMap { Viridis, Cividis, Greys };

QFont figureFont(int pointSize = 10);
/// Margin in pixels around the content of a view that is not a plot (the
/// Model table, the Start page).
constexpr int kViewMargin = 6;
/// Applies fonts, tick label sizes, grid pens and margins to a plot.
void applyPublicationStyle(QCustomPlot* plot);
/// A QCPColorGradient for a colour map (continuous, 256 stops).
QCPColorGradient gradient(ColorMap map);
/// Colour of value t in [0,1] on a colour map.
QColor mapColor(ColorMap map, double t);
/// Okabe-Ito qualitative palette (colour-blind safe), cycled; series i also
/// gets a distinct dash pattern/marker so lines stay apart in greyscale.
QColor seriesColor(int i);
Qt::PenStyle seriesDash(int i);
/// Distinct, lightness-varying colour for expert e of E (for text colouring).
QColor expertColor(int e, int E);
/// Background of a token shaded by a neuron's activation (the neuron page's
/// contexts, the Corpus view's activation colouring): white at value <= 0
/// (or a non-finite value), orange (#fd8d3c, ColorBrewer Oranges) at
/// value >= maxValue, linear in RGB between; white for every value when
/// maxValue <= 0.
QColor activationShade(double value, double maxValue);
/// Inserts a bold title row above the plot (row 0).
void addTitle(QCustomPlot* plot, const QString& title);
/// A "data: ..." caption row under the plot's title (row 1), empty until set.
QCPTextElement* addDataCaption(QCustomPlot* plot);
/// A grey, centred note over the plot's axis rect (e.g. "no timings in this
/// evaluation"): a QCPItemText owned by the plot, removed by clearItems().
QCPItemText* addPlotNote(QCustomPlot* plot, const QString& text, int pointSize = 10);
/// `text` broken into lines at spaces so that each line is at most `width`
/// pixels wide in `font` (a single word wider than that keeps its line):
/// QCPTextElement does not wrap, and a wider caption is cut at the plot's edges.
QString wrapToWidth(const QString& text, const QFont& font, int width);
/// Ticks for a log axis over `range` (both ends > 0) `pixels` long whose
/// labels are `labelHeight` px tall: the densest of the mantissa sets
/// 1-1.5-2-3-4-5-6-8, 1-2-3-5, 1-2-5, 1-3 and 1 per decade (then every n-th
/// decade) whose neighbouring labels keep `labelHeight` + 4 px apart.
/// QCPAxisTickerLog falls back to linear steps under 1.6 decades, which
/// crowded labels (Experts usage) or left a sub-decade range with one tick or
/// none inside (the Front view's perplexity). Recompute after a resize.
QSharedPointer<QCPAxisTickerText> logTicker(const QCPRange& range, int pixels, int labelHeight);
/// A heatmap on the plot's axes: a QCPColorMap without interpolation and a
/// colour scale at its right (bar 8 px) sharing the axis rect's top and bottom
/// margins; the y axis is reversed (row 0 at the top, as in a table). The
/// first and last cells are as wide as the others (no tight boundary): set the
/// data range to the cell centres, 0 .. n - 1, and the axes to -0.5 .. n - 0.5,
/// so that cell (c, r) lies under the tick at (c, r). GUI thread only.
std::pair<QCPColorMap*, QCPColorScale*> addHeatmap(QCustomPlot* plot);
/// "Viridis", "Cividis", "Greys".
QString colorMapName(ColorMap m);

}  // namespace moefy::views
