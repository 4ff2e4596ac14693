#pragma once
// Passive OpenMP waiting for the moefy executables.
//
// libgomp (the OpenMP runtime of Debian's libtorch) lets an idle worker
// thread spin for a while before it sleeps (OMP_WAIT_POLICY unset). On a
// machine whose cores are busy with other work, the spinning workers take
// those cores from the thread that has work, and the many short parallel
// regions of token-by-token generation slow down by several times: `moefy
// eval --speed` on the bundled model, beside a two-job build on 2 cores, took
// 6.7-40.7 s wall (9.3-18.9 s CPU) with the default and 6.3-6.6 s (5.1-5.4 s
// CPU) with OMP_WAIT_POLICY=passive (docs/DEVELOPING.md "Threads").
//
// libgomp reads the variable in its constructor, before main(), so setting it
// in main() is too late. Including this header in the translation unit that
// defines main() of an executable adds an ELF .preinit_array entry, which
// the dynamic loader runs before any shared library's constructor; it sets
// OMP_WAIT_POLICY=passive unless the environment already sets it (a user's
// OMP_WAIT_POLICY=active is kept). Include it in exactly one translation unit
// of an executable; .preinit_array is ignored in shared libraries.
#include <cstdlib>

namespace moefy::detail {
inline void preferPassiveOmpWait(int, char**, char**) { setenv("OMP_WAIT_POLICY", "passive", /*overwrite=*/0); }
}  // namespace moefy::detail

__attribute__((section(".preinit_array"),
               used)) static void (*const moefyPreinitOmpWait)(int, char**,
                                                               char**) = moefy::detail::preferPassiveOmpWait;
