#pragma once
// A small report builder: the same content becomes report.md (figures as
// linked PNGs) and a self-contained report.html (figures inline as SVG).
// Figures are also written as PNG and PDF next to the report.
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/report/chart.h"

namespace moefy::report {

class Report {
 public:
  /// `dir` must exist; figures go to dir/figures/.
  Report(std::filesystem::path dir, std::string title);

  void heading(const std::string& text, int level = 2);
  /// Plain text; a blank line separates paragraphs. No markup interpretation.
  void paragraph(const std::string& text);
  void bullets(const std::vector<std::string>& items);
  /// A table with a header row; cells are plain text.
  void table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
  /// Writes figures/NAME.{png,pdf,svg} and places the figure with a caption.
  void figure(const std::string& name, const Chart& chart, const std::string& caption, double dpi = 150);

  /// Writes report.md and report.html atomically.
  void write() const;

 private:
  std::filesystem::path dir_;
  std::string title_;
  std::string md_;
  std::string html_;
};

/// HTML-escapes text.
std::string htmlEscape(const std::string& text);

}  // namespace moefy::report
