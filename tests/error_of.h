#pragma once
// errorOf: the message of the moefy::Error a callable throws, for tests that
// check error texts. Header-only so that only the tests that use it include it.
#include <string>
#include <utility>

#include "analysis/common/error.h"

namespace moefy::test {

/// The what() of the moefy::Error `fn` throws, or "" if it throws none. Other
/// exceptions propagate (and fail the test).
template <typename Fn>
std::string errorOf(Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
  } catch (const moefy::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace moefy::test
