#include "analysis/report/chart.h"

#include <stb/stb_image_write.h>
#include <stb/stb_truetype.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
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
const Color kBlack{0, 0, 0}, kGrey{0.55, 0.55, 0.55}, kLight{0.90, 0.90, 0.90}, kWhite{1, 1, 1};

// ---- font (DejaVu Sans via stb_truetype) ------------------------------------
struct Font {
  std::string bytes;
  stbtt_fontinfo info{};
  int unitsPerEm = 2048;
  int ascent = 0, descent = 0;
};

const Font& font() {
  static std::unique_ptr<Font> f;
  static std::once_flag once;
  std::call_once(once, [] {
    auto p = std::make_unique<Font>();
    p->bytes = readFile(chartFontPath());
    const auto* data = reinterpret_cast<const unsigned char*>(p->bytes.data());
    if (!stbtt_InitFont(&p->info, data, stbtt_GetFontOffsetForIndex(data, 0)))
      throw FormatError(chartFontPath().string() + ": not a usable TrueType font");
    int lineGap = 0;
    stbtt_GetFontVMetrics(&p->info, &p->ascent, &p->descent, &lineGap);
    p->unitsPerEm = static_cast<int>(std::lround(1.0 / stbtt_ScaleForMappingEmToPixels(&p->info, 1.0f)));
    f = std::move(p);
  });
  return *f;
}

// Latin-1 code points of a UTF-8 string ('?' for anything else): the PDF uses
// WinAnsiEncoding, and the charts only need Latin text.
std::vector<int> latin1(const std::string& s) {
  std::vector<int> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int cp = '?';
    size_t n = 1;
    if (c < 0x80) cp = c;
    else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) { cp = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F); n = 2; }
    else if ((c & 0xF0) == 0xE0) n = 3;
    else if ((c & 0xF8) == 0xF0) n = 4;
    if (cp > 255 || (cp >= 127 && cp < 160) || cp < 32) cp = '?';
    out.push_back(cp);
    i += n;
  }
  return out;
}

double advanceEm(int cp) {
  int adv = 0, lsb = 0;
  stbtt_GetCodepointHMetrics(&font().info, cp, &adv, &lsb);
  return static_cast<double>(adv) / font().unitsPerEm;
}

double textWidth(const std::string& s, double size) {
  double w = 0;
  for (int cp : latin1(s)) w += advanceEm(cp);
  return w * size;
}

// ---- painters -----------------------------------------------------------------
enum Anchor { Left, Center, Right };

class Painter {
 public:
  virtual ~Painter() = default;
  virtual void polyline(const std::vector<Pt>& pts, Color c, double w, const std::vector<double>& dash) = 0;
  virtual void polygon(const std::vector<Pt>& pts, Color fill) = 0;
  virtual void text(double x, double y, const std::string& s, double size, Anchor a, bool vertical, Color c) = 0;
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
};

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

std::string xmlEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string rgb(Color c) {
  char b[16];
  std::snprintf(b, sizeof b, "#%02x%02x%02x", int(c.r * 255 + 0.5), int(c.g * 255 + 0.5), int(c.b * 255 + 0.5));
  return b;
}

class SvgPainter : public Painter {
 public:
  std::ostringstream out;
  void polyline(const std::vector<Pt>& pts, Color c, double w, const std::vector<double>& dash) override {
    out << "<polyline fill=\"none\" stroke=\"" << rgb(c) << "\" stroke-width=\"" << num(w) << "\"";
    if (!dash.empty()) {
      out << " stroke-dasharray=\"";
      for (size_t i = 0; i < dash.size(); ++i) out << (i ? "," : "") << num(dash[i]);
      out << "\"";
    }
    out << " stroke-linejoin=\"round\" points=\"";
    for (auto& p : pts) out << num(p.first) << "," << num(p.second) << " ";
    out << "\"/>\n";
  }
  void polygon(const std::vector<Pt>& pts, Color fill) override {
    out << "<polygon fill=\"" << rgb(fill) << "\" points=\"";
    for (auto& p : pts) out << num(p.first) << "," << num(p.second) << " ";
    out << "\"/>\n";
  }
  void text(double x, double y, const std::string& s, double size, Anchor a, bool vertical, Color c) override {
    const char* anchor = a == Left ? "start" : a == Center ? "middle" : "end";
    out << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\" font-size=\"" << num(size) << "\" fill=\"" << rgb(c)
        << "\" text-anchor=\"" << anchor << "\"";
    if (vertical) out << " transform=\"rotate(-90 " << num(x) << " " << num(y) << ")\"";
    out << ">" << xmlEscape(s) << "</text>\n";
  }
};

class PdfPainter : public Painter {
 public:
  explicit PdfPainter(double height) : h_(height) {}
  std::ostringstream out;
  void polyline(const std::vector<Pt>& pts, Color c, double w, const std::vector<double>& dash) override {
    out << num(c.r) << " " << num(c.g) << " " << num(c.b) << " RG " << num(w) << " w 1 j [";
    for (double d : dash) out << num(d) << " ";
    out << "] 0 d\n";
    for (size_t i = 0; i < pts.size(); ++i) out << num(pts[i].first) << " " << num(h_ - pts[i].second) << (i ? " l\n" : " m\n");
    out << "S\n";
  }
  void polygon(const std::vector<Pt>& pts, Color fill) override {
    out << num(fill.r) << " " << num(fill.g) << " " << num(fill.b) << " rg\n";
    for (size_t i = 0; i < pts.size(); ++i) out << num(pts[i].first) << " " << num(h_ - pts[i].second) << (i ? " l\n" : " m\n");
    out << "h f\n";
  }
  void text(double x, double y, const std::string& s, double size, Anchor a, bool vertical, Color c) override {
    double w = textWidth(s, size);
    double shift = a == Left ? 0 : a == Center ? w / 2 : w;
    out << num(c.r) << " " << num(c.g) << " " << num(c.b) << " rg BT /F1 " << num(size) << " Tf ";
    if (vertical) out << "0 1 -1 0 " << num(x) << " " << num(h_ - y - shift) << " Tm (";
    else out << "1 0 0 1 " << num(x - shift) << " " << num(h_ - y) << " Tm (";
    for (int cp : latin1(s)) {
      if (cp == '(' || cp == ')' || cp == '\\') out << '\\' << char(cp);
      else if (cp < 128) out << char(cp);
      else { char b[16]; std::snprintf(b, sizeof b, "\\%03o", unsigned(cp) & 0xFFu); out << b; }
    }
    out << ") Tj ET\n";
  }

 private:
  double h_;
};

// Supersampled raster: draw at `ss` times the output resolution, box-filter down.
class RasterPainter : public Painter {
 public:
  RasterPainter(double wPt, double hPt, double scale, int ss) : k_(scale * ss), ss_(ss) {
    W_ = static_cast<int>(std::ceil(wPt * scale)) * ss;
    H_ = static_cast<int>(std::ceil(hPt * scale)) * ss;
    px_.assign(static_cast<size_t>(W_) * H_ * 3, 1.0f);
  }
  void polyline(const std::vector<Pt>& pts, Color c, double w, const std::vector<double>& dash) override {
    double hw = std::max(w * k_ / 2, 0.6 * ss_);
    // Walk the path, honouring the dash pattern (in points).
    size_t di = 0;
    double left = dash.empty() ? 1e30 : dash[0];
    bool on = true;
    for (size_t i = 1; i < pts.size(); ++i) {
      double x0 = pts[i - 1].first, y0 = pts[i - 1].second, x1 = pts[i].first, y1 = pts[i].second;
      double len = std::hypot(x1 - x0, y1 - y0), pos = 0;
      while (pos < len) {
        double step = std::min(left, len - pos);
        if (on) seg(x0 + (x1 - x0) * pos / len, y0 + (y1 - y0) * pos / len, x0 + (x1 - x0) * (pos + step) / len,
                    y0 + (y1 - y0) * (pos + step) / len, hw, c);
        pos += step;
        left -= step;
        if (left <= 1e-9 && !dash.empty()) {
          di = (di + 1) % dash.size();
          left = dash[di];
          on = !on;
        }
      }
    }
  }
  void polygon(const std::vector<Pt>& pts, Color fill) override {
    std::vector<Pt> p;
    for (auto& q : pts) p.push_back({q.first * k_, q.second * k_});
    fillPoly(p, fill);
  }
  void text(double x, double y, const std::string& s, double size, Anchor a, bool vertical, Color c) override {
    const auto& f = font();
    float scale = stbtt_ScaleForMappingEmToPixels(&f.info, static_cast<float>(size * k_));
    double w = textWidth(s, size) * k_;
    double shift = a == Left ? 0 : a == Center ? w / 2 : w;
    double pen = -shift;
    for (int cp : latin1(s)) {
      int gw = 0, gh = 0, xoff = 0, yoff = 0;
      unsigned char* bmp = stbtt_GetCodepointBitmap(&f.info, scale, scale, cp, &gw, &gh, &xoff, &yoff);
      for (int j = 0; j < gh; ++j)
        for (int i = 0; i < gw; ++i) {
          double alpha = bmp[j * gw + i] / 255.0;
          if (alpha <= 0) continue;
          double u = pen + xoff + i, v = yoff + j;  // glyph space, baseline at v=0
          double px = vertical ? x * k_ + v : x * k_ + u;
          double py = vertical ? y * k_ - u : y * k_ + v;
          blend(static_cast<int>(px), static_cast<int>(py), c, alpha);
        }
      stbtt_FreeBitmap(bmp, nullptr);
      pen += advanceEm(cp) * size * k_;
    }
  }
  // RGB8 at output resolution.
  std::vector<unsigned char> finish(int& w, int& h) const {
    w = W_ / ss_;
    h = H_ / ss_;
    std::vector<unsigned char> out(static_cast<size_t>(w) * h * 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < 3; ++ch) {
          double acc = 0;
          for (int j = 0; j < ss_; ++j)
            for (int i = 0; i < ss_; ++i) acc += px_[(static_cast<size_t>(y * ss_ + j) * W_ + (x * ss_ + i)) * 3 + ch];
          out[(static_cast<size_t>(y) * w + x) * 3 + ch] =
              static_cast<unsigned char>(std::clamp(acc / (ss_ * ss_), 0.0, 1.0) * 255 + 0.5);
        }
    return out;
  }

 private:
  void blend(int x, int y, Color c, double a) {
    if (x < 0 || y < 0 || x >= W_ || y >= H_) return;
    float* p = &px_[(static_cast<size_t>(y) * W_ + x) * 3];
    p[0] = static_cast<float>(p[0] * (1 - a) + c.r * a);
    p[1] = static_cast<float>(p[1] * (1 - a) + c.g * a);
    p[2] = static_cast<float>(p[2] * (1 - a) + c.b * a);
  }
  void seg(double x0, double y0, double x1, double y1, double hw, Color c) {
    x0 *= k_, y0 *= k_, x1 *= k_, y1 *= k_;
    double dx = x1 - x0, dy = y1 - y0, len = std::hypot(dx, dy);
    if (len < 1e-9) return;
    double nx = -dy / len * hw, ny = dx / len * hw, ex = dx / len * hw * 0.5, ey = dy / len * hw * 0.5;
    fillPoly({{x0 + nx - ex, y0 + ny - ey}, {x1 + nx + ex, y1 + ny + ey}, {x1 - nx + ex, y1 - ny + ey}, {x0 - nx - ex, y0 - ny - ey}}, c);
  }
  void fillPoly(const std::vector<Pt>& p, Color c) {
    double ymin = 1e30, ymax = -1e30;
    for (auto& q : p) ymin = std::min(ymin, q.second), ymax = std::max(ymax, q.second);
    int y0 = std::max(0, static_cast<int>(std::floor(ymin))), y1 = std::min(H_ - 1, static_cast<int>(std::ceil(ymax)));
    std::vector<double> xs;
    for (int y = y0; y <= y1; ++y) {
      double sy = y + 0.5;
      xs.clear();
      for (size_t i = 0; i < p.size(); ++i) {
        auto a = p[i], b = p[(i + 1) % p.size()];
        if ((a.second <= sy && b.second > sy) || (b.second <= sy && a.second > sy))
          xs.push_back(a.first + (sy - a.second) / (b.second - a.second) * (b.first - a.first));
      }
      std::sort(xs.begin(), xs.end());
      for (size_t i = 0; i + 1 < xs.size(); i += 2) {
        int xa = std::max(0, static_cast<int>(std::lround(xs[i]))), xb = std::min(W_, static_cast<int>(std::lround(xs[i + 1])));
        for (int x = xa; x < xb; ++x) blend(x, y, c, 1.0);
      }
    }
  }
  double k_;
  int ss_;
  int W_ = 0, H_ = 0;
  std::vector<float> px_;
};

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
  for (const auto& s : c.series) legendW = std::max(legendW, textWidth(s.name, fs) + 34);
  double yTickW = 0;
  for (double v : yt) yTickW = std::max(yTickW, textWidth(tickLabel(v), fs));
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
  (void)kGrey;
}

std::string deflate(const std::string& in) {
  uLongf len = compressBound(in.size());
  std::string out(len, '\0');
  if (compress2(reinterpret_cast<Bytef*>(out.data()), &len, reinterpret_cast<const Bytef*>(in.data()), in.size(), 9) != Z_OK)
    throw Error("zlib compression failed");
  out.resize(len);
  return out;
}

}  // namespace

fs::path chartFontPath() {
  if (const char* env = std::getenv("MOEFY_CHART_FONT")) return env;
  return "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
}

std::string toSvg(const Chart& c) {
  SvgPainter p;
  render(c, p);
  std::ostringstream s;
  s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(c.width)
    << "pt\" height=\"" << num(c.height) << "pt\" viewBox=\"0 0 " << num(c.width) << " " << num(c.height)
    << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
    << p.out.str() << "</svg>\n";
  return s.str();
}

void writeSvg(const Chart& c, const fs::path& path) { writeFileAtomic(path, toSvg(c)); }

void writePdf(const Chart& c, const fs::path& path) {
  PdfPainter p(c.height);
  render(c, p);
  const Font& f = font();
  std::string content = deflate(p.out.str());
  std::string fontData = deflate(f.bytes);
  int x0, y0, x1, y1;
  stbtt_GetFontBoundingBox(&f.info, &x0, &y0, &x1, &y1);
  auto em = [&](double v) { return static_cast<int>(std::lround(v * 1000.0 / f.unitsPerEm)); };
  std::ostringstream widths;
  for (int cp = 32; cp <= 255; ++cp) widths << static_cast<int>(std::lround(advanceEm((cp >= 127 && cp < 160) ? '?' : cp) * 1000)) << " ";
  std::vector<std::string> objs;
  objs.push_back("<< /Type /Catalog /Pages 2 0 R >>");
  objs.push_back("<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
  objs.push_back("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 " + num(c.width) + " " + num(c.height) +
                 "] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>");
  objs.push_back("<< /Length " + std::to_string(content.size()) + " /Filter /FlateDecode >>\nstream\n" + content + "\nendstream");
  objs.push_back("<< /Type /Font /Subtype /TrueType /BaseFont /DejaVuSans /FirstChar 32 /LastChar 255 /Widths [" +
                 widths.str() + "] /FontDescriptor 6 0 R /Encoding /WinAnsiEncoding >>");
  objs.push_back("<< /Type /FontDescriptor /FontName /DejaVuSans /Flags 32 /FontBBox [" + std::to_string(em(x0)) + " " +
                 std::to_string(em(y0)) + " " + std::to_string(em(x1)) + " " + std::to_string(em(y1)) +
                 "] /ItalicAngle 0 /Ascent " + std::to_string(em(f.ascent)) + " /Descent " + std::to_string(em(f.descent)) +
                 " /CapHeight " + std::to_string(em(f.ascent)) + " /StemV 80 /FontFile2 7 0 R >>");
  objs.push_back("<< /Length " + std::to_string(fontData.size()) + " /Length1 " + std::to_string(f.bytes.size()) +
                 " /Filter /FlateDecode >>\nstream\n" + fontData + "\nendstream");
  std::string doc = "%PDF-1.4\n%\xE2\xE3\xCF\xD3\n";
  std::vector<size_t> offsets;
  for (size_t i = 0; i < objs.size(); ++i) {
    offsets.push_back(doc.size());
    doc += std::to_string(i + 1) + " 0 obj\n" + objs[i] + "\nendobj\n";
  }
  size_t xref = doc.size();
  doc += "xref\n0 " + std::to_string(objs.size() + 1) + "\n0000000000 65535 f \n";
  for (size_t o : offsets) {
    char b[24];
    std::snprintf(b, sizeof b, "%010zu 00000 n \n", o);
    doc += b;
  }
  doc += "trailer\n<< /Size " + std::to_string(objs.size() + 1) + " /Root 1 0 R >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
  writeFileAtomic(path, doc);
}

void writePng(const Chart& c, const fs::path& path, double dpi) {
  if (!(dpi >= 36 && dpi <= 1200)) throw ParameterError("--dpi must be between 36 and 1200");
  RasterPainter p(c.width, c.height, dpi / 72.0, 3);
  render(c, p);
  int w = 0, h = 0;
  auto pixels = p.finish(w, h);
  std::string bytes;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
  if (!stbi_write_png_to_func(sink, &bytes, w, h, 3, pixels.data(), w * 3))
    throw IoError(path.string() + ": PNG encoding failed");
  writeFileAtomic(path, bytes);
}

}  // namespace moefy::report
