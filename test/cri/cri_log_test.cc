// CRI logs lose nothing: the last line a container writes before it exits is
// in its CRI log (`crictl logs`), for 500 containers in a row on
// io.containerd.embed.v1, and containerd never gives up reading a
// container's output ("Failed to pipe stdout of container ...: file already
// closed", what it logs when it closes the fifo before the copy saw EOF).
//
// Why it could: containerd 1.6.20 closes a container's output fifos as soon
// as it handles TaskExit (its task.Delete closes the IO first), so whatever
// is still in the pipe then is lost. The exit monitor sees the init's exit in
// do_exit, before the kernel closes its files and, for a pid namespace's
// init, before it kills the rest of the namespace: the shim must not publish
// TaskExit until the last writer is gone.
//
// $CRI_LOG_RUNS overrides the 500 (e.g. to measure the rate without a fix).
#include <sys/inotify.h>
#include <poll.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "base/unique_fd.h"
#include "fmt/format.h"
#include "test/cri/cri_harness.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using namespace std::chrono_literals;
using test_support::Clock;
using test_support::CriHarness;
using test_support::Deadline;
using test_support::DeadlineIn;
using test_support::ReadFile;
using test_support::Result;
using test_support::SpawnOptions;
using test_support::Subprocess;
using test_support::WriteFile;

constexpr int kRuns = 500;
constexpr int kParallel = 16;  // containers alive at once
// Output just before the last line: most of a pipe (64 KiB), so that the
// reader still has much to read when the container exits.
constexpr int kBurstBytes = 60000;

// Waits (inotify on its directory, no polling) until `path` contains `text`.
absl::Status WaitForFileText(const std::string& path, std::string_view text, Deadline deadline) {
  base::UniqueFd in(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return absl::InternalError("inotify_init1");
  std::string dir = path.substr(0, path.rfind('/'));
  if (inotify_add_watch(in.get(), dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0)
    return absl::InternalError("inotify_add_watch " + dir);
  for (;;) {
    absl::StatusOr<std::string> now = ReadFile(path);
    if (now.ok() && now->find(text) != std::string::npos) return absl::OkStatus();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      return absl::DeadlineExceededError(fmt::format("{} has no \"{}\"", path, text));
    pollfd pfd{in.get(), POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count()) + 1) > 0) {
      char buf[4096];
      while (read(in.get(), buf, sizeof buf) > 0) {
      }
    }
  }
}

// The id crictl printed (its last line).
std::string IdOf(const std::string& out) {
  std::vector<std::string> lines = test_support::SplitLines(out);
  return lines.empty() ? std::string() : lines.back();
}

TEST_CASE("CRI log: a container's last line always reaches crictl logs", "[cri-logs]") {
  int runs = kRuns;
  if (const char* env = std::getenv("CRI_LOG_RUNS"); env != nullptr && *env != '\0')
    runs = std::atoi(env);
  absl::StatusOr<std::unique_ptr<CriHarness>> harness = CriHarness::Start({});
  if (absl::IsNotFound(harness.status())) test_support::SkipRun(harness.status());
  REQUIRE_OK(harness);
  CriHarness& h = **harness;
  const std::string dir = h.dir() + "/logs-test";
  REQUIRE_OK(test_support::MakeDirs(dir + "/pod"));

  // One pod on the host's (the test's) network: no CNI per container needed.
  const std::string pod_json = dir + "/pod.json";
  REQUIRE_OK(WriteFile(pod_json, fmt::format(R"({{
  "metadata": {{"name": "logs", "namespace": "embed-test", "uid": "{}"}},
  "log_directory": "{}/pod",
  "linux": {{"security_context": {{"namespace_options": {{"network": 2}}}}}}
}})",
                                             test_support::UniqueName("uid"), dir)));
  absl::StatusOr<Result> runp = h.Crictl({"runp", "--runtime", "embed", pod_json});
  REQUIRE_OK(runp);
  INFO(*runp);
  REQUIRE(runp->ok());
  const std::string pod = IdOf(runp->out);
  absl::StatusOr<Result> pull = h.Crictl({"pull", "registry.k8s.io/e2e-test-images/busybox:1.29-2"});
  REQUIRE_OK(pull);
  REQUIRE(pull->ok());

  // containerd's events: a container's /tasks/delete comes once CRI has
  // handled its exit (closed its IO, deleted the task).
  SpawnOptions events_options;
  absl::StatusOr<Subprocess> events =
      h.containerd().RunCtrAsync({"-n", "k8s.io", "events"}, std::move(events_options));
  REQUIRE_OK(events);

  const Clock::time_point started = Clock::now();
  int checked = 0;
  std::vector<std::string> missing;
  while (checked < runs) {
    const int batch = std::min(kParallel, runs - checked);
    std::vector<Subprocess> creating;
    std::vector<std::string> names;
    for (int i = 0; i < batch; ++i) {
      std::string name = fmt::format("log-{}", checked + i);
      std::string json = fmt::format("{}/{}.json", dir, name);
      REQUIRE_OK(WriteFile(json, fmt::format(R"({{
  "metadata": {{"name": "{name}"}},
  "image": {{"image": "registry.k8s.io/e2e-test-images/busybox:1.29-2"}},
  "command": ["sh", "-c", "yes \"filler of {name}\" | head -c {burst}; echo; echo \"last line of {name}\""],
  "log_path": "{name}.log"
}})",
                                             fmt::arg("name", name),
                                             fmt::arg("burst", kBurstBytes))));
      SpawnOptions o;
      o.argv = h.CrictlArgv({"create", pod, json, pod_json});
      absl::StatusOr<Subprocess> p = Subprocess::Spawn(std::move(o));
      REQUIRE_OK(p);
      creating.push_back(std::move(*p));
      names.push_back(std::move(name));
    }
    std::vector<std::string> ids;
    for (Subprocess& p : creating) {
      absl::StatusOr<test_support::ExitStatus> st = p.Wait(120s);
      REQUIRE_OK(st);
      INFO(p.out() << p.err());
      REQUIRE(st->success());
      ids.push_back(IdOf(p.out()));
    }
    std::vector<std::string> start = {"start"};
    start.insert(start.end(), ids.begin(), ids.end());
    absl::StatusOr<Result> started_batch = h.Crictl(start);
    REQUIRE_OK(started_batch);
    INFO(*started_batch);
    REQUIRE(started_batch->ok());
    std::vector<Subprocess> reading;
    for (size_t i = 0; i < ids.size(); ++i) {
      REQUIRE_OK(events->WaitForOutput(
          fmt::format("/tasks/delete {{\"container_id\":\"{}\"", ids[i]), DeadlineIn(60s)));
      // CRI's logger writes the file behind containerd's copy: give it a moment.
      (void)WaitForFileText(fmt::format("{}/pod/{}.log", dir, names[i]),
                            fmt::format("last line of {}", names[i]), DeadlineIn(5s));
      SpawnOptions o;
      o.argv = h.CrictlArgv({"logs", ids[i]});
      absl::StatusOr<Subprocess> p = Subprocess::Spawn(std::move(o));
      REQUIRE_OK(p);
      reading.push_back(std::move(*p));
    }
    for (size_t i = 0; i < reading.size(); ++i) {
      absl::StatusOr<test_support::ExitStatus> st = reading[i].Wait(120s);
      REQUIRE_OK(st);
      INFO(reading[i].err());
      REQUIRE(st->success());
      if (reading[i].out().find(fmt::format("last line of {}\n", names[i])) == std::string::npos)
        missing.push_back(names[i]);
    }
    std::vector<std::string> rm = {"rm"};
    rm.insert(rm.end(), ids.begin(), ids.end());
    absl::StatusOr<Result> removed = h.Crictl(rm);
    REQUIRE_OK(removed);
    REQUIRE(removed->ok());
    checked += batch;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  // containerd gave up reading some container's output before its end.
  int gave_up = 0;
  for (const std::string& line : test_support::SplitLines(h.containerd().Log())) {
    if (line.find("Failed to pipe std") != std::string::npos &&
        line.find("of container") != std::string::npos)
      ++gave_up;
  }
  fmt::print("{} containers in {:.0f} s: last line missing in {}, containerd gave up reading {}\n",
             checked, seconds, missing.size(), gave_up);
  INFO("missing the last line: " << absl::StrJoin(missing, " "));
  CHECK(missing.empty());
  CHECK(gave_up == 0);
  (void)h.Crictl({"stopp", pod});
  (void)h.Crictl({"rmp", pod});
}

}  // namespace
