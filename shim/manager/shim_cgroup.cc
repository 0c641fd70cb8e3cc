#include "shim/manager/shim_cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "base/absl_fmt.h"
#include "base/dir.h"
#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "fmt/ranges.h"
#include "google/protobuf/any.pb.h"
#include "shim/process/runtime_options.h"

namespace shim {
namespace {

absl::Status WriteProcs(const std::string& dir) {
  const std::string path = dir + "/cgroup.procs";
  base::UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus("open " + path);
  std::string pid = std::to_string(getpid());
  if (write(fd.get(), pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()))
    return base::ErrnoStatus("write " + path);
  return absl::OkStatus();
}

bool IsDir(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

std::string ShimCgroupOf(const google::protobuf::Any& options, std::string* why) {
  auto decoded = DecodeRuntimeOptions(options);
  if (!decoded.ok()) {
    *why = std::string(decoded.status().message());
    return "";
  }
  return decoded->shim_cgroup();
}

absl::Status JoinCgroup(const std::string& cgroup, const std::string& root) {
  if (cgroup.empty() || cgroup.find("..") != std::string::npos)
    return absl::InvalidArgumentError(fmt::format("cgroup {:?}: not a cgroup path", cgroup));
  const std::string rel = cgroup[0] == '/' ? cgroup : "/" + cgroup;
  struct stat st;
  if (stat((root + "/cgroup.controllers").c_str(), &st) == 0) {  // v2 only
    if (!IsDir(root + rel)) return absl::NotFoundError(fmt::format("cgroup {} does not exist", rel));
    return WriteProcs(root + rel);
  }
  // v1 (or hybrid): one directory per hierarchy; the cpu,cpuacct-style
  // aliases are symlinks and skipped.
  int joined = 0;
  std::vector<std::string> failed;
  const bool listed = base::ForEachEntry(root, [&](const dirent& e) {
    if (e.d_name[0] == '.') return;
    const std::string hierarchy = root + "/" + e.d_name;
    if (!IsDir(hierarchy) || !IsDir(hierarchy + rel)) return;
    if (absl::Status s = WriteProcs(hierarchy + rel); !s.ok()) {
      failed.push_back(std::string(s.message()));
    } else {
      ++joined;
    }
  });
  if (!listed) return base::ErrnoStatus("opendir " + root);
  if (!failed.empty())
    return absl::UnknownError(fmt::format("cgroup {}: {}", rel, fmt::join(failed, "; ")));
  if (joined == 0)
    return absl::NotFoundError(fmt::format("cgroup {} does not exist under {}", rel, root));
  return absl::OkStatus();
}

}  // namespace shim
