#pragma once
#include <QTableWidget>
#include <QTextBrowser>
#include <memory>
#include <vector>

#include "views/figure.h"

class QCustomPlot;

namespace moefy {
class Corpus;
class Tokenizer;
}  // namespace moefy

namespace moefy::views {

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
};

}  // namespace moefy::views
