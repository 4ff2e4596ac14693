#pragma once
// FigureView: the base of every plot view. It owns a toolbar with the
// artefact pickers a view asks for (recording, partition, router, evaluation,
// front, analysis),
// a layer picker, and the export menu (PNG with DPI, PDF, SVG, CSV, export all
// layers). Subclasses draw into `body()` and implement refresh() and csvData().
#include <QComboBox>
#include <QLabel>
#include <QStackedLayout>
#include <QString>
#include <QToolBar>
#include <QWidget>

#include "views/context.h"

class QCustomPlot;

namespace moefy::views {

/// Writes the QCustomPlot descendants of `root` (vector: QCustomPlot::toPainter)
/// and the custom-painted ones (QWidget::render) into a PNG (at `dpi`), PDF or
/// SVG file. format: "png", "pdf", "svg". Returns false with *error set.
bool exportFigure(QWidget* root, const QString& path, const QString& format, int dpi, QString* error);

class FigureView : public QWidget {
  Q_OBJECT
 public:
  enum Picker {
    PickRecording = 1,
    PickPartition = 2,
    PickRouter = 4,
    PickEvaluation = 8,
    PickLayer = 16,
    PickFront = 32,
    PickAnalysis = 64,
  };
  FigureView(StudioContext* ctx, const QString& title, int pickers, QWidget* parent = nullptr);

  QString title() const { return title_; }
  /// Stem for exported files, e.g. "coact-L3".
  virtual QString figureBaseName() const;
  /// The plotted data as CSV (header line first).
  virtual QString csvData() const = 0;
  /// The widget whose plots make the figure (default: the body).
  virtual QWidget* figureRoot() { return body_; }
  /// Reloads from the context's current artefacts.
  virtual void refresh() = 0;

  bool exportTo(const QString& path, const QString& format, int dpi, QString* error);
  bool exportCsv(const QString& path, QString* error) const;
  /// Writes one figure per layer into `dir` (stem-L{n}.format); returns files written.
  QStringList exportAllLayers(const QString& dir, const QString& format, int dpi, QString* error);

  int layer() const;  ///< the picked FFN site's index (analysis/model/site.h "Site indices"; -1 if none)
  /// The picked FFN site's name ("blk.3", "dec.blk.1"; "" if none).
  QString siteName() const;
  QComboBox* layerCombo() const { return layerBox_; }
  bool hasData() const { return hasData_; }

 protected:
  QWidget* body() const { return body_; }
  QToolBar* toolbar() const { return toolbar_; }
  /// A second toolbar row for view-specific options (created on first use).
  QToolBar* optionsBar();
  StudioContext* ctx() const { return ctx_; }
  /// Shows `text` instead of the body (empty state) or the body (text empty).
  void setEmptyState(const QString& text);
  /// Fills the FFN site picker with the site indices `layers`, each named by
  /// the parallel entry of `sites` (an artefact's site list from the core:
  /// enc.blk.L / dec.blk.L for T5) or, where `sites` is shorter, as the
  /// single-stack site blk.L. Keeps the current site when still present,
  /// else opens on the selection's site (StudioContext::selection) if present.
  void setLayers(const std::vector<int>& layers, const std::vector<Site>& sites = {});
  QString picked(const QString& kind) const;
  void setPickerValue(const QString& kind, const QString& path);
  bool hasData_ = false;

 private:
  void rebuildPickers();
  void showExportMenu();
  /// Moves the layer picker to `L` (the selection's layer) when it lists it:
  /// visible views redraw at once, hidden ones when shown.
  void followSelectedLayer(int L);
  StudioContext* ctx_;
  QString title_;
  int pickers_;
  QToolBar* toolbar_;
  QToolBar* options_ = nullptr;
  QWidget* body_;
  QLabel* empty_;
  QStackedLayout* stack_;
  std::map<QString, QComboBox*> boxes_;
  QComboBox* layerBox_ = nullptr;
  bool rebuilding_ = false;
};

}  // namespace moefy::views
