// moefy: the headless CLI over the MoEfy core. Subcommands live in cmd_*.cpp.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "analysis/common/error.h"
#include "analysis/common/runtime.h"
#include "app/cli/cli.h"

namespace moefy::cli {

namespace {
std::map<std::string, Command>& registry() {
  static std::map<std::string, Command> r;
  return r;
}
}  // namespace

CommandRegistrar::CommandRegistrar(Command command) { registry()[command.name] = std::move(command); }

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto range = options.equal_range(name);
  std::string v = fallback;
  for (auto it = range.first; it != range.second; ++it) v = it->second;
  return v;
}

std::vector<std::string> Args::getAll(const std::string& name) const {
  std::vector<std::string> v;
  auto range = options.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) v.push_back(it->second);
  return v;
}

long long Args::getInt(const std::string& name, long long fallback) const {
  if (!has(name)) return fallback;
  std::string s = get(name);
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw ParameterError("--" + name + ": expected an integer, got '" + s + "'");
  }
}

double Args::getDouble(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  std::string s = get(name);
  try {
    size_t used = 0;
    double v = std::stod(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw ParameterError("--" + name + ": expected a number, got '" + s + "'");
  }
}

const std::string& Args::pos(size_t i, const std::string& what) const {
  if (i >= positional.size()) throw ParameterError("missing argument " + what);
  return positional[i];
}

void printJson(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

namespace {

// A comma-separated list parsed item by item with `parse` (std::stoll/stod
// style); `kind` names what an item must be in the error.
template <typename T, typename Parse>
std::vector<T> parseList(const std::string& text, const std::string& what, const char* kind, Parse parse) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    try {
      size_t used = 0;
      out.push_back(parse(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw ParameterError(what + ": '" + item + "' is not " + kind);
    }
  }
  if (out.empty()) throw ParameterError(what + ": empty list");
  return out;
}

}  // namespace

std::vector<long long> parseIntList(const std::string& text, const std::string& what) {
  return parseList<long long>(text, what, "an integer",
                              [](const std::string& s, size_t* used) { return std::stoll(s, used); });
}

std::vector<double> parseDoubleList(const std::string& text, const std::string& what) {
  return parseList<double>(text, what, "a number", [](const std::string& s, size_t* used) { return std::stod(s, used); });
}

namespace {

void printTopHelp() {
  std::cout << "moefy " MOEFY_VERSION " - MoEfication of Transformer feed-forward layers\n\n"
            << "usage: moefy COMMAND [ARGS] [--json] [--help]\n\ncommands:\n";
  for (const auto& [name, cmd] : registry()) {
    std::string pad(name.size() < 16 ? 16 - name.size() : 1, ' ');
    std::cout << "  " << name << pad << cmd.summary << "\n";
  }
  std::cout << "\nRun 'moefy COMMAND --help' for a command's options.\n";
}

Args parseArgs(const Command& cmd, int argc, char** argv) {
  Args a;
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    if (s.size() > 2 && s.rfind("--", 0) == 0) {
      std::string name = s.substr(2);
      auto eq = name.find('=');
      if (eq != std::string::npos) {
        a.options.emplace(name.substr(0, eq), name.substr(eq + 1));
        continue;
      }
      bool isFlag = name == "json" || name == "help";
      for (const auto& f : cmd.flags) isFlag = isFlag || f == name;
      if (isFlag) {
        a.options.emplace(name, "");
      } else {
        if (i + 1 >= argc) throw ParameterError("--" + name + ": missing value");
        a.options.emplace(name, argv[++i]);
      }
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

}  // namespace

int runSubcommand(const std::string& name, const std::vector<std::string>& args) {
  auto it = registry().find(name);
  if (it == registry().end()) throw Error("internal: no subcommand '" + name + "'");
  std::vector<std::string> storage = {"moefy", name};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  Args parsed = parseArgs(it->second, static_cast<int>(argv.size()), argv.data());
  return it->second.run(parsed);
}

}  // namespace moefy::cli

int main(int argc, char** argv) {
  using namespace moefy::cli;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    printTopHelp();
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    std::cout << "moefy " MOEFY_VERSION "\n";
    return 0;
  }
  auto it = registry().find(argv[1]);
  if (it == registry().end()) {
    std::cerr << "moefy: unknown command '" << argv[1] << "' (see moefy --help)\n";
    return 2;
  }
  const Command& cmd = it->second;
  try {
    Args args = parseArgs(cmd, argc, argv);
    if (args.has("help")) {
      std::cout << cmd.usage;
      if (!cmd.usage.empty() && cmd.usage.back() != '\n') std::cout << "\n";
      return 0;
    }
    moefy::configureRuntime();
    return cmd.run(args);
  } catch (const moefy::CancelledError& e) {
    std::cerr << "moefy " << cmd.name << ": " << e.what() << "\n";
    return 130;
  } catch (const moefy::ParameterError& e) {
    std::cerr << "moefy " << cmd.name << ": " << e.what() << "\n";
    return 2;
  } catch (const moefy::Error& e) {
    std::cerr << "moefy " << cmd.name << ": " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    // Anything else escaping the core is still reported as one line.
    std::string msg = e.what();
    auto nl = msg.find('\n');
    if (nl != std::string::npos) msg = msg.substr(0, nl);
    std::cerr << "moefy " << cmd.name << ": internal error: " << msg << "\n";
    return 1;
  }
}
