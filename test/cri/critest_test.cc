// critest v1.26.1 (the CRI validation suite) against io.containerd.embed.v1,
// on a private containerd of the test's own (test/cri/cri_harness.h).
//
// [critest]: embed on Debian's containerd 1.6 and on the containerd-v2.3.4
// peer, each with kEmbedSkips skipped; every other spec must pass.
// [.compare] (hidden; test/cri/run-critest --compare-runc): runc and then
// embed on the same daemon, every spec; embed must pass every spec runc
// passes. $CRITEST_CONTAINERD names a peer ("" = Debian's), $CRITEST_FOCUS
// narrows the specs.
//
// A failed run's critest and containerd logs are kept in $CRI_LOG_DIR
// (default /tmp/cri-logs).
#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "fmt/format.h"
#include "test/cri/cri_harness.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using test_support::CriHarness;
using test_support::CritestOptions;
using test_support::CritestReport;

// Specs the embed runs in CI skip, and why. Each fails with runc-v2 as well.
struct Skip {
  const char* regex;
  const char* why;
};
constexpr Skip kEmbedSkips[] = {
    {"public image with digest should be pulled",
     "pins gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2...: no image built "
     "offline can have that digest"},
};

std::string SkipRegex() {
  std::vector<std::string> parts;
  for (const Skip& s : kEmbedSkips) parts.push_back(s.regex);
  return absl::StrJoin(parts, "|");
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// Copies critest's and containerd's logs out of the harness before its
// teardown removes them.
void KeepLogs(CriHarness& h, const CritestReport& r) {
  std::string dir = Env("CRI_LOG_DIR");
  if (dir.empty()) dir = "/tmp/cri-logs";
  dir += "/" + test_support::UniqueName("critest-" + r.runtime_handler);
  if (!test_support::MakeDirs(dir).ok()) return;
  for (const auto& [from, to] : {std::pair{r.output_path, std::string("critest.log")},
                                 std::pair{h.containerd().log_path(),
                                           std::string("containerd.log")}}) {
    absl::StatusOr<std::string> text = test_support::ReadFile(from);
    if (text.ok()) (void)test_support::WriteFile(dir + "/" + to, *text);
  }
  fmt::print("logs kept in {}\n", dir);
}

void Print(const CritestReport& r) {
  fmt::print("{}\n", r.Summary());
  for (const test_support::CritestSpec& s : r.specs) {
    if (s.status != "passed") fmt::print("  {}: {}\n", s.status, s.name);
  }
  std::fflush(stdout);
}

void RunEmbed(const std::string& peer) {
  absl::StatusOr<std::unique_ptr<CriHarness>> h = CriHarness::Start({.containerd_peer = peer});
  if (absl::IsNotFound(h.status())) test_support::SkipRun(h.status());
  REQUIRE_OK(h);
  for (const Skip& s : kEmbedSkips) fmt::print("skipping /{}/: {}\n", s.regex, s.why);
  CritestOptions o;
  o.runtime_handler = "embed";
  o.skip = SkipRegex();
  absl::StatusOr<CritestReport> r = (*h)->RunCritest(o);
  REQUIRE_OK(r);
  Print(*r);
  if (r->failed > 0 || r->exit_code != 0) KeepLogs(**h, *r);
  INFO(r->Summary() << "\nfailed:\n  " << absl::StrJoin(r->Failed(), "\n  "));
  CHECK(r->failed == 0);
  CHECK(r->passed > 0);
  CHECK(r->exit_code == 0);
}

TEST_CASE("critest: embed passes on Debian's containerd 1.6", "[critest][embed]") {
  RunEmbed("");
}

TEST_CASE("critest: embed passes on containerd 2.3.4", "[critest][embed][2.x]") {
  RunEmbed("containerd-v2.3.4");
}

TEST_CASE("critest: embed passes every spec runc passes, on one daemon", "[.compare]") {
  const std::string peer = Env("CRITEST_CONTAINERD");
  absl::StatusOr<std::unique_ptr<CriHarness>> h = CriHarness::Start({.containerd_peer = peer});
  if (absl::IsNotFound(h.status())) test_support::SkipRun(h.status());
  REQUIRE_OK(h);
  CritestOptions o;
  o.focus = Env("CRITEST_FOCUS");
  o.runtime_handler = "runc";
  absl::StatusOr<CritestReport> runc = (*h)->RunCritest(o);
  REQUIRE_OK(runc);
  Print(*runc);
  o.runtime_handler = "embed";
  absl::StatusOr<CritestReport> embed = (*h)->RunCritest(o);
  REQUIRE_OK(embed);
  Print(*embed);
  std::vector<std::string> lost;  // passed with runc, not with embed
  std::vector<std::string> embed_passed = embed->Passed();
  for (const std::string& spec : runc->Passed()) {
    if (std::find(embed_passed.begin(), embed_passed.end(), spec) == embed_passed.end())
      lost.push_back(spec);
  }
  fmt::print("passed with runc but not with embed: {}\n", lost.size());
  for (const std::string& spec : lost) fmt::print("  {}\n", spec);
  if (!lost.empty()) KeepLogs(**h, *embed);
  CHECK(lost.empty());
}

TEST_CASE("critest harness: the config runs docs/CRI.md's handler; JUnit parses",
          "[critest-unit]") {
  for (int version : {2, 3}) {
    absl::StatusOr<std::string> handler = test_support::DocumentedRuntimeHandler(version);
    REQUIRE_OK(handler);
    CHECK_THAT(*handler, Catch::Contains("runtime_type = \"io.containerd.embed.v1\""));
    absl::StatusOr<std::string> config =
        test_support::CriConfig(version, "127.0.0.1:5000", "/tmp/x");
    REQUIRE_OK(config);
    CHECK_THAT(*config, Catch::EndsWith(*handler));
    CHECK_THAT(*config, Catch::Contains(version == 2 ? "[plugins.\"io.containerd.grpc.v1.cri\"]"
                                                     : "[plugins.\"io.containerd.cri.v1.runtime\"]"));
  }
  absl::StatusOr<std::vector<test_support::CritestSpec>> specs = test_support::ParseJunit(
      R"(<testcase name="[BeforeSuite]" status="passed" time="0.1"></testcase>
<testcase name="[It] [k8s.io] A &#39;b&#39; [Conformance]" classname="x" status="failed" time="2.5">
<testcase name="[It] [k8s.io] C" classname="x" status="skipped" time="0">)");
  REQUIRE_OK(specs);
  REQUIRE(specs->size() == 2);
  CHECK((*specs)[0].name == "[k8s.io] A 'b' [Conformance]");
  CHECK((*specs)[0].status == "failed");
  CHECK((*specs)[0].seconds == 2.5);
  CHECK((*specs)[1].status == "skipped");
}

}  // namespace
