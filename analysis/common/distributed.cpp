#include "analysis/common/distributed.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "analysis/common/error.h"

#ifdef MOEFY_HAVE_MPI
#include <mpi.h>
#endif

namespace moefy::dist {

namespace {

int envInt(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : 0;
}

bool g_agreed = false;

#ifdef MOEFY_HAVE_MPI
bool g_init = false;
int g_rank = 0, g_size = 1;

void ensureInit() {
  if (g_init) return;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_init = true;
}

MPI_Datatype mpiType(const at::Tensor& t, ReduceOp op) {
  if (op == ReduceOp::BitOr) return MPI_BYTE;
  switch (t.scalar_type()) {
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    default:
      throw Error(std::string("internal: no MPI reduction for dtype ") + c10::toString(t.scalar_type()));
  }
}

MPI_Op mpiOp(ReduceOp op) { return op == ReduceOp::Sum ? MPI_SUM : op == ReduceOp::Max ? MPI_MAX : MPI_BOR; }

constexpr int64_t kPiece = int64_t{1} << 26;

void reduceImpl(const at::Tensor& t, ReduceOp op, bool all) {
  if (!active() || t.numel() == 0) return;
  if (!t.is_contiguous()) throw Error("internal: MPI reduction of a non-contiguous tensor");
  const MPI_Datatype type = mpiType(t, op);
  const int64_t unit = op == ReduceOp::BitOr ? 1 : static_cast<int64_t>(t.element_size());
  const int64_t total = t.numel() * static_cast<int64_t>(t.element_size()) / unit;
  char* base = static_cast<char*>(t.data_ptr());
  for (int64_t off = 0; off < total; off += kPiece) {
    const int count = static_cast<int>(std::min(kPiece, total - off));
    void* p = base + off * unit;
    int rc;
    if (all)
      rc = MPI_Allreduce(MPI_IN_PLACE, p, count, type, mpiOp(op), MPI_COMM_WORLD);
    else if (g_rank == 0)
      rc = MPI_Reduce(MPI_IN_PLACE, p, count, type, mpiOp(op), 0, MPI_COMM_WORLD);
    else
      rc = MPI_Reduce(p, nullptr, count, type, mpiOp(op), 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) throw Error("MPI reduction failed (code " + std::to_string(rc) + ")");
  }
}

// The caller's combine, for the duration of one reduceCustomToRoot (MPI user
// functions take no context pointer).
Combine g_combine = nullptr;
void customOp(void* in, void* inout, int* len, MPI_Datatype*) { g_combine(in, inout, static_cast<int64_t>(*len)); }
#endif

}  // namespace

bool built() {
#ifdef MOEFY_HAVE_MPI
  return true;
#else
  return false;
#endif
}

int launchedSize() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (int n = envInt(name); n > 0) return n;
  return 1;
}

int launchedRank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"})
    if (const char* v = std::getenv(name); v && *v) return std::atoi(v);
  return 0;
}

bool active() {
  if (launchedSize() <= 1) return false;
#ifdef MOEFY_HAVE_MPI
  ensureInit();
  return g_size > 1;
#else
  throw ParameterError(
      "this moefy was built without MPI (libopenmpi-dev was not found at configure time) and "
      "cannot run as " +
      std::to_string(launchedSize()) +
      " ranks; run it without mpirun, or rebuild after "
      "`scripts/setup.sh` installs Open MPI");
#endif
}

int rank() {
#ifdef MOEFY_HAVE_MPI
  return active() ? g_rank : 0;
#else
  return 0;
#endif
}

int size() {
#ifdef MOEFY_HAVE_MPI
  return active() ? g_size : 1;
#else
  return 1;
#endif
}

void requireSingleProcess(const std::string& command) {
  if (launchedSize() > 1)
    throw ParameterError("does not run under mpirun (" + std::to_string(launchedSize()) + " ranks: " + command +
                         " would run once per rank); only record and eval shard their work across ranks "
                         "(docs/scale.md)");
}

int launchedLocalSize() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (int n = envInt(name); n > 0) return n;
  return 1;
}

int threadsPerRank(int hardwareThreads) { return std::max(1, hardwareThreads / launchedLocalSize()); }

void reduceToRoot(const at::Tensor& t, ReduceOp op) {
#ifdef MOEFY_HAVE_MPI
  reduceImpl(t, op, false);
#else
  (void)t, (void)op;
#endif
}

void allReduce(const at::Tensor& t, ReduceOp op) {
#ifdef MOEFY_HAVE_MPI
  reduceImpl(t, op, true);
#else
  (void)t, (void)op;
#endif
}

void reduceCustomToRoot(const at::Tensor& t, int64_t recordBytes, Combine combine) {
#ifdef MOEFY_HAVE_MPI
  if (!active() || t.numel() == 0) return;
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  if (!t.is_contiguous() || recordBytes <= 0 || bytes % recordBytes != 0)
    throw Error("internal: custom MPI reduction of a tensor that is not whole records");
  MPI_Datatype record;
  MPI_Type_contiguous(static_cast<int>(recordBytes), MPI_BYTE, &record);
  MPI_Type_commit(&record);
  MPI_Op op;
  g_combine = combine;
  MPI_Op_create(&customOp, 1, &op);
  const int64_t records = bytes / recordBytes, piece = std::max<int64_t>(1, kPiece / recordBytes);
  char* base = static_cast<char*>(t.data_ptr());
  int rc = MPI_SUCCESS;
  for (int64_t off = 0; off < records && rc == MPI_SUCCESS; off += piece) {
    const int count = static_cast<int>(std::min(piece, records - off));
    void* p = base + off * recordBytes;
    rc = g_rank == 0 ? MPI_Reduce(MPI_IN_PLACE, p, count, record, op, 0, MPI_COMM_WORLD)
                     : MPI_Reduce(p, nullptr, count, record, op, 0, MPI_COMM_WORLD);
  }
  MPI_Op_free(&op);
  MPI_Type_free(&record);
  g_combine = nullptr;
  if (rc != MPI_SUCCESS) throw Error("MPI reduction failed (code " + std::to_string(rc) + ")");
#else
  (void)t, (void)recordBytes, (void)combine;
#endif
}

std::vector<uint64_t> allGather(uint64_t v) {
#ifdef MOEFY_HAVE_MPI
  if (!active()) return {v};
  std::vector<uint64_t> out(static_cast<size_t>(g_size));
  MPI_Allgather(&v, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  return out;
#else
  return {v};
#endif
}

void agree(const std::exception_ptr& local) {
#ifdef MOEFY_HAVE_MPI
  if (!active()) {
    if (local) std::rethrow_exception(local);
    return;
  }
  // 0: no error; 1 Error, 2 ParameterError, 3 FormatError, 4 IoError, 5 CancelledError.
  int kind = 0;
  std::string message;
  if (local) {
    try {
      std::rethrow_exception(local);
    } catch (const CancelledError& e) {
      kind = 5, message = e.what();
    } catch (const ParameterError& e) {
      kind = 2, message = e.what();
    } catch (const FormatError& e) {
      kind = 3, message = e.what();
    } catch (const IoError& e) {
      kind = 4, message = e.what();
    } catch (const std::exception& e) {
      kind = 1, message = e.what();
    }
  }
  std::vector<int> kinds(static_cast<size_t>(g_size));
  MPI_Allgather(&kind, 1, MPI_INT, kinds.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int failed = -1;
  for (int r = 0; r < g_size && failed < 0; ++r)
    if (kinds[static_cast<size_t>(r)] != 0) failed = r;
  if (failed < 0) return;
  int length = static_cast<int>(message.size());
  MPI_Bcast(&length, 1, MPI_INT, failed, MPI_COMM_WORLD);
  message.resize(static_cast<size_t>(length));
  MPI_Bcast(message.data(), length, MPI_CHAR, failed, MPI_COMM_WORLD);
  if (failed != 0) message = "rank " + std::to_string(failed) + ": " + message;
  g_agreed = true;
  switch (kinds[static_cast<size_t>(failed)]) {
    case 5: {
      const std::string prefix = "cancelled; ";
      if (message.rfind(prefix, 0) == 0) throw CancelledError(message.substr(prefix.size()));
      throw CancelledError();
    }
    case 2:
      throw ParameterError(message);
    case 3:
      throw FormatError(message);
    case 4:
      throw IoError(message);
    default:
      throw Error(message);
  }
#else
  if (local) std::rethrow_exception(local);
#endif
}

bool errorWasAgreed() { return g_agreed; }

namespace {
bool g_setup = false;
}
void setupBegins() { g_setup = true; }
void workStarted() { g_setup = false; }
bool inSetup() { return g_setup; }

void abortAll(int code) {
#ifdef MOEFY_HAVE_MPI
  if (g_init) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

void finalize() {
#ifdef MOEFY_HAVE_MPI
  int done = 0;
  if (g_init && (MPI_Finalized(&done), !done)) MPI_Finalize();
#endif
}

}  // namespace moefy::dist
