#pragma once
// The Studio's views. Each is a FigureView (toolbar with pickers and export)
// except the Model summary and the neuron inspector.
#include <QPointer>
#include <QTableWidget>
#include <QTextBrowser>
#include <QWidget>
#include <array>
#include <map>
#include <memory>
#include <vector>

#include "analysis/split/agreement.h"
#include "analysis/split/coact_weight.h"
#include "views/figure.h"

class QCustomPlot;
class QCPColorMap;
class QCPColorScale;
class QCPGraph;
class QCPItemRect;
class QCPItemStraightLine;
class QCPTextElement;
class QCPBarsGroup;
class QCPErrorBars;
class QCPItemText;
class QStackedWidget;
class QTabBar;
class QAction;
class QCheckBox;
class QLineEdit;
class QMouseEvent;
class QListWidget;
class QPlainTextEdit;
class QPushButton;
class QTimer;

namespace moefy::views {

/// Architecture summary from config.json and the safetensors headers only
/// (describeModelFiles), computed as a studio task.
class ModelView : public FigureView {
  Q_OBJECT
 public:
  explicit ModelView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  QString csvData() const override;
  QWidget* figureRoot() override;
  bool loading() const { return loading_; }

 private:
  QTableWidget* table_;
  QCustomPlot* plot_;
  QString loadedFor_, loadingFor_;
  bool loading_ = false;
};

/// Per-layer active share, active-per-token distribution, per-neuron frequency.
class SparsityView : public FigureView {
  Q_OBJECT
 public:
  explicit SparsityView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  QString csvData() const override;

 private:
  QCustomPlot* layers_;
  QCustomPlot* hist_;
  QCustomPlot* freq_;
  QLabel* note_;
  std::shared_ptr<Recording> rec_;
  std::vector<int> order_;  // neurons sorted by frequency (current layer)
};

/// d_ff x d_ff co-activation heatmap reordered by a partition, in one of
/// three measures (the Measure picker): the counts c_ij, the Jaccard index or
/// the PPMI of each pair, both from the one definition the splitter's graph
/// weights use (analysis/split/coact_weight.h, c_i = the diagonal, T = the
/// site's token count), so the map shows what `split --weighting` partitions.
/// When a partition orders the map, the axes carry expert labels at each
/// block's centre (every n-th when crowded; never overlapping).
class CoactView : public FigureView {
  Q_OBJECT
 public:
  explicit CoactView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  /// The displayed grid: "display_row_start,...,mean_<measure>" (mean_coactive_tokens,
  /// mean_jaccard, mean_ppmi), one line per cell except diagonal-only cells.
  QString csvData() const override;
  /// "co-activation-L3" for counts, "co-activation-jaccard-L3" / "co-activation-ppmi-L3" otherwise.
  QString figureBaseName() const override;
  /// Rebuilds the colour map for the visible range (level of detail) and the expert tick labels.
  void rebuildVisible();
  int gridCells() const { return gridCols_ * gridRows_; }
  /// The measure drawn (the Measure picker).
  moefy::CoactMeasure measure() const;
  QComboBox* measureCombo() const { return measure_; }
  QCustomPlot* plot() const { return plot_; }
  /// Upper end of the colour scale, in the shown measure: the largest off-diagonal value.
  double colourMax() const { return vmax_; }
  /// Lower end of the colour scale: the 1st percentile of the off-diagonal values.
  double colourMin() const { return vmin_; }
  /// The displayed value of grid cell (col, row) in the shown measure (linear,
  /// also under log colour); NaN for diagonal-only cells.
  double gridValue(int col, int row) const;
  /// Neuron ids and count under plot coordinates (for hover); false if outside.
  bool cellAt(double x, double y, int* neuronRow, int* neuronCol, long long* count) const;
  /// The hover line for plot coordinates: both neurons, their experts, the
  /// count, Jaccard and PPMI of the pair ("" outside the map).
  QString hoverText(double x, double y) const;
  /// The line under the map after a redraw: the measure and the colour range.
  QString caption() const { return caption_; }
  /// Whether the normalised matrix is being computed on a worker thread.
  bool computing() const { return computing_; }
  /// Sites wider than this compute their normalised matrix on a worker
  /// thread (default 1024: PPMI at d_ff 3072 takes ~0.1 s, above the 50 ms a
  /// GUI-thread step may take); tests set 0 to take the worker path.
  void setSyncWidthLimit(int width) { syncWidth_ = width; }

 private:
  void highlight();
  /// Expert tick labels at the blocks' centres (default tickers without a partition).
  void updateExpertTicks();
  /// "E3", or "shared" for label E (the shared expert of split --shared).
  QString expertName(int label) const;
  QCustomPlot* plot_;
  QCPColorMap* map_ = nullptr;
  QCPColorScale* scale_ = nullptr;
  QComboBox* measure_;
  QComboBox* scaleMode_;
  QComboBox* cmap_;
  QCheckBox* logScale_;
  QCheckBox* reorder_;
  QLabel* hover_;
  QTimer* lodTimer_;
  std::shared_ptr<Recording> rec_;
  std::shared_ptr<Partition> part_;
  std::shared_ptr<const std::vector<int32_t>> coact_;    // counts [d_ff * d_ff]
  std::shared_ptr<const std::vector<float>> norm_;       // the shown normalised measure [d_ff * d_ff] (neuron order)
  QString normKey_;                                      // recording|layer|measure of norm_
  QString pendingKey_;                                   // what the running worker computes
  std::map<QString, std::pair<double, double>> ranges_;  // recording|layer|measure -> colour range (global scale)
  std::vector<int32_t> perm_;         // display index -> neuron
  std::vector<int32_t> inv_;          // neuron -> display index
  std::vector<double> sat_;           // summed-area table [(F+1)*(F+1)] of the reordered matrix
  std::vector<int> blockStart_;       // display start of each expert block [E (+1 shared) + 1]
  int F_ = 0;
  double tokens_ = 0;  // T: the site's token count
  double vmax_ = 1;
  double vmin_ = 0;
  bool logColour_ = false;  // log10(1 + v) colour (counts only)
  bool computing_ = false;
  int syncWidth_ = 1024;
  QString caption_;
  int gridCols_ = 0, gridRows_ = 0;
  std::vector<QCPItemRect*> blocks_;
  QCPItemRect* selBlock_ = nullptr;
  QCPItemStraightLine* selH_ = nullptr;
  QCPItemStraightLine* selV_ = nullptr;
};

class GraphCanvas;

/// Experts as nodes, inter-expert co-activation as edges; force layout off the GUI thread.
class ExpertGraphView : public FigureView {
  Q_OBJECT
 public:
  explicit ExpertGraphView(StudioContext* ctx, QWidget* parent = nullptr);
  ~ExpertGraphView() override;
  void refresh() override;
  QString csvData() const override;
  bool layoutRunning() const;
  /// Expands (or collapses) an expert into its neurons.
  void toggleExpert(int e);
  GraphCanvas* canvas() const { return canvas_; }
  /// The expert the graph rings (the selection's expert on the shown layer,
  /// which for a selected neuron is that neuron's expert), -1 if none.
  int ringedExpert() const;
  /// The neuron the graph highlights when its expert is expanded, -1 if none.
  int ringedNeuron() const;

 private:
  void startLayout();
  GraphCanvas* canvas_;
  QLabel* note_;
  std::shared_ptr<Recording> rec_;
  std::shared_ptr<Partition> part_;
  int expanded_ = -1;
  QString expertPosKey_;                          ///< recording|partition|layer the expert layout is for
  std::vector<std::array<double, 2>> expertPos_;  ///< expert centres in [-1, 1]^2 (kept across redraws)
};

/// Metrics table per partition and recall@k curves overlaid.
class PartitionView : public FigureView {
  Q_OBJECT
 public:
  explicit PartitionView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  QString csvData() const override;
  /// The recall@k plot and the agreement heatmap, side by side.
  QWidget* figureRoot() override;

  /// The agreement heatmap: cell (column j, row i) of its colour map holds
  /// the picked measure between partitions i and j (rows top to bottom).
  QCustomPlot* agreementPlot() const { return agreementPlot_; }
  /// The partitions of the agreement matrix, in its order: every partition of
  /// the workspace that splits the picked site at the first partition's d_ff
  /// (and of the same model); empty when fewer than two do.
  QStringList agreementPartitions() const { return agreementNames_; }
  /// The agreement matrix (moefy::agreementMatrix of their labels at the site).
  const AgreementMatrix& agreement() const { return agreement_; }

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;

 private:
  /// Computes the agreement matrix of `parts` at the picked site (only when
  /// the partitions or the site changed) and draws it.
  void updateAgreement(const std::vector<std::shared_ptr<Partition>>& parts);
  /// Draws agreement_ in the picked measure: cells, values, names, caption.
  void drawAgreement();
  /// The caption wrapped to the heatmap's width (QCPTextElement does not wrap).
  void layoutAgreementCaption();
  /// Hover: both partitions' full names and ARI and NMI of the cell.
  void showAgreementTip(QMouseEvent* event);
  QTableWidget* table_;
  QWidget* figures_;
  QCustomPlot* plot_;
  QCustomPlot* agreementPlot_;
  QCPColorMap* agreementMap_;
  QCPColorScale* agreementScale_;
  QCPTextElement* agreementCaption_;
  QCheckBox* meanLayers_;
  QComboBox* recallAxis_;              ///< 0: active fraction k/E (default), 1: absolute k
  QComboBox* agreementMeasure_;        ///< 0: ARI (default), 1: NMI
  std::map<QString, int> colourSlot_;  ///< partition folder -> series colour index
  // The agreement matrix at the picked site: the partitions compared (held,
  // so that the matrix is recomputed only when they or the site change),
  // their names, the site, its width and how many partitions were left out.
  std::vector<std::shared_ptr<Partition>> agreementParts_;
  QStringList agreementNames_;
  QString agreementSite_;      ///< as figures name it ("layer 2", "dec.blk.1")
  QString agreementSiteName_;  ///< the site name ("blk.2"), for the CSV
  QString agreementKeySite_;   ///< the site agreement_ was computed at
  int agreementDff_ = 0;
  int agreementLeftOut_ = 0;  ///< partitions of another site, d_ff or model
  QString agreementCaptionText_;
  AgreementMatrix agreement_;
};

class TokenStrip;

/// Router choices on recorded sample tokens.
class RouterView : public FigureView {
  Q_OBJECT
 public:
  explicit RouterView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  QString csvData() const override;

  /// Tokenises `text` with the workspace model's tokenizer and runs the model
  /// (on a worker thread) to route it with the picked router/partition; the
  /// heatmap and the token strip then show its tokens. Same as typing the
  /// text into the line edit and pressing Run.
  void runText(const QString& text);
  bool textRunning() const { return textRunning_; }
  /// Rows (tokens) of the heatmap as drawn now.
  int heatmapRows() const { return shownRows_; }
  /// The score heatmap (its y axis labels tokens: every n-th row, as many as
  /// fit without overlapping, in a readable 8 pt font).
  QCustomPlot* scoresPlot() const { return scores_; }
  /// Tokens of the last routed typed text (0 if none).
  int typedTokens() const { return static_cast<int>(textAct_.ids.size()); }
  bool showingTypedText() const;
  /// T5 workspaces: the dense model's translation of the last typed source
  /// (empty otherwise), and whether the rows are its decoder tokens.
  QString typedTranslation() const { return QString::fromStdString(textAct_.translation); }
  bool typedDecoderRows() const { return textAct_.decoderRows; }

  // Router diagnostics (issue 20): the view's second panel, picked with the
  // "Choices | Diagnostics" tabs on the left edge of the body. It shows
  // the picked router's training loss per epoch at the picked site, the
  // mass recall and overlap of every site of the router, and the picked
  // site's load balance, all from the core (RouterSet::siteReport through
  // views::Router, usageHealth through routerLoadBalance).
  /// Shows the diagnostics panel (true) or the router's choices (false).
  void showDiagnostics(bool on);
  bool diagnosticsShown() const;
  /// The training-loss plot: graph 0 the mean training loss of each epoch
  /// (solid), graph 1 the held-out loss (dashed, NaN where not measured), one
  /// point per epoch at key = epoch (1, 2, ...); no graph data for untrained routers.
  QCustomPlot* trainingPlot() const { return train_; }
  /// The note drawn in the training plot instead of curves (e.g.
  /// "similarity router: no training ..."); "" when curves are drawn.
  QString trainingNote() const { return trainNote_; }
  /// The grouped bar chart: plottable 0 "mass recall", plottable 1 "overlap"
  /// (QCPBars), one bar of each per site of the router at key = the site's
  /// position in diagnosticSites(); a site without metrics has no bar.
  QCustomPlot* siteMetricsPlot() const { return siteMetrics_; }
  /// The router's sites in the bar chart's order (names, e.g. "blk.2", "dec.blk.0").
  QStringList diagnosticSites() const { return diagSites_; }
  /// Position of the picked site in diagnosticSites() (the highlighted group; -1 if none).
  int highlightedSite() const { return diagPicked_; }
  /// The caption under the diagnostics plots (load balance numbers, notes).
  QString diagnosticsCaption() const;
  /// The picked site's load balance on the shown choices (valid when loadBalanceKnown()).
  const LoadBalance& loadBalance() const { return balance_; }
  bool loadBalanceKnown() const { return balanceOk_; }
  /// The shown panel: the choices' plots or the diagnostics' plots.
  QWidget* figureRoot() override;
  /// "router-choices-L2", or "router-diagnostics-L2" while the diagnostics are shown.
  QString figureBaseName() const override;

 private:
  /// Draws the diagnostics panel for the picked router and site; `choices`
  /// are the shown router choices (for the load balance).
  void drawDiagnostics(const RouterChoices& choices);
  void drawTrainingCurves(const Router::SiteReport* report, const QString& site);
  void drawSiteMetrics();
  void redrawDocument();
  void scoreTypedText();
  void fillDocuments();
  /// Whether a typed text can be routed at site index `layer`: whole-FFN
  /// sites (single-stack, or T5's enc.blk / dec.blk, where the typed text is
  /// the source and the dense model's translation the decoder input), not a
  /// native model's expert sites.
  bool typedTextSite(int layer) const;
  QComboBox* doc_;
  QLineEdit* text_;
  QPushButton* runText_;
  QLabel* textNote_;  ///< why a typed text cannot be routed at the picked site (hidden otherwise)
  QAction* textNoteAction_;
  QCustomPlot* scores_;
  QCustomPlot* usage_;
  QCustomPlot* cats_;
  TokenStrip* strip_;
  QLabel* note_;
  // Diagnostics panel.
  QTabBar* panelTabs_;            ///< Choices | Diagnostics (West tabs beside the panels)
  QStackedWidget* pages_;         ///< the two panels
  QCustomPlot* train_;            ///< training loss per epoch
  QCPTextElement* trainCaption_;  ///< under its title: site, loss, epochs
  QCustomPlot* siteMetrics_;      ///< mass recall and overlap per site
  QCPBarsGroup* metricsGroup_;
  QLabel* diagCaption_;
  QString trainNote_;
  QStringList diagSites_;
  std::vector<int> diagLayers_;  ///< site indices of diagSites_
  int diagPicked_ = -1;
  LoadBalance balance_;
  bool balanceOk_ = false;
  QString balanceNote_;        ///< why the load balance is unknown
  QString reportedDiagError_;  ///< the router whose unreadable diagnostics were reported to the issues dock
  std::shared_ptr<Recording> rec_;
  std::shared_ptr<Partition> part_;
  std::shared_ptr<Router> router_;
  QString lastRouter_;  ///< the router the partition picker was last aligned to
  int E_ = 0, k_ = 1;
  std::vector<float> score_;    // [S * E]
  std::vector<int> top_;        // [S * k] chosen experts
  std::vector<int> oracleTop_;  // [S * k]
  std::vector<int> docRows_;    // sample rows of the shown document, by position
  int shownRows_ = 0;
  int docSampled_ = 0;  ///< sampled tokens of the picked document (the heatmap shows at most 48)
  // Typed text: its activations at textLayer_ (computed by a studio task on
  // the workspace's shared model), and its scores under the current router.
  bool textRunning_ = false;
  QString textRan_;
  QString textModel_;  // the model folder textAct_ came from
  int textLayer_ = -1;
  TextActivations textAct_;
  std::vector<float> textScore_;     // [T * E]
  std::vector<int> textTop_;         // [T * k]
  std::vector<int> textOracleTop_;   // [T * k]
};

/// Quality vs active-expert fraction, speed vs fraction.
class EvalView : public FigureView {
  Q_OBJECT
 public:
  explicit EvalView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  QString csvData() const override;
  /// The subtitle each plot carries: "data: <split> of <corpus>, N sequences ..."
  /// (moefy::EvalResults::dataCaption brief); "" without an evaluation.
  QString dataCaption(int plot) const;
  /// Shown when recordings behind the evaluation read its documents; the
  /// tooltip names them (analysis/project/data_overlap.h).
  QLabel* overlapBadge() const { return overlapBadge_; }
  bool overlapBadgeShown() const;

 private:
  QCustomPlot* quality_;
  QCustomPlot* speed_;
  QComboBox* qualityMetric_;
  QComboBox* speedMetric_;
  QCPTextElement* speedNote_;  ///< names the series without timings (oracle routers)
  QCPTextElement* dataCaption_[2] = {nullptr, nullptr};  ///< quality, speed: which data the figure is on
  QLabel* overlapBadge_;
  QAction* overlapBadgeAction_;
  std::shared_ptr<Evaluation> eval_;
};

/// The comparison dashboard (issue 20): every evaluation of the workspace in
/// a checkable list (by default all of them, or the newest
/// kDefaultChecked when there are more), the checked ones overlaid on one
/// plot against the active-expert fraction k/E or the measured FFN FLOP
/// fraction (eval.json ffn_flops_fraction; points without one are left out
/// and counted in the caption), one curve per (evaluation, router series)
/// with a colour, dash and marker that stay with it while others are
/// checked; speed metrics with min-max spread bars; beside it the per-site
/// layer_rel_error heatmap of the checked results (Viridis, colour bar, the
/// value in cells large enough, the site with the most mean error in the
/// caption); below, the numbers of every checked result (sortable). An amber
/// line warns when the checked evaluations are not on the same data
/// (Evaluation::dataCaption differs). Hover a point or a cell for its values.
/// Unreadable evaluations are listed with the reader's error as tooltip and
/// left out (the error is in the issues dock once, StudioContext::evaluation).
class CompareView : public FigureView {
  Q_OBJECT
 public:
  /// At most this many evaluations are checked by default (the newest by eval.json time).
  static constexpr int kDefaultChecked = 6;
  /// The y metric of the plot (metricCombo's item data).
  enum Metric { PerplexityRatio, Perplexity, Top1, Kl, ForwardSpeedup, GenerateSpeedup };
  /// One drawn curve: an evaluation's router series.
  struct Curve {
    QString evaluation;  ///< folder name
    QString dir;         ///< the evaluation's folder
    QString router;      ///< the series name (Evaluation::Series::name)
    int style = 0;       ///< index into seriesColor / seriesDash / markers, fixed per (dir, router)
    QCPGraph* graph = nullptr;
    QCPErrorBars* bars = nullptr;           ///< speed metrics only (nullptr otherwise)
    std::vector<Evaluation::Point> points;  ///< the plotted points, in the graph's data order (ascending x)
  };
  /// One heatmap row: a checked result with layer_rel_error.
  struct HeatRow {
    QString evaluation, router;
    double fraction = 0;
    std::vector<double> values;  ///< per column (site index); NaN: dense site or not recorded
    QStringList sites;           ///< the row's evaluation's site names
  };
  explicit CompareView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  /// The numbers table (one line per checked result, all metrics with the
  /// spreads), a blank line, then `evaluation,router,fraction,layer,
  /// layer_rel_error` (layer: the site name; empty value for a dense site).
  QString csvData() const override;
  /// The curve plot and the heatmap (the list, the table and the warning line are not part of the figure).
  QWidget* figureRoot() override;

  QListWidget* evaluationList() const { return list_; }
  /// "active fraction (k / E)" (data 0) or "FFN FLOPs / dense" (data 1).
  QComboBox* xAxisCombo() const { return xAxis_; }
  /// Item data: Metric.
  QComboBox* metricCombo() const { return metric_; }
  QCustomPlot* curvePlot() const { return curves_; }
  QCustomPlot* heatmapPlot() const { return heat_; }
  QCPColorMap* heatmap() const { return heatMap_; }
  QTableWidget* numbersTable() const { return table_; }
  /// The amber line over the figure when the checked evaluations are on different data.
  QLabel* dataWarning() const { return warning_; }
  bool dataWarningShown() const;
  const std::vector<Curve>& curves() const { return drawn_; }
  const std::vector<HeatRow>& heatRows() const { return heatRows_; }
  /// The heatmap's column labels (site names).
  QStringList heatColumns() const { return heatColumns_; }
  /// The caption rows under the plots' titles (which data; points left out; the site with the most error).
  QString curveCaption() const { return curveCaptionText_; }
  QString heatmapCaption() const { return heatCaptionText_; }
  /// Points left out of the plot: no FFN FLOP fraction (FLOP axis) or no value of the metric (no timings).
  int omittedPoints() const { return omittedX_ + omittedY_; }
  /// The tooltip shown at `pixel` of curvePlot() (nearest point within 12 px)
  /// or heatmapPlot() (the cell under it); "" when nothing is there.
  QString hoverText(QCustomPlot* plot, const QPointF& pixel) const;

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;

 private:
  struct Entry {
    QString path, name;
    std::shared_ptr<Evaluation> eval;  ///< nullptr: unreadable (error in `error`)
    QString error;
  };
  void rebuildList();
  void redraw();
  void drawHeatmap(const std::vector<const Entry*>& shown);
  /// Whether the heatmap's cells, as laid out now, are large enough for their values.
  bool heatCellsHoldText() const;
  /// Prints each cell's value in it when heatCellsHoldText() (removes them otherwise).
  void placeHeatTexts();
  void layoutCaptions();
  QListWidget* list_;
  QLabel* listNote_;
  QComboBox* xAxis_;
  QComboBox* metric_;
  QLabel* warning_;
  QWidget* plots_;
  QCustomPlot* curves_;
  QCustomPlot* heat_;
  QCPColorMap* heatMap_;
  QCPColorScale* heatScale_;
  QCPTextElement* curveCaption_;
  QCPTextElement* heatCaption_;
  QTableWidget* table_;
  QString workspace_;                ///< the workspace the check states and styles belong to
  std::vector<Entry> entries_;       ///< the list's evaluations, in its order
  std::map<QString, bool> checked_;  ///< by folder: the user's (or the default) check state
  std::map<QString, int> styles_;    ///< "dir\nrouter" -> style index, assigned once per workspace
  std::vector<Curve> drawn_;
  std::vector<HeatRow> heatRows_;
  QStringList heatColumns_;
  std::vector<QCPItemText*> heatTexts_;
  bool heatTextsShown_ = false;
  QString curveCaptionText_, heatCaptionText_;
  int omittedX_ = 0, omittedY_ = 0;
  bool filling_ = false;
};

/// The quality-versus-FFN-FLOPs front (`moefy front`, docs/formats.md
/// "Front"): held-out perplexity (log y) and top-1 agreement with dense
/// against the measured FFN FLOP fraction, one series per method front.json
/// lists (in its order; none is assumed), the top-k activation bound dashed
/// at its neuron budget, dense as a horizontal line; below, every method's
/// point per budget and the best method per budget with its gain over plain.
class FrontView : public FigureView {
  Q_OBJECT
 public:
  explicit FrontView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  /// One row per plotted point (the bound's x is its neuron budget), then dense.
  QString csvData() const override;
  /// The two plots side by side (the tables are not part of the figure).
  QWidget* figureRoot() override;
  QCustomPlot* perplexityPlot() const { return ppl_; }
  QCustomPlot* top1Plot() const { return top1_; }
  /// Per method and budget: method, budget, measured FFN FLOPs, k/E, mean k,
  /// perplexity, top-1 (a budget without a point reads "-").
  QTableWidget* pointsTable() const { return points_; }
  /// Per budget: budget, best method, its perplexity, plain's, the change over plain.
  QTableWidget* bestTable() const { return best_; }
  /// "data: ..." under each plot's title (Front::dataSubtitle); "" without a front.
  QString dataCaption() const;
  /// The reader's error shown instead of the figures when the picked front
  /// cannot be read ("" otherwise).
  QString errorText() const { return error_; }

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;

 private:
  /// Sets the caption of both plots, broken into lines that fit each plot's width.
  void layoutCaptions();
  QWidget* plots_;
  QCustomPlot* ppl_;
  QCustomPlot* top1_;
  QCPTextElement* caption_[2] = {nullptr, nullptr};
  QTableWidget* points_;
  QTableWidget* best_;
  QString error_;
  std::shared_ptr<Front> front_;
};

/// The MoE analysis of a native MoE checkpoint (`moefy analyze`, docs/formats.md
/// "MoE analysis", read by readMoeAnalysis through Analysis::open) at one
/// analysed layer: six panels, expert weight similarity (measure sim /
/// mean_sim / match_sim / output_sim, projection gate / up / down / whole
/// neuron), router similarity, router rank against output-norm rank (this
/// layer or summed over layers; the top-1 = largest-norm share in the
/// caption), expert usage sorted on a log axis (usage perplexity and dead
/// share in the caption), expert co-occurrence (diagonal removed, rows
/// summing to 1) and the PCA of experts (and of their neurons, coloured by
/// expert). Clicking an expert in any expert-indexed panel selects it
/// (StudioContext::selectExpert); the selected expert is outlined in every
/// expert-indexed panel (the rank-count matrix is indexed by rank, not by
/// expert). The heatmaps' colour range is per layer or one range over every
/// analysed layer (scaleModeCombo), so figures exported for all layers share
/// one scale when asked.
class ExpertsView : public FigureView {
  Q_OBJECT
 public:
  enum Panel { Similarity, RouterSimilarity, RankCounts, Usage, Cooccurrence, Pca, PanelCount };
  explicit ExpertsView(StudioContext* ctx, QWidget* parent = nullptr);
  void refresh() override;
  /// The current layer's drawn values: "panel,site,row,column,value" lines
  /// (heatmaps by row and column, usage by expert with its bar position in
  /// the column, PCA by expert / neuron with x and y as columns 0 and 1).
  QString csvData() const override;
  /// The six panels (the option bars are not part of the figure).
  QWidget* figureRoot() override;
  QCustomPlot* plot(Panel p) const { return plots_[p]; }
  /// The heatmap of a heatmap panel (nullptr for Usage and Pca).
  QCPColorMap* heatmap(Panel p) const { return maps_[p]; }
  /// The similarity panel's tensor without the site prefix ("sim.gate", "match_sim", ...).
  QString similarityTensor() const;
  /// The experts in the usage panel's bar order (selection share descending, ties by index).
  const std::vector<int>& usageOrder() const { return usageOrder_; }
  /// The expert drawn under `pixel` of panel `p` (heatmap row, usage bar,
  /// nearest PCA point); -1 for none and for the rank-count panel.
  int expertAt(Panel p, const QPointF& pixel) const;
  /// The caption under a panel's title (its figures: R², top-1 share, usage perplexity, ...).
  QString caption(Panel p) const { return captionText_[p]; }
  /// The reader's error shown instead of the panels when the picked analysis
  /// cannot be read ("" otherwise).
  QString errorText() const { return error_; }
  QComboBox* measureCombo() const { return measure_; }
  QComboBox* projectionCombo() const { return projection_; }
  QComboBox* rankScopeCombo() const { return rankScope_; }
  /// "Per-layer scale" / "Global scale" (every analysed layer's values).
  QComboBox* scaleModeCombo() const { return scaleMode_; }

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;

 private:
  void drawHeatmap(Panel p, const std::string& tensor, bool summed, bool dropDiagonal, int experts);
  void drawUsage();
  void drawPca();
  /// Outlines the selected expert in every expert-indexed panel.
  void highlight();
  void layoutCaptions();
  void setCaption(Panel p, const QString& text);
  QWidget* plotsWidget_;
  QCustomPlot* plots_[PanelCount] = {};
  QCPColorMap* maps_[PanelCount] = {};
  QCPColorScale* scales_[PanelCount] = {};
  QCPTextElement* captions_[PanelCount] = {};
  QString captionText_[PanelCount];
  QComboBox* measure_;
  QComboBox* projection_;
  QComboBox* rankScope_;
  QComboBox* scaleMode_;
  QString error_;
  std::shared_ptr<Analysis> analysis_;
  std::vector<int> usageOrder_;
  std::vector<std::pair<double, double>> expertPoints_;  ///< PCA of experts, by expert
  std::vector<std::pair<double, double>> neuronPoints_;  ///< PCA of neurons (with neuronExpert_)
  std::vector<int> neuronExpert_;
};

/// The selected neuron's statistics and its top-activating recorded samples.
class NeuronInspector : public QWidget {
  Q_OBJECT
 public:
  /// Follows the context's selection (StudioContext::selectionChanged): its
  /// neuron, and the expert that neuron has in the selection's partition.
  explicit NeuronInspector(StudioContext* ctx, QWidget* parent = nullptr);
  /// Shows neuron `neuron` of `layer`; the expert row is the selection's
  /// expert when the selection is this neuron, else its expert in the current partition.
  void show(int layer, int neuron);
  QString text() const;

 private:
  StudioContext* ctx_;
  QTextBrowser* out_;
};

}  // namespace moefy::views
