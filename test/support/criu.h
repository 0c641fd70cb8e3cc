// Whether CRIU can checkpoint on this machine (`criu check`), for the tests
// that need a real round trip: they run where it can and skip, saying CRIU's
// reason, where it cannot. Header-only.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "test/support/fs_util.h"
#include "test/support/subprocess.h"

namespace test_support {

// OK when `criu check` passes; otherwise FailedPrecondition with CRIU's last
// error line ("vdso: Unexpected rt vDSO area bounds"...), or NotFound when
// criu is not installed (scripts/install-deps installs Debian's).
inline absl::Status CriuCheck() {
  absl::StatusOr<Result> r = Run({"criu", "check"});
  if (!r.ok() || r->exit_code == 127)
    return absl::NotFoundError("criu is not installed (scripts/install-deps installs it)");
  if (r->ok()) return absl::OkStatus();
  std::string reason;
  for (const std::string& line : SplitLines(r->out + r->err)) {
    // "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"
    size_t at = line.find("Error (");
    size_t colon = at == std::string::npos ? at : line.find("): ", at);
    if (colon == std::string::npos) continue;
    std::string text = line.substr(colon + 3);
    if (text.rfind("exited, status=", 0) == 0) continue;
    reason += (reason.empty() ? "" : "; ") + text;
  }
  if (reason.empty()) reason = r->ToString();
  return absl::FailedPreconditionError("criu check fails on this machine: " + reason);
}

}  // namespace test_support
