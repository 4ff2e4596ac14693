#include "views/context.h"
#include "views/view_corpus.h"

#include <QFileInfo>
#include <QPointer>

#include "analysis/jobs/job.h"
#include "analysis/text/tokenizer.h"
#include "views/jobrunner.h"

namespace moefy::views {

StudioContext::StudioContext(QObject* parent)
    : QObject(parent), jobs_(new JobRunner(this)), tasks_(new TaskRunner(this)) {}

std::shared_ptr<const SharedModel> StudioContext::sharedModel() {
  if (!ws_) return nullptr;
  const QString dir = ws_->model();
  if (!model_ || model_->dir() != dir) model_ = std::make_shared<const SharedModel>(dir);
  return model_;
}

void StudioContext::shutdown() {
  tasks_->shutdown();
  if (jobs_->busy()) {
    jobs_->cancel();
    jobs_->wait(60000);
  }
}

bool StudioContext::openWorkspace(const QString& dir, QString* error) {
  try {
    setWorkspace(Workspace::load(dir));
    return true;
  } catch (const std::exception& e) {
    const QString msg = QString("Cannot open workspace: %1").arg(e.what());
    if (error) *error = msg;
    report(Error, msg);
    return false;
  }
}

void StudioContext::setWorkspace(const Workspace& ws) {
  ws_ = ws;
  recordings_.clear();
  partitions_.clear();
  routers_.clear();
  evals_.clear();
  fronts_.clear();
  analyses_.clear();
  reported_.clear();
  current_.clear();
  tokenizer_.reset();
  tokenizerTried_ = false;
  tasks_->cancelAll();  // results for the previous workspace are dropped
  model_.reset();
  selLayer_ = selNeuron_ = selExpert_ = -1;
  artefacts_ = scanArtefacts(*ws_);
  // Default picks: the first artefact of each kind.
  for (const auto& a : artefacts_)
    if (!current_.count(a.kind)) current_[a.kind] = a.path;
  report(Info, QString("Opened workspace %1 (%2)").arg(ws_->name, ws_->dir));
  // Broken and stale links are reported by name, never silently followed.
  const Workspace copy = *ws_;
  QPointer<StudioContext> self(this);
  tasks_->run("link-check", this, [self, copy](JobContext& job) -> std::function<void()> {
    job.setStage("check links");
    const QStringList problems = linkProblems(copy);
    return [self, problems] {
      if (!self) return;
      for (const QString& p : problems) self->report(Warning, p);
    };
  });
  Q_EMIT workspaceChanged();
}

void StudioContext::rescan() {
  if (!ws_) return;
  artefacts_ = scanArtefacts(*ws_);
  // Forget cached artefacts whose folder changed or vanished.
  auto prune = [](auto& cache) {
    for (auto it = cache.begin(); it != cache.end();)
      it = QFileInfo::exists(it->first) ? std::next(it) : cache.erase(it);
  };
  prune(recordings_);
  prune(partitions_);
  prune(routers_);
  prune(evals_);
  prune(fronts_);
  prune(analyses_);
  for (const auto& a : artefacts_)
    if (!current_.count(a.kind) || !QFileInfo::exists(current_[a.kind])) current_[a.kind] = a.path;
  Q_EMIT artefactsChanged();
}

QStringList StudioContext::paths(const QString& kind) const {
  QStringList out;
  for (const auto& a : artefacts_)
    if (a.kind == kind) out << a.path;
  return out;
}

namespace {
template <typename T, typename Cache, typename Ctx>
std::shared_ptr<T> cached(Cache& cache, const QString& path, Ctx* ctx, std::map<QString, QString>& reported) {
  if (path.isEmpty()) return nullptr;
  auto it = cache.find(path);
  if (it != cache.end()) return it->second;
  try {
    auto v = T::open(path);
    cache[path] = v;
    reported.erase(path);  // loads again: a later failure is reported anew
    return v;
  } catch (const std::exception& e) {
    QString msg = QString::fromUtf8(e.what());
    if (reported[path] != msg) {
      reported[path] = msg;
      ctx->report(StudioContext::Error, msg);
    }
    return nullptr;
  }
}
}  // namespace

std::shared_ptr<Recording> StudioContext::recording(const QString& p) { return cached<Recording>(recordings_, p, this, reported_); }
std::shared_ptr<Partition> StudioContext::partition(const QString& p) { return cached<Partition>(partitions_, p, this, reported_); }
std::shared_ptr<Router> StudioContext::router(const QString& p) { return cached<Router>(routers_, p, this, reported_); }
std::shared_ptr<Evaluation> StudioContext::evaluation(const QString& p) { return cached<Evaluation>(evals_, p, this, reported_); }
std::shared_ptr<Front> StudioContext::front(const QString& p) { return cached<Front>(fronts_, p, this, reported_); }
std::shared_ptr<Analysis> StudioContext::analysis(const QString& p) {
  return cached<Analysis>(analyses_, p, this, reported_);
}

QString StudioContext::loadError(const QString& path) const {
  auto it = reported_.find(path);
  return it != reported_.end() ? it->second : QString();
}

std::shared_ptr<const Tokenizer> StudioContext::tokenizer() {
  if (tokenizerTried_ || !ws_) return tokenizer_;
  tokenizerTried_ = true;
  const QString dir = ws_->model();
  if (!QFileInfo(dir).isDir()) return nullptr;
  try {
    tokenizer_ = Tokenizer::fromModelDir(dir.toStdString());
  } catch (const std::exception& e) {
    report(Warning, QString("No tokenizer for the workspace model (tokens are shown as ids): %1").arg(e.what()));
  }
  return tokenizer_;
}

QString StudioContext::tokenText(int32_t id) {
  auto tok = tokenizer();
  if (!tok) return QString("#%1").arg(id);
  // One rendering of a token everywhere (views/view_corpus.h tokenPiece): a
  // newline as U+21B5, other control characters as control pictures (invalid
  // in SVG, invisible on screen), a lone byte of a multi-byte character as its
  // vocabulary string. The Router view used to show a newline as "Ċ".
  return tokenPiece(*tok, id);
}

QString StudioContext::current(const QString& kind) const {
  auto it = current_.find(kind);
  return it == current_.end() ? QString() : it->second;
}

void StudioContext::setCurrent(const QString& kind, const QString& path) {
  if (current(kind) == path) return;
  current_[kind] = path;
  Q_EMIT currentChanged(kind, path);
  if (kind == "partition" || kind == "router") {
    // The selection is read under the current partition: its expert follows.
    if (kind == "partition" && selNeuron_ >= 0) {
      const int e = expertOfNeuron(selLayer_, selNeuron_);
      if (e != selExpert_) {
        selExpert_ = e;
        Q_EMIT expertSelected(selLayer_, selExpert_);
      }
    } else if (kind == "partition" && selExpert_ >= 0) {
      auto part = partition(path);
      if (!part || selExpert_ >= part->experts || !part->labels.count(selLayer_)) {
        selExpert_ = -1;
        Q_EMIT expertSelected(selLayer_, selExpert_);
      }
    }
    Q_EMIT selectionChanged();
  }
}

StudioContext::Selection StudioContext::selection() const {
  return {selLayer_, selNeuron_, selExpert_, current("partition"), current("router")};
}

int StudioContext::expertOfNeuron(int layer, int neuron) {
  if (layer < 0 || neuron < 0) return -1;
  auto part = partition(current("partition"));
  if (!part) return -1;
  auto it = part->labels.find(layer);
  if (it == part->labels.end() || neuron >= static_cast<int>(it->second.size())) return -1;
  return it->second[static_cast<size_t>(neuron)];
}

void StudioContext::selectNeuron(int layer, int neuron) {
  if (layer == selLayer_ && neuron == selNeuron_) return;
  selLayer_ = layer;
  selNeuron_ = neuron;
  // One selection: the neuron's expert is selected with it, in the partition
  // every view reads, so the expert graph rings it and the inspector names it.
  selExpert_ = expertOfNeuron(layer, neuron);
  Q_EMIT neuronSelected(layer, neuron);
  Q_EMIT expertSelected(layer, selExpert_);
  Q_EMIT selectionChanged();
}

void StudioContext::selectExpert(int layer, int expert) {
  if (layer == selLayer_ && expert == selExpert_) return;
  const bool keepNeuron = layer == selLayer_ && selNeuron_ >= 0 && expertOfNeuron(layer, selNeuron_) == expert;
  selLayer_ = layer;
  selExpert_ = expert;
  if (!keepNeuron && selNeuron_ >= 0) {
    selNeuron_ = -1;
    Q_EMIT neuronSelected(layer, -1);
  }
  Q_EMIT expertSelected(layer, expert);
  Q_EMIT selectionChanged();
}

void StudioContext::report(Level level, const QString& text) { Q_EMIT message(level, text); }

}  // namespace moefy::views
