#include "analysis/model/device.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include "analysis/common/error.h"
#include "analysis/common/options.h"

namespace moefy {

int cudaDeviceCount() { return at::hasCUDA() ? static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()) : 0; }

void requireDevice(c10::Device device, const std::string& what) {
  if (device.is_cpu() || device.is_meta()) return;
  if (!device.is_cuda()) throw ParameterError(what + ": not a supported device (cpu, cuda or cuda:N)");
  if (!at::hasCUDA())
    throw ParameterError(what +
                         ": this build's libtorch has no CUDA (Debian's libtorch is CPU-only; build against a "
                         "CUDA-enabled libtorch, docs/scale.md \"Device\")");
  const int n = cudaDeviceCount();
  if (n == 0) throw ParameterError(what + ": no CUDA device is visible");
  if (device.has_index() && device.index() >= n)
    throw ParameterError(what + ": this machine has " + std::to_string(n) + " CUDA device" + (n == 1 ? "" : "s") +
                         " (cuda:0 .. cuda:" + std::to_string(n - 1) + ")");
}

c10::Device parseDevice(const std::string& spec, const std::string& option) {
  c10::Device device(c10::kCPU);
  if (spec == "cpu") {
    device = c10::Device(c10::kCPU);
  } else if (spec == "cuda") {
    device = c10::Device(c10::kCUDA, 0);
  } else if (spec.rfind("cuda:", 0) == 0 && spec.size() > 5 && spec.size() <= 8 &&
             spec.find_first_not_of("0123456789", 5) == std::string::npos) {
    device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(std::stoi(spec.substr(5))));
  } else {
    throw ParameterError(option + " '" + spec + "' is not a device (cpu, cuda or cuda:N)");
  }
  requireDevice(device, option + " " + spec);  // the errors quote the value as given
  return device;
}

void addDeviceOption(OptionTable& table, const std::string& what) {
  table.text("device", "DEV", std::string("cpu"),
             what + ": cpu, cuda or cuda:N (a CUDA-enabled libtorch build; docs/scale.md \"Device\")", false);
}

c10::Device deviceOption(const OptionValues& values) { return parseDevice(values.text("device")); }

}  // namespace moefy
