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
#include <algorithm>
#include <filesystem>

#include <limits>

#include "analysis/checkpoint/loader.h"
#include "analysis/common/error.h"
#include "analysis/eval/sequences.h"
#include "analysis/jobs/job.h"
#include "analysis/text/corpus.h"
#include "analysis/text/tokenizer.h"

#if __has_include("analysis/record/recorder.h")
#define MOEFY_GUI_HAVE_RECORD 1
#include "analysis/record/record_options.h"
#include "analysis/record/recorder.h"
#endif
#if __has_include("analysis/route/route_build.h") && __has_include("analysis/moe/moe_export.h")
#define MOEFY_GUI_HAVE_ROUTE 1
#include "analysis/calibrate/calibrate_options.h"
#include "analysis/io/fsutil.h"
#include "analysis/moe/moe_export.h"
#include "analysis/moe/moe_options.h"
#include "analysis/route/route_build.h"
#include "analysis/route/route_inputs.h"
#include "analysis/route/route_options.h"
#endif
#if defined(MOEFY_GUI_HAVE_ROUTE) && __has_include("analysis/calibrate/calibrate.h")
#define MOEFY_GUI_HAVE_CALIBRATE 1
#include "analysis/calibrate/calibrate.h"
#endif
#if defined(MOEFY_GUI_HAVE_ROUTE) && __has_include("analysis/eval/eval.h")
#define MOEFY_GUI_HAVE_EVAL 1
#include "analysis/eval/eval.h"
#include "analysis/eval/eval_options.h"
#include "analysis/eval/eval_run.h"
#include "analysis/moe/moe_ffn.h"
#endif
#if __has_include("analysis/split/split.h")
#define MOEFY_GUI_HAVE_SPLIT 1
#include "analysis/record/recording.h"
#include "analysis/split/split.h"
#include "analysis/split/split_options.h"
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

// The option fields of `table` named in `names`, in that order.
std::vector<StepField> optionFields(const OptionTable& table, std::initializer_list<const char*> names) {
  std::vector<StepField> out;
  for (const char* n : names) out.push_back(optionField(table, n));
  return out;
}

// The corpus a step reads: a studio-only field whose default comes from the
// workspace (PipelineStep::workspaceDefaults).
StepField corpusField(const QString& help) {
  StepField f{"corpus", "Corpus", StepField::Text, QString(), {}, {}, help};
  return f;
}

// The corpus field's value resolved against the workspace folder; blank = `fallback`.
QString pickedCorpus(StudioContext* ctx, const QVariantMap& v, const QString& fallback) {
  const QString c = v.value("corpus").toString().trimmed();
  return c.isEmpty() ? fallback : ctx->workspace().resolve(c);
}

// Studio-only fields first (output name, artefact pickers), then the options.
std::vector<StepField> concat(std::vector<StepField> a, const std::vector<StepField>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
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
    s.options = &recordOptionTable();
    s.fields = concat(
        {{"out",
          "Output name (recordings/)",
          StepField::Text,
          "rec-" + stamp(),
          {},
          {},
          "folder name under the workspace's recordings/"}},
        optionFields(*s.options, {"tokens", "seq-len", "batch", "layers", "active", "soft-coact", "samples", "seed",
                                  "split", "shuffle", "chunk", "checkpoint-every", "checkpoint-secs", "force"}));
    s.fields.insert(s.fields.begin() + 1,
                    corpusField("the corpus to record (default: the workspace's training corpus)"));
    s.workspaceDefaults = [](StudioContext* ctx) {
      // Evaluations read the held-out split of the training corpus unless the
      // workspace has an evaluation corpus: record the rest, never the same documents.
      const Workspace& ws = ctx->workspace();
      return QVariantMap{{"corpus", ws.corpus()}, {"split", QString(ws.separateEvalCorpus() ? "all" : "train")}};
    };
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      QString out;
      if (!outputDir(ctx, "recordings", v, &out, err)) return false;
      const QString model = ctx->workspace().model(), corpus = pickedCorpus(ctx, v, ctx->workspace().corpus());
      RecordOptions o;
      try {
        o = recordOptionsFrom(parseStepOptions(*findStep("record"), v));
        parseRecordSplit(o.split);  // validates
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      job->name = "Record " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [model, corpus, out, o](JobContext& jc) {
        jc.setStage("load model");
        LoadedModel loaded = loadModel(model.toStdString(), o.device);
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
    s.options = &splitOptionTable();
    s.fields =
        concat({{"recording", "Recording", StepField::Artefact, {}, {}, "recording", "the recording to split"},
                {"out",
                 "Output name (partitions/)",
                 StepField::Text,
                 "part-" + stamp(),
                 {},
                 {},
                 "folder name under partitions/"}},
               optionFields(*s.options, {"method", "experts", "layers", "seed", "graph", "weighting", "topk",
                                         "metis-ptype", "rows", "restarts", "max-iter", "no-stability", "force"}));
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
        o = splitOptionsFrom(parseStepOptions(*findStep("split"), v));
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
        {"recording",
         "Recording (samples)",
         StepField::Artefact,
         {},
         {},
         "recording",
         "the recording whose samples train the router"},
        {"partition", "Partition", StepField::Artefact, {}, {}, "partition", "the expert partition"},
        {"out", "Output name (routers/)", StepField::Text, "", {}, {}, "folder name under routers/"},
    };
    s.options = &routeOptionTable();
    s.fields = concat(s.fields, optionFields(*s.options, {"router", "top-k", "top-fraction", "epochs", "batch", "lr",
                                                          "held-out", "seed", "force"}));
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      const QString rec = v.value("recording").toString(), part = v.value("partition").toString();
      if (rec.isEmpty() || part.isEmpty()) {
        *err = "needs a recording and a partition in the workspace (record and split first)";
        return false;
      }
      QString out;
      if (!outputDir(ctx, "routers", v, &out, err)) return false;
      RouteOptions o;
      bool force = false;
      try {
        const OptionValues values = parseStepOptions(*findStep("route"), v);
        o = routeOptionsFrom(values);
        force = values.flag("force");
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      const QString model = ctx->workspace().model();
      job->name = "Route " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [model, rec, part, out, o, force](JobContext& jc) {
        jc.setStage("load model");
        LoadedModel loaded = loadModel(model.toStdString());
        if (loaded.isMoe()) throw ParameterError(model.toStdString() + ": is a MoE export; route the dense source model");
        const Model& m = *loaded.model;
        PartitionData pd = PartitionData::read(part.toStdString());
        pd.checkModel(m);
        SampleData samples = SampleData::read(rec.toStdString(), pd.sites, m.config());
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
        {"all-routers",
         "All routers of the partition",
         StepField::Bool,
         true,
         {},
         {},
         "evaluate every router in the workspace built on this partition"},
        {"out", "Output name (evaluations/)", StepField::Text, "", {}, {}, "folder name under evaluations/"},
    };
    s.options = &evalOptionTable();
    s.fields = concat(s.fields, optionFields(*s.options, {"sweep", "seq-len", "tokens", "split", "batch", "seed",
                                                          "speed", "speed-seconds", "force"}));
    s.fields.insert(s.fields.begin() + 4,
                    corpusField("the corpus to evaluate on (default: the workspace's evaluation corpus)"));
    s.workspaceDefaults = [](StudioContext* ctx) {
      // A corpus of its own is read whole; else the training corpus's held-out split.
      const Workspace& ws = ctx->workspace();
      return QVariantMap{{"corpus", ws.evalCorpus()}, {"split", QString(ws.separateEvalCorpus() ? "all" : "heldout")}};
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
      const QString model = ctx->workspace().model(), corpus = pickedCorpus(ctx, v, ctx->workspace().evalCorpus());
      // The option values, parsed as `moefy eval` parses them, go into the spec here;
      // the job adds the bases and the model-dependent fields.
      EvalRunSpec options;
      EvalCorpusOptions c;
      bool force = false;
      try {
        const OptionValues values = parseStepOptions(*findStep("eval"), v);
        c = applyEvalOptions(values, options);
        force = values.flag("force");
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      job->name = "Evaluate " + QFileInfo(out).fileName();
      job->output = out;
      job->fn = [=](JobContext& jc) {
        jc.setStage("load model");
        LoadedModel loaded = loadModel(model.toStdString(), options.device);
        if (loaded.isMoe()) throw ParameterError(model.toStdString() + ": the partition/router evaluation needs the dense source model");
        if (!loaded.tokenizer) throw FormatError(model.toStdString() + ": a text corpus needs the model's tokenizer (" + loaded.tokenizerError + ")");
        Model& m = *loaded.model;
        PartitionData pd = PartitionData::read(part.toStdString());
        EvalRunSpec spec = options;
        std::vector<std::string> routerPaths;
        for (const QString& r : routers) {
          RouterSet rs = RouterSet::read(r.toStdString());
          spec.bases.emplace_back(routerKindName(rs.kind), buildMoeFfn(m, pd, rs, 0));
          routerPaths.push_back(r.toStdString());
        }
        spec.source = {{"partition", part.toStdString()}, {"routers", routerPaths}};
        jc.setStage("read corpus");
        auto seqs = readSequences(corpus.toStdString(), loaded, c.seqLen, c.tokens, c.split, &jc);
        spec.options.maskTokenId = maskTokenIdOf(loaded);
        spec.modelPath = model.toStdString();
        spec.corpusPath = corpus.toStdString();
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
    };
    s.options = &exportOptionTable();
    s.fields = concat(s.fields, optionFields(*s.options, {"top-k", "force"}));
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      const QString part = v.value("partition").toString(), router = v.value("router").toString();
      if (part.isEmpty() || router.isEmpty()) {
        *err = "needs a partition and a router in the workspace";
        return false;
      }
      QString out;
      if (!outputDir(ctx, "exports", v, &out, err)) return false;
      ExportOptions o;
      try {
        o = exportOptionsFrom(parseStepOptions(*findStep("export"), v));
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
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
    };
    s.options = &calibrateOptionTable();
    s.fields = concat(s.fields, optionFields(*s.options, {"steps", "experts", "lr", "batch", "seq-len", "tokens",
                                                          "split", "seed", "force"}));
    s.make = [](StudioContext* ctx, const QVariantMap& v, PipelineJob* job, QString* err) {
      const QString moe = v.value("export").toString();
      if (moe.isEmpty()) {
        *err = "needs a MoE export in the workspace (Pipeline > Export MoE checkpoint first)";
        return false;
      }
      QString out;
      if (!outputDir(ctx, "calibrated", v, &out, err)) return false;
      CalibrateOptions o;
      CalibrateCorpusOptions c;
      bool force = false;
      try {
        const OptionValues values = parseStepOptions(*findStep("calibrate"), v);
        o = calibrateOptionsFrom(values, &c);
        force = values.flag("force");
      } catch (const std::exception& e) {
        *err = e.what();
        return false;
      }
      const int seqLen = c.seqLen;
      const int64_t tokens = c.tokens;
      const Split split = c.split;
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

StepField optionField(const OptionTable& table, const QString& name) {
  const OptionSpec& o = table.at(name.toStdString());
  StepField f;
  f.option = name;
  f.label = "--" + name;
  f.help = QString::fromStdString(o.help);
  f.cliOption = true;
  // A form needs a value where the CLI has none: the table's suggestion.
  const QString def = QString::fromStdString(o.defaultText ? *o.defaultText : o.suggested);
  switch (o.type) {
    case OptionType::Flag:
      f.kind = StepField::Bool;
      f.def = false;
      break;
    case OptionType::Int: {
      f.kind = StepField::Int;
      f.def = def.toLongLong();
      // A sentinel default ("0 = from --top-fraction") lies below the range; the form offers it too.
      f.min = static_cast<double>(std::min<int64_t>(o.intMin, def.toLongLong()));
      f.max = static_cast<double>(o.intMax);
      break;
    }
    case OptionType::Real:
      f.kind = StepField::Double;
      f.def = def.toDouble();
      f.min = o.realMin;
      f.max = o.realMax;
      break;
    case OptionType::Choice:
      f.kind = StepField::Choice;
      f.def = def;
      for (const auto& c : o.choices) f.choices << QString::fromStdString(c);
      break;
    case OptionType::Text:
      f.kind = StepField::Text;
      f.def = def;
      break;
  }
  return f;
}

OptionValues parseStepOptions(const PipelineStep& step, const QVariantMap& values) {
  std::vector<std::string> args;
  for (const StepField& f : step.fields) {
    if (!f.cliOption || !values.contains(f.option)) continue;
    const OptionSpec& o = step.options->at(f.option.toStdString());
    const QVariant v = values.value(f.option);
    const std::string flag = "--" + o.name;
    // A value equal to the default is "not given", as on the command line, so
    // that checks like "--top-k or --top-fraction, not both" see the same thing.
    switch (o.type) {
      case OptionType::Flag:
        if (v.toBool()) args.push_back(flag);
        break;
      case OptionType::Int:
        if (!o.defaultText || v.toLongLong() != std::stoll(*o.defaultText))
          args.insert(args.end(), {flag, std::to_string(v.toLongLong())});
        break;
      case OptionType::Real:
        if (!o.defaultText || v.toDouble() != std::stod(*o.defaultText))
          args.insert(args.end(), {flag, QString::number(v.toDouble(), 'g', 17).toStdString()});
        break;
      case OptionType::Choice:
      case OptionType::Text: {
        const std::string t = v.toString().trimmed().toStdString();
        if (o.defaultText ? t != *o.defaultText : !t.empty()) args.insert(args.end(), {flag + "=" + t});
        break;
      }
    }
  }
  return step.options->parse(args);
}

const std::vector<PipelineStep>& pipelineSteps() {
  static const std::vector<PipelineStep> steps = buildSteps();
  return steps;
}

const PipelineStep* findStep(const QString& id) {
  for (const auto& s : pipelineSteps())
    if (s.id == id) return &s;
  return nullptr;
}

QVariant fieldDefault(const PipelineStep& step, const StepField& f, StudioContext* ctx) {
  if (step.workspaceDefaults && ctx && ctx->hasWorkspace()) {
    const QVariantMap ws = step.workspaceDefaults(ctx);
    if (ws.contains(f.option)) return ws.value(f.option);
  }
  return f.def;
}

QVariantMap withDefaults(const PipelineStep& step, StudioContext* ctx, QVariantMap v) {
  for (const StepField& f : step.fields) {
    if (v.contains(f.option)) continue;
    if (f.kind == StepField::Artefact) v[f.option] = ctx->current(f.artefactKind);
    else if (f.option == "out") v[f.option] = QString("%1-%2").arg(step.id, stamp());
    else
      v[f.option] = fieldDefault(step, f, ctx);
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
    const QVariant def = fieldDefault(step, f, ctx);
    switch (f.kind) {
      case StepField::Int: {
        auto* sb = new QSpinBox(&d);
        // QSpinBox holds an int; wider ranges are cut to it (the CLI takes the rest).
        const double lo = std::numeric_limits<int>::min(), hi = std::numeric_limits<int>::max();
        sb->setRange(static_cast<int>(std::clamp(f.min, lo, hi)), static_cast<int>(std::clamp(f.max, lo, hi)));
        sb->setValue(def.toInt());
        w = sb;
        getters.push_back([sb] { return QVariant(sb->value()); });
        break;
      }
      case StepField::Double: {
        auto* sb = new QDoubleSpinBox(&d);
        sb->setDecimals(6);  // learning rates such as 1e-4 must survive the spin box
        sb->setRange(f.min, std::min(f.max, 1e12));
        sb->setValue(def.toDouble());
        w = sb;
        getters.push_back([sb] { return QVariant(sb->value()); });
        break;
      }
      case StepField::Bool: {
        auto* cb = new QCheckBox(&d);
        cb->setChecked(def.toBool());
        w = cb;
        getters.push_back([cb] { return QVariant(cb->isChecked()); });
        break;
      }
      case StepField::Choice: {
        auto* cb = new QComboBox(&d);
        cb->addItems(f.choices);
        cb->setCurrentText(def.toString());
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
        auto* le = new QLineEdit(f.option == "out" ? QString("%1-%2").arg(step.id, stamp()) : def.toString(), &d);
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
