#pragma once
// Data-parallel runs under MPI (Open MPI from Debian: openmpi-bin,
// libopenmpi-dev). `mpirun -np N moefy record|eval ...` starts N copies of
// the CLI; each is a rank of MPI_COMM_WORLD. The commands that support it
// (record, eval: docs/scale.md "Several processes") shard their input by rank
// and combine the results on rank 0 with the reductions below; every other
// command refuses to run under more than one rank.
//
// MPI is initialised lazily, on the first call that needs the world, and
// only when the process was started by an MPI launcher (the environment holds
// OMPI_COMM_WORLD_SIZE (Open MPI) or PMI_SIZE (MPICH) above 1); a plain `moefy` never loads
// MPI's runtime. Builds without MPI (CMake found none: MOEFY_HAVE_MPI unset)
// refuse a launch with more than one rank with a ParameterError.
//
// Thread-safety: MPI is initialised with MPI_THREAD_FUNNELED; call these from
// the main thread only. Every reduction is collective: all ranks call it in
// the same order with tensors of the same shape and dtype.
#include <ATen/ATen.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace moefy::dist {

/// Whether this build links MPI (CMake found it).
bool built();

/// The number of ranks the launcher started (1 when not launched by an MPI
/// launcher). Reads the environment only; does not initialise MPI.
int launchedSize();

/// This process's rank as the launcher set it (0 when not launched by an MPI
/// launcher). Reads the environment only.
int launchedRank();

/// The number of ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE; 1 when not
/// launched by Open MPI's launcher). Reads the environment only.
int launchedLocalSize();

/// True when this process is one of several MPI ranks (launchedSize() > 1);
/// initialises MPI on the first call. Throws ParameterError when launched with
/// several ranks but this build has no MPI.
bool active();
/// This process's rank (0 when not active).
int rank();
/// The number of ranks (1 when not active).
int size();

/// Throws ParameterError naming `command` when active(): for the commands
/// that do not shard their work (each rank would redo it and race on the
/// output).
void requireSingleProcess(const std::string& command);

/// The threads each rank should use when MOEFY_THREADS is unset: the
/// machine's hardware threads divided by the ranks on this node
/// (OMPI_COMM_WORLD_LOCAL_SIZE), at least 1. Reads the environment only.
int threadsPerRank(int hardwareThreads);

/// Elementwise reductions of `t` onto rank 0, in place on rank 0 (the other
/// ranks' `t` is left unspecified, and is not read afterwards by callers).
/// `t` must be contiguous. Sum: I32, I64, F32, F64 (floating sums are in
/// MPI's order: equal to a sequential sum within rounding). Max: I32, I64,
/// F32, F64. BitOr: any dtype, bytewise (used to combine buffers where exactly
/// one rank holds each element and the others hold zeros). Large tensors are
/// reduced in pieces of at most 2^26 elements. No-ops when not active().
enum class ReduceOp { Sum, Max, BitOr };
void reduceToRoot(const at::Tensor& t, ReduceOp op);
/// The same reduction, with the result on every rank.
void allReduce(const at::Tensor& t, ReduceOp op);

/// A reduction with a caller-defined combine over records of `recordBytes`
/// bytes (t's bytes are a whole number of records): combine(in, inout, n)
/// folds n records of `in` into `inout`. It must be associative and
/// commutative (MPI may apply it in any order). Onto rank 0, in place.
using Combine = void (*)(const void* in, void* inout, int64_t records);
void reduceCustomToRoot(const at::Tensor& t, int64_t recordBytes, Combine combine);

/// Every rank's value of `v`, indexed by rank (one element when not active()).
std::vector<uint64_t> allGather(uint64_t v);

/// Collective error agreement, called by every rank at the same point with
/// the exception it caught (or nullptr): when any rank failed, every rank
/// throws the error of the lowest failing rank (same type: ParameterError,
/// FormatError, IoError, CancelledError or Error; the message prefixed with
/// "rank R: " when R != 0), marked as agreed (errorWasAgreed()) so that only
/// rank 0 reports it and no rank aborts the others. Returns when no rank
/// failed. When not active(), rethrows `local` if set.
void agree(const std::exception_ptr& local);
/// True once agree() has thrown on this process.
bool errorWasAgreed();

/// The setup phase of a sharded command: from setupBegins() (the CLI, once
/// the ranks agreed on the command line) to workStarted() (the command, once
/// the ranks agreed its setup succeeded and the sharded work begins). While
/// it is open, every collective a rank makes is an agree(), so the CLI turns
/// an error thrown on one rank into agree(error) (inSetup()): the ranks still
/// in their setup meet it in their next agree() and all stop with that error,
/// reported once. After it, an error on one rank stops all by abortAll().
void setupBegins();
void workStarted();
bool inSetup();

/// Ends the run after an error that not every rank saw (a rank failing in the
/// middle of the work while the others wait in a reduction): MPI_Abort with
/// `code`, which stops every rank. Only called when active().
[[noreturn]] void abortAll(int code);

/// MPI_Finalize when MPI was initialised (called at normal exit by the CLI).
void finalize();

}  // namespace moefy::dist
