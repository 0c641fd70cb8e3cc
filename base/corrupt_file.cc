#include "base/corrupt_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "base/log.h"
#include "base/unique_fd.h"

namespace base {
namespace {

constexpr std::string_view kMark = ".corrupt-";

}  // namespace

std::string CorruptName(const std::string& path) {
  return fmt::format("{}{}{}", path, kMark, static_cast<long long>(std::time(nullptr)));
}

bool IsCorruptName(std::string_view name) { return name.find(kMark) != std::string_view::npos; }

std::string MoveAsideCorrupt(const std::string& path, std::string_view reason) {
  std::string aside = CorruptName(path);
  if (rename(path.c_str(), aside.c_str()) == 0) {
    LogError("recover: {} is corrupt ({}); moved aside to {}", path, reason, aside);
    return aside;
  }
  LogError("recover: {} is corrupt ({}); cannot move it aside ({}), removed", path, reason,
           std::strerror(errno));
  unlink(path.c_str());
  return "";
}

void KeepCorruptCopy(const std::string& path, std::string_view bytes, std::string_view reason) {
  std::string aside = CorruptName(path);
  base::UniqueFd fd(open(aside.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  bool kept = fd && write(fd.get(), bytes.data(), bytes.size()) ==
                        static_cast<ssize_t>(bytes.size());
  if (kept) {
    LogError("recover: {} is corrupt ({}); kept as {}", path, reason, aside);
  } else {
    LogError("recover: {} is corrupt ({}); cannot keep a copy ({})", path, reason,
             std::strerror(errno));
  }
}

}  // namespace base
