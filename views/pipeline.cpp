#include "views/pipeline.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDateTime>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDoubleSpinBox>
#include <QFileInfo>
#include <QFormLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <filesystem>

#include "analysis/common/error.h"
#include "analysis/jobs/job.h"
#include "analysis/model/loader.h"
#include "analysis/eval/sequences.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"

#if __has_include("analysis/record/recorder.h")
#define MOEFY_GUI_HAVE_RECORD 1
#include "analysis/record/record_options.h"
#include "analysis/record/recorder.h"
#endif
#if __has_include("analysis/route/route_build.h") && __has_include("analysis/moe/moe_export.h")
#define MOEFY_GUI_HAVE_ROUTE 1
#include "analysis/io/fsutil.h"
#include "analysis/moe/moe_export.h"
#include "analysis/route/route_build.h"
#include "analysis/route/route_inputs.h"
#endif
#if defined(MOEFY_GUI_HAVE_ROUTE) && __has_include("analysis/moe/calibrate.h")
#define MOEFY_GUI_HAVE_CALIBRATE 1
#include "analysis/moe/calibrate.h"
#endif
#if defined(MOEFY_GUI_HAVE_ROUTE) && __has_include("analysis/eval/eval.h")
#define MOEFY_GUI_HAVE_EVAL 1
#include "analysis/eval/eval.h"
#include "analysis/eval/eval_run.h"
#include "analysis/moe/moe_ffn.h"
#endif
#if __has_include("analysis/split/split.h")
#define MOEFY_GUI_HAVE_SPLIT 1
#include "analysis/record/recording.h"
#include "analysis/split/split.h"
#endif

namespace moefy::views {

namespace fs = std::filesystem;

namespace {

QString stamp() { return QDateTime::currentDateTime().toString("yyyyMMdd-HHmmss"); }

/// OUT inside the workspace folder of `kind`; refuses names with separators and existing folders.
bool outputDir(StudioContext* ctx, const char* folder, const QVariantMap& v, QString* out, QString* err) {
  QString name = v.value("out").toString().trimmed();
  if (name.isEmpty() || name.contains('/') || name.contains('\\') || name.startsWith('.')) {
    *err = QString("output name '%1' is not a plain folder name").arg(name);
    return false;
  }
  *out = QDir(ctx->workspace().folder(folder)).filePath(name);
  if (QFileInfo::exists(*out) && !v.value("force").toBool()) {
    *err = QString("%1 already exists; choose another output name or tick --force").arg(*out);
    return false;
  }
  QDir().mkpath(ctx->workspace().folder(folder));
  return true;
}

std::vector<int> parseLayers(const QString& text, const QString& option) {
  return parseLayerList(text.toStdString(), "--" + option.toStdString());
}

std::vector<PipelineStep> buildSteps() {
  std::vector<PipelineStep> steps;
#ifdef MOEFY_GUI_HAVE_RECORD
  {
    PipelineStep s;
    s.id = "record";
    s.title = "Record activations";
    s.shortcut = "Ctrl+Shift+R";
    s.help = "Streams the workspace corpus through the model and records statistics, co-activations and samples "
             "(moefy record MODEL_DIR CORPUS --out REC_DIR)";
    s.fields = {
        {"out", "Output name (recordings/)", StepField::Text, "rec-" + stamp(), {}, {}, "folder name under the workspace's recordings/"},
        {"tokens", "--tokens", StepField::Int, 200000, {}, {}, "stop after N tokens (0 = whole corpus)", 0, 2e9},
        {"seq-len", "--seq-len", StepField::Int, 256, {}, {}, "window length", 2, 65536},
        {"batch", "--batch", StepField::Int, 8, {}, {}, "sequences per forward pass", 1, 4096},
        {"layers", "--layers", StepField::Text, "", {}, {}, "comma-separated layer indices (empty = all)"},
        {"active", "--active", StepField::Text, "", {}, {}, "positive | threshold:TAU | top:P (empty = the model's default)"},
        {"soft-coact", "--soft-coact", StepField::Bool, false, {}, {}, "also accumulate MoEfication's soft co-activation"},
        {"samples", "--samples", StepField::Int, qlonglong(RecordOptions{}.samples), {}, {}, "reservoir size of sampled tokens", 0, 1e9},
        {"seed", "--seed", StepField::Int, 0, {}, {}, "reservoir and shuffle seed", 0, 2e9},
        {"split", "--split", StepField::Choice, "all", {"all", "train", "held_out"}, {}, "corpus split"},
        {"shuffle", "--shuffle", StepField::Bool, false, {}, {}, "visit documents in a seeded random order (with a token budget: every category, not the first documents)"},
        {"checkpoint-secs", "--checkpoint-secs", StepField::Double, 300.0, {}, {}, "seconds between checkpoints (0 = never)", 0, 1e9},
        {"force", "--force", StepField::Bool, false, {}, {}, "replace an existing output"},
    };
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      QString out;
      if (!outputDir(ctx, "recordings", v, &out, err)) return false;
      const QString model = ctx->workspace().model(), corpus = ctx->workspace().corpus();
      RecordOptions o;
      try {
        o.seqLen = v.value("seq-len").toInt();
        o.batch = v.value("batch").toInt();
        o.layers = parseLayers(v.value("layers").toString(), "layers");
        o.active = parseActiveOption(v.value("active").toString().toStdString());
        o.softCoact = v.value("soft-coact").toBool();
        o.samples = v.value("samples").toLongLong();
        o.seed = v.value("seed").toULongLong();
        o.split = v.value("split").toString().toStdString();
        parseRecordSplit(o.split);  // validates
        o.maxTokens = v.value("tokens").toLongLong();
        o.shuffle = v.value("shuffle").toBool();
        o.checkpointSeconds = v.value("checkpoint-secs").toDouble();
        o.force = v.value("force").toBool();
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      job->name = "Record " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [model, corpus, out, o](JobContext& jc) {
        jc.setStage("load model");
        LoadedModel loaded = loadModel(model.toStdString());
        if (loaded.isMoe()) throw ParameterError(model.toStdString() + ": is a MoE export; record the dense model it came from");
        if (!loaded.tokenizer)
          throw FormatError(model.toStdString() + ": has no usable tokenizer (" + loaded.tokenizerError + ")");
        auto c = Corpus::open(corpus.toStdString());
        SourceInfo info;
        SequenceSource source = textCorpusSource(*c, *loaded.tokenizer, corpus.toStdString(), o, &jc, &info);
        RecordSummary sum = recordActivations(*loaded.model, source, info, o, out.toStdString(), jc);
        jc.log("recorded " + std::to_string(sum.tokens) + " tokens in " + std::to_string(sum.seconds) + " s into " + out.toStdString());
      };
      return true;
    };
    steps.push_back(std::move(s));
  }
#endif
#ifdef MOEFY_GUI_HAVE_SPLIT
  {
    PipelineStep s;
    s.id = "split";
    s.title = "Split into experts";
    s.shortcut = "Ctrl+Shift+S";
    s.help = "Splits each FFN's neurons into equal-size experts (moefy split REC_DIR --method ... --out PART_DIR)";
    s.fields = {
        {"recording", "Recording", StepField::Artefact, {}, {}, "recording", "the recording to split"},
        {"out", "Output name (partitions/)", StepField::Text, "part-" + stamp(), {}, {}, "folder name under partitions/"},
        {"method", "--method", StepField::Choice, "coact", {"coact", "kmeans", "random"}, {}, "co-activation graph + METIS, balanced k-means on W1 rows, or random"},
        {"experts", "--experts", StepField::Int, 16, {}, {}, "number of experts E (must divide d_ff)", 1, 1e6},
        {"layers", "--layers", StepField::Text, "", {}, {}, "comma-separated layers (empty = every recorded layer)"},
        {"seed", "--seed", StepField::Int, 0, {}, {}, "seed", 0, 2e9},
        {"graph", "--graph", StepField::Choice, "binary", {"binary", "soft"}, {}, "coact: binary counts or soft co-activation"},
        {"weighting", "--weighting", StepField::Choice, "raw", {"raw", "jaccard", "ppmi", "percentile"}, {}, "coact: edge weights (counts, Jaccard x 1000, PPMI x 100, MoEfication's percentile integers)"},
        {"topk", "--topk", StepField::Text, "auto", {}, {}, "coact: keep each neuron's K strongest neighbours (auto: dense up to 1536 neurons, else max(64, 2 d_ff/E); 0 = every edge)"},
        {"restarts", "--restarts", StepField::Int, 4, {}, {}, "kmeans: restarts", 1, 1000},
        {"max-iter", "--max-iter", StepField::Int, 50, {}, {}, "kmeans: iterations", 1, 100000},
        {"no-stability", "--no-stability", StepField::Bool, false, {}, {}, "skip the rerun with seed + 1 (ARI/NMI)"},
        {"force", "--force", StepField::Bool, false, {}, {}, "replace an existing output"},
    };
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      QString out;
      const QString rec = v.value("recording").toString();
      if (rec.isEmpty()) {
        *err = "split: no recording in the workspace; record first";
        return false;
      }
      if (!outputDir(ctx, "partitions", v, &out, err)) return false;
      SplitOptions o;
      try {
        o.method = v.value("method").toString().toStdString();
        o.experts = v.value("experts").toInt();
        o.layers = parseLayers(v.value("layers").toString(), "layers");
        o.seed = v.value("seed").toULongLong();
        o.graphSource = v.value("graph").toString().toStdString();
        o.graph.weighting = v.value("weighting").toString().toStdString();
        o.graph.topk = parseTopk(v.value("topk").toString().toStdString());
        o.restarts = v.value("restarts").toInt();
        o.maxIter = v.value("max-iter").toInt();
        o.stability = !v.value("no-stability").toBool();
        o.force = v.value("force").toBool();
        o.modelPath = ctx->workspace().model().toStdString();
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      job->name = "Split " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [rec, out, o](JobContext& jc) {
        jc.setStage("open recording");
        ::moefy::Recording r = ::moefy::Recording::open(rec.toStdString());
        std::unique_ptr<Model> model;
        if (o.method == "kmeans") {
          jc.setStage("load model");
          model = Model::load(o.modelPath);
        }
        runSplit(r, model.get(), o, out.toStdString(), jc);
      };
      return true;
    };
    steps.push_back(std::move(s));
  }
#endif
#ifdef MOEFY_GUI_HAVE_ROUTE
  {
    PipelineStep s;
    s.id = "route";
    s.title = "Build router";
    s.shortcut = "Ctrl+Shift+O";
    s.help = "Builds a router per layer from a partition and the recording's samples "
             "(moefy route MODEL_DIR REC_DIR PART_DIR --router KIND --out ROUTER_DIR)";
    s.fields = {
        {"recording", "Recording (samples)", StepField::Artefact, {}, {}, "recording", "the recording whose samples train the router"},
        {"partition", "Partition", StepField::Artefact, {}, {}, "partition", "the expert partition"},
        {"out", "Output name (routers/)", StepField::Text, "", {}, {}, "folder name under routers/"},
        {"router", "--router", StepField::Choice, "similarity", {"oracle", "similarity", "mlp"}, {}, "router kind"},
        {"top-k", "--top-k", StepField::Int, 0, {}, {}, "experts per token (0 = use --top-fraction)", 0, 1e6},
        {"top-fraction", "--top-fraction", StepField::Double, 0.25, {}, {}, "fraction of experts per token", 0.001, 1},
        {"epochs", "--epochs", StepField::Int, 30, {}, {}, "mlp: epochs", 1, 100000},
        {"batch", "--batch", StepField::Int, 512, {}, {}, "mlp: batch", 1, 1e6},
        {"lr", "--lr", StepField::Double, 0.01, {}, {}, "mlp: learning rate", 1e-6, 10},
        {"held-out", "--held-out", StepField::Double, 0.1, {}, {}, "fraction of samples held out for the metrics", 0, 0.9},
        {"seed", "--seed", StepField::Int, 0, {}, {}, "seed", 0, 2e9},
        {"force", "--force", StepField::Bool, false, {}, {}, "replace an existing output"},
    };
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      const QString rec = v.value("recording").toString(), part = v.value("partition").toString();
      if (rec.isEmpty() || part.isEmpty()) {
        *err = "needs a recording and a partition in the workspace (record and split first)";
        return false;
      }
      QString out;
      if (!outputDir(ctx, "routers", v, &out, err)) return false;
      RouteOptions o;
      try {
        o.kind = routerKindFromName(v.value("router").toString().toStdString(), "--router");
        o.topK = v.value("top-k").toInt();
        o.topFraction = v.value("top-fraction").toDouble();
        o.epochs = v.value("epochs").toInt();
        o.batch = v.value("batch").toInt();
        o.lr = v.value("lr").toDouble();
        o.heldOut = v.value("held-out").toDouble();
        o.seed = v.value("seed").toULongLong();
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      const QString model = ctx->workspace().model();
      const bool force = v.value("force").toBool();
      job->name = "Route " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [model, rec, part, out, o, force](JobContext& jc) {
        jc.setStage("load model");
        LoadedModel loaded = loadModel(model.toStdString());
        if (loaded.isMoe()) throw ParameterError(model.toStdString() + ": is a MoE export; route the dense source model");
        const Model& m = *loaded.model;
        PartitionData pd = PartitionData::read(part.toStdString());
        pd.checkModel(m);
        SampleData samples = SampleData::read(rec.toStdString(), pd.layers, m.config().dModel, m.config().dFF);
        RouterSet rs = buildRouters(m, pd, samples, o, jc);
        writeFolderAtomic(out.toStdString(), force, [&](const fs::path& tmp) { rs.writeInto(tmp); });
      };
      return true;
    };
    steps.push_back(std::move(s));
  }
#ifdef MOEFY_GUI_HAVE_EVAL
  {
    PipelineStep s;
    s.id = "eval";
    s.title = "Evaluate";
    s.shortcut = "Ctrl+Shift+V";
    s.help = "Measures the MoEfied model against the dense one over a sweep of active-expert fractions "
             "(moefy eval MODEL_DIR CORPUS --partition PART_DIR --router ROUTER_DIR [--sweep ..] [--speed] --out EVAL_DIR)";
    s.fields = {
        {"partition", "--partition", StepField::Artefact, {}, {}, "partition", "the expert partition"},
        {"router", "--router", StepField::Artefact, {}, {}, "router", "a router built on that partition"},
        {"all-routers", "All routers of the partition", StepField::Bool, true, {}, {}, "evaluate every router in the workspace built on this partition"},
        {"out", "Output name (evaluations/)", StepField::Text, "", {}, {}, "folder name under evaluations/"},
        {"sweep", "--sweep", StepField::Text, "0.125,0.25,0.5,0.75,1", {}, {}, "active-expert fractions (empty = the routers' top-k)"},
        {"seq-len", "--seq-len", StepField::Int, 128, {}, {}, "window length", 2, 65536},
        {"tokens", "--tokens", StepField::Int, 4096, {}, {}, "evaluation tokens", 2, 1e9},
        {"split", "--split", StepField::Choice, "heldout", {"heldout", "train", "all"}, {}, "corpus split"},
        {"batch", "--batch", StepField::Int, 8, {}, {}, "sequences per forward", 1, 4096},
        {"seed", "--seed", StepField::Int, 0, {}, {}, "seed (masked LM)", 0, 2e9},
        {"speed", "--speed", StepField::Bool, false, {}, {}, "also time forward passes and generation"},
        {"speed-seconds", "--speed-seconds", StepField::Double, 1.0, {}, {}, "minimum seconds per timing", 0.05, 600},
        {"force", "--force", StepField::Bool, false, {}, {}, "replace an existing output"},
    };
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      const QString part = v.value("partition").toString();
      QStringList routers;
      if (v.value("all-routers").toBool()) {
        for (const QString& r : ctx->paths("router")) {
          auto rr = ctx->router(r);
          if (rr && QFileInfo(rr->partitionPath).canonicalFilePath() == QFileInfo(part).canonicalFilePath()) routers << r;
        }
      }
      if (routers.isEmpty() && !v.value("router").toString().isEmpty()) routers << v.value("router").toString();
      if (part.isEmpty() || routers.isEmpty()) {
        *err = "needs a partition and a router built on it (split and route first)";
        return false;
      }
      QString out;
      if (!outputDir(ctx, "evaluations", v, &out, err)) return false;
      std::vector<double> sweep;
      for (const QString& f : v.value("sweep").toString().split(',', Qt::SkipEmptyParts)) {
        bool ok = false;
        double x = f.trimmed().toDouble(&ok);
        if (!ok || !(x > 0 && x <= 1)) {
          *err = QString("--sweep: '%1' is not a fraction in (0, 1]").arg(f);
          return false;
        }
        sweep.push_back(x);
      }
      const QString model = ctx->workspace().model(), corpus = ctx->workspace().corpus();
      const int seqLen = v.value("seq-len").toInt(), batch = v.value("batch").toInt();
      const qint64 tokens = v.value("tokens").toLongLong();
      Split split = Split::HeldOut;
      try {
        split = parseSplitName(v.value("split").toString().toStdString());
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      const uint64_t seed = v.value("seed").toULongLong();
      const bool speed = v.value("speed").toBool(), force = v.value("force").toBool();
      const double minSec = v.value("speed-seconds").toDouble();
      job->name = "Evaluate " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [=](JobContext& jc) {
        jc.setStage("load model");
        LoadedModel loaded = loadModel(model.toStdString());
        if (loaded.isMoe()) throw ParameterError(model.toStdString() + ": the partition/router evaluation needs the dense source model");
        if (!loaded.tokenizer) throw FormatError(model.toStdString() + ": a text corpus needs the model's tokenizer (" + loaded.tokenizerError + ")");
        Model& m = *loaded.model;
        PartitionData pd = PartitionData::read(part.toStdString());
        EvalRunSpec spec;
        std::vector<std::string> routerPaths;
        for (const QString& r : routers) {
          RouterSet rs = RouterSet::read(r.toStdString());
          spec.bases.emplace_back(routerKindName(rs.kind), buildMoeFfn(m, pd, rs, 0));
          routerPaths.push_back(r.toStdString());
        }
        spec.sweep = sweep;
        spec.source = {{"partition", part.toStdString()}, {"routers", routerPaths}};
        jc.setStage("read corpus");
        auto seqs = readSequences(corpus.toStdString(), loaded, seqLen, tokens, split, &jc);
        spec.options.batch = batch;
        spec.options.seed = seed;
        spec.options.maskTokenId = maskTokenIdOf(loaded);
        spec.speed = speed;
        spec.speedSeconds = minSec;
        spec.modelPath = model.toStdString();
        spec.corpusPath = corpus.toStdString();
        spec.seqLen = seqLen;
        nlohmann::json j = runEvaluation(m, spec, seqs, jc);
        writeEvalFolder(out.toStdString(), force, j);
      };
      return true;
    };
    steps.push_back(std::move(s));
  }
#endif
  {
    PipelineStep s;
    s.id = "export";
    s.title = "Export MoE checkpoint";
    s.shortcut = "Ctrl+Shift+E";
    s.help = "Writes a Hugging Face-style MoE checkpoint that the engine reloads "
             "(moefy export MODEL_DIR PART_DIR ROUTER_DIR --out MOE_DIR)";
    s.fields = {
        {"partition", "Partition", StepField::Artefact, {}, {}, "partition", "the expert partition"},
        {"router", "Router", StepField::Artefact, {}, {}, "router", "the router (built on that partition)"},
        {"out", "Output name (exports/)", StepField::Text, "", {}, {}, "folder name under exports/"},
        {"top-k", "--top-k", StepField::Int, 0, {}, {}, "experts per token (0 = the router's)", 0, 1e6},
        {"force", "--force", StepField::Bool, false, {}, {}, "replace an existing output"},
    };
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      const QString part = v.value("partition").toString(), router = v.value("router").toString();
      if (part.isEmpty() || router.isEmpty()) {
        *err = "needs a partition and a router in the workspace";
        return false;
      }
      QString out;
      if (!outputDir(ctx, "exports", v, &out, err)) return false;
      ExportOptions o;
      o.topK = v.value("top-k").toInt();
      o.force = v.value("force").toBool();
      const QString model = ctx->workspace().model();
      job->name = "Export " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [model, part, router, out, o](JobContext& jc) {
        jc.setStage("load model");
        LoadedModel loaded = loadModel(model.toStdString());
        if (loaded.isMoe()) throw ParameterError(model.toStdString() + ": is already a MoE export");
        PartitionData pd = PartitionData::read(part.toStdString());
        RouterSet rs = RouterSet::read(router.toStdString());
        exportMoe(*loaded.model, pd, rs, out.toStdString(), o, jc);
      };
      return true;
    };
    steps.push_back(std::move(s));
  }
#ifdef MOEFY_GUI_HAVE_CALIBRATE
  {
    PipelineStep s;
    s.id = "calibrate";
    s.title = "Calibrate MoE checkpoint";
    s.shortcut = "Ctrl+Shift+C";
    s.help = "Fine-tunes the routers (and with --experts the experts) of a MoE export on the workspace corpus "
             "(moefy calibrate MOE_DIR CORPUS --steps N --out MOE_DIR2)";
    s.fields = {
        {"export", "MoE export", StepField::Artefact, {}, {}, "export", "the MoE checkpoint to calibrate"},
        {"out", "Output name (calibrated/)", StepField::Text, "", {}, {}, "folder name under calibrated/"},
        {"steps", "--steps", StepField::Int, 100, {}, {}, "optimiser steps", 1, 1e9},
        {"experts", "--experts", StepField::Bool, false, {}, {}, "also train the experts on the LM loss"},
        {"lr", "--lr", StepField::Double, 0.001, {}, {}, "Adam learning rate", 1e-6, 10},
        {"batch", "--batch", StepField::Int, 4, {}, {}, "sequences per step", 1, 4096},
        {"seq-len", "--seq-len", StepField::Int, 64, {}, {}, "window length", 2, 65536},
        {"tokens", "--tokens", StepField::Int, 20000, {}, {}, "corpus tokens read (0 = all)", 0, 2e9},
        {"split", "--split", StepField::Choice, "train", {"train", "heldout", "all"}, {}, "corpus split"},
        {"seed", "--seed", StepField::Int, 0, {}, {}, "seed", 0, 2e9},
        {"force", "--force", StepField::Bool, false, {}, {}, "replace an existing output"},
    };
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      const QString moe = v.value("export").toString();
      if (moe.isEmpty()) {
        *err = "needs a MoE export in the workspace (Pipeline > Export MoE checkpoint first)";
        return false;
      }
      QString out;
      if (!outputDir(ctx, "calibrated", v, &out, err)) return false;
      CalibrateOptions o;
      Split split = Split::HeldOut;
      try {
        o.steps = v.value("steps").toInt();
        o.experts = v.value("experts").toBool();
        o.lr = v.value("lr").toDouble();
        o.batch = v.value("batch").toInt();
        o.seed = v.value("seed").toULongLong();
        split = parseSplitName(v.value("split").toString().toStdString());
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      const int seqLen = v.value("seq-len").toInt();
      const int64_t tokens = v.value("tokens").toLongLong();
      const bool force = v.value("force").toBool();
      const QString corpus = ctx->workspace().corpus();
      job->name = "Calibrate " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [moe, corpus, o, seqLen, tokens, split, out, force](JobContext& jc) {
        nlohmann::json r = runCalibration(moe.toStdString(), corpus.toStdString(), o, seqLen, tokens, split,
                                          out.toStdString(), force, jc);
        jc.log("calibrated " + moe.toStdString() + ": held-out LM loss " + std::to_string(r["lm_loss_before"].get<double>()) +
               " -> " + std::to_string(r["lm_loss_after"].get<double>()) + ", router loss " +
               std::to_string(r["router_loss_before"].get<double>()) + " -> " +
               std::to_string(r["router_loss_after"].get<double>()) + "; wrote " + out.toStdString());
      };
      return true;
    };
    steps.push_back(std::move(s));
  }
#endif
#endif
  return steps;
}

}  // namespace

const std::vector<PipelineStep>& pipelineSteps() {
  static const std::vector<PipelineStep> steps = buildSteps();
  return steps;
}

const PipelineStep* findStep(const QString& id) {
  for (const auto& s : pipelineSteps())
    if (s.id == id) return &s;
  return nullptr;
}

QVariantMap withDefaults(const PipelineStep& step, StudioContext* ctx, QVariantMap v) {
  for (const StepField& f : step.fields) {
    if (v.contains(f.option)) continue;
    if (f.kind == StepField::Artefact) v[f.option] = ctx->current(f.artefactKind);
    else if (f.option == "out") v[f.option] = QString("%1-%2").arg(step.id, stamp());
    else v[f.option] = f.def;
  }
  return v;
}

bool makeStepJob(const QString& id, StudioContext* ctx, const QVariantMap& values, PipelineJob* job, QString* error) {
  const PipelineStep* s = findStep(id);
  if (!s) {
    if (error) *error = "pipeline step '" + id + "' is not available in this build";
    return false;
  }
  if (!ctx->hasWorkspace()) {
    if (error) *error = "no workspace open";
    return false;
  }
  QString err;
  bool ok = s->make(ctx, withDefaults(*s, ctx, values), job, &err);
  if (!ok && error) *error = s->id + ": " + err;
  return ok;
}

bool runStepDialog(const PipelineStep& step, QWidget* parent, StudioContext* ctx, PipelineJob* job, QString* error) {
  QDialog d(parent);
  d.setWindowTitle(step.title);
  d.setObjectName("stepDialog-" + step.id);
  d.setMinimumWidth(520);  // room for the help text and a whole "step-yyyyMMdd-HHmmss" output name
  auto* form = new QFormLayout(&d);
  auto* intro = new QLabel(step.help, &d);
  intro->setWordWrap(true);
  form->addRow(intro);
  std::vector<std::function<QVariant()>> getters;
  for (const StepField& f : step.fields) {
    QWidget* w = nullptr;
    switch (f.kind) {
      case StepField::Int: {
        auto* sb = new QSpinBox(&d);
        sb->setRange(static_cast<int>(f.min), static_cast<int>(std::min(f.max, 2e9)));
        sb->setValue(f.def.toInt());
        w = sb;
        getters.push_back([sb] { return QVariant(sb->value()); });
        break;
      }
      case StepField::Double: {
        auto* sb = new QDoubleSpinBox(&d);
        sb->setRange(f.min, f.max);
        sb->setDecimals(3);
        sb->setValue(f.def.toDouble());
        w = sb;
        getters.push_back([sb] { return QVariant(sb->value()); });
        break;
      }
      case StepField::Bool: {
        auto* cb = new QCheckBox(&d);
        cb->setChecked(f.def.toBool());
        w = cb;
        getters.push_back([cb] { return QVariant(cb->isChecked()); });
        break;
      }
      case StepField::Choice: {
        auto* cb = new QComboBox(&d);
        cb->addItems(f.choices);
        cb->setCurrentText(f.def.toString());
        w = cb;
        getters.push_back([cb] { return QVariant(cb->currentText()); });
        break;
      }
      case StepField::Artefact: {
        auto* cb = new QComboBox(&d);
        for (const auto& a : ctx->artefacts())
          if (a.kind == f.artefactKind) cb->addItem(a.name, a.path);
        int i = cb->findData(ctx->current(f.artefactKind));
        if (i >= 0) cb->setCurrentIndex(i);
        w = cb;
        getters.push_back([cb] { return cb->currentData(); });
        break;
      }
      case StepField::Text: {
        auto* le = new QLineEdit(f.option == "out" ? QString("%1-%2").arg(step.id, stamp()) : f.def.toString(), &d);
        w = le;
        getters.push_back([le] { return QVariant(le->text()); });
        break;
      }
    }
    w->setObjectName(f.option);
    w->setToolTip(f.help);
    form->addRow(f.label + ":", w);
  }
  auto* bb = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &d);
  bb->button(QDialogButtonBox::Ok)->setText("Run");
  form->addRow(bb);
  QObject::connect(bb, &QDialogButtonBox::accepted, &d, &QDialog::accept);
  QObject::connect(bb, &QDialogButtonBox::rejected, &d, &QDialog::reject);
  if (d.exec() != QDialog::Accepted) return false;
  QVariantMap values;
  for (size_t i = 0; i < step.fields.size(); ++i) values[step.fields[i].option] = getters[i]();
  return makeStepJob(step.id, ctx, values, job, error);
}

}  // namespace moefy::views
