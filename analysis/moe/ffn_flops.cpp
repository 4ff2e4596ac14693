#include "analysis/moe/ffn_flops.h"

#include "analysis/common/error.h"

namespace moefy {

double ffnFlops(const FfnFlopCount& c) {
  if (c.dModel <= 0 || c.dFF <= 0)
    throw ParameterError("FFN FLOPs: d_model " + std::to_string(c.dModel) + " and d_ff " + std::to_string(c.dFF) +
                         " must be positive");
  const double d = static_cast<double>(c.dModel), F = static_cast<double>(c.dFF);
  const double m = c.gated ? 2.0 : 1.0, E = static_cast<double>(c.experts);
  switch (c.method) {
    case FfnFlopCount::Method::Dense:
      return (m + 1) * d * F;
    case FfnFlopCount::Method::ActivationBound:
      return m * d * F + d * c.neurons;
    case FfnFlopCount::Method::Moe:
      break;
  }
  double router = 0;
  switch (c.router) {
    case RouterKind::Similarity:
    case RouterKind::Sigmoid:
    case RouterKind::DynamicK:
      router = d * E;
      break;
    case RouterKind::Mlp:
      router = d * E + E * E;
      break;
    case RouterKind::Oracle:
      router = m * d * F;
      break;
  }
  return (m + 1) * d * c.neurons + router;
}

double ffnFlopsFraction(const FfnFlopCount& c) {
  FfnFlopCount dense = c;
  dense.method = FfnFlopCount::Method::Dense;
  return ffnFlops(c) / ffnFlops(dense);
}

bool needsDenseHidden(const FfnFlopCount& c) {
  return c.method == FfnFlopCount::Method::ActivationBound ||
         (c.method == FfnFlopCount::Method::Moe && c.router == RouterKind::Oracle);
}

}  // namespace moefy
