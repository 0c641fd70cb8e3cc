// Reading what the runtime leaves behind: its pid files, `ps` output, its
// JSON log, CRIU's logs, and the status a failure maps to. Pure functions
// (and file reads), exposed for tests; runc.h includes this header.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shim::oci {

// Reads a --pid-file: a decimal pid, surrounding whitespace allowed.
absl::StatusOr<pid_t> ReadPidFile(const std::string& path);

// Parses `ps --format json` output: a JSON array of ints, or null (= none).
absl::StatusOr<std::vector<pid_t>> ParsePsJson(std::string_view json);

// The "msg" of the last entry whose "level" is error (or fatal/panic) in
// JSON-lines log text, e.g. runc's --log-format json. "" when there is none.
std::string LastLogError(std::string_view log_text);

// The status for a runtime failure: `<prefix>: <message>`, NotFound when the
// message says the container or process is gone, else Unknown.
absl::Status RuntimeError(std::string_view prefix, std::string_view message);

// The errors worth reading in a CRIU log (dump.log, restore.log): the text of
// its "Error (file:line): ..." lines, without the generic "exited, status=N"
// of its helpers, at most `max` of them, joined with "; ". "" when none.
std::string CriuLogErrors(std::string_view log_text, size_t max = 3);

// A failed checkpoint/restore whose runtime message names CRIU ("runc
// checkpoint: criu failed: type DUMP errno 0\nlog file: <path>", "CRIU version
// check failed: ..."): FailedPrecondition, on one line, with CRIU's own errors
// from that log file appended (CriuLogErrors). Anything else is returned as it is.
absl::Status CriuFailure(const absl::Status& runtime_error);

// --- for Runc::Run ---

std::string_view TrimSpace(std::string_view s);

// Everything from `offset` to the end of `fd` (pread: the offset of `fd`
// stays).
std::string ReadFrom(int fd, off_t offset);

// The size of the file at `path`; 0 if "" or it cannot be stat'ed.
off_t FileSize(const std::string& path);

// What the runtime appended to its log at `path` since `offset` (all of it if
// the log shrank meanwhile), at most its last MiB. "" if it cannot be read.
std::string ReadLogSince(const std::string& path, off_t offset);

}  // namespace shim::oci
