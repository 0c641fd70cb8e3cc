// The Catch listener behind shim_test::CurrentCaseFailed(), linked into each
// containerd integration test executable whose fixture derives from
// shim_test::ShimFixture (shim_e2e_test, survival_test).
#define CATCH_CONFIG_EXTERNAL_INTERFACES  // for the listener below
#include <catch2/catch.hpp>

#include "test/integration/shim_test_util.h"

namespace shim_test {

// Tells the fixture whether the current case failed, so that it keeps the logs.
struct FailureListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  // A run for a containerd whose peer archive is absent skips as a whole
  // (exit 77: meson's SKIP; run-catch passes it on), saying why.
  void testRunStarting(const Catch::TestRunInfo& info) override {
    absl::StatusOr<test_support::ContainerdUnderTest> c = test_support::ContainerdFromEnv();
    if (!c.ok()) {
      fmt::print("SKIP: {}\n", std::string(c.status().message()));
      std::fflush(stdout);
      std::_Exit(77);
    }
    TestEventListenerBase::testRunStarting(info);
  }
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    CurrentCaseFailed() = false;
    TestEventListenerBase::testCaseStarting(info);
  }
  bool assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk()) CurrentCaseFailed() = true;
    return TestEventListenerBase::assertionEnded(stats);
  }
};
CATCH_REGISTER_LISTENER(FailureListener)

}  // namespace shim_test
