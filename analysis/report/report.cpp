#include "analysis/report/report.h"

#include "analysis/io/fsutil.h"

namespace moefy::report {

namespace fs = std::filesystem;

std::string htmlEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

Report::Report(fs::path dir, std::string title) : dir_(std::move(dir)), title_(std::move(title)) {
  md_ = "# " + title_ + "\n\n";
  html_ = "<h1>" + htmlEscape(title_) + "</h1>\n";
}

void Report::heading(const std::string& text, int level) {
  md_ += std::string(static_cast<size_t>(level), '#') + " " + text + "\n\n";
  html_ += "<h" + std::to_string(level) + ">" + htmlEscape(text) + "</h" + std::to_string(level) + ">\n";
}

void Report::paragraph(const std::string& text) {
  md_ += text + "\n\n";
  html_ += "<p>" + htmlEscape(text) + "</p>\n";
}

void Report::bullets(const std::vector<std::string>& items) {
  html_ += "<ul>\n";
  for (const auto& i : items) {
    md_ += "- " + i + "\n";
    html_ += "<li>" + htmlEscape(i) + "</li>\n";
  }
  md_ += "\n";
  html_ += "</ul>\n";
}

void Report::table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  auto mdRow = [](const std::vector<std::string>& r) {
    std::string s = "|";
    for (const auto& c : r) s += " " + c + " |";
    return s + "\n";
  };
  md_ += mdRow(header);
  md_ += "|";
  for (size_t i = 0; i < header.size(); ++i) md_ += i ? " ---: |" : " --- |";
  md_ += "\n";
  html_ += "<table>\n<tr>";
  for (const auto& h : header) html_ += "<th>" + htmlEscape(h) + "</th>";
  html_ += "</tr>\n";
  for (const auto& r : rows) {
    md_ += mdRow(r);
    html_ += "<tr>";
    for (size_t i = 0; i < r.size(); ++i) html_ += std::string(i ? "<td class=\"n\">" : "<td>") + htmlEscape(r[i]) + "</td>";
    html_ += "</tr>\n";
  }
  md_ += "\n";
  html_ += "</table>\n";
}

void Report::figure(const std::string& name, const Chart& chart, const std::string& caption, double dpi) {
  fs::create_directories(dir_ / "figures");
  writePng(chart, dir_ / "figures" / (name + ".png"), dpi);
  writePdf(chart, dir_ / "figures" / (name + ".pdf"));
  std::string svg = toSvg(chart);
  writeFileAtomic(dir_ / "figures" / (name + ".svg"), svg);
  md_ += "![" + caption + "](figures/" + name + ".png)\n\n*" + caption + "* ([PDF](figures/" + name + ".pdf))\n\n";
  // Inline SVG keeps report.html self-contained; drop the XML prolog.
  auto start = svg.find("<svg");
  html_ += "<figure>" + svg.substr(start) + "<figcaption>" + htmlEscape(caption) + " (<a href=\"figures/" + name +
           ".pdf\">PDF</a>, <a href=\"figures/" + name + ".png\">PNG</a>)</figcaption></figure>\n";
}

void Report::write() const {
  writeFileAtomic(dir_ / "report.md", md_);
  std::string page =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + htmlEscape(title_) +
      "</title>\n<style>body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;"
      "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
      "padding:3px 8px}td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#eee}"
      "figure{margin:1.5em 0}figcaption{font-size:90%;color:#444}</style></head><body>\n" +
      html_ + "</body></html>\n";
  writeFileAtomic(dir_ / "report.html", page);
}

}  // namespace moefy::report
