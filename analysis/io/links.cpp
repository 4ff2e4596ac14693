#include "analysis/io/links.h"

#include <algorithm>
#include <fstream>

#include "analysis/common/error.h"
#include "analysis/common/hash.h"
#include "analysis/io/fsutil.h"

namespace moefy {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kWholeFileLimit = 16ull << 20;
constexpr uint64_t kEdgeBytes = 1ull << 20;

uint64_t hashFileBytes(uint64_t h, const fs::path& file, uint64_t size) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw IoError(file.string() + ": cannot read (fingerprint)");
  std::vector<char> buf(1 << 16);
  auto hashRange = [&](uint64_t from, uint64_t count) {
    in.clear();
    in.seekg(static_cast<std::streamoff>(from));
    while (count > 0) {
      const auto n = static_cast<std::streamsize>(std::min<uint64_t>(count, buf.size()));
      if (!in.read(buf.data(), n)) throw IoError(file.string() + ": short read (fingerprint)");
      h = fnv1a(h, buf.data(), static_cast<size_t>(n));
      count -= static_cast<uint64_t>(n);
    }
  };
  if (size <= kWholeFileLimit) {
    hashRange(0, size);
  } else {
    // Large tensor files: the head holds the safetensors header (names,
    // dtypes, shapes, offsets), the tail the last tensor's data.
    hashRange(0, kEdgeBytes);
    hashRange(size - kEdgeBytes, kEdgeBytes);
  }
  return h;
}

}  // namespace

std::string folderFingerprint(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw IoError(dir.string() + ": not a folder (fingerprint)");
  // A sub-folder that is an artefact or a workspace of its own (it holds one
  // of their metadata files) is not part of this folder's content: an
  // artefact written into an artefact-holding folder (a workspace whose kind
  // folder is itself an artefact, as the demo's `recording/`) must not make
  // every link to the holder stale.
  auto ownArtefact = [](const fs::path& sub) {
    std::error_code e;
    for (const char* meta : {"manifest.json", "partition.json", "router.json", "eval.json", "front.json",
                             "analysis.json", "workspace.json", "config.json"})
      if (fs::is_regular_file(sub / meta, e)) return true;
    return false;
  };
  std::vector<std::pair<std::string, fs::path>> files;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec) && ownArtefact(it->path())) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    files.emplace_back(it->path().lexically_relative(dir).generic_string(), it->path());
  }
  if (ec) throw IoError(dir.string() + ": cannot list (" + ec.message() + ")");
  std::sort(files.begin(), files.end());
  uint64_t h = kFnvOffset;
  for (const auto& [name, path] : files) {
    const uint64_t size = fs::file_size(path, ec);
    if (ec) throw IoError(path.string() + ": cannot stat (fingerprint)");
    h = fnv1a(h, name.data(), name.size() + 1);  // with the terminating NUL as a separator
    h = fnv1a(h, &size, sizeof size);
    h = hashFileBytes(h, path, size);
  }
  return hex16(h);
}

std::string contentFingerprint(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return folderFingerprint(path);
  if (!fs::is_regular_file(path, ec)) throw IoError(path.string() + ": no such file or folder (fingerprint)");
  const uint64_t size = fs::file_size(path, ec);
  if (ec) throw IoError(path.string() + ": cannot stat (fingerprint)");
  uint64_t h = fnv1a(kFnvOffset, &size, sizeof size);
  return hex16(hashFileBytes(h, path, size));
}

nlohmann::json makeLink(const fs::path& artefactDir, const fs::path& target, const std::string& fingerprint) {
  const fs::path from = fs::absolute(artefactDir).lexically_normal();
  const fs::path to = fs::absolute(target).lexically_normal();
  // A common ancestor below the root: the first components agree.
  auto f = from.begin(), t = to.begin();
  int common = 0;
  for (; f != from.end() && t != to.end() && *f == *t; ++f, ++t) ++common;
  const int rootParts = from.has_root_directory() ? (from.has_root_name() ? 2 : 1) : 0;
  fs::path rel = common > rootParts ? to.lexically_relative(from) : to;
  if (rel.empty()) rel = to;
  std::string text = rel.generic_string();
  if (text.empty()) text = ".";
  nlohmann::json link = {{"path", text}};
  // A temporary atomic-write folder (NAME.tmp-XXXX) is renamed away: only the
  // relative path is a valid reference to what lies inside it.
  bool temporary = false;
  for (const auto& part : to) temporary |= part.string().find(".tmp-") != std::string::npos;
  if (!temporary && rel != to) link["absolute"] = to.generic_string();
  link["fingerprint"] = fingerprint;
  return link;
}

nlohmann::json relink(const fs::path& fromDir, const fs::path& toDir, const nlohmann::json& link) {
  const fs::path target = resolveLinkPath(fromDir, link);
  if (target.empty()) return link;
  nlohmann::json out = link.is_object() ? link : nlohmann::json::object();
  const nlohmann::json fresh = makeLink(toDir, target, "");
  out["path"] = fresh["path"];
  if (fresh.contains("absolute"))
    out["absolute"] = fresh["absolute"];
  else
    out.erase("absolute");
  if (!out.contains("fingerprint")) out.erase("fingerprint");
  return out;
}

nlohmann::json provenanceBlock(const std::string& step, const nlohmann::json& options, const nlohmann::json& inputs) {
  return {{"step", step},
          {"options", options.is_null() ? nlohmann::json::object() : options},
          {"inputs", inputs.is_null() ? nlohmann::json::object() : inputs},
          {"tool_version", MOEFY_VERSION}};
}

fs::path resolveLinkPath(const fs::path& fromDir, const nlohmann::json& link) {
  std::string text;
  if (link.is_string())
    text = link.get<std::string>();
  else if (link.is_object() && link.contains("path") && link["path"].is_string())
    text = link["path"].get<std::string>();
  if (text.empty()) return {};
  fs::path p(text);
  std::error_code ec;
  if (!p.is_absolute()) {
    const fs::path rel = (fs::absolute(fromDir) / p).lexically_normal();
    if (fs::exists(rel, ec) || !link.is_object() || !link.contains("absolute") || !link["absolute"].is_string())
      return rel;
    // Version 2 fallback: an input outside the moved/copied tree is still where it was.
    const fs::path abs = fs::path(link["absolute"].get<std::string>()).lexically_normal();
    return fs::exists(abs, ec) ? abs : rel;
  }
  p = p.lexically_normal();
  if (fs::exists(p, ec)) return p;
  // Version 1: strip a ".tmp-XXXX" suffix from any component.
  fs::path fixed;
  bool changed = false;
  for (const auto& part : p) {
    std::string s = part.string();
    const size_t at = s.find(".tmp-");
    if (at != std::string::npos && at > 0) s = s.substr(0, at), changed = true;
    fixed /= s;
  }
  return changed && fs::exists(fixed, ec) ? fixed : p;
}

}  // namespace moefy
