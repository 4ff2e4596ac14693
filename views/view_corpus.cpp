#include "views/view_corpus.h"

#include <QFileInfo>
#include <QFontMetrics>
#include <QHeaderView>
#include <QPointer>
#include <QSignalBlocker>
#include <QSplitter>
#include <QVBoxLayout>
#include <algorithm>
#include <map>

#include "analysis/jobs/job.h"
#include "analysis/record/sample_context.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"
#include "views/context.h"
#include "views/jobrunner.h"
#include "views/qcp.h"
#include "views/style.h"

namespace moefy::views {

CorpusView::CorpusView(StudioContext* ctx, QWidget* parent) : FigureView(ctx, "Corpus", 0, parent) {
  auto* lay = new QVBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  info_ = new QLabel(body());
  info_->setWordWrap(true);
  lay->addWidget(info_);
  auto* split = new QSplitter(Qt::Horizontal, body());
  auto* left = new QSplitter(Qt::Vertical, split);
  docs_ = new QTableWidget(left);
  docs_->setObjectName("corpusDocuments");
  docs_->setColumnCount(5);
  docs_->setHorizontalHeaderLabels({"id", "category", "tokens", "characters", "source"});
  docs_->verticalHeader()->setVisible(false);
  docs_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  docs_->setSelectionBehavior(QAbstractItemView::SelectRows);
  docs_->setSelectionMode(QAbstractItemView::SingleSelection);
  docs_->horizontalHeader()->setStretchLastSection(true);
  plot_ = new QCustomPlot(left);
  plot_->plotLayout()->insertRow(0);
  plot_->plotLayout()->addElement(0, 0, new QCPTextElement(plot_, "Tokens per category", QFont(figureFont(11).family(), 11, QFont::Bold)));
  applyPublicationStyle(plot_);
  plot_->setMinimumHeight(150);
  text_ = new QTextBrowser(split);
  text_->setObjectName("corpusText");
  text_->setOpenLinks(false);
  left->addWidget(docs_);
  left->addWidget(plot_);
  split->addWidget(left);
  split->addWidget(text_);
  split->setStretchFactor(0, 1);
  split->setStretchFactor(1, 1);
  lay->addWidget(split, 1);
  connect(docs_, &QTableWidget::currentCellChanged, this, [this](int row, int, int, int) {
    if (row < 0) return;
    activationMode_ = false;  // the user picked a document: shown plain
    showDocument(docs_->item(row, 0)->data(Qt::UserRole).toInt());
  });
  connect(ctx, &StudioContext::workspaceChanged, this, [this] {
    loadedFor_.clear();
    activationMode_ = activationsRunning_ = false;  // its task was cancelled with the workspace
    actIds_.clear();
    actValues_.clear();
  });
  refresh();
}

CorpusView::~CorpusView() = default;

void CorpusView::refresh() {
  if (!ctx()->hasWorkspace()) {
    setEmptyState("No workspace open.");
    return;
  }
  const QString path = ctx()->workspace().corpus();
  const QString model = ctx()->workspace().model();
  if (path.isEmpty() || !QFileInfo::exists(path)) {
    setEmptyState(QString("The workspace's corpus does not exist:\n%1\n\nSet it with File > Workspace settings... "
                          "(a .txt file, a .jsonl file, or a folder of text files with one sub-folder per category).")
                      .arg(path.isEmpty() ? "(none)" : path));
    return;
  }
  const QString key = path + "|" + model;
  if (key == loadedFor_) return;
  // A running read of the same corpus is kept; any other is superseded.
  if (loading_ && loadingFor_ == key && ctx()->tasks()->isRunning("corpus")) return;
  loading_ = true;
  loadingFor_ = key;
  setEmptyState("Reading the corpus...");
  QPointer<CorpusView> self(this);
  ctx()->tasks()->run("corpus", this, [self, path, model, key](JobContext& job) -> std::function<void()> {
    job.setStage("read corpus");
    std::shared_ptr<const Corpus> corpus;
    std::shared_ptr<const Tokenizer> tok;
    std::vector<Doc> rows;
    QString err, tokErr;
    try {
      corpus = Corpus::open(path.toStdString());
      try {
        if (QFileInfo(model).isDir())
          tok = Tokenizer::fromModelDir(model.toStdString());
        else
          tokErr = "no model folder";
      } catch (const std::exception& e) {
        tokErr = e.what();
      }
      const auto& cats = corpus->categories();
      corpus->forEachDocument([&](const Document& d) {
        if (job.cancelled()) return false;  // superseded or the window closed
        Doc r;
        r.id = d.id;
        r.category = d.category >= 0 && d.category < static_cast<int>(cats.size()) ? QString::fromStdString(cats[d.category]) : "-";
        r.source = QString::fromStdString(d.source);
        r.chars = static_cast<qint64>(QString::fromStdString(d.text).size());
        if (tok) r.tokens = static_cast<qint64>(tok->encode(d.text, false).size());
        rows.push_back(r);
        return true;
      });
    } catch (const std::exception& e) {
      err = e.what();
    }
    job.checkCancel();
    return [self, corpus, tok, rows, err, tokErr, key, path] {
      if (!self) return;
      self->loading_ = false;
      self->loadedFor_ = key;
      if (!err.isEmpty()) {
        self->ctx()->report(StudioContext::Error, "Corpus: " + err);
        self->setEmptyState("Cannot read the corpus:\n" + err);
        return;
      }
      if (!tokErr.isEmpty())
        self->ctx()->report(StudioContext::Warning,
                            "Corpus view: no tokenizer (" + tokErr + "); token counts are not shown");
      self->corpus_ = corpus;
      self->tokenizer_ = tok;
      self->rows_ = rows;
      self->setEmptyState("");
      auto* t = self->docs_;
      t->setSortingEnabled(false);
      t->setRowCount(static_cast<int>(rows.size()));
      std::map<QString, std::pair<double, int>> perCat;
      qint64 totalTok = 0;
      for (int i = 0; i < static_cast<int>(rows.size()); ++i) {
        const Doc& d = rows[i];
        auto* idItem = new QTableWidgetItem;
        idItem->setData(Qt::DisplayRole, d.id);
        idItem->setData(Qt::UserRole, i);
        t->setItem(i, 0, idItem);
        t->setItem(i, 1, new QTableWidgetItem(d.category));
        auto* tk = new QTableWidgetItem;
        if (d.tokens >= 0)
          tk->setData(Qt::DisplayRole, d.tokens);
        else
          tk->setText("-");
        t->setItem(i, 2, tk);
        auto* ch = new QTableWidgetItem;
        ch->setData(Qt::DisplayRole, d.chars);
        t->setItem(i, 3, ch);
        t->setItem(i, 4, new QTableWidgetItem(QFileInfo(d.source).fileName()));
        auto& pc = perCat[d.category];
        pc.first += std::max<qint64>(0, d.tokens >= 0 ? d.tokens : d.chars);
        pc.second += 1;
        totalTok += std::max<qint64>(0, d.tokens);
      }
      t->setSortingEnabled(true);
      t->resizeColumnsToContents();
      self->info_->setText(QString("%1 (%2): %3 documents in %4 categories%5. Tokenizer: %6. Pick a document to see its tokens.")
                               .arg(path, QString::fromStdString(corpus->kind())).arg(rows.size()).arg(corpus->categories().size())
                               .arg(tok ? QString(", %L1 tokens").arg(totalTok) : QString())
                               .arg(tok ? QString::fromStdString(tok->kind()) : QString("none")));
      auto* plot = self->plot_;
      plot->clearPlottables();
      auto* bars = new QCPBars(plot->yAxis, plot->xAxis);
      QSharedPointer<QCPAxisTickerText> tick(new QCPAxisTickerText);
      QVector<double> x, y;
      int i = 0;
      double ymax = 1;
      for (const auto& [cat, v] : perCat) {
        x << i;
        y << v.first;
        ymax = std::max(ymax, v.first);
        tick->addTick(i++, QString("%1 (%2)").arg(cat).arg(v.second));
      }
      bars->setData(x, y);
      bars->setBrush(mapColor(ColorMap::Viridis, 0.45));
      bars->setPen(Qt::NoPen);
      plot->yAxis->setTicker(tick);
      plot->yAxis->setTickLabelFont(figureFont(perCat.size() > 10 ? 7 : 8));
      plot->yAxis->setRange(-0.6, i - 0.4);
      // One label line per category: the plot is made tall enough for all of
      // them (15 Brown categories overlapped in the default 150 px at 1366x768).
      const int lineHeight = QFontMetrics(plot->yAxis->tickLabelFont()).height() + 2;
      plot->setMinimumHeight(std::clamp(90 + i * lineHeight, 150, 360));
      plot->xAxis->setLabel(tok ? "tokens (documents in brackets)" : "characters (no tokenizer; documents in brackets)");
      plot->xAxis->setRange(0, ymax * 1.1);
      plot->replot();
      // A coloured document asked for before the table was read stays shown.
      if (self->activationMode_)
        self->selectDocumentRow(self->actDoc_);
      else if (!rows.empty())
        self->docs_->selectRow(0);
    };
  });
}

int CorpusView::showDocument(int row) {
  if (!corpus_ || row < 0 || row >= static_cast<int>(rows_.size())) return 0;
  Document d;
  try {
    d = corpus_->document(rows_[row].id);
  } catch (const std::exception& e) {
    ctx()->report(StudioContext::Error, e.what());
    return 0;
  }
  QString html = QString("<p><b>Document %1</b> (%2, %3)</p>").arg(d.id).arg(rows_[row].category, QFileInfo(QString::fromStdString(d.source)).fileName());
  int n = 0;
  if (tokenizer_) {
    // Token boundaries: each token's decoded piece on an alternating background.
    std::string text = d.text.size() > 20000 ? d.text.substr(0, 20000) : d.text;
    std::vector<int32_t> ids = tokenizer_->encode(text, false);
    n = static_cast<int>(ids.size());
    html += QString("<p style='color:#555'>%1 tokens%2; boundaries shown by alternating shading, hover a token for its id.</p><p style='line-height:150%'>")
                .arg(n).arg(d.text.size() > 20000 ? " in the first 20,000 bytes" : "");
    for (int i = 0; i < n; ++i) {
      QString piece = QString::fromStdString(tokenizer_->decode({ids[i]}, false)).toHtmlEscaped();
      piece.replace("\n", "&#8629;<br>");
      html += QString("<span title='%1' style='background-color:%2'>%3</span>").arg(ids[i]).arg(i % 2 ? "#c6dbef" : "#fdd0a2", piece.isEmpty() ? "&#183;" : piece);
    }
    html += "</p>";
  } else {
    html += "<p style='color:#a00'>No tokenizer in the model folder: plain text shown.</p><pre>" +
            QString::fromStdString(d.text).toHtmlEscaped() + "</pre>";
  }
  html_ = html;
  text_->setHtml(html);
  return n;
}

QString CorpusView::documentHtml() const { return html_; }

QString tokenPiece(const Tokenizer& tokenizer, int32_t id) {
  QString t = QString::fromStdString(tokenizer.decode({id}, false));
  if (t.trimmed().isEmpty() && !t.contains('\n')) {
    if (t.isEmpty() || t.contains(QChar(0xFFFD))) t = QString::fromStdString(tokenizer.idToToken(id));
  } else if (t.contains(QChar(0xFFFD))) {
    t = QString::fromStdString(tokenizer.idToToken(id));
  }
  for (QChar& c : t)
    if (c == '\n')
      c = QChar(0x21B5);
    else if (c.unicode() < 0x20)
      c = QChar(0x2400 + c.unicode());
    else if (c.unicode() == 0x7f)
      c = QChar(0x2421);
  return t.isEmpty() ? QString(QChar(0xB7)) : t;
}

void CorpusView::selectDocumentRow(qint64 docId) {
  for (int r = 0; r < docs_->rowCount(); ++r) {
    QTableWidgetItem* it = docs_->item(r, 0);
    if (!it || it->data(Qt::DisplayRole).toLongLong() != docId) continue;
    const QSignalBlocker block(docs_);  // selected, not shown as plain text
    docs_->selectRow(r);
    docs_->scrollToItem(it);
    return;
  }
}

void CorpusView::showDocumentActivations(const QString& corpusPath, qint64 docId, const Site& site, int neuron,
                                         int seqLen, qint64 highlight) {
  const QString workspaceCorpus = ctx()->hasWorkspace() ? ctx()->workspace().corpus() : QString();
  const QString path = corpusPath.isEmpty() ? workspaceCorpus : corpusPath;
  activationMode_ = true;
  activationsRunning_ = true;
  actDoc_ = docId;
  actIds_.clear();
  actValues_.clear();
  const QString what =
      QString("document %1, neuron %2 at %3").arg(docId).arg(neuron).arg(QString::fromStdString(site.name()));
  html_ = "<p style='color:#555'>" + what.toHtmlEscaped() + ": computing the activations...</p>";
  text_->setHtml(html_);
  if (!workspaceCorpus.isEmpty() &&
      QFileInfo(path).canonicalFilePath() == QFileInfo(workspaceCorpus).canonicalFilePath())
    selectDocumentRow(docId);
  const std::shared_ptr<const SharedModel> model = ctx()->sharedModel();
  QPointer<CorpusView> self(this);
  auto fail = [self, what](const QString& err) {
    if (!self) return;
    self->activationsRunning_ = false;
    self->html_ = "<p style='color:#a00'>Cannot colour " + what.toHtmlEscaped() + ": " + err.toHtmlEscaped() + "</p>";
    self->text_->setHtml(self->html_);
    self->ctx()->report(StudioContext::Warning, "Corpus view: cannot colour " + what + ": " + err);
  };
  if (!model) {
    fail("no workspace model");
    return;
  }
  constexpr size_t kMaxTokens = 8192;  // a long document: its beginning (a few seconds of a small model)
  ctx()->tasks()->run(
      "corpus-activations", this,
      [self, model, path, docId, site, neuron, seqLen, highlight, what](JobContext& job) -> std::function<void()> {
        job.setStage("document activations");
        const std::shared_ptr<const Tokenizer> tokenizer = model->tokenizer();
        const auto corpus = Corpus::open(path.toStdString());
        const Document d = corpus->document(docId);
        std::vector<int32_t> ids = recordedDocumentTokens(*corpus, *tokenizer, docId);
        const size_t total = ids.size();
        if (ids.size() > kMaxTokens) ids.resize(kMaxTokens);
        const auto n = static_cast<int64_t>(ids.size());
        std::vector<float> act = model->neuronActivations(site, neuron, ids, 0, n, seqLen, &job);
        QStringList pieces;
        for (int32_t id : ids) pieces << tokenPiece(*tokenizer, id);
        const auto& cats = corpus->categories();
        const QString category = d.category >= 0 && d.category < static_cast<int>(cats.size())
                                     ? QString::fromStdString(cats[d.category])
                                     : "-";
        const QString source = QFileInfo(QString::fromStdString(d.source)).fileName();
        return [self, ids, act, pieces, category, source, total, docId, highlight, what] {
          if (!self) return;
          self->activationsRunning_ = false;
          if (!self->activationMode_ || self->actDoc_ != docId) return;  // the user moved on
          self->actIds_ = ids;
          self->actValues_ = act;
          float top = 0;
          for (float v : act) top = std::max(top, v);
          QString html = QString(
                             "<p><b>Document %1</b> (%2, %3): %4 shaded by activation, white at 0 to orange at "
                             "%5 (its largest here). %6 tokens as recorded (special tokens included)%7; hover a "
                             "token for its offset, id and activation.</p><p style='line-height:150%'>")
                             .arg(docId)
                             .arg(category.toHtmlEscaped(), source.toHtmlEscaped(), what.toHtmlEscaped())
                             .arg(static_cast<double>(top), 0, 'g', 4)
                             .arg(ids.size())
                             .arg(total > ids.size() ? QString(", the first of %1").arg(total) : QString());
          for (size_t i = 0; i < ids.size(); ++i) {
            QString piece = pieces[static_cast<int>(i)].toHtmlEscaped();
            const bool newline = piece.contains(QChar(0x21B5));
            if (static_cast<qint64>(i) == highlight) piece = "<a name='sample'></a><b><u>" + piece + "</u></b>";
            html += QString("<span title='token %1, id %2, activation %3' style='background-color:%4'>%5</span>")
                        .arg(i)
                        .arg(ids[i])
                        .arg(static_cast<double>(act[i]), 0, 'g', 4)
                        .arg(activationShade(act[i], top).name(), piece);
            if (newline) html += "<br>";
          }
          html += "</p>";
          self->html_ = html;
          self->text_->setHtml(html);
          if (highlight >= 0) self->text_->scrollToAnchor("sample");
        };
      },
      fail);
}

QString CorpusView::csvData() const {
  QString out = "id,category,tokens,characters,source\n";
  for (const Doc& d : rows_) out += QString("%1,%2,%3,%4,\"%5\"\n").arg(d.id).arg(d.category).arg(d.tokens).arg(d.chars).arg(d.source);
  return out;
}

}  // namespace moefy::views
