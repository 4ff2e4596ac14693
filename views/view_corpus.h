#pragma once
#include <QTableWidget>
#include <QTextBrowser>
#include <memory>
#include <vector>

#include "analysis/model/site.h"
#include "views/figure.h"

class QCustomPlot;

namespace moefy {
class Corpus;
class Tokenizer;
}  // namespace moefy

namespace moefy::views {

/// One token's text for display, decoded alone (thread-safe): a lone piece
/// of a multi-byte character (U+FFFD) or a blank piece shows the vocabulary
/// string, control characters show as Unicode control pictures (a newline as
/// U+21B5), and an empty piece as a middle dot.
QString tokenPiece(const Tokenizer& tokenizer, int32_t id);

/// Corpus documents with categories and token counts (core Corpus + the
/// model's Tokenizer, loaded off the GUI thread); a document's text with its
/// token boundaries shown as alternating backgrounds.
class CorpusView : public FigureView {
  Q_OBJECT
 public:
  explicit CorpusView(StudioContext* ctx, QWidget* parent = nullptr);
  ~CorpusView() override;
  void refresh() override;
  QString csvData() const override;
  bool loading() const { return loading_; }
  int documentCount() const { return static_cast<int>(rows_.size()); }
  /// Shows document `row` (index into the table order); returns its token count.
  int showDocument(int row);
  QString documentHtml() const;

  /// Shows document `docId` of the corpus at `corpusPath` (the recording's
  /// corpus, whose doc ids the samples name; "" = the workspace corpus) with
  /// each token of its recorded encoding (special tokens included,
  /// moefy::recordedDocumentTokens) on a background shaded by the activation
  /// of neuron `neuron` at `site` (activationShade: white at 0, orange at the
  /// document's largest activation). The activations come from a studio task
  /// ("corpus-activations", superseding an older request) that runs the
  /// workspace's shared model window by window as the recorder did (windows
  /// of `seqLen` tokens, moefy::neuronActivationsInWindows), at most the
  /// document's first 8192 tokens. Token `highlight` (a token offset; -1:
  /// none) is drawn bold and underlined and scrolled into view. The document
  /// table selects the document's row when it lists that corpus; picking
  /// another row leaves the colouring. A failure (no model, another
  /// tokenizer, a site without per-document windows) is shown in the text
  /// pane and reported as a warning.
  void showDocumentActivations(const QString& corpusPath, qint64 docId, const moefy::Site& site, int neuron, int seqLen,
                               qint64 highlight = -1);
  /// The activation task of showDocumentActivations is running.
  bool activationsRunning() const { return activationsRunning_; }
  /// The document the coloured text shows (-1 when the text pane shows a
  /// plain document or nothing).
  qint64 shownActivationDocument() const { return activationMode_ && !actIds_.empty() ? actDoc_ : -1; }
  /// The coloured document's tokens [T] and the neuron's activation on each
  /// [T] (empty when no coloured document is shown).
  const std::vector<int32_t>& shownTokens() const { return actIds_; }
  const std::vector<float>& shownActivations() const { return actValues_; }

  struct Doc {
    qint64 id = 0;
    QString category, source;
    qint64 tokens = -1, chars = 0;
  };

 private:
  QTableWidget* docs_;
  QTextBrowser* text_;
  QCustomPlot* plot_;
  QLabel* info_;
  QString loadedFor_, loadingFor_;
  bool loading_ = false;
  std::vector<Doc> rows_;
  QString html_;  ///< the HTML last given to text_ (QTextBrowser rewrites what it is given)
  std::shared_ptr<const Corpus> corpus_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  /// Selects the table row of document `docId` without showing it as plain text.
  void selectDocumentRow(qint64 docId);
  bool activationsRunning_ = false;
  bool activationMode_ = false;  ///< the text pane shows (or will show) a coloured document
  qint64 actDoc_ = -1;
  std::vector<int32_t> actIds_;   ///< [T] the coloured document's tokens
  std::vector<float> actValues_;  ///< [T] the neuron's activation on each
};

}  // namespace moefy::views
