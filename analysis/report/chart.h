#pragma once
// Publication charts without Qt, for the headless CLI (moefy demo, reports).
// One Chart description renders through Cairo to PDF (vector; DejaVu Sans
// embedded as a subset with a ToUnicode map, so the text is selectable), SVG
// (vector; glyphs as outlines, so it looks the same without the font) and PNG
// (anti-aliased raster at a chosen DPI). Text is UTF-8; the font is found
// through fontconfig. The palette is viridis-derived with distinct markers and
// dash patterns, so series stay distinguishable in greyscale print.
// Thread-safety: every call builds its own Cairo surface; calls on different
// charts may run concurrently.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moefy::report {

struct Series {
  std::string name;
  std::vector<double> x;  ///< line charts: x values; bar charts: ignored
  std::vector<double> y;  ///< one value per x (line) or per category (bar)
};

struct Chart {
  enum class Kind { Line, Bar };
  Kind kind = Kind::Line;
  std::string title;
  std::string xLabel;
  std::string yLabel;
  std::vector<Series> series;
  std::vector<std::string> categories;  ///< bar charts: one label per group
  bool logY = false;
  std::optional<double> yMin, yMax;     ///< default: from the data (0-based for bars)
  double width = 460;                   ///< points (1/72 inch)
  double height = 300;
};

/// SVG document text (chart.width x chart.height points). Throws
/// ParameterError for a chart without series, IoError if Cairo fails.
std::string toSvg(const Chart& chart);
/// Writers are atomic and throw IoError/ParameterError naming the path.
void writeSvg(const Chart& chart, const std::filesystem::path& path);
/// One page of chart.width x chart.height points.
void writePdf(const Chart& chart, const std::filesystem::path& path);
/// ceil(width * dpi / 72) x ceil(height * dpi / 72) pixels, RGB; dpi in [36, 1200]
/// (ParameterError otherwise).
void writePng(const Chart& chart, const std::filesystem::path& path, double dpi = 150);

}  // namespace moefy::report
