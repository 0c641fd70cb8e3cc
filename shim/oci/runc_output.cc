#include "shim/oci/runc_output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>

#include "base/errno_status.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
namespace shim::oci {
namespace {

// Only the tail of a failed call's log entries is searched: the last error
// is what matters, and a runaway log must not cost the shim memory.
constexpr off_t kMaxLogTail = 1 << 20;

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string ReadFrom(int fd, off_t offset) {
  std::string out;
  char buf[16384];
  while (true) {
    ssize_t n = pread(fd, buf, sizeof buf, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    offset += n;
  }
  return out;
}

off_t FileSize(const std::string& path) {
  struct stat st;
  if (path.empty() || stat(path.c_str(), &st) != 0) return 0;
  return st.st_size;
}

// What the runtime appended to its log since `offset`, at most kMaxLogTail.
std::string ReadLogSince(const std::string& path, off_t offset) {
  if (path.empty()) return {};
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return {};
  if (st.st_size < offset) offset = 0;  // truncated or replaced meanwhile
  offset = std::max(offset, st.st_size - kMaxLogTail);
  return ReadFrom(fd.get(), offset);
}

absl::StatusOr<pid_t> ReadPidFile(const std::string& path) {
  base::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus(fmt::format("open pid file {}", path));
  char buf[64];
  ssize_t n;
  do {
    n = read(fd.get(), buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return base::ErrnoStatus(fmt::format("read pid file {}", path));
  std::string_view text = TrimSpace(std::string_view(buf, static_cast<size_t>(n)));
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || pid <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("pid file {}: not a pid: '{}'", path, text.substr(0, 32)));
  }
  return pid;
}

absl::StatusOr<std::vector<pid_t>> ParsePsJson(std::string_view json) {
  auto bad = [&json] {
    return absl::InvalidArgumentError(
        fmt::format("unexpected ps output (want a JSON array of pids): '{}'",
                    TrimSpace(json).substr(0, 200)));
  };
  const nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  std::vector<pid_t> pids;
  if (doc.is_null()) return pids;  // runc says null for none
  if (!doc.is_array()) return bad();  // also what did not parse (discarded)
  for (const nlohmann::json& pid : doc) {
    if (pid.is_number_unsigned()) {
      uint64_t value = pid.get<uint64_t>();
      if (value == 0 || value > INT_MAX) return bad();
      pids.push_back(static_cast<pid_t>(value));
    } else {
      return bad();  // negative, fractional, or not a number
    }
  }
  return pids;
}

std::string LastLogError(std::string_view log_text) {
  std::string last;
  while (!log_text.empty()) {
    size_t eol = log_text.find('\n');
    std::string_view line = log_text.substr(0, eol);
    log_text.remove_prefix(eol == std::string_view::npos ? log_text.size() : eol + 1);
    // Lines that are not JSON objects (a partial line, plain text) are skipped.
    const nlohmann::json entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!entry.is_object()) continue;
    auto level = entry.find("level");
    auto msg = entry.find("msg");
    if (level == entry.end() || !level->is_string() || msg == entry.end() || !msg->is_string())
      continue;
    const std::string& l = level->get_ref<const std::string&>();
    if (l == "error" || l == "fatal" || l == "panic")
      last = TrimSpace(msg->get_ref<const std::string&>());
  }
  return last;
}

absl::Status RuntimeError(std::string_view prefix, std::string_view message) {
  // What runc and crun say when the container or the process is gone.
  static constexpr std::string_view kGone[] = {
      "does not exist", "not running", "no such process", "process already finished",
      "container not running",
  };
  std::string text = fmt::format("{}: {}", prefix, message);
  const std::string lower = ToLower(message);
  for (std::string_view gone : kGone) {
    if (lower.find(gone) != std::string::npos) return absl::NotFoundError(text);
  }
  return absl::UnknownError(text);
}

std::string CriuLogErrors(std::string_view log_text, size_t max) {
  std::vector<std::string_view> found;
  while (!log_text.empty() && found.size() < max) {
    size_t eol = log_text.find('\n');
    std::string_view line = log_text.substr(0, eol);
    log_text.remove_prefix(eol == std::string_view::npos ? log_text.size() : eol + 1);
    // "(00.054466) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"
    size_t at = line.find("Error (");
    if (at == std::string_view::npos) continue;
    size_t colon = line.find("): ", at);
    if (colon == std::string_view::npos) continue;
    std::string_view text = TrimSpace(line.substr(colon + 3));
    // A helper CRIU ran failed: says nothing by itself.
    if (text.empty() || text.starts_with("exited, status=")) continue;
    if (std::find(found.begin(), found.end(), text) == found.end()) found.push_back(text);
  }
  std::string out;
  for (std::string_view t : found) out += fmt::format("{}{}", out.empty() ? "" : "; ", t);
  return out;
}

absl::Status CriuFailure(const absl::Status& runtime_error) {
  if (runtime_error.ok()) return runtime_error;
  const std::string text_of_error(runtime_error.message());
  std::string_view message = text_of_error;
  if (ToLower(message).find("criu") == std::string::npos) return runtime_error;
  // runc: "criu failed: type DUMP errno 0\nlog file: <path>".
  std::string head(message), log_path;
  if (size_t at = message.find("log file: "); at != std::string_view::npos) {
    log_path = std::string(TrimSpace(message.substr(at + 10)));
    head = std::string(TrimSpace(message.substr(0, at)));
  }
  std::replace(head.begin(), head.end(), '\n', ' ');
  std::string reason = log_path.empty() ? "" : CriuLogErrors(ReadLogSince(log_path, 0));
  std::string text = head;
  if (!reason.empty()) text += fmt::format(": criu: {}", reason);
  if (!log_path.empty()) text += fmt::format(" (log: {})", log_path);
  return absl::FailedPreconditionError(text);
}

}  // namespace shim::oci
