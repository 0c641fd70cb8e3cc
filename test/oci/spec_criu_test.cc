// Pure parsing: a spec's pid namespace (shim/oci/spec.h) and CRIU's log
// and runc's CRIU failures (CriuLogErrors, CriuFailure in shim/oci/runc.h).
#include <catch2/catch.hpp>

#include "shim/oci/runc.h"
#include "shim/oci/spec.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using shim::oci::CriuFailure;
using shim::oci::CriuLogErrors;
using shim::oci::HasPrivatePidNamespace;
using shim::oci::ShouldKillAllOnExit;

TEST_CASE("spec: a pid namespace of its own, or the host's", "[unit][spec]") {
  auto yes = HasPrivatePidNamespace(R"({"ociVersion":"1.0.2","process":{"args":["sh"]},
      "linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}]},
               "namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"mount"}]}})");
  REQUIRE_OK(yes);
  CHECK(*yes);
  // ctr run --with-ns pid:/proc/1/ns/pid: joins another namespace.
  auto joined = HasPrivatePidNamespace(
      R"({"linux":{"namespaces":[{"path":"/proc/1/ns/pid","type":"pid"},{"type":"mount"}]}})");
  REQUIRE_OK(joined);
  CHECK_FALSE(*joined);
  for (const char* none : {R"({"linux":{"namespaces":[{"type":"mount"}]}})", R"({"linux":{}})",
                           R"({"linux":null})", "{}", R"({"linux":{"namespaces":null}})"}) {
    INFO(none);
    auto r = HasPrivatePidNamespace(none);
    REQUIRE_OK(r);
    CHECK_FALSE(*r);
  }
  for (const char* bad : {"", "[]", "{", R"({"linux":{"namespaces":[{"type":1}]}})"}) {
    INFO(bad);
    CHECK(absl::IsInvalidArgument(HasPrivatePidNamespace(bad).status()));
  }
}

TEST_CASE("spec: kill all on exit unless the spec says private pid namespace",
          "[unit][spec]") {
  test_support::ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  const std::string bundle = tmp.path();
  CHECK(ShouldKillAllOnExit(bundle));  // no config.json: as runc-v2, yes
  REQUIRE_OK(test_support::WriteFile(bundle + "/config.json",
                                     R"({"linux":{"namespaces":[{"type":"pid"}]}})"));
  CHECK_FALSE(ShouldKillAllOnExit(bundle));
  REQUIRE_OK(test_support::WriteFile(bundle + "/config.json", "not json"));
  CHECK(ShouldKillAllOnExit(bundle));
}

TEST_CASE("criu: the errors worth reading in its log", "[unit][criu]") {
  const char* log =
      "(00.000010) Version: 3.17.1 (gitid 0)\n"
      "(00.012626) Error (criu/util.c:642): exited, status=1\n"
      "(00.054466) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n"
      "(00.054469) Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
      "(00.054470) Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
      "(00.054472) Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed.\n"
      "(00.054510) Adjust mmap_min_addr 0x1000 -> 0x10000\n";
  CHECK(CriuLogErrors(log) ==
        "vdso: Unexpected rt vDSO area bounds; vdso: Failed to fill self vdso symtable; "
        "kerndat_vdso_fill_symtable failed.");
  CHECK(CriuLogErrors(log, 1) == "vdso: Unexpected rt vDSO area bounds");
  CHECK(CriuLogErrors("(00.01) Error (criu/util.c:642): exited, status=1\n").empty());
  CHECK(CriuLogErrors("").empty());
}

TEST_CASE("criu: runc's CRIU failure becomes FailedPrecondition with CRIU's reason",
          "[unit][criu]") {
  test_support::ScopedTempDir tmp;
  REQUIRE_OK(tmp.status());
  const std::string dump_log = tmp.Sub("dump.log");
  REQUIRE_OK(test_support::WriteFile(
      dump_log, "(00.05) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n"));
  absl::Status st = CriuFailure(
      absl::UnknownError("runc checkpoint: criu failed: type DUMP errno 0\nlog file: " + dump_log));
  CHECK(absl::IsFailedPrecondition(st));
  CHECK(st.message() == "runc checkpoint: criu failed: type DUMP errno 0: criu: vdso: Unexpected "
                        "rt vDSO area bounds (log: " + dump_log + ")");
  // Without a log to read, runc's words alone.
  st = CriuFailure(absl::UnknownError(
      "runc checkpoint: CRIU version check failed: fork/exec /x: no such file or directory"));
  CHECK(absl::IsFailedPrecondition(st));
  CHECK(st.message() ==
        "runc checkpoint: CRIU version check failed: fork/exec /x: no such file or directory");
  // Not CRIU's: as it was.
  absl::Status gone = absl::NotFoundError("runc checkpoint: container does not exist");
  CHECK(CriuFailure(gone) == gone);
  CHECK(CriuFailure(absl::OkStatus()).ok());
}

}  // namespace
