# One helper sets warnings and common definitions on every project target.
function(moefy_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  # Qt's `slots`/`signals`/`emit` macros collide with libtorch headers.
  target_compile_definitions(${target} PRIVATE QT_NO_KEYWORDS
    MOEFY_VERSION="${PROJECT_VERSION}"
    MOEFY_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR})
endfunction()
