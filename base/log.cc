#include "base/log.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <utility>

#include "base/unique_fd.h"

namespace base {
namespace {
// Where lines go: stderr, or the log file, read without a lock by every thread.
std::atomic<int> g_fd{2};

// The log file's owner, never destroyed: a thread may still log while the
// process exits.
UniqueFd& LogFile() {
  static UniqueFd* const file = new UniqueFd;
  return *file;
}
std::atomic<bool> g_debug{false};

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "?";
}
}  // namespace

void Log::Init(const std::string& path, bool debug) {
  g_debug = debug;
  if (path.empty()) return;
  UniqueFd file(open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!file) return;
  g_fd = file.get();
  LogFile() = std::move(file);  // Init runs before other threads log
}

bool Log::debug_enabled() { return g_debug.load(); }

void Log::Write(LogLevel level, std::string_view ns, std::string_view id,
                std::string_view message) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  std::string line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z {} pid={}",
                                 t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour,
                                 t.tm_min, t.tm_sec, ts.tv_nsec / 1000, LevelName(level),
                                 getpid());
  if (!ns.empty()) line += fmt::format(" namespace={}", ns);
  if (!id.empty()) line += fmt::format(" id={}", id);
  line += fmt::format(" msg={:?}\n", message);
  // One write(2) per line on an O_APPEND fd: lines from threads never mix.
  (void)!write(g_fd.load(), line.data(), line.size());
}

}  // namespace base
