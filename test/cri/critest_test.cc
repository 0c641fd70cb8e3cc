// critest v1.26.1 (the CRI validation suite) against io.containerd.embed.v1,
// on a private containerd of the test's own (test/cri/cri_harness.h).
//
// [critest]: embed on Debian's containerd 1.6 and on the containerd-v2.3.4
// peer, each with kEmbedSkips skipped; every other spec must pass.
// [.compare] (hidden; test/cri/run-critest --compare-runc): runc and then
// embed on the same daemon, every spec; embed must pass every spec runc
// passes. $CRITEST_CONTAINERD names a peer ("" = Debian's), $CRITEST_FOCUS
// narrows the specs.
// [.kill-storm] (hidden; test/cri/run-critest --kill-server SECONDS): the
// CI run on Debian's containerd 1.6 while a thread SIGKILLs the shim's
// server every $CRITEST_KILL_SECONDS (default 5, +-20%); the keeper restarts
// it, and the result must not change.
//
// A failed run's critest and containerd logs are kept in $CRI_LOG_DIR
// (default /tmp/cri-logs).
#include <catch2/catch.hpp>
#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "base/unique_fd.h"
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

constexpr char kServerName[] = "containerd-shim-embed-v1-server";
constexpr char kKeeperName[] = "containerd-shim-embed-v1-keeper";

std::vector<std::string> Cmdline(pid_t pid) {
  absl::StatusOr<std::string> raw = test_support::ReadFile(fmt::format("/proc/{}/cmdline", pid));
  if (!raw.ok()) return {};
  return test_support::Split(*raw, '\0');
}

std::vector<pid_t> AllPids() {
  std::vector<pid_t> out;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir("/proc"), &closedir);
  if (!d) return out;
  while (dirent* e = readdir(d.get())) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid > 0 && *end == '\0') out.push_back(static_cast<pid_t>(pid));
  }
  return out;
}

// The shim's log (shim.log of its instance) for the shim serving
// `containerd_address`: the keeper's argv is `keeper SOCKET LOG -- SERVER_ARGV`,
// the server's part naming the address. "" when no keeper runs.
std::string ShimLogOf(const std::string& containerd_address) {
  for (pid_t pid : AllPids()) {
    std::vector<std::string> argv = Cmdline(pid);
    if (argv.size() < 4 || !argv[0].ends_with(kKeeperName)) continue;
    if (std::find(argv.begin(), argv.end(), containerd_address) != argv.end() ||
        std::find(argv.begin(), argv.end(), "-address=" + containerd_address) != argv.end())
      return argv[2];
  }
  return "";
}

// Copies critest's, containerd's and the shim's logs out of the harness
// before its teardown removes them.
void KeepLogs(CriHarness& h, const CritestReport& r) {
  std::string dir = Env("CRI_LOG_DIR");
  if (dir.empty()) dir = "/tmp/cri-logs";
  dir += "/" + test_support::UniqueName("critest-" + r.runtime_handler);
  if (!test_support::MakeDirs(dir).ok()) return;
  for (const auto& [from, to] : {std::pair{r.output_path, std::string("critest.log")},
                                 std::pair{h.containerd().log_path(),
                                           std::string("containerd.log")},
                                 std::pair{ShimLogOf(h.containerd().address()),
                                           std::string("shim.log")}}) {
    if (from.empty()) continue;
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

// ---------------------------------------------------------------------------
// [.kill-storm]: the shim's server SIGKILLed all through a critest run.

// Is `pid` a live server of the embed shim serving `containerd_address`: its
// executable is containerd-shim-embed-v1-server and its command line has
// `serve` (a transient `start` or `delete` has not) and that address? Not a
// host-wide match: other tests' shims serve other addresses.
bool IsServerOf(pid_t pid, const std::string& containerd_address) {
  char buf[4096];
  ssize_t n = readlink(fmt::format("/proc/{}/exe", pid).c_str(), buf, sizeof buf - 1);
  if (n <= 0) return false;  // gone, or a zombie
  std::string exe(buf, static_cast<size_t>(n));
  if (exe.ends_with(" (deleted)")) exe.resize(exe.size() - 10);  // rebuilt meanwhile
  if (!exe.ends_with(std::string("/") + kServerName)) return false;
  bool serve = false, address = false;
  for (const std::string& a : Cmdline(pid)) {
    if (a == "serve") serve = true;
    if (a == containerd_address || a == "-address=" + containerd_address) address = true;
  }
  return serve && address;
}

std::vector<pid_t> ServersOf(const std::string& containerd_address) {
  std::vector<pid_t> out;
  for (pid_t pid : AllPids()) {
    if (IsServerOf(pid, containerd_address)) out.push_back(pid);
  }
  return out;
}

// SIGKILLs the shim's server serving `containerd_address` every `interval`
// (+-20%, so kills do not fall in step with critest's polling) from a thread
// of its own, until Stop() or destruction (which stops and joins it, also
// when a REQUIRE throws). The keeper restarts the server each time.
class ServerKiller {
 public:
  ServerKiller(std::string containerd_address, std::chrono::milliseconds interval)
      : address_(std::move(containerd_address)),
        interval_(interval),
        start_(std::chrono::steady_clock::now()),
        thread_([this](std::stop_token stop) { Run(stop); }) {}
  ~ServerKiller() { Stop(); }
  ServerKiller(const ServerKiller&) = delete;
  ServerKiller& operator=(const ServerKiller&) = delete;

  void Stop() {
    if (!thread_.joinable()) return;
    thread_.request_stop();
    thread_.join();
  }
  int kills() const { return kills_; }
  // Ticks that found no server (critest between pods, or not started yet).
  int idle_ticks() const { return idle_ticks_; }
  // Seconds since the start at which each kill landed (read after Stop()).
  const std::vector<double>& kill_times() const { return kill_times_; }

 private:
  void Run(std::stop_token stop) {
    std::mt19937 random{std::random_device{}()};
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    std::mutex mu;
    std::condition_variable_any wake;  // only the stop request wakes it early
    std::unique_lock lock(mu);
    for (;;) {
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(interval_ * jitter(random));
      if (wake.wait_for(lock, stop, wait, [] { return false; }) || stop.stop_requested()) return;
      std::vector<pid_t> servers = ServersOf(address_);
      if (servers.empty()) ++idle_ticks_;
      for (pid_t pid : servers) {
        // Through a pidfd, checked again once open: a pid reused since the
        // scan is not killed.
        base::UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
        if (!pidfd || !IsServerOf(pid, address_)) continue;
        if (syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) != 0) continue;
        ++kills_;
        kill_times_.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
      }
    }
  }

  const std::string address_;
  const std::chrono::milliseconds interval_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<int> kills_{0}, idle_ticks_{0};
  std::vector<double> kill_times_;
  std::jthread thread_;  // last: starts once the rest is built, joined first
};

TEST_CASE("critest: embed passes on Debian's containerd 1.6 while its server is SIGKILLed",
          "[.kill-storm]") {
  const std::string seconds = Env("CRITEST_KILL_SECONDS");
  const double interval = seconds.empty() ? 5.0 : std::strtod(seconds.c_str(), nullptr);
  REQUIRE(interval > 0);
  absl::StatusOr<std::unique_ptr<CriHarness>> h = CriHarness::Start({});
  if (absl::IsNotFound(h.status())) test_support::SkipRun(h.status());
  REQUIRE_OK(h);
  for (const Skip& s : kEmbedSkips) fmt::print("skipping /{}/: {}\n", s.regex, s.why);
  CritestOptions o;
  o.runtime_handler = "embed";
  o.skip = SkipRegex();
  // Declared after the harness: destroyed (stopped, joined) before its teardown.
  ServerKiller killer((*h)->containerd().address(),
                      std::chrono::milliseconds(static_cast<int64_t>(interval * 1000)));
  absl::StatusOr<CritestReport> r = (*h)->RunCritest(o);
  killer.Stop();
  std::string times;
  for (double t : killer.kill_times()) times += fmt::format(" {:.0f}", t);
  fmt::print("kill-storm: {} server kills (every {:.1f} s +-20%; {} ticks found no server); "
             "at s:{}\n",
             killer.kills(), interval, killer.idle_ticks(), times);
  REQUIRE_OK(r);
  Print(*r);
  // Ginkgo also reports "panicked", "timedout", "interrupted", "aborted".
  std::vector<std::string> bad;
  for (const test_support::CritestSpec& s : r->specs) {
    if (s.status != "passed" && s.status != "skipped" && s.status != "pending")
      bad.push_back(fmt::format("{}: {}", s.status, s.name));
  }
  if (!bad.empty() || r->exit_code != 0) KeepLogs(**h, *r);
  INFO(r->Summary() << "\nnot passed:\n  " << absl::StrJoin(bad, "\n  "));
  CHECK(killer.kills() > 0);
  CHECK(bad.empty());
  CHECK(r->passed > 0);
  CHECK(r->exit_code == 0);
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
