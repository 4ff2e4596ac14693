#include "views/qcp.h"

#include <QFileInfo>
#include <QHeaderView>
#include <QPointer>
#include <QUrl>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <numeric>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "views/jobrunner.h"
#include "views/style.h"
#include "views/views.h"

namespace moefy::views {

// ------------------------------------------------------------ ModelView

ModelView::ModelView(StudioContext* ctx, QWidget* parent) : FigureView(ctx, "Model", 0, parent) {
  auto* lay = new QHBoxLayout(body());
  lay->setContentsMargins(6, 6, 6, 6);
  table_ = new QTableWidget(body());
  table_->setColumnCount(2);
  table_->setHorizontalHeaderLabels({"property", "value"});
  table_->horizontalHeader()->setStretchLastSection(true);
  table_->verticalHeader()->setVisible(false);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setMinimumWidth(300);
  plot_ = new QCustomPlot(body());
  plot_->plotLayout()->insertRow(0);
  plot_->plotLayout()->addElement(0, 0, new QCPTextElement(plot_, "Parameters by part", QFont(figureFont(11).family(), 11, QFont::Bold)));
  applyPublicationStyle(plot_);
  plot_->setMinimumSize(260, 200);
  lay->addWidget(table_, 1);
  lay->addWidget(plot_, 1);
  refresh();
}

void ModelView::refresh() {
  if (!ctx()->hasWorkspace()) {
    setEmptyState("No workspace open.");
    return;
  }
  const QString dir = ctx()->workspace().model();
  if (dir.isEmpty() || !QFileInfo(dir).isDir()) {
    setEmptyState(QString("The workspace's model folder does not exist:\n%1\n\nSet it with File > Workspace settings... "
                          "(a Hugging Face folder with config.json and *.safetensors).").arg(dir.isEmpty() ? "(none)" : dir));
    return;
  }
  if (dir == loadedFor_) return;
  // A running request for the same folder is kept; any other is superseded.
  if (loading_ && loadingFor_ == dir && ctx()->tasks()->isRunning("model-summary")) return;
  loading_ = true;
  loadingFor_ = dir;
  setEmptyState("Loading the model summary...");
  QPointer<ModelView> self(this);
  // config.json + safetensors headers only (no weights), as a studio task:
  // superseded by a newer request, joined when the window closes.
  ctx()->tasks()->run("model-summary", this, [self, dir](JobContext& job) -> std::function<void()> {
    job.setStage("model summary");
    nlohmann::json info;
    QString err;
    try {
      info = ModelSummary::read(dir).info;
    } catch (const CancelledError&) {
      throw;
    } catch (const std::exception& e) {
      err = e.what();
    }
    return [self, dir, info, err] {
      if (!self) return;
      self->loading_ = false;
      self->loadedFor_ = dir;
      if (!err.isEmpty()) {
        self->ctx()->report(StudioContext::Error, "Model: " + err);
        self->setEmptyState("Cannot load the model:\n" + err);
        return;
      }
      self->setEmptyState("");
      self->table_->setRowCount(0);
      for (auto& [k, v] : info.items()) {
        // The structured site lists stay in `moefy inspect --json`; stack_summary shows them in one line.
        if (k == "moefication" || k == "stacks" || k == "ffn_sites") continue;
        int r = self->table_->rowCount();
        self->table_->insertRow(r);
        self->table_->setItem(r, 0, new QTableWidgetItem(QString::fromStdString(k)));
        QString val = v.is_string() ? QString::fromStdString(v.get<std::string>()) : QString::fromStdString(v.dump());
        if (k == "parameters") val = QString("%L1").arg(v.get<long long>());
        self->table_->setItem(r, 1, new QTableWidgetItem(val));
      }
      self->table_->resizeColumnToContents(0);
      // Parameters by part, from the architecture numbers.
      const double L = info.value("layers", 0), D = info.value("d_model", 0), F = info.value("d_ff", 0), V = info.value("vocab", 0);
      const bool gated = info.value("ffn_kind", std::string()) == "gated";
      const double total = info.value("parameters", 0.0);
      double ffn = L * (gated ? 3 : 2) * D * F;
      double emb = V * D;
      double rest = std::max(0.0, total - ffn - emb);
      auto* plot = self->plot_;
      plot->clearPlottables();
      auto* bars = new QCPBars(plot->yAxis, plot->xAxis);
      const double unit = std::max({ffn, emb, rest}) >= 2e6 ? 1e6 : 1e3;
      bars->setData(QVector<double>{0, 1, 2}, QVector<double>{ffn / unit, emb / unit, rest / unit});
      bars->setBrush(mapColor(ColorMap::Viridis, 0.45));
      bars->setPen(Qt::NoPen);
      QSharedPointer<QCPAxisTickerText> tk(new QCPAxisTickerText);
      tk->addTick(0, "FFN (all layers)");
      tk->addTick(1, "embeddings");
      tk->addTick(2, "attention, norms, rest");
      plot->yAxis->setTicker(tk);
      plot->yAxis->setRange(-0.6, 2.6);
      plot->xAxis->setLabel(unit == 1e6 ? "parameters (millions)" : "parameters (thousands)");
      plot->xAxis->setRange(0, std::max({ffn, emb, rest}) / unit * 1.15 + 1e-9);
      plot->replot();
    };
  });
}

QWidget* ModelView::figureRoot() { return plot_; }

QString ModelView::csvData() const {
  QString out = "property,value\n";
  for (int r = 0; r < table_->rowCount(); ++r)
    out += QString("%1,\"%2\"\n").arg(table_->item(r, 0)->text(), table_->item(r, 1)->text().replace('"', "\"\""));
  return out;
}

// ------------------------------------------------------------ NeuronInspector

NeuronInspector::NeuronInspector(StudioContext* ctx, QWidget* parent) : QWidget(parent), ctx_(ctx) {
  auto* lay = new QVBoxLayout(this);
  lay->setContentsMargins(4, 4, 4, 4);
  out_ = new QTextBrowser(this);
  out_->setObjectName("neuronInspectorText");
  // Lines break between words only: the default also breaks anywhere, which
  // split numbers mid-digit in a narrow dock. Numbers are kept whole by
  // white-space:nowrap in the tables below.
  out_->setWordWrapMode(QTextOption::WordWrap);
  setMinimumWidth(240);
  lay->addWidget(out_);
  // "Open neuron page" (a link in the text) shows the Neuron view, which
  // follows the same selection: this dock stays the quick summary.
  out_->setOpenLinks(false);
  connect(out_, &QTextBrowser::anchorClicked, this, [this](const QUrl& url) {
    if (url.toString() == "moefy:neuron-page") ctx_->requestView("Neuron");
  });
  out_->setHtml("<p style='color:#555'>Select a neuron (right-click the co-activation map, click the sparsity "
                "frequency plot or a neuron in the expert graph) to inspect it.</p>");
  // The one selection drives the inspector: a new neuron, or the same neuron
  // under another partition (its expert changes with it).
  connect(ctx, &StudioContext::selectionChanged, this, [this] {
    const StudioContext::Selection sel = ctx_->selection();
    if (sel.layer >= 0 && sel.neuron >= 0) show(sel.layer, sel.neuron);
  });
  connect(ctx, &StudioContext::workspaceChanged, this, [this] { out_->clear(); });
}

QString NeuronInspector::text() const { return out_->toPlainText(); }

void NeuronInspector::show(int L, int n) {
  auto rec = ctx_->recording(ctx_->current("recording"));
  if (!rec || !rec->stats.count(L) || n < 0 || n >= rec->widthOf(L)) {
    out_->setHtml(QString("<p>Neuron %1 of layer %2: no recording with this layer.</p>").arg(n).arg(L));
    return;
  }
  const auto& s = rec->stats.at(L);
  // The tokens the site counts (T5: its stream's; a native MoE expert: those routed to it).
  const int64_t T = std::max<int64_t>(1, rec->siteTokensOf(L));
  const int F = rec->widthOf(L);
  QString html = QString(
                     "<h3>%1, neuron %2</h3><p><a href='moefy:neuron-page'>Open neuron page</a> (contexts, "
                     "neighbours, its expert in every partition)</p><table>")
                     .arg(rec->siteText(L, true))
                     .arg(n);
  auto row = [&](const QString& k, const QString& v) {
    html += QString("<tr><td valign='top'><b>%1</b></td><td>%2</td></tr>").arg(k, v);
  };
  auto whole = [](const QString& number) { return "<nobr>" + number + "</nobr>"; };
  row("firing frequency", QString("%1 of %2 tokens")
                              .arg(whole(QString("%1%").arg(100.0 * s.count[n] / T, 0, 'f', 2)))
                              .arg(whole(QString("%L1").arg(T))));
  row("mean activation", whole(QString::number(s.mean[n], 'g', 4)));
  row("max activation", whole(QString::number(s.max[n], 'g', 4)));
  if (s.count[n] == 0) row("status", "dead (never active)");
  else if (s.count[n] >= 0.99 * T)
    row("status", "always on");
  // The expert in the selection's partition (the one every view draws), not
  // in whichever partition some dialog or view picked last.
  const StudioContext::Selection sel = ctx_->selection();
  if (auto part = ctx_->partition(sel.partition); part && part->labels.count(L)) {
    const int e = sel.layer == L && sel.neuron == n ? sel.expert : part->labels.at(L)[n];
    row("expert", QString("%1 in %2").arg(e).arg(part->name));
  }
  if (!s.categoryTokens.empty()) {
    QStringList cats;
    for (int c = 0; c < rec->categories.size(); ++c)
      if (s.categoryTokens[c] > 0)
        cats << QString("%1 %2")
                    .arg(rec->categories[c])
                    .arg(whole(QString("%1%").arg(100.0 * s.categoryCount[size_t(c) * F + n] / s.categoryTokens[c], 0,
                                                  'f', 1)));
    row("frequency by category", cats.join(", "));
  }
  html += "</table>";
  if (rec->hasSamples()) {
    try {
      auto act = rec->sampleAct(L);
      const auto& smp = rec->samples(L);  // the rows of sampleAct(L): its stack's reservoir (an expert: routed)
      const int S = static_cast<int>(smp.count());
      std::vector<int> idx(S);
      std::iota(idx.begin(), idx.end(), 0);
      auto v = [&](int i) { return (*act)[size_t(i) * F + n]; };
      int top = std::min(S, 12);
      std::partial_sort(idx.begin(), idx.begin() + top, idx.end(), [&](int a, int b) { return v(a) > v(b); });
      html += QString("<h4>Top-activating recorded samples (of %1)</h4><table><tr><th>activation</th><th>token</th>"
                      "<th>document</th><th>position</th><th>category</th></tr>").arg(S);
      for (int r = 0; r < top; ++r) {
        int i = idx[r];
        if (v(i) <= 0) break;
        int c = smp.category[i];
        html += QString("<tr><td>%1</td><td>%2</td><td>%3</td><td>%4</td><td>%5</td></tr>")
                    .arg(whole(QString::number(v(i), 'f', 3)))
                    .arg(QString("%1 <code>%2</code>")
                             .arg(whole(QString::number(smp.tokenId[i])))
                             .arg(ctx_->tokenText(smp.tokenId[i]).toHtmlEscaped()))
                    .arg(whole(QString::number(smp.docId[i])))
                    .arg(whole(QString::number(smp.position[i])))
                    .arg(c >= 0 && c < rec->categories.size() ? rec->categories[c] : QString("-"));
      }
      html += "</table>";
    } catch (const std::exception& e) {
      html += QString("<p>Samples unavailable: %1</p>").arg(e.what());
    }
  }
  out_->setHtml(html);
}

}  // namespace moefy::views
