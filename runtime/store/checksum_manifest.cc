#include "runtime/store/checksum_manifest.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "runtime/store/chunk_layout.h"

namespace tritmoe {
namespace {

constexpr char kMagic[] = "tritmoe-checksums";
constexpr int kVersion = 1;

std::string BaseName(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

}  // namespace

std::string ChecksumManifest::DefaultPath(const std::string& model_path) {
  gguf::SplitName split;
  if (gguf::ParseSplitPath(model_path, &split)) {
    return gguf::SplitPath(split.prefix, 1, split.shard_count) + ".tmsum";
  }
  return model_path + ".tmsum";
}

absl::StatusOr<ChecksumManifest> ChecksumManifest::Read(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (!std::filesystem::exists(path)) {
      return absl::NotFoundError(absl::StrCat("no checksum manifest at '", path, "'"));
    }
    return absl::InternalError(absl::StrCat("cannot read checksum manifest '", path, "'"));
  }
  ChecksumManifest m;
  std::string line;
  int line_no = 0;
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("checksum manifest '", path, "' line ", line_no, ": ", what));
  };
  auto next_line = [&]() -> bool {
    ++line_no;
    return static_cast<bool>(std::getline(in, line));
  };
  if (!next_line()) return bad("empty file");
  {
    std::istringstream ls(line);
    std::string magic;
    int version = 0;
    if (!(ls >> magic >> version) || magic != kMagic) return bad("not a tritmoe checksum manifest");
    if (version != kVersion) return bad(absl::StrCat("version ", version, ", expected ", kVersion));
  }
  if (!next_line()) return bad("missing chunk_bytes");
  {
    std::istringstream ls(line);
    std::string key;
    if (!(ls >> key >> m.chunk_bytes) || key != "chunk_bytes" || m.chunk_bytes == 0) {
      return bad("expected 'chunk_bytes <n>' with n > 0");
    }
  }
  while (next_line()) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    if (key == "shard") {
      Shard s;
      if (!(ls >> s.size >> s.file)) return bad("expected 'shard <size> <file>'");
      m.shards.push_back(std::move(s));
    } else if (key == "tensor") {
      Tensor t;
      uint64_t n_chunks = 0;
      if (!(ls >> t.name >> t.shard >> t.offset >> t.nbytes >> t.unit_bytes >> n_chunks)) {
        return bad("expected 'tensor <name> <shard> <offset> <nbytes> <unit_bytes> <n_chunks>'");
      }
      if (t.shard < 0 || t.shard >= static_cast<int>(m.shards.size())) {
        return bad(absl::StrCat("tensor ", t.name, ": shard ", t.shard, " not declared"));
      }
      const ChunkLayout layout{t.nbytes, t.unit_bytes, m.chunk_bytes};
      if (t.unit_bytes == 0 ? t.nbytes != 0
                            : t.nbytes % t.unit_bytes != 0 || layout.n_chunks() != n_chunks) {
        return bad(absl::StrCat("tensor ", t.name, ": ", n_chunks, " chunks do not fit ", t.nbytes,
                                " bytes in units of ", t.unit_bytes));
      }
      if (!next_line()) return bad(absl::StrCat("tensor ", t.name, ": missing checksum line"));
      std::istringstream cs(line);
      t.crcs.resize(n_chunks);
      for (uint64_t i = 0; i < n_chunks; ++i) {
        std::string hex;
        if (!(cs >> hex) || hex.size() != 8) {
          return bad(
              absl::StrCat("tensor ", t.name, ": expected ", n_chunks, " 8-digit hex checksums"));
        }
        char* end = nullptr;
        t.crcs[i] = static_cast<uint32_t>(std::strtoul(hex.c_str(), &end, 16));
        if (end != hex.c_str() + 8) return bad(absl::StrCat("bad checksum '", hex, "'"));
      }
      m.tensors.push_back(std::move(t));
    } else {
      return bad(absl::StrCat("unknown record '", key, "'"));
    }
  }
  return m;
}

absl::Status ChecksumManifest::Write(const std::string& path) const {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return absl::InternalError(absl::StrCat("cannot write '", tmp, "'"));
    out << kMagic << " " << kVersion << "\n";
    out << "chunk_bytes " << chunk_bytes << "\n";
    for (const Shard& s : shards) out << "shard " << s.size << " " << s.file << "\n";
    std::string hex;
    for (const Tensor& t : tensors) {
      if (t.name.find_first_of(" \t\n") != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor name '", t.name, "' has white space; cannot record checksums"));
      }
      out << "tensor " << t.name << " " << t.shard << " " << t.offset << " " << t.nbytes << " "
          << t.unit_bytes << " " << t.crcs.size() << "\n";
      hex.clear();
      for (size_t i = 0; i < t.crcs.size(); ++i) {
        absl::StrAppendFormat(&hex, "%s%08x", i == 0 ? "" : " ", t.crcs[i]);
      }
      out << hex << "\n";
    }
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("short write to '", tmp, "'"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    return absl::InternalError(
        absl::StrCat("cannot rename '", tmp, "' to '", path, "': ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status ChecksumManifest::CheckMatches(const gguf::GgufModel& model,
                                            const std::string& manifest_path) const {
  auto mismatch = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checksum manifest '", manifest_path, "' does not match model '", model.path(), "': ", what,
        " (a truncated or replaced file? regenerate with tritmoe store --write-checksums)"));
  };
  if (static_cast<int>(shards.size()) != model.n_shards()) {
    return mismatch(absl::StrCat(shards.size(), " shards recorded, ", model.n_shards(), " found"));
  }
  for (int i = 0; i < model.n_shards(); ++i) {
    const gguf::GgufFile& f = model.shard(i);
    if (shards[i].file != BaseName(f.path())) {
      return mismatch(absl::StrCat("shard ", i, " is '", BaseName(f.path()), "', recorded '",
                                   shards[i].file, "'"));
    }
    if (shards[i].size != f.file_size()) {
      return mismatch(absl::StrCat("shard '", f.path(), "' is ", f.file_size(), " bytes, recorded ",
                                   shards[i].size));
    }
  }
  if (tensors.size() != model.tensors().size()) {
    return mismatch(
        absl::StrCat(tensors.size(), " tensors recorded, ", model.tensors().size(), " found"));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& r = tensors[i];
    const gguf::TensorInfo& t = model.tensors()[i];
    if (r.name != t.name || r.shard != t.shard || r.offset != t.offset || r.nbytes != t.nbytes) {
      return mismatch(absl::StrCat("tensor ", i, " is ", t.name, " (shard ", t.shard, ", offset ",
                                   t.offset, ", ", t.nbytes, " bytes), recorded ", r.name,
                                   " (shard ", r.shard, ", offset ", r.offset, ", ", r.nbytes,
                                   " bytes)"));
    }
    const ChunkLayout layout = ChunkLayout::For(t.nbytes, t.ne[2], t.ne[3], chunk_bytes);
    if (layout.unit_bytes != r.unit_bytes || layout.n_chunks() != r.crcs.size()) {
      return mismatch(absl::StrCat("tensor ", t.name, ": chunking differs"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tritmoe
