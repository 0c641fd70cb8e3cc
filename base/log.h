// The daemon's log: one line per event, to a file in the instance directory
// (never to a bundle fifo, which dies with its container). Every line about a
// container names its namespace and id. Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "fmt/format.h"

namespace base {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

class Log {
 public:
  // Opens `path` for appending; "" logs to stderr.
  static void Init(const std::string& path, bool debug);
  static bool debug_enabled();
  static void Write(LogLevel level, std::string_view ns, std::string_view id,
                    std::string_view message);
};

template <class... Args>
void LogInfo(fmt::format_string<Args...> f, Args&&... args) {
  Log::Write(LogLevel::kInfo, {}, {}, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void LogWarn(fmt::format_string<Args...> f, Args&&... args) {
  Log::Write(LogLevel::kWarn, {}, {}, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void LogError(fmt::format_string<Args...> f, Args&&... args) {
  Log::Write(LogLevel::kError, {}, {}, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void LogDebug(fmt::format_string<Args...> f, Args&&... args) {
  if (Log::debug_enabled())
    Log::Write(LogLevel::kDebug, {}, {}, fmt::format(f, std::forward<Args>(args)...));
}
// For a container: the line carries namespace= and id=.
template <class... Args>
void LogFor(LogLevel level, std::string_view ns, std::string_view id,
            fmt::format_string<Args...> f, Args&&... args) {
  if (level == LogLevel::kDebug && !Log::debug_enabled()) return;
  Log::Write(level, ns, id, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace base
