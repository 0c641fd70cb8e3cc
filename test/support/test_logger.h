// A binary:// logger for tests, as containerd's convention wants one: it
// copies fd 3 (stdout) and fd 4 (stderr) to files and says "ready" by
// closing fd 5. Written as a shell script into a test's directory.
//
//   binary://<script>?dir=<DIR>[&linger=1][&noready=1]
//
// In DIR it writes: pid ($$, written before ready), args (its argv, one a
// line), env (its environment), stdout and stderr (the copies, appended),
// and events: "eof" once both copies ended, "term" when SIGTERM came.
//   linger   after EOF, wait for SIGTERM instead of exiting (a logger that
//            only a Delete ends)
//   noready  never close fd 5 (a logger that never gets ready)
#pragma once

#include <string>

#include "absl/status/status.h"
#include "test/support/fs_util.h"

namespace test_support {

inline constexpr char kTestLoggerScript[] = R"(#!/bin/sh
PATH=/usr/bin:/bin
args=$(printf "%s\n" "$0" "$@")
while [ $# -ge 2 ]; do
  case "$1" in
    dir) dir=$2 ;;
    linger) linger=$2 ;;
    noready) noready=$2 ;;
  esac
  shift 2
done
echo "$args" > "$dir/args"
env > "$dir/env"
echo $$ > "$dir/pid"
cat <&3 >> "$dir/stdout" 3<&- 4<&- 5>&- &
out=$!
cat <&4 >> "$dir/stderr" 3<&- 4<&- 5>&- &
err=$!
exec 3<&- 4<&-
if [ -z "$noready" ]; then exec 5>&-; fi
trap 'echo term >> "$dir/events"; kill $sleeper 2>/dev/null; exit 0' TERM
wait $out
wait $err
echo eof >> "$dir/events"
if [ -n "$linger$noready" ]; then
  sleep 1000000 &
  sleeper=$!
  wait $sleeper
fi
)";

// Writes the script to `path` (mode 0755).
inline absl::Status InstallTestLogger(const std::string& path) {
  return WriteFile(path, kTestLoggerScript, 0755);
}

}  // namespace test_support
