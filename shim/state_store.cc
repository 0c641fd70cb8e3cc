#include "shim/state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "base/read_file.h"
#include "base/unique_fd.h"
#include "fmt/format.h"

namespace shim {
namespace {

constexpr char kRecordSuffix[] = ".pb";

}  // namespace

std::string StateStore::Path(const std::string& ns, const std::string& id) const {
  return fmt::format("{}/{}/{}{}", dir_, ns, id, kRecordSuffix);
}

absl::Status StateStore::Save(const embedshim::ContainerRecord& record) const {
  // Binary protobuf: JSON would bring the reflection runtime (about 1 MiB
  // of code and heap) into a process that otherwise never needs it.
  std::string bytes;
  if (!record.SerializeToString(&bytes)) return absl::InternalError("encode state record");
  std::string ns_dir = fmt::format("{}/{}", dir_, record.namespace_());
  if (mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
    return base::ErrnoStatus(fmt::format("mkdir {}", dir_));
  if (mkdir(ns_dir.c_str(), 0700) != 0 && errno != EEXIST)
    return base::ErrnoStatus(fmt::format("mkdir {}", ns_dir));
  std::string path = Path(record.namespace_(), record.id());
  std::string tmp = path + ".tmp";
  base::UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return base::ErrnoStatus(fmt::format("open {}", tmp));
  if (write(fd.get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()))
    return base::ErrnoStatus(fmt::format("write {}", tmp));
  fd.Reset();
  // rename is atomic: a reader sees the old record or the new one, never a
  // torn one, even if this process dies here. (/run is tmpfs: no fsync.)
  if (rename(tmp.c_str(), path.c_str()) != 0)
    return base::ErrnoStatus(fmt::format("rename {}", tmp));
  return absl::OkStatus();
}

absl::StatusOr<embedshim::ContainerRecord> StateStore::Load(const std::string& ns,
                                                            const std::string& id) const {
  std::string path = Path(ns, id);
  absl::StatusOr<std::string> bytes = base::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  embedshim::ContainerRecord record;
  if (!record.ParseFromString(*bytes) || record.id() != id || record.namespace_() != ns)
    return absl::DataLossError(fmt::format("{}: not a valid record", path));
  return record;
}

absl::Status StateStore::Remove(const std::string& ns, const std::string& id) const {
  std::string path = Path(ns, id);
  if (unlink(path.c_str()) != 0 && errno != ENOENT)
    return base::ErrnoStatus(fmt::format("unlink {}", path));
  // The namespace directory goes when its last container does.
  rmdir(fmt::format("{}/{}", dir_, ns).c_str());
  return absl::OkStatus();
}

std::vector<embedshim::ContainerRecord> StateStore::LoadAll(
    std::vector<std::string>* errors) const {
  std::vector<embedshim::ContainerRecord> out;
  DIR* top = opendir(dir_.c_str());
  if (!top) return out;
  while (dirent* ns = readdir(top)) {
    std::string ns_name = ns->d_name;
    if (ns_name == "." || ns_name == "..") continue;
    DIR* sub = opendir(fmt::format("{}/{}", dir_, ns_name).c_str());
    if (!sub) continue;
    while (dirent* f = readdir(sub)) {
      std::string name = f->d_name;
      constexpr size_t n = sizeof kRecordSuffix - 1;
      if (name.size() <= n || name.compare(name.size() - n, n, kRecordSuffix) != 0) continue;
      auto record = Load(ns_name, name.substr(0, name.size() - n));
      if (record.ok()) {
        out.push_back(std::move(*record));
      } else if (errors) {
        errors->push_back(record.status().ToString());
      }
    }
    closedir(sub);
  }
  closedir(top);
  return out;
}

}  // namespace shim
