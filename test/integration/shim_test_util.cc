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
