#pragma once
// The Neuron view (issue 20): a page per neuron and per expert in the spirit
// of feature dashboards, following the studio's one selection.
#include <QRect>
#include <QString>
#include <QStringList>
#include <memory>
#include <vector>

#include "views/figure.h"

class QCustomPlot;
class QTabBar;
class QTabWidget;
class QStackedWidget;
class QTableWidget;

namespace moefy::views {

class ContextStrip;

/// Two pages, picked with the "Neuron | Expert" tabs on the left edge of the
/// body and moved by the selection (a newly selected neuron shows the neuron
/// page, a newly selected expert the expert page).
///
/// Neuron page (the selection's neuron at the picked site; with none
/// selected, the site's most frequently firing neuron, said in the header):
/// the header (site, neuron, firing frequency, mean, max, status, expert);
/// the top-activating recorded samples as contexts: up to 12 tokens before
/// and 4 after the sampled token inside the recorder's window, each token
/// shaded by this neuron's activation (white at 0 to orange at the page's
/// largest; activationShade), the sampled token bold, computed by a studio
/// task that runs the workspace model on the recorder's window
/// (moefy::neuronActivationsInWindows), or the recorded token alone with the
/// reason in the caption; clicking a context opens its document in the Corpus
/// view coloured by this neuron (CorpusView::showDocumentActivations); the
/// histogram of its activations over the recorded samples (active ones, the
/// inactive share in the caption); its firing frequency per category
/// (categoryCount / categoryTokens) with the overall frequency dashed; its
/// co-activating neighbours (coact row, Jaccard and lift); its expert in
/// every partition of the workspace that splits the site.
///
/// Expert page (the selection's expert in the picked partition; with none
/// selected, the shown neuron's expert): members with frequency and mean;
/// usage on the recorded samples under the picked router (the oracle without
/// one: views::routeRecordedSamples, as the Router view) against 1/E;
/// category profile (members' mean frequency per category over their overall
/// mean frequency); the router's recall of this expert against the oracle
/// and router.json's mass recall.
///
/// Everything that reads sample matrices, co-activation rows or routes
/// samples runs as studio tasks (busy() while any runs).
class NeuronView : public FigureView {
  Q_OBJECT
 public:
  enum Page { NeuronPage = 0, ExpertPage = 1 };
  explicit NeuronView(StudioContext* ctx, QWidget* parent = nullptr);
  ~NeuronView() override;
  void refresh() override;
  /// The shown page's tables and plotted values, sections separated by blank lines.
  QString csvData() const override;
  /// The shown page (plots, the contexts; not the tables).
  QWidget* figureRoot() override;
  /// "neuron-L2-n17" / "expert-L2-e3" (site names for T5 sites).
  QString figureBaseName() const override;

  Page page() const;
  void showPage(Page page);
  /// A studio task of the view (samples, contexts, routing) is running.
  bool busy() const;
  int shownLayer() const { return layer_; }
  int shownNeuron() const { return neuron_; }
  int shownExpert() const { return expert_; }
  /// The shown neuron is the site's most frequent one (nothing selected there).
  bool showingDefaultNeuron() const { return defaultNeuron_; }

  /// One top-activating recorded sample and its context.
  struct Context {
    int sample = -1;       ///< row of Recording::samples(layer)
    qint64 document = -1;  ///< doc_id
    qint64 position = -1;  ///< token offset in the document's recorded encoding
    int category = -1;
    float recorded = 0;           ///< the recorded activation (sampleAct)
    int32_t tokenId = -1;         ///< the recorded token
    qint64 firstToken = -1;       ///< document offset of tokens[0] (-1: the recorded token alone)
    int sampleIndex = 0;          ///< index of the sampled token in tokens
    std::vector<int32_t> tokens;  ///< [n] the context's tokens
    QStringList pieces;           ///< [n] their text
    std::vector<float> act;       ///< [n] this neuron's activation on each
    bool fromModel = false;       ///< act comes from the model (else only the recorded token)
  };
  const std::vector<Context>& contexts() const { return contexts_; }
  /// Under the contexts: how they were computed, or why only the recorded tokens are shown.
  QString contextsCaption() const { return contextsCaption_; }
  /// Opens context `row` in the Corpus view coloured by the neuron (as a click does).
  void openContext(int row);
  /// The painted contexts (one row per entry of contexts(), under a title).
  QWidget* contextStrip() const;
  /// Row `row` of the contexts in contextStrip()'s coordinates (a click there opens it).
  QRect contextRowRect(int row) const;
  /// The activation the contexts' orange stands for (their largest).
  double contextScaleMax() const;

  /// Histogram of the active samples (activation > 0): bins [edges[i], edges[i+1]) (the last closed), counts.
  const std::vector<double>& histogramEdges() const { return histEdges_; }
  const std::vector<qint64>& histogramCounts() const { return histCounts_; }
  qint64 inactiveSamples() const { return inactive_; }  ///< samples with activation <= 0
  qint64 sampleCount() const { return samples_; }
  /// Per category of the recording: categoryCount / categoryTokens (NaN when the category has no token).
  const std::vector<double>& categoryFrequency() const { return catFreq_; }
  QCustomPlot* histogramPlot() const { return hist_; }
  QCustomPlot* categoryPlot() const { return cats_; }

  /// A co-activating neighbour j of neuron i, from the co-activation counts
  /// C (c_ij = C[i][j], c_i = C[i][i]): Jaccard c_ij / (c_i + c_j - c_ij)
  /// and lift c_ij T / (c_i c_j) (T the site's tokens; PMI = log lift).
  struct Neighbour {
    int neuron = -1;
    qint64 count = 0;
    double jaccard = 0;
    double lift = 0;
    int expert = -1;  ///< its expert in the picked partition (-1: none)
  };
  /// The 10 neurons of largest Jaccard with the shown neuron (ties: larger
  /// count, then smaller id), count > 0, itself excluded.
  const std::vector<Neighbour>& neighbours() const { return neighbours_; }
  QTableWidget* neighboursTable() const { return neighboursTable_; }

  /// Every partition of the workspace that splits the site at its width.
  struct PartitionRow {
    QString path, name, method;
    int experts = 0, expert = -1, expertSize = 0;
  };
  const std::vector<PartitionRow>& partitionRows() const { return partRows_; }
  QTableWidget* partitionsTable() const { return partitionsTable_; }

  // Expert page.
  /// The expert's members, by descending firing frequency (ties: smaller id).
  const std::vector<int>& members() const { return members_; }
  QTableWidget* membersTable() const { return membersTable_; }
  /// Share of the k selections per sampled token that chose each expert [E]
  /// (counts of e in the top-k / (S k)); uniform = 1/E.
  const std::vector<double>& usageShare() const { return usage_; }
  int usageK() const { return usageK_; }
  /// Router recall of the shown expert: of the samples whose oracle top-k
  /// holds it, the share whose router top-k does (NaN without a router).
  double expertRecall() const { return recall_; }
  /// Per category: the members' mean frequency in the category over their
  /// mean overall frequency (NaN when the category has no token).
  const std::vector<double>& categoryProfile() const { return profile_; }
  QCustomPlot* usagePlot() const { return usagePlot_; }
  QCustomPlot* profilePlot() const { return profilePlot_; }
  QString expertCaption() const;

 private:
  void drawNeuronPage();
  void drawExpertPage();
  void startSamplesTask();
  void startContextsTask();
  void startRoutingTask();
  void drawHistogram();
  void drawCategories();
  void fillNeighbours();
  void fillPartitions();
  void drawUsage();
  /// Moves to the page the selection asks for (see the class comment).
  void followSelection();

  QTabBar* pageTabs_;
  QStackedWidget* pages_;
  QWidget* neuronPage_;
  QWidget* expertPage_;
  QLabel* header_;
  ContextStrip* strip_;
  QLabel* contextsNote_;
  QCustomPlot* hist_;
  QCustomPlot* cats_;
  QTabWidget* tables_;
  QTableWidget* neighboursTable_;
  QTableWidget* partitionsTable_;
  QLabel* expertHeader_;
  QTableWidget* membersTable_;
  QCustomPlot* usagePlot_;
  QCustomPlot* profilePlot_;

  std::shared_ptr<Recording> rec_;
  std::shared_ptr<Partition> part_;
  std::shared_ptr<Router> router_;
  QString routerNote_;  ///< why the usage is the oracle's although a router is picked ("" otherwise)
  int layer_ = -1, neuron_ = -1, expert_ = -1;
  bool defaultNeuron_ = false, defaultExpert_ = false;
  StudioContext::Selection lastSel_;  ///< the selection the page was last moved by

  std::vector<Context> contexts_;
  QString contextsCaption_;
  std::vector<double> histEdges_;
  std::vector<qint64> histCounts_;
  qint64 inactive_ = 0, samples_ = 0;
  std::vector<double> catFreq_;
  std::vector<Neighbour> neighbours_;
  QString neighboursNote_;
  std::vector<PartitionRow> partRows_;
  QString samplesKey_;  ///< recording|layer|neuron the samples task ran for

  std::vector<int> members_;
  std::vector<double> usage_;
  std::vector<double> profile_;
  std::vector<int> routedTop_, oracleTop_;  ///< [S * k] of the routing the usage is from
  int usageK_ = 0, usageSamples_ = 0;
  double recall_ = 0;
  QString routingKey_;  ///< recording|partition|router|layer the routing is for
  QString routingError_;
};

}  // namespace moefy::views
