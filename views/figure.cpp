#include "views/figure.h"

#include "views/qcp.h"

#include <QApplication>
#include <QDir>
#include <QEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QImage>
#include <QInputDialog>
#include <QMenu>
#include <QPdfWriter>
#include <QSaveFile>
#include <QSvgGenerator>
#include <QToolButton>
#include <QVBoxLayout>
#include <cmath>

#include "analysis/model/site.h"
#include "views/style.h"

namespace moefy::views {

namespace {

/// Paints the figure: QCustomPlots through toPainter (vector), other widgets
/// flagged with the "vectorFigure" property through render().
void paintFigure(QWidget* root, QCPPainter* painter, bool vector) {
  QList<QWidget*> parts;
  for (QWidget* w : root->findChildren<QWidget*>()) {
    if (!w->isVisibleTo(root)) continue;
    if (qobject_cast<QCustomPlot*>(w) || w->property("vectorFigure").toBool()) parts << w;
  }
  if (qobject_cast<QCustomPlot*>(root) || root->property("vectorFigure").toBool()) parts = {root};
  painter->fillRect(QRect(QPoint(0, 0), root->size()), Qt::white);
  for (QWidget* w : parts) {
    QPoint off = w == root ? QPoint(0, 0) : w->mapTo(root, QPoint(0, 0));
    painter->save();
    painter->translate(off);
    if (auto* plot = qobject_cast<QCustomPlot*>(w)) {
      if (vector) {
        painter->setMode(QCPPainter::pmVectorized);
        painter->setMode(QCPPainter::pmNoCaching);
      }
      plot->toPainter(painter, w->width(), w->height());
    } else {
      w->render(painter, QPoint(0, 0), QRegion(), QWidget::DrawChildren);
    }
    painter->restore();
  }
}

/// Refreshes a view that missed updates while hidden when it is shown again:
/// views not on screen only mark themselves stale ("moefyStale"), so a job
/// finishing does not make every tab recompute on the GUI thread at once.
class ShowRefresher : public QObject {
 public:
  explicit ShowRefresher(FigureView* v) : QObject(v), view_(v) {}
  bool eventFilter(QObject* o, QEvent* e) override {
    if (o == view_ && e->type() == QEvent::Show && view_->property("moefyStale").toBool()) {
      view_->setProperty("moefyStale", false);
      view_->refresh();
    }
    return false;
  }

 private:
  FigureView* view_;
};

}  // namespace

bool exportFigure(QWidget* root, const QString& path, const QString& format, int dpi, QString* error) {
  auto fail = [&](const QString& m) {
    if (error) *error = m;
    return false;
  };
  if (!root || root->width() < 10 || root->height() < 10) return fail("nothing to export (the figure is not laid out)");
  QDir().mkpath(QFileInfo(path).absolutePath());
  const QSize size = root->size();
  const QString tmp = path + ".tmp-export";
  QFile::remove(tmp);
  QString fmt = format.toLower();
  if (fmt == "png") {
    // The figure keeps its on-screen layout and is magnified by dpi/96: the
    // painter scales, and the image's resolution stays at the screen's while
    // painting. QPainter converts point-size fonts with the device's dpi, so an
    // image already marked 300 dpi drew every text 3x larger on top of the
    // scale (and the plots, laid out with screen font metrics, cut it off).
    // The real dpi is stamped on the file after painting.
    const double scale = std::max(0.25, dpi / 96.0);
    QImage img(QSize(int(std::lround(size.width() * scale)), int(std::lround(size.height() * scale))),
               QImage::Format_ARGB32);
    img.fill(Qt::white);
    const auto dotsPerMeter = [](double d) { return int(std::lround(d / 0.0254)); };
    img.setDotsPerMeterX(dotsPerMeter(root->logicalDpiX()));
    img.setDotsPerMeterY(dotsPerMeter(root->logicalDpiY()));
    {
      QCPPainter p(&img);
      p.setRenderHint(QPainter::Antialiasing);
      p.setRenderHint(QPainter::TextAntialiasing);
      p.setRenderHint(QPainter::SmoothPixmapTransform);
      p.scale(scale, scale);
      paintFigure(root, &p, false);
    }
    img.setDotsPerMeterX(dotsPerMeter(dpi));
    img.setDotsPerMeterY(dotsPerMeter(dpi));
    if (!img.save(tmp, "PNG")) return fail(path + ": cannot write PNG");
  } else if (fmt == "pdf") {
    {
      QPdfWriter pdf(tmp);
      pdf.setCreator("MoEfy Studio " MOEFY_VERSION);
      pdf.setTitle(QFileInfo(path).completeBaseName());
      pdf.setResolution(96);
      pdf.setPageSize(QPageSize(QSizeF(size.width() * 72.0 / 96.0, size.height() * 72.0 / 96.0), QPageSize::Point));
      pdf.setPageMargins(QMarginsF(0, 0, 0, 0));
      QCPPainter p;
      if (!p.begin(&pdf)) return fail(path + ": cannot write PDF");
      paintFigure(root, &p, true);
      p.end();
    }
  } else if (fmt == "svg") {
    QSvgGenerator svg;
    svg.setFileName(tmp);
    svg.setSize(size);
    svg.setViewBox(QRect(QPoint(0, 0), size));
    svg.setResolution(96);
    svg.setTitle(QFileInfo(path).completeBaseName());
    svg.setDescription("MoEfy Studio " MOEFY_VERSION);
    QCPPainter p;
    if (!p.begin(&svg)) return fail(path + ": cannot write SVG");
    paintFigure(root, &p, true);
    p.end();
  } else {
    return fail("unknown figure format '" + format + "' (png, pdf, svg)");
  }
  QFileInfo fi(tmp);
  if (!fi.exists() || fi.size() == 0) return fail(path + ": export produced no data");
  QFile::remove(path);
  if (!QFile::rename(tmp, path)) {
    QFile::remove(tmp);
    return fail(path + ": cannot move the exported file into place");
  }
  return true;
}

FigureView::FigureView(StudioContext* ctx, const QString& title, int pickers, QWidget* parent)
    : QWidget(parent), ctx_(ctx), title_(title), pickers_(pickers) {
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(0, 0, 0, 0);
  lay->setSpacing(0);
  toolbar_ = new QToolBar(this);
  toolbar_->setIconSize(QSize(16, 16));
  lay->addWidget(toolbar_);
  auto* holder = new QWidget(this);
  stack_ = new QStackedLayout(holder);
  body_ = new QWidget(holder);
  body_->setObjectName("figureBody");
  body_->setAutoFillBackground(true);
  QPalette pal = body_->palette();
  pal.setColor(QPalette::Window, Qt::white);
  body_->setPalette(pal);
  empty_ = new QLabel(holder);
  empty_->setAlignment(Qt::AlignCenter);
  empty_->setWordWrap(true);
  empty_->setMargin(40);
  empty_->setStyleSheet("QLabel { color: #555; font-size: 12pt; }");
  stack_->addWidget(body_);
  stack_->addWidget(empty_);
  lay->addWidget(holder, 1);

  const std::pair<int, QString> kinds[] = {{PickRecording, "recording"}, {PickPartition, "partition"},
                                           {PickRouter, "router"},       {PickEvaluation, "evaluation"},
                                           {PickFront, "front"},         {PickAnalysis, "analysis"}};
  for (const auto& [flag, kind] : kinds) {
    if (!(pickers_ & flag)) continue;
    toolbar_->addWidget(new QLabel(" " + kind.left(1).toUpper() + kind.mid(1) + ": ", toolbar_));
    auto* box = new QComboBox(toolbar_);
    box->setObjectName(kind + "Picker");
    box->setSizeAdjustPolicy(QComboBox::AdjustToContents);
    box->setMinimumContentsLength(12);
    toolbar_->addWidget(box);
    boxes_[kind] = box;
    connect(box, &QComboBox::currentIndexChanged, this, [this, kind, box] {
      if (rebuilding_) return;
      ctx_->setCurrent(kind, box->currentData().toString());
      refresh();
    });
  }
  if (pickers_ & PickLayer) {
    toolbar_->addWidget(new QLabel(" FFN site: ", toolbar_));
    layerBox_ = new QComboBox(toolbar_);
    layerBox_->setObjectName("layerPicker");
    toolbar_->addWidget(layerBox_);
    connect(layerBox_, &QComboBox::currentIndexChanged, this, [this] {
      if (!rebuilding_) refresh();
    });
    // Linked selection crosses layers: a neuron or expert selected on another
    // layer in any view moves this one there. Connected here, before the
    // subclass's own selection handlers, which then see the new layer.
    connect(ctx_, &StudioContext::neuronSelected, this, [this](int L, int) { followSelectedLayer(L); });
    connect(ctx_, &StudioContext::expertSelected, this, [this](int L, int) { followSelectedLayer(L); });
  }
  auto* spacer = new QWidget(toolbar_);
  spacer->setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Preferred);
  toolbar_->addWidget(spacer);
  auto* exportBtn = new QToolButton(toolbar_);
  exportBtn->setText("Export");
  exportBtn->setObjectName("exportButton");
  exportBtn->setToolTip("Export the figure (PNG/PDF/SVG) or its data (CSV)");
  toolbar_->addWidget(exportBtn);
  connect(exportBtn, &QToolButton::clicked, this, &FigureView::showExportMenu);

  installEventFilter(new ShowRefresher(this));
  auto refreshOrMarkStale = [this] {
    if (isVisible()) {
      setProperty("moefyStale", false);
      refresh();
    } else {
      setProperty("moefyStale", true);
    }
  };
  connect(ctx_, &StudioContext::workspaceChanged, this, [this, refreshOrMarkStale] { rebuildPickers(); refreshOrMarkStale(); });
  connect(ctx_, &StudioContext::artefactsChanged, this, [this, refreshOrMarkStale] { rebuildPickers(); refreshOrMarkStale(); });
  connect(ctx_, &StudioContext::currentChanged, this, [this](const QString& kind, const QString& path) {
    auto it = boxes_.find(kind);
    if (it == boxes_.end()) return;
    int i = it->second->findData(path);
    if (i >= 0 && i != it->second->currentIndex()) {
      rebuilding_ = true;
      it->second->setCurrentIndex(i);
      rebuilding_ = false;
      if (isVisible()) refresh();
      else setProperty("moefyStale", true);
    }
  });
  rebuildPickers();
}

QToolBar* FigureView::optionsBar() {
  if (!options_) {
    options_ = new QToolBar(this);
    options_->setObjectName("optionsBar");
    options_->setIconSize(QSize(16, 16));
    static_cast<QVBoxLayout*>(layout())->insertWidget(1, options_);
  }
  return options_;
}

void FigureView::rebuildPickers() {
  rebuilding_ = true;
  for (auto& [kind, box] : boxes_) {
    box->clear();
    if (!ctx_->hasWorkspace()) continue;
    for (const auto& a : ctx_->artefacts())
      if (a.kind == kind) box->addItem(a.name, a.path);
    int i = box->findData(ctx_->current(kind));
    if (i >= 0) box->setCurrentIndex(i);
  }
  rebuilding_ = false;
}

QString FigureView::picked(const QString& kind) const {
  auto it = boxes_.find(kind);
  if (it != boxes_.end()) return it->second->currentData().toString();
  return ctx_->current(kind);
}

void FigureView::setPickerValue(const QString& kind, const QString& path) {
  auto it = boxes_.find(kind);
  if (it == boxes_.end()) return;
  int i = it->second->findData(path);
  if (i >= 0) it->second->setCurrentIndex(i);
}

void FigureView::setLayers(const std::vector<int>& layers, const std::vector<Site>& sites) {
  if (!layerBox_) return;
  int cur = layer();
  rebuilding_ = true;
  layerBox_->clear();
  // Items read as FFN sites (analysis/model/site.h: "blk.3", "enc.blk.0",
  // "dec.blk.1"), named by the artefact's own site list; the data is the site
  // index, which keys every per-site quantity of the core and the selection.
  for (size_t i = 0; i < layers.size(); ++i) {
    const Site site = i < sites.size() ? sites[i] : Site::ofLayer(layers[i]);
    layerBox_->addItem(QString::fromStdString(site.name()), layers[i]);
  }
  int i = layerBox_->findData(cur);
  // A view filled for the first time opens on the selection's layer.
  if (i < 0) i = layerBox_->findData(ctx_->selectedLayer());
  layerBox_->setCurrentIndex(i >= 0 ? i : (layers.empty() ? -1 : 0));
  rebuilding_ = false;
}

void FigureView::followSelectedLayer(int L) {
  if (!layerBox_ || L < 0 || layer() == L) return;
  const int i = layerBox_->findData(L);
  if (i < 0) return;  // this view has no such layer (or is not filled yet: setLayers picks it then)
  if (isVisible()) {
    layerBox_->setCurrentIndex(i);  // refreshes
    return;
  }
  // Hidden views (other tabs) move now and redraw when shown.
  rebuilding_ = true;
  layerBox_->setCurrentIndex(i);
  rebuilding_ = false;
  setProperty("moefyStale", true);
}

int FigureView::layer() const {
  if (!layerBox_ || layerBox_->currentIndex() < 0) return -1;
  return layerBox_->currentData().toInt();
}

void FigureView::setEmptyState(const QString& text) {
  hasData_ = text.isEmpty();
  empty_->setText(text);
  stack_->setCurrentWidget(text.isEmpty() ? body_ : static_cast<QWidget*>(empty_));
}

QString FigureView::siteName() const {
  if (!layerBox_ || layerBox_->currentIndex() < 0) return {};
  return layerBox_->currentText();
}

QString FigureView::figureBaseName() const {
  QString base = title_.toLower().replace(' ', '-');
  if (layer() < 0) return base;
  // Single-stack sites keep the "-L3" stem; others are named by site ("-dec.blk.1").
  const std::optional<Site> site = Site::tryParse(siteName().toStdString());
  if (site && site->stack != SiteStack::Single) return base + "-" + siteName();
  return base + QString("-L%1").arg(layer());
}

bool FigureView::exportTo(const QString& path, const QString& format, int dpi, QString* error) {
  if (!hasData_) {
    if (error) *error = title_ + ": nothing to export (no data loaded)";
    return false;
  }
  return exportFigure(figureRoot(), path, format, dpi, error);
}

bool FigureView::exportCsv(const QString& path, QString* error) const {
  QSaveFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Text)) {
    if (error) *error = path + ": cannot write";
    return false;
  }
  f.write(csvData().toUtf8());
  if (!f.commit()) {
    if (error) *error = path + ": cannot write";
    return false;
  }
  return true;
}

QStringList FigureView::exportAllLayers(const QString& dir, const QString& format, int dpi, QString* error) {
  QStringList written;
  if (!layerBox_ || layerBox_->count() == 0) {
    if (error) *error = title_ + ": this view has no layers";
    return written;
  }
  int keep = layerBox_->currentIndex();
  for (int i = 0; i < layerBox_->count(); ++i) {
    layerBox_->setCurrentIndex(i);
    refresh();
    QApplication::processEvents();
    for (QCustomPlot* p : figureRoot()->findChildren<QCustomPlot*>()) p->replot(QCustomPlot::rpImmediateRefresh);
    QString path = QDir(dir).filePath(figureBaseName() + "." + format);
    if (!exportTo(path, format, dpi, error)) break;
    written << path;
  }
  layerBox_->setCurrentIndex(keep);
  return written;
}

void FigureView::showExportMenu() {
  QMenu menu(this);
  QString figDir = ctx_->hasWorkspace() ? ctx_->workspace().folder("figures") : QDir::homePath();
  QDir().mkpath(figDir);
  auto report = [this](bool ok, const QString& path, const QString& err) {
    if (ok) ctx_->report(StudioContext::Info, "Exported " + path);
    else ctx_->report(StudioContext::Error, err);
  };
  auto one = [&, this](const QString& fmt) {
    int dpi = 96;
    if (fmt == "png") {
      bool ok = false;
      QString d = QInputDialog::getItem(this, "PNG resolution", "Dots per inch:", {"96", "150", "300", "600"}, 2, false, &ok);
      if (!ok) return;
      dpi = d.toInt();
    }
    QString path = QFileDialog::getSaveFileName(this, "Export figure", QDir(figDir).filePath(figureBaseName() + "." + fmt),
                                                fmt.toUpper() + " (*." + fmt + ")");
    if (path.isEmpty()) return;
    QString err;
    report(exportTo(path, fmt, dpi, &err), path, err);
  };
  menu.addAction("Figure as PNG...", [&] { one("png"); });
  menu.addAction("Figure as PDF (vector)...", [&] { one("pdf"); });
  menu.addAction("Figure as SVG (vector)...", [&] { one("svg"); });
  menu.addAction("Data as CSV...", [&, this] {
    QString path = QFileDialog::getSaveFileName(this, "Export data", QDir(figDir).filePath(figureBaseName() + ".csv"), "CSV (*.csv)");
    if (path.isEmpty()) return;
    QString err;
    report(exportCsv(path, &err), path, err);
  });
  if (layerBox_) {
    menu.addSeparator();
    menu.addAction("Export all layers...", [&, this] {
      bool ok = false;
      QString fmt = QInputDialog::getItem(this, "Export all layers", "Format:", {"pdf", "svg", "png"}, 0, false, &ok);
      if (!ok) return;
      QString dir = QFileDialog::getExistingDirectory(this, "Folder for the figures", figDir);
      if (dir.isEmpty()) return;
      QString err;
      QStringList files = exportAllLayers(dir, fmt, 300, &err);
      if (!err.isEmpty()) ctx_->report(StudioContext::Error, err);
      else ctx_->report(StudioContext::Info, QString("Exported %1 figures to %2").arg(files.size()).arg(dir));
    });
  }
  menu.exec(QCursor::pos());
}

}  // namespace moefy::views
