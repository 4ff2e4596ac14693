#pragma once
// The compute device of a model (`--device cpu|cuda|cuda:N`).
//
// Debian's libtorch is CPU-only; a build against a CUDA-enabled libtorch
// (CMAKE_PREFIX_PATH, scripts/gpu-check.sh) can run the forward, and what is
// built on it (record, route, eval, calibrate, train), on a GPU. The device
// is a load option (LoadOptions::device): the weights are copied there once
// and every tensor the forward makes is created there; code that reads
// tensor memory on the host (the recorder, eval's scoring) copies what it
// reads to the CPU at its hook. docs/scale.md "Device" lists what runs where.
#include <c10/core/Device.h>

#include <string>

namespace moefy {

class OptionTable;
class OptionValues;

/// Parses a `--device` value: "cpu", "cuda" (device 0) or "cuda:N". Throws
/// ParameterError naming `option` for any other text, and as requireDevice()
/// for a device this build or machine cannot use. Thread-safe.
c10::Device parseDevice(const std::string& spec, const std::string& option = "--device");

/// Throws ParameterError starting with `what` (e.g. "--device cuda:1") when
/// `device` cannot be used here: a
/// CUDA device when the build's libtorch has no CUDA or the machine has no
/// such GPU (index >= the device count), or a device type other than CPU,
/// CUDA and Meta (meta tensors have shapes and no data: the tests run the
/// forward on them to find tensors created on the wrong device). Thread-safe.
void requireDevice(c10::Device device, const std::string& what);

/// The number of CUDA devices this process can use (0 in a CPU-only build).
int cudaDeviceCount();

/// Declares `--device DEV` (default cpu) on a command's option table, the
/// same values on forward, record, route, eval, calibrate and train; `what`
/// starts its help ("where the model computes").
void addDeviceOption(OptionTable& table, const std::string& what = "where the model computes");
/// parseDevice() of the parsed `--device` value (cpu when the table has it
/// and it was not given). Throws as parseDevice().
c10::Device deviceOption(const OptionValues& values);

}  // namespace moefy
