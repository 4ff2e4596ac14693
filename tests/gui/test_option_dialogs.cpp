// The studio's step dialogs against the CLI: for every pipeline step, each
// option widget shows the default (or, for an option without one, the
// suggestion) that the real `moefy` binary reports for that option in
// `moefy help --json`, with the same choices and a range that covers the CLI's.
// Values typed into a dialog are refused exactly as the CLI refuses them.
#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDialog>
#include <QDoubleSpinBox>
#include <QLineEdit>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTimer>
#include <QtTest>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "analysis/calibrate/calibrate_options.h"
#include "analysis/common/error.h"
#include "analysis/eval/eval_options.h"
#include "analysis/moe/moe_options.h"
#include "analysis/record/record_options.h"
#include "analysis/route/route_options.h"
#include "analysis/split/split_options.h"
#include "testutil.h"
#include "views/mainwindow.h"
#include "views/pipeline.h"

using namespace moefy;
using namespace moefy::views;

class TestOptionDialogs : public QObject {
  Q_OBJECT

  // command -> option name -> the CLI's JSON description of it
  std::map<std::string, std::map<std::string, nlohmann::json>> cli_;

 private Q_SLOTS:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);  // QSettings go to a test location
    test::RunResult r = test::runCli({"help", "--json"}, 60);
    QVERIFY2(r.exitCode == 0, r.err.c_str());
    for (const auto& cmd : nlohmann::json::parse(r.out))
      for (const auto& o : cmd["options"]) cli_[cmd["command"].get<std::string>()][o["name"].get<std::string>()] = o;
  }

  void dialogDefaultsEqualTheCli() {
    QVERIFY(!pipelineSteps().empty());
    MainWindow w;
    int compared = 0;
    for (const PipelineStep& step : pipelineSteps()) {
      const std::string id = step.id.toStdString();
      QVERIFY2(cli_.count(id), ("no CLI command for step " + id).c_str());
      QStringList problems;
      int fields = 0;
      QTimer::singleShot(0, &w, [&] {
        auto* d = qobject_cast<QDialog*>(QApplication::activeModalWidget());
        if (!d) {
          problems << "no dialog";
          return;
        }
        for (const StepField& f : step.fields) {
          if (!f.cliOption) continue;
          ++fields;
          const std::string name = f.option.toStdString();
          auto it = cli_[id].find(name);
          if (it == cli_[id].end()) {
            problems << "--" + f.option + " is not a CLI option of moefy " + step.id;
            continue;
          }
          const nlohmann::json& o = it->second;
          const std::string type = o["type"];
          // What the dialog must show: the CLI's default, else the table's suggestion.
          const std::string want =
              o["default"].is_string() ? o["default"].get<std::string>() : o.value("suggested", "");
          QWidget* wdg = d->findChild<QWidget*>(f.option);
          QString got;
          bool same = false;
          if (auto* sb = qobject_cast<QSpinBox*>(wdg); sb && type == "int") {
            got = QString::number(sb->value());
            same = sb->value() == std::stoll(want);
            const int64_t lo = o["range"][0], hi = o["range"][1];
            if (sb->maximum() < std::min<int64_t>(hi, std::numeric_limits<int>::max()) || sb->minimum() > lo)
              problems << QString("--%1: spin box range [%2, %3] does not cover the CLI's [%4, %5]")
                              .arg(f.option)
                              .arg(sb->minimum())
                              .arg(sb->maximum())
                              .arg(lo)
                              .arg(hi);
          } else if (auto* db = qobject_cast<QDoubleSpinBox*>(wdg); db && type == "real") {
            got = QString::number(db->value(), 'g', 17);
            same = std::fabs(db->value() - std::stod(want)) <= 1e-12 * std::max(1.0, std::fabs(std::stod(want)));
          } else if (auto* cb = qobject_cast<QCheckBox*>(wdg); cb && type == "flag") {
            got = cb->isChecked() ? "true" : "false";
            same = !cb->isChecked();
          } else if (auto* combo = qobject_cast<QComboBox*>(wdg); combo && type == "choice") {
            got = combo->currentText();
            same = got.toStdString() == want;
            QStringList choices;
            for (const auto& c : o["choices"]) choices << QString::fromStdString(c.get<std::string>());
            QStringList items;
            for (int i = 0; i < combo->count(); ++i) items << combo->itemText(i);
            if (items != choices)
              problems << "--" + f.option + ": choices " + items.join(",") + " vs CLI " + choices.join(",");
          } else if (auto* le = qobject_cast<QLineEdit*>(wdg); le && type == "text") {
            got = le->text();
            same = got.toStdString() == want;
          } else {
            problems << "--" + f.option + ": widget does not match the CLI type " + QString::fromStdString(type);
            continue;
          }
          if (!same)
            problems << QString("--%1: dialog shows '%2', CLI default '%3'")
                            .arg(f.option, got, QString::fromStdString(want));
          ++compared;
        }
        d->reject();
      });
      PipelineJob job;
      QString err;
      QVERIFY(!runStepDialog(step, &w, w.context(), &job, &err));
      qInfo() << step.id << ":" << fields << "option fields compared with moefy" << step.id;
      QVERIFY2(problems.isEmpty(), qPrintable(step.id + ": " + problems.join("; ")));
      QVERIFY2(fields > 0, qPrintable(step.id + ": no option fields"));
    }
    QVERIFY(compared >= 30);
  }

  // The dialog's values go through the CLI's parser: the same refusals, naming the option.
  void dialogValuesAreCheckedLikeTheCli() {
    struct Case {
      const char* step;
      QVariantMap values;
      const char* expect;
    };
    const std::vector<Case> cases = {
        {"record", {{"chunk", 0}}, "--chunk: 0 is outside"},
        {"record", {{"checkpoint-secs", -1.0}}, "--checkpoint-secs: -1 is outside"},
        {"record", {{"layers", "0,x"}}, "--layers"},
        {"split", {{"topk", "many"}}, "--topk"},
        {"route", {{"router", "mlp"}, {"lr", 0.0}}, "--lr: 0 is outside"},
        {"eval", {{"speed-seconds", std::nan("")}}, "--speed-seconds: must be a finite number"},
        {"eval", {{"sweep", "0.5,2"}}, "--sweep"},
        {"calibrate", {{"steps", 0}}, "--steps: 0 is outside"},
    };
    for (const auto& c : cases) {
      const PipelineStep* s = findStep(c.step);
      if (!s) continue;
      QString err;
      try {
        // Parsing, then the core's conversion to the options struct (where
        // list and cross-option checks live): the CLI's path exactly.
        const OptionValues v = parseStepOptions(*s, c.values);
        const QString id = c.step;
        if (id == "record") recordOptionsFrom(v);
        if (id == "split") splitOptionsFrom(v);
        if (id == "route") routeOptionsFrom(v);
        if (id == "calibrate") calibrateOptionsFrom(v, nullptr);
        if (id == "eval") {
          EvalRunSpec spec;
          applyEvalOptions(v, spec);
        }
      } catch (const ParameterError& e) {
        err = e.what();
      }
      qInfo() << c.step << c.values << "->" << err;
      QVERIFY2(err.contains(c.expect), qPrintable(QString(c.step) + ": '" + err + "' lacks '" + c.expect + "'"));
    }
  }
};

QTEST_MAIN(TestOptionDialogs)
#include "test_option_dialogs.moc"
