#pragma once
// Publication charts without Qt, for the headless CLI (moefy demo, reports).
// One Chart description renders to SVG and PDF (vector, DejaVu Sans embedded
// in the PDF) and PNG (anti-aliased raster at a chosen DPI). The palette is
// viridis-derived with distinct markers and dash patterns, so series stay
// distinguishable in greyscale print.
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

/// SVG document text.
std::string toSvg(const Chart& chart);
/// Writers are atomic and throw IoError/ParameterError naming the path.
void writeSvg(const Chart& chart, const std::filesystem::path& path);
void writePdf(const Chart& chart, const std::filesystem::path& path);
void writePng(const Chart& chart, const std::filesystem::path& path, double dpi = 150);

/// The TrueType font used for PNG text and embedded in PDFs.
std::filesystem::path chartFontPath();

}  // namespace moefy::report
