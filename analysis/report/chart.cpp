#include "analysis/report/chart.h"

#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/io/fsutil.h"

namespace moefy::report {

namespace fs = std::filesystem;

namespace {

struct Color {
  double r, g, b;
};
using Pt = std::pair<double, double>;

// Viridis samples chosen for distinct luminance (greyscale-safe), dark to light.
const Color kPalette[] = {{0.267, 0.005, 0.329}, {0.128, 0.567, 0.551}, {0.850, 0.550, 0.100},
                          {0.231, 0.322, 0.545}, {0.369, 0.788, 0.384}, {0.553, 0.110, 0.494},
                          {0.741, 0.875, 0.149}, {0.163, 0.471, 0.558}};
const std::vector<double> kDashes[] = {{}, {6, 3}, {2, 2}, {8, 3, 2, 3}, {}, {4, 4}, {1, 3}, {10, 4}};
const Color kBlack{0, 0, 0}, kLight{0.90, 0.90, 0.90}, kWhite{1, 1, 1};

// ---- painter (Cairo) ------------------------------------------------------------
// One painter for every format: Cairo draws the same path and text calls onto
// an image surface (PNG, anti-aliased), a PDF surface (vector, the font
// embedded as a subset with a ToUnicode map, so text is selectable and
// searchable) or an SVG surface. Text goes through Cairo's toy font API, which
// resolves the family through fontconfig.
enum Anchor { Left, Center, Right };

const char* const kFontFamily = "DejaVu Sans";

struct CairoDeleter {
  void operator()(cairo_t* c) const { cairo_destroy(c); }
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
};
using CairoPtr = std::unique_ptr<cairo_t, CairoDeleter>;
using SurfacePtr = std::unique_ptr<cairo_surface_t, CairoDeleter>;

/// Appends Cairo's output stream to a std::string (PDF, SVG, PNG bytes).
cairo_status_t appendToString(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

void check(cairo_status_t st, const std::string& what) {
  if (st != CAIRO_STATUS_SUCCESS) throw IoError(what + ": " + cairo_status_to_string(st));
}

class Painter {
 public:
  /// Draws on `surface` in points; `scale` maps points to surface units.
  Painter(cairo_surface_t* surface, double scale) : cr_(cairo_create(surface)) {
    check(cairo_status(cr_.get()), "chart: cannot draw");
    // White under everything: an image's last pixel column/row may lie beyond
    // the chart's fractional size in points.
    cairo_set_source_rgb(cr_.get(), 1, 1, 1);
    cairo_paint(cr_.get());
    cairo_scale(cr_.get(), scale, scale);
    cairo_select_font_face(cr_.get(), kFontFamily, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_line_join(cr_.get(), CAIRO_LINE_JOIN_ROUND);
  }
  void polyline(const std::vector<Pt>& pts, Color c, double w, const std::vector<double>& dash) {
    if (pts.size() < 2) return;
    cairo_t* cr = cr_.get();
    cairo_new_path(cr);
    cairo_move_to(cr, pts[0].first, pts[0].second);
    for (size_t i = 1; i < pts.size(); ++i) cairo_line_to(cr, pts[i].first, pts[i].second);
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
    cairo_set_line_width(cr, w);
    cairo_set_dash(cr, dash.empty() ? nullptr : dash.data(), static_cast<int>(dash.size()), 0);
    cairo_stroke(cr);
  }
  void polygon(const std::vector<Pt>& pts, Color fill) {
    if (pts.empty()) return;
    cairo_t* cr = cr_.get();
    cairo_new_path(cr);
    cairo_move_to(cr, pts[0].first, pts[0].second);
    for (size_t i = 1; i < pts.size(); ++i) cairo_line_to(cr, pts[i].first, pts[i].second);
    cairo_close_path(cr);
    cairo_set_source_rgb(cr, fill.r, fill.g, fill.b);
    cairo_fill(cr);
  }
  /// Advance width of `s` at `size` points.
  double textWidth(const std::string& s, double size) {
    cairo_set_font_size(cr_.get(), size);
    cairo_text_extents_t ext;
    cairo_text_extents(cr_.get(), s.c_str(), &ext);
    return ext.x_advance;
  }
  /// Text with its baseline at y, anchored at x; vertical: rotated 90 degrees
  /// counter-clockwise about (x, y).
  void text(double x, double y, const std::string& s, double size, Anchor a, bool vertical, Color c) {
    cairo_t* cr = cr_.get();
    const double w = textWidth(s, size);
    const double shift = a == Left ? 0 : a == Center ? w / 2 : w;
    cairo_save(cr);
    cairo_translate(cr, x, y);
    if (vertical) cairo_rotate(cr, -M_PI / 2);
    cairo_move_to(cr, -shift, 0);
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
    cairo_show_text(cr, s.c_str());
    cairo_restore(cr);
  }
  void line(double x1, double y1, double x2, double y2, Color c, double w, const std::vector<double>& dash = {}) {
    polyline({{x1, y1}, {x2, y2}}, c, w, dash);
  }
  void rect(double x, double y, double w, double h, Color fill) { polygon({{x, y}, {x + w, y}, {x + w, y + h}, {x, y + h}}, fill); }
  void frame(double x, double y, double w, double h, Color c, double lw) {
    polyline({{x, y}, {x + w, y}, {x + w, y + h}, {x, y + h}, {x, y}}, c, lw, {});
  }
  void marker(double x, double y, int shape, Color c, double r) {
    std::vector<Pt> p;
    switch (shape % 4) {
      case 0: for (int i = 0; i < 12; ++i) p.push_back({x + r * std::cos(i * M_PI / 6), y + r * std::sin(i * M_PI / 6)}); break;
      case 1: p = {{x - r, y - r}, {x + r, y - r}, {x + r, y + r}, {x - r, y + r}}; break;
      case 2: p = {{x, y - 1.2 * r}, {x + 1.1 * r, y + 0.8 * r}, {x - 1.1 * r, y + 0.8 * r}}; break;
      default: p = {{x, y - 1.3 * r}, {x + 1.3 * r, y}, {x, y + 1.3 * r}, {x - 1.3 * r, y}}; break;
    }
    polygon(p, c);
  }
  cairo_t* get() const { return cr_.get(); }

 private:
  CairoPtr cr_;
};

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

// ---- layout -------------------------------------------------------------------
std::vector<double> niceTicks(double lo, double hi, int target = 5) {
  if (!(hi > lo)) hi = lo + 1;
  double raw = (hi - lo) / target, mag = std::pow(10, std::floor(std::log10(raw))), r = raw / mag;
  double step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

std::string tickLabel(double v) {
  char b[32];
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) std::snprintf(b, sizeof b, "%.0e", v);
  else std::snprintf(b, sizeof b, "%g", v);
  return b;
}

void render(const Chart& c, Painter& p) {
  if (c.series.empty()) throw ParameterError("chart '" + c.title + "': no data series");
  const double fs = 9.5, W = c.width, H = c.height;
  p.rect(0, 0, W, H, kWhite);
  // Data range.
  double xlo = 1e300, xhi = -1e300, ylo = 1e300, yhi = -1e300;
  for (const auto& s : c.series) {
    for (double v : s.y) if (std::isfinite(v) && (!c.logY || v > 0)) ylo = std::min(ylo, v), yhi = std::max(yhi, v);
    for (double v : s.x) if (std::isfinite(v)) xlo = std::min(xlo, v), xhi = std::max(xhi, v);
  }
  if (ylo > yhi) ylo = 0, yhi = 1;
  if (c.kind == Chart::Kind::Bar && !c.logY) ylo = std::min(0.0, ylo);
  if (c.yMin) ylo = *c.yMin;
  if (c.yMax) yhi = *c.yMax;
  if (c.kind == Chart::Kind::Bar) xlo = 0, xhi = static_cast<double>(c.categories.size());
  if (xlo > xhi) xlo = 0, xhi = 1;
  if (xhi == xlo) xhi = xlo + 1;
  std::vector<double> yt;
  if (c.logY) {
    ylo = std::pow(10, std::floor(std::log10(ylo))), yhi = std::pow(10, std::ceil(std::log10(yhi)));
    if (yhi <= ylo) yhi = ylo * 10;
    for (double v = ylo; v <= yhi * 1.0001; v *= 10) yt.push_back(v);
  } else {
    if (yhi == ylo) yhi = ylo + 1;
    yt = niceTicks(ylo, yhi);
    double step = yt.size() > 1 ? yt[1] - yt[0] : 1;
    // Snap the range outwards to whole ticks so no data sits on the frame.
    if (!c.yMin && yt.front() > ylo + 1e-12) yt.insert(yt.begin(), yt.front() - step);
    if (!c.yMax && yt.back() < yhi - 1e-12) yt.push_back(yt.back() + step);
    if (!c.yMin) ylo = yt.front();
    if (!c.yMax) yhi = yt.back();
  }
  // Legend at the right, outside the plot.
  double legendW = 0;
  for (const auto& s : c.series) legendW = std::max(legendW, p.textWidth(s.name, fs) + 34);
  double yTickW = 0;
  for (double v : yt) yTickW = std::max(yTickW, p.textWidth(tickLabel(v), fs));
  const double L = 18 + yTickW + 8, T = c.title.empty() ? 12 : 28, R = W - legendW - 10, B = H - 42;
  auto X = [&](double v) { return L + (v - xlo) / (xhi - xlo) * (R - L); };
  auto Y = [&](double v) {
    if (c.logY) return B - (std::log10(std::max(v, ylo)) - std::log10(ylo)) / (std::log10(yhi) - std::log10(ylo)) * (B - T);
    return B - (v - ylo) / (yhi - ylo) * (B - T);
  };
  // Grid and axes.
  for (double v : yt) {
    p.line(L, Y(v), R, Y(v), kLight, 0.5);
    p.text(L - 5, Y(v) + fs * 0.35, tickLabel(v), fs, Right, false, kBlack);
  }
  if (c.kind == Chart::Kind::Line) {
    for (double v : niceTicks(xlo, xhi)) {
      if (v < xlo - 1e-9 || v > xhi + 1e-9) continue;
      p.line(X(v), B, X(v), B + 4, kBlack, 0.7);
      p.text(X(v), B + 6 + fs, tickLabel(v), fs, Center, false, kBlack);
    }
  } else {
    for (size_t i = 0; i < c.categories.size(); ++i)
      p.text(X(i + 0.5), B + 6 + fs, c.categories[i], fs, Center, false, kBlack);
  }
  p.frame(L, T, R - L, B - T, kBlack, 0.8);
  if (!c.title.empty()) p.text((L + R) / 2, 17, c.title, fs + 2, Center, false, kBlack);
  p.text((L + R) / 2, H - 8, c.xLabel, fs + 0.5, Center, false, kBlack);
  p.text(12, (T + B) / 2, c.yLabel, fs + 0.5, Center, true, kBlack);
  // Data.
  const size_t n = c.series.size();
  for (size_t si = 0; si < n; ++si) {
    const auto& s = c.series[si];
    Color col = kPalette[si % 8];
    if (c.kind == Chart::Kind::Line) {
      std::vector<Pt> pts;
      for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
        if (std::isfinite(s.y[i]) && (!c.logY || s.y[i] > 0)) pts.push_back({X(s.x[i]), Y(s.y[i])});
      if (pts.size() > 1) p.polyline(pts, col, 1.6, kDashes[si % 8]);
      if (pts.size() <= 40)
        for (auto& q : pts) p.marker(q.first, q.second, static_cast<int>(si), col, 2.6);
    } else {
      double groupW = (X(1) - X(0)) * 0.8, barW = groupW / n;
      for (size_t i = 0; i < std::min(s.y.size(), c.categories.size()); ++i) {
        double x0 = X(static_cast<double>(i)) + (X(1) - X(0)) * 0.1 + si * barW;
        double base = c.logY ? ylo : std::max(ylo, 0.0);
        double y0 = Y(s.y[i]), y1 = Y(base);
        p.rect(x0, std::min(y0, y1), barW * 0.92, std::abs(y1 - y0), col);
        p.frame(x0, std::min(y0, y1), barW * 0.92, std::abs(y1 - y0), kBlack, 0.4);
      }
    }
  }
  // Legend.
  double ly = T + 6;
  for (size_t si = 0; si < n; ++si) {
    Color col = kPalette[si % 8];
    double lx = R + 10;
    if (c.kind == Chart::Kind::Line) {
      p.line(lx, ly + 4, lx + 22, ly + 4, col, 1.6, kDashes[si % 8]);
      p.marker(lx + 11, ly + 4, static_cast<int>(si), col, 2.6);
    } else {
      p.rect(lx + 4, ly - 1, 12, 10, col);
      p.frame(lx + 4, ly - 1, 12, 10, kBlack, 0.4);
    }
    p.text(lx + 27, ly + 7.5, c.series[si].name, fs, Left, false, kBlack);
    ly += fs + 7;
  }
}

/// Draws `c` onto a fresh surface made by `make(width, height)` (in the
/// surface's units: points for PDF/SVG, pixels for images) and finishes it.
template <typename Make>
SurfacePtr drawOn(const Chart& c, double scale, Make make) {
  if (c.series.empty()) throw ParameterError("chart '" + c.title + "': no data series");
  SurfacePtr surface(make(c.width * scale, c.height * scale));
  check(cairo_surface_status(surface.get()), "chart '" + c.title + "'");
  {
    Painter p(surface.get(), scale);
    render(c, p);
    check(cairo_status(p.get()), "chart '" + c.title + "'");
  }
  cairo_surface_flush(surface.get());
  return surface;
}

std::string toPdfBytes(const Chart& c) {
  std::string bytes;
  SurfacePtr s = drawOn(c, 1.0, [&](double w, double h) {
    cairo_surface_t* pdf = cairo_pdf_surface_create_for_stream(appendToString, &bytes, w, h);
    cairo_pdf_surface_set_metadata(pdf, CAIRO_PDF_METADATA_TITLE, c.title.c_str());
    cairo_pdf_surface_set_metadata(pdf, CAIRO_PDF_METADATA_CREATOR, "MoEfy " MOEFY_VERSION);
    return pdf;
  });
  cairo_surface_finish(s.get());
  check(cairo_surface_status(s.get()), "chart '" + c.title + "': PDF");
  return bytes;
}

}  // namespace

std::string toSvg(const Chart& c) {
  std::string bytes;
  SurfacePtr s = drawOn(c, 1.0, [&](double w, double h) {
    cairo_surface_t* svg = cairo_svg_surface_create_for_stream(appendToString, &bytes, w, h);
    cairo_svg_surface_restrict_to_version(svg, CAIRO_SVG_VERSION_1_1);
    return svg;
  });
  cairo_surface_finish(s.get());
  check(cairo_surface_status(s.get()), "chart '" + c.title + "': SVG");
  return bytes;
}

void writeSvg(const Chart& c, const fs::path& path) { writeFileAtomic(path, toSvg(c)); }

void writePdf(const Chart& c, const fs::path& path) { writeFileAtomic(path, toPdfBytes(c)); }

void writePng(const Chart& c, const fs::path& path, double dpi) {
  if (!(dpi >= 36 && dpi <= 1200)) throw ParameterError("--dpi must be between 36 and 1200");
  const double scale = dpi / 72.0;
  SurfacePtr s = drawOn(c, scale, [&](double w, double h) {
    return cairo_image_surface_create(CAIRO_FORMAT_RGB24, static_cast<int>(std::ceil(w)),
                                      static_cast<int>(std::ceil(h)));
  });
  std::string bytes;
  check(cairo_surface_write_to_png_stream(s.get(), appendToString, &bytes), path.string() + ": PNG encoding failed");
  writeFileAtomic(path, bytes);
}

}  // namespace moefy::report
