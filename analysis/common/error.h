#pragma once
// Typed errors thrown by the core's entry points. Every message is one line
// that names the file, tensor, layer, parameter or line it is about, e.g.
//   model.safetensors: tensor 'h.3.mlp.c_fc.weight' has shape [768, 3072], expected [256, 1024]
#include <stdexcept>
#include <string>

namespace moefy {

/// `message` with every control character (newline, carriage return, tab,
/// NUL, ...) written as a visible escape ("\n", "\x01"), so that a value
/// quoted from an input file can never break a message into several lines.
inline std::string oneLineMessage(const std::string& message) {
  std::string out;
  out.reserve(message.size());
  for (const char ch : message) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) {
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

/// Base class of every error the core reports to a user. The message is one
/// line by construction (oneLineMessage), whatever input text it quotes.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(oneLineMessage(message)) {}
};

/// Malformed or inconsistent input data (files, configs, corpora, artefacts).
class FormatError : public Error {
 public:
  using Error::Error;
};

/// A parameter outside its valid range (top-k of 0, E larger than d_ff, ...).
class ParameterError : public Error {
 public:
  using Error::Error;
};

/// An I/O failure: unreadable input, unwritable output, full disk.
class IoError : public Error {
 public:
  using Error::Error;
};

/// Raised by JobContext::checkCancel() when the user cancelled the job. A
/// job that leaves something on disk rethrows it with a note saying what
/// (what() is then "cancelled; NOTE").
class CancelledError : public Error {
 public:
  CancelledError() : Error("cancelled") {}
  explicit CancelledError(const std::string& onDisk) : Error("cancelled; " + onDisk) {}
};

}  // namespace moefy
