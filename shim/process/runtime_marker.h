// A runtime marker: a small file naming the `runc` process of a call in
// flight (its pid and start time), written before that runc may run. The
// server that runs the call removes it once it has applied the outcome; a
// server that finds one after a crash knows that its predecessor's runc may
// still be running as an orphan, waits for it, and adopts what it did rather
// than run a second one alongside it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/time/time.h"
#include "base/unique_fd.h"

namespace shim::process {

// <bundle>/.init.runtime-pid: the `runc create` of a Create in flight. The
// leading dot keeps it apart from an exec's <exec-id>.runtime-pid (an exec
// id starts with a letter or digit).
std::string CreateRuntimeMarker(const std::string& bundle);

// Writes `runtime_pid` and its start time to `path` (atomically: a reader
// sees all of it or nothing). Nothing is written for a pid already gone.
void WriteRuntimeMarker(const std::string& path, pid_t runtime_pid);

// A pidfd of the runtime `path` names while it still runs; nullopt when it
// has finished, or no marker is there.
std::optional<base::UniqueFd> LiveRuntime(const std::string& path);

// Waits, at most `limit`, until the runtime `path` names has finished.
// Blocks: workers only. True when a marker was there (whether its runtime
// was still running or not).
bool WaitForMarkedRuntime(const std::string& path, absl::Duration limit);

}  // namespace shim::process
