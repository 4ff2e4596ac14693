# One helper sets warnings and common definitions on every project target.
function(moefy_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  # Qt's `slots`/`signals`/`emit` macros collide with libtorch headers.
  target_compile_definitions(${target} PRIVATE QT_NO_KEYWORDS
    MOEFY_VERSION="${PROJECT_VERSION}")
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR})
endfunction()

# MOEFY_SOURCE_DIR (the checkout's absolute path) goes only on the few files that
# need it: on every target it would change every compile line per checkout and
# defeat a ccache shared between checkouts.
function(moefy_source_dir_definition)
  set_property(SOURCE ${ARGN} APPEND PROPERTY COMPILE_DEFINITIONS
    "MOEFY_SOURCE_DIR=\"${PROJECT_SOURCE_DIR}\"")
endfunction()

# MOEFY_SHARED_PCH: a header with a prebuilt .gch beside it (built with the same
# flags as moefy_core), force-included into the Qt-free targets. Several checkouts
# that point at the same file get identical compile lines, so one ccache serves
# them all at precompiled-header speed. GCC falls back to the plain header (and
# -Winvalid-pch says so) when the .gch does not match a target's flags.
set(MOEFY_SHARED_PCH "" CACHE FILEPATH "Prebuilt shared precompiled header (developer machines; empty in CI)")
function(moefy_use_shared_pch target)
  target_compile_options(${target} PRIVATE -include ${MOEFY_SHARED_PCH} -Winvalid-pch)
endfunction()
