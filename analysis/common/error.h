#pragma once
// Typed errors thrown by the core's entry points. Every message is one line
// that names the file, tensor, layer, parameter or line it is about, e.g.
//   model.safetensors: tensor 'h.3.mlp.c_fc.weight' has shape [768, 3072], expected [256, 1024]
#include <stdexcept>
#include <string>

namespace moefy {

/// Base class of every error the core reports to a user.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
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
