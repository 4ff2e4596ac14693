// Option tables (analysis/common/options.h) and the CLI parser built on them:
// unknown and misspelt options, 64-bit range checks before narrowing, non-finite
// reals, --help, and docs/cli.md generated from the tables.
#include <QtTest>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/analyze/analyze_options.h"
#include "analysis/calibrate/calibrate_options.h"
#include "analysis/common/error.h"
#include "analysis/common/options.h"
#include "analysis/eval/eval_options.h"
#include "analysis/moe/moe_options.h"
#include "analysis/record/record_options.h"
#include "analysis/route/route_options.h"
#include "analysis/split/split_options.h"
#include "analysis/train/train_options.h"
#include "testutil.h"

using namespace moefy;

namespace {

OptionTable sampleTable() {
  OptionTable t("sample", "a sample command", "moefy sample IN [options]\n", "Test table.\n");
  t.positionals({"IN"}, 1)
      .integer("seq-len", "S", 256, 2, 1 << 20, "window length")
      .integer("top-k", "K", 0, 1, 64, "experts (0 = from --top-fraction)", {}, true)
      .real("speed-seconds", "SECS", 1.0, 0, 3600, "seconds per timing", true)
      .real("held-out", "F", 0.1, 0, 0.9, "held-out fraction")
      .choice("method", {"coact", "kmeans", "random"}, "coact", "split method")
      .integerNoDefault("experts", "E", 1, 1 << 24, "experts", "16")
      .text("router", "DIR", std::nullopt, "a router", true)
      .flag("json", "JSON output");
  return t;
}

// The ParameterError message of parsing `args`, or "" if it parses.
std::string parseError(const OptionTable& t, const std::vector<std::string>& args) {
  try {
    t.parse(args);
  } catch (const ParameterError& e) {
    return e.what();
  }
  return {};
}

std::string readText(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

class TestOptions : public QObject {
  Q_OBJECT

 private Q_SLOTS:
  void editDistanceAndHints() {
    QCOMPARE(editDistance("expert", "experts"), 1);
    QCOMPARE(editDistance("top-fractoin", "top-fraction"), 1);  // a transposition is one edit
    QCOMPARE(editDistance("jsn", "json"), 1);
    QCOMPARE(editDistance("", "abc"), 3);
    QCOMPARE(QString::fromStdString(closestName("expert", {"experts", "expert-size", "seed"})), QString("experts"));
    QCOMPARE(QString::fromStdString(closestName("frobnicate", {"experts", "method", "seed"})), QString());
    QCOMPARE(QString::fromStdString(closestName("checkpoint", {"checkpoint-every", "chunk"})),
             QString("checkpoint-every"));
    // Letter case alone is a typo even for short names (edit distance 2 > the limit of 1).
    QCOMPARE(QString::fromStdString(closestName("RB", {"rb", "kway"})), QString("rb"));
    QCOMPARE(QString::fromStdString(closestName("Coact", {"coact", "kmeans", "random"})), QString("coact"));
    QCOMPARE(QString::fromStdString(closestName("XY", {"rb", "kway"})), QString());
  }

  void parsesTypedValuesAndDefaults() {
    const OptionTable t = sampleTable();
    OptionValues v =
        t.parse({"IN", "--seq-len", "64", "--speed-seconds=0.5", "--router", "a", "--router", "b", "--json"});
    QCOMPARE(v.positional.size(), size_t(1));
    QCOMPARE(v.int32("seq-len"), 64);
    QCOMPARE(v.real("speed-seconds"), 0.5);
    QCOMPARE(v.all("router").size(), size_t(2));
    QVERIFY(v.flag("json"));
    // Defaults from the table.
    QCOMPARE(v.real("held-out"), 0.1);
    QCOMPARE(QString::fromStdString(v.text("method")), QString("coact"));
    QCOMPARE(v.integer("top-k"), int64_t(0));  // the sentinel default, outside the given range
    QVERIFY(!v.has("top-k"));
    // No default: required when read.
    QVERIFY_THROWS_EXCEPTION(ParameterError, v.integer("experts"));
    // Reading an undeclared option is a programming error, not "absent".
    QVERIFY_THROWS_EXCEPTION(std::logic_error, v.has("seqlen"));
  }

  void refusesBadInputNamingTheOption() {
    const OptionTable t = sampleTable();
    struct Case {
      std::vector<std::string> args;
      const char* expect;
    };
    const std::vector<Case> cases = {
        {{"--expert", "8"}, "unknown option --expert (did you mean --experts?)"},
        {{"--jsn"}, "did you mean --json?"},
        {{"--frobnicate", "3"}, "unknown option --frobnicate (see moefy sample --help)"},
        {{"--seq-len", "4294967312"}, "--seq-len: 4294967312 is outside [2, 1048576]"},
        {{"--seq-len", "99999999999999999999999"}, "--seq-len: 99999999999999999999999 is outside"},
        {{"--seq-len", "12abc"}, "--seq-len: expected an integer, got '12abc'"},
        {{"--seq-len", "1"}, "--seq-len: 1 is outside [2, 1048576]"},
        {{"--seq-len"}, "--seq-len: missing value"},
        {{"--top-k", "0"}, "--top-k: 0 is outside [1, 64]"},
        {{"--speed-seconds", "-1"}, "--speed-seconds: -1 is outside (0, 3600]"},
        {{"--speed-seconds", "0"}, "--speed-seconds: 0 is outside (0, 3600]"},
        {{"--speed-seconds", "nan"}, "--speed-seconds: must be a finite number, got 'nan'"},
        {{"--speed-seconds", "inf"}, "--speed-seconds: must be a finite number"},
        {{"--speed-seconds", "1e999"}, "--speed-seconds: must be a finite number"},
        {{"--held-out", "0.95"}, "--held-out: 0.95 is outside [0, 0.9]"},
        {{"--method", "kmean"}, "--method: expected coact, kmeans, random; got 'kmean' (did you mean kmeans?)"},
        {{"--json=1"}, "--json: takes no value"},
        {{"--seq-len", "8", "--seq-len", "9"}, "--seq-len: given more than once"},
        {{"IN", "EXTRA"}, "unexpected argument 'EXTRA'"},
    };
    for (const auto& c : cases) {
      const std::string err = parseError(t, c.args);
      qInfo() << c.args.front().c_str() << "->" << err.c_str();
      QVERIFY2(err.find(c.expect) != std::string::npos, (err + " | expected: " + c.expect).c_str());
    }
  }

  // Every list-valued option is split by splitListValue: an empty entry (a
  // doubled, leading or trailing comma) is refused with the same message
  // naming the option; blanks around entries are allowed.
  void listOptionsRefuseEmptyEntries() {
    QCOMPARE(splitListValue(" 0, 2,5 ", "--layers"), (std::vector<std::string>{"0", "2", "5"}));
    QVERIFY(splitListValue("", "--layers").empty());
    QVERIFY(splitListValue("  ", "--layers").empty());
    for (const std::string bad : {"0,,1", ",1", "1,", ",", "0, ,1"}) {
      std::string err;
      try {
        splitListValue(bad, "--layers");
      } catch (const ParameterError& e) {
        err = e.what();
      }
      QCOMPARE(QString::fromStdString(err),
               QString::fromStdString("--layers: empty entry in '" + bad + "' (a doubled, leading or trailing comma)"));
    }
    // The typed list parsers and the step converters (CLI and studio dialogs alike).
    QCOMPARE(parseLayerList("0, 2", "--layers"), (std::vector<int>{0, 2}));
    QCOMPARE(parseSweep("0.5, 1"), (std::vector<double>{0.5, 1.0}));
    QVERIFY_THROWS_EXCEPTION(ParameterError, parseLayerList("0,,1", "--layers"));
    QVERIFY_THROWS_EXCEPTION(ParameterError, parseSweep("0.5,,1"));
    QVERIFY_THROWS_EXCEPTION(ParameterError, parseSweep("0.5,"));
    QVERIFY_THROWS_EXCEPTION(ParameterError, recordOptionsFrom(recordOptionTable().parse({"--layers", "0,,1"})));
    QVERIFY_THROWS_EXCEPTION(
        ParameterError,
        splitOptionsFrom(splitOptionTable().parse({"--method", "random", "--experts", "8", "--layers", "1,"})));
    EvalRunSpec spec;
    QVERIFY_THROWS_EXCEPTION(ParameterError, applyEvalOptions(evalOptionTable().parse({"--sweep", ",0.5"}), spec));
  }

  void everyTableIsConsistent() {
    // The pipeline steps' tables: every default parses back to itself and the
    // struct the CLI builds from an empty command line holds the struct's defaults.
    const RecordOptions r = recordOptionsFrom(recordOptionTable().parse({}));
    QCOMPARE(r.seqLen, RecordOptions{}.seqLen);
    QCOMPARE(r.samples, RecordOptions{}.samples);
    QCOMPARE(r.checkpointSeconds, RecordOptions{}.checkpointSeconds);
    QCOMPARE(r.chunkSequences, RecordOptions{}.chunkSequences);
    const SplitOptions s = splitOptionsFrom(splitOptionTable().parse({}));
    QCOMPARE(s.restarts, SplitOptions{}.restarts);
    QCOMPARE(s.graph.topk, SplitOptions{}.graph.topk);
    QCOMPARE(s.maxIter, SplitOptions{}.maxIter);
    const RouteOptions ro = routeOptionsFrom(routeOptionTable().parse({"--router", "mlp"}));
    QCOMPARE(ro.topFraction, RouteOptions{}.topFraction);
    QCOMPARE(ro.lr, RouteOptions{}.lr);
    QCOMPARE(ro.epochs, RouteOptions{}.epochs);
    const TrainOptions tr =
        trainOptionsFrom(trainOptionTable().parse({"--config", "c", "--tokenizer", "t", "--out", "o"}), "x");
    QCOMPARE(tr.warmup, TrainOptions{}.warmup);
    QCOMPARE(tr.evalTokens, TrainOptions{}.evalTokens);
    CalibrateCorpusOptions cc;
    const CalibrateOptions ca = calibrateOptionsFrom(calibrateOptionTable().parse({}), &cc);
    QCOMPARE(ca.lr, CalibrateOptions{}.lr);
    QCOMPARE(cc.tokens, CalibrateCorpusOptions{}.tokens);
    EvalRunSpec spec;
    const EvalCorpusOptions ec = applyEvalOptions(evalOptionTable().parse({}), spec);
    QCOMPARE(ec.seqLen, EvalCorpusOptions{}.seqLen);
    QCOMPARE(spec.speedSeconds, EvalRunSpec{}.speedSeconds);
    QVERIFY(spec.sweep.empty());
    const AnalyzeOptions an = analyzeOptionsFrom(analyzeOptionTable().parse({}));
    QCOMPARE(an.maxTokens, AnalyzeOptions{}.maxTokens);
    QCOMPARE(an.fireEps, AnalyzeOptions{}.fireEps);
    QCOMPARE(an.matchMaxNeurons, AnalyzeOptions{}.matchMaxNeurons);
    QVERIFY(an.layers.empty() && an.dynamicAnalyses);
    QCOMPARE(analyzeOptionsFrom(analyzeOptionTable().parse({"--sites", "blk.2, blk.0"})).layers,
             (std::vector<int>{2, 0}));
    QVERIFY_THROWS_EXCEPTION(ParameterError, analyzeOptionsFrom(analyzeOptionTable().parse({"--sites", "enc.blk.0"})));
    // Options that conflict are refused by the shared converters, for the CLI and the studio alike.
    QVERIFY_THROWS_EXCEPTION(
        ParameterError,
        routeOptionsFrom(routeOptionTable().parse({"--router", "mlp", "--top-k", "2", "--top-fraction", "0.5"})));
    // --budget (per-layer budgets, issue 17): off by default, positive when given, alone.
    QCOMPARE(ro.budget, 0.0);
    QCOMPARE(ro.allocate, std::string("activity"));
    const RouteOptions rb =
        routeOptionsFrom(routeOptionTable().parse({"--router", "mlp", "--budget", "0.25", "--allocate", "greedy"}));
    QCOMPARE(rb.budget, 0.25);
    QCOMPARE(rb.allocate, std::string("greedy"));
    QVERIFY_THROWS_EXCEPTION(ParameterError,
                             routeOptionsFrom(routeOptionTable().parse({"--router", "mlp", "--budget", "0"})));
    QVERIFY_THROWS_EXCEPTION(ParameterError, routeOptionTable().parse({"--router", "mlp", "--budget", "1.5"}));
    QVERIFY_THROWS_EXCEPTION(
        ParameterError,
        routeOptionsFrom(routeOptionTable().parse({"--router", "mlp", "--budget", "0.25", "--top-fraction", "0.5"})));
    QVERIFY_THROWS_EXCEPTION(ParameterError,
                             routeOptionsFrom(routeOptionTable().parse({"--router", "mlp", "--allocate", "greedy"})));
    QVERIFY_THROWS_EXCEPTION(ParameterError, parseSweep("0.5,nan"));
    QVERIFY_THROWS_EXCEPTION(ParameterError, parseSweep("0.5,1.5"));
  }

  // The CLI: misspelt and out-of-range options exit 2 with a one-line message
  // naming the option, before any file is read.
  void cliRefusesMisspeltAndOutOfRangeOptions() {
    struct Case {
      QStringList args;
      const char* expect;
    };
    const std::vector<Case> cases = {
        {{"split", "REC", "--method", "random", "--experts", "8", "--frobnicate", "3", "--out", "P"},
         "unknown option --frobnicate"},
        {{"inspect", "M", "--jsn", "1"}, "did you mean --json?"},
        {{"split", "REC", "--expert", "8"}, "did you mean --experts?"},
        {{"route", "M", "R", "P", "--router", "mlp", "--top-fractoin", "0.5", "--out", "X"},
         "did you mean --top-fraction?"},
        {{"record", "M", "C", "--out", "R", "--token", "512"}, "did you mean --tokens?"},
        {{"record", "M", "C", "--out", "R", "--seq-len", "4294967312"}, "--seq-len: 4294967312 is outside"},
        {{"record", "M", "C", "--out", "R", "--chunk", "0"}, "--chunk: 0 is outside"},
        {{"record", "M", "C", "--out", "R", "--checkpoint-secs", "-1"}, "--checkpoint-secs: -1 is outside"},
        {{"record", "M", "C", "--out", "R", "--checkpoint-every", "-2"}, "--checkpoint-every: -2 is outside"},
        {{"record", "M", "C", "--out", "R", "--samples", "1000000000000"}, "--samples: 1000000000000 is outside"},
        {{"eval", "M", "C", "--speed-seconds", "-1"}, "--speed-seconds: -1 is outside"},
        {{"eval", "M", "C", "--speed-seconds", "nan"}, "--speed-seconds: must be a finite number"},
        {{"eval", "M", "C", "--sweep", "0.5", "--top-k", "2"}, "give --top-k or --sweep"},
        {{"train", "C", "--lr", "inf"}, "--lr: must be a finite number"},
        {{"train-tokenizer", "C", "--out", "t.json", "--vocab", "4294967552"}, "--vocab: 4294967552 is outside"},
        {{"calibrate", "M", "C", "--steps", "0"}, "--steps: 0 is outside"},
        {{"export", "M", "P", "R", "--top-k", "-3"}, "--top-k: -3 is outside"},
        {{"corpus", "C", "--held-out", "2"}, "--held-out: 2 is outside"},
        {{"tokenize", "M", "--txt", "hi"}, "did you mean --text?"},
        {{"forward", "M", "--id", "1,2"}, "did you mean --ids?"},
        {{"demo", "--experts", "0"}, "--experts: 0 is outside"},
        {{"demo", "--quik"}, "did you mean --quick?"},
        {{"splt", "REC"}, "did you mean split?"},
        // Every list-valued option refuses an empty entry the same way, before any file is read.
        {{"forward", "M", "--ids", "1,,2"}, "--ids: empty entry in '1,,2' (a doubled, leading or trailing comma)"},
        {{"forward", "M", "--ids", "1,2,"}, "--ids: empty entry"},
        {{"forward", "M", "--ids", "1", "--decoder-ids", ",0"}, "--decoder-ids: empty entry"},
        {{"tokenize", "M", "--decode", "1,,2"}, "--decode: empty entry"},
        {{"record", "M", "C", "--out", "R", "--layers", "0,,1"}, "--layers: empty entry in '0,,1'"},
        {{"eval", "M", "C", "--sweep", "0.5,,1"}, "--sweep: empty entry in '0.5,,1'"},
        {{"split", "REC", "--method", "random", "--experts", "8", "--layers", "0,,1", "--out", "P"},
         "--layers: empty entry"},
    };
    for (const auto& c : cases) {
      test::RunResult r = test::runCli(c.args, 60);
      qInfo() << c.args.join(' ') << "-> exit" << r.exitCode << r.err.c_str();
      QVERIFY2(r.exitCode == 2, qPrintable(c.args.join(' ') + ": exit " + QString::number(r.exitCode)));
      QVERIFY2(r.err.find(c.expect) != std::string::npos,
               qPrintable(c.args.join(' ') + ": " + QString::fromStdString(r.err)));
      QCOMPARE(std::count(r.err.begin(), r.err.end(), '\n'), 1L);  // one line
    }
  }

  void helpListsEveryOption() {
    test::RunResult all = test::runCli({"help", "--json"}, 60);
    QCOMPARE(all.exitCode, 0);
    const auto j = nlohmann::json::parse(all.out);
    QVERIFY(j.size() >= 13);
    for (const auto& cmd : j) {
      const QString name = QString::fromStdString(cmd["command"].get<std::string>());
      test::RunResult h = test::runCli({name, "--help"}, 60);
      QVERIFY2(h.exitCode == 0, qPrintable(name));
      for (const auto& o : cmd["options"])
        QVERIFY2(h.out.find("--" + o["name"].get<std::string>()) != std::string::npos,
                 qPrintable(name + " --help lacks --" + QString::fromStdString(o["name"].get<std::string>())));
    }
  }

  // docs/cli.md is `moefy help --markdown`; regenerate it after changing an option.
  // moefy waits passively in OpenMP unless told otherwise
  // (analysis/common/omp_wait_policy.h); libgomp prints its settings with
  // OMP_DISPLAY_ENV=true when it starts, before main().
  void cliWaitsPassivelyInOpenMp() {
    const QByteArray before = qgetenv("OMP_WAIT_POLICY");
    qputenv("OMP_DISPLAY_ENV", "true");
    qunsetenv("OMP_WAIT_POLICY");
    test::RunResult dflt = test::runCli({"help"}, 60);
    qputenv("OMP_WAIT_POLICY", "active");
    test::RunResult user = test::runCli({"help"}, 60);
    qunsetenv("OMP_DISPLAY_ENV");
    if (before.isNull())
      qunsetenv("OMP_WAIT_POLICY");
    else
      qputenv("OMP_WAIT_POLICY", before);
    QCOMPARE(dflt.exitCode, 0);
    QVERIFY2(dflt.err.find("OMP_WAIT_POLICY = 'PASSIVE'") != std::string::npos, dflt.err.c_str());
    QVERIFY2(user.err.find("OMP_WAIT_POLICY = 'ACTIVE'") != std::string::npos, user.err.c_str());
  }

  void cliDocsAreUpToDate() {
    test::RunResult r = test::runCli({"help", "--markdown"}, 60);
    QCOMPARE(r.exitCode, 0);
    const std::string doc = readText(test::sourceDir() / "docs" / "cli.md");
    QVERIFY2(doc == r.out, "docs/cli.md is stale: run build/app/moefy help --markdown > docs/cli.md");
  }
};

QTEST_MAIN(TestOptions)
#include "test_options.moc"
