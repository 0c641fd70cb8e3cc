#include "shim/store/state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/container/flat_hash_set.h"
#include "base/absl_fmt.h"
#include "base/corrupt_file.h"
#include "base/dir.h"
#include "base/errno_status.h"
#include "base/read_file.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "shim/process/identifier.h"
#include "shim/store/paths.h"

namespace shim {
namespace {

constexpr char kRecordSuffix[] = ".pb";

// The kernel's PID_MAX_LIMIT on 64-bit: no pid is larger, and a larger
// uint32 would turn negative as a pid_t (kill(-n) signals a group).
constexpr uint32_t kPidMax = 4u << 20;

bool KnownStatus(int status) {
  return status >= embedshim::CREATED && status <= embedshim::CREATING;
}

// An exec id becomes part of a path in the bundle (<exec-id>.pid).
bool UsableExecId(const std::string& id) {
  return !id.empty() && id != "." && id != ".." && id.find('/') == std::string::npos &&
         id.find('\0') == std::string::npos;
}

absl::Status CheckRecord(const embedshim::ContainerRecord& r, const std::string& ns,
                         const std::string& id) {
  if (r.namespace_() != ns || r.id() != id)
    return absl::DataLossError(fmt::format("names {}/{}, not {}/{}", r.namespace_(), r.id(), ns, id));
  if (!IsValidIdentifier(ns) || !IsValidIdentifier(id))
    return absl::DataLossError("the namespace or id is not a valid identifier");
  if (!KnownStatus(r.status()))
    return absl::DataLossError(fmt::format("unknown status {}", static_cast<int>(r.status())));
  if (r.pid() > kPidMax || r.logger_pid() > kPidMax)
    return absl::DataLossError(fmt::format("pid {} or logger pid {} is out of range", r.pid(),
                                           r.logger_pid()));
  absl::flat_hash_set<std::string> exec_ids;
  for (const embedshim::ExecRecord& e : r.execs()) {
    if (!UsableExecId(e.exec_id()))
      return absl::DataLossError(fmt::format("exec id {:?} is not usable", e.exec_id()));
    // Two processes under one id: the second would replace the first while
    // the exit router still points at it.
    if (!exec_ids.insert(e.exec_id()).second)
      return absl::DataLossError(fmt::format("exec {:?} appears twice", e.exec_id()));
    if (!KnownStatus(e.status()) || e.status() == embedshim::CREATING)
      return absl::DataLossError(fmt::format("exec {:?} has unknown status {}", e.exec_id(),
                                             static_cast<int>(e.status())));
    if (e.pid() > kPidMax)
      return absl::DataLossError(fmt::format("exec {:?} has pid {}, out of range", e.exec_id(),
                                             e.pid()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<embedshim::ContainerRecord> DecodeRecord(std::string_view bytes,
                                                        const std::string& ns,
                                                        const std::string& id) {
  embedshim::ContainerRecord record;
  if (bytes.size() > INT32_MAX ||
      !record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return absl::DataLossError("not a ContainerRecord (protobuf does not parse)");
  if (absl::Status st = CheckRecord(record, ns, id); !st.ok()) return st;
  return record;
}

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
  absl::StatusOr<embedshim::ContainerRecord> record = DecodeRecord(*bytes, ns, id);
  if (!record.ok())
    return absl::DataLossError(fmt::format("{}: {}", path, record.status().message()));
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
  base::ForEachEntry(dir_, [&](const dirent& ns) {
    const std::string ns_name = ns.d_name;
    base::ForEachEntry(fmt::format("{}/{}", dir_, ns_name), [&](const dirent& f) {
      std::string name = f.d_name;
      constexpr size_t n = sizeof kRecordSuffix - 1;
      if (name.size() <= n || name.compare(name.size() - n, n, kRecordSuffix) != 0) return;
      auto record = Load(ns_name, name.substr(0, name.size() - n));
      if (record.ok()) {
        out.push_back(std::move(*record));
        return;
      }
      if (record.status().code() == absl::StatusCode::kDataLoss)
        base::MoveAsideCorrupt(Path(ns_name, name.substr(0, name.size() - n)),
                         std::string(record.status().message()));
      if (errors) errors->push_back(record.status().ToString());
    });
  });
  return out;
}

}  // namespace shim
