// Helpers for the exec and tty end-to-end tests (exec_test.cc, tty_test.cc):
// every case runs once against containerd's own io.containerd.runc.v2 (which
// proves the test right) and once against our io.containerd.embed.v1, on the
// same private containerd 1.6 fixture as the other end-to-end tests
// (e2e::E2E in shim_e2e_util.h).
//
// The embed variants are gated by EMBED_EXEC_TAGS below: until our shim has
// exec and tty, they are hidden ('[.embed-exec]'), so a plain run (and CI)
// runs only the runc.v2 variants. Run them by hand with
//   build/test/integration/exec_test '[embed-exec]'
// Once exec and tty land, make EMBED_EXEC_TAGS "[embed][embed-exec]" (drop
// the dot) and they run everywhere.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/format.h"
#include "test/integration/shim_e2e_util.h"
#include "test/integration/survival_util.h"
#include "test/support/fs_util.h"
#include "test/support/private_containerd.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

// The embed variants' tags (they were hidden with '.' until exec and tty
// were built).
#define EMBED_EXEC_TAGS "[embed][embed-exec]"

// Registers `body(runtime)` twice: "<title> (runc.v2)" tagged [runc-v2], and
// "<title> (embed)" tagged EMBED_EXEC_TAGS.
#define EXEC_RUNTIME_CASES(title, tags, body)                                           \
  TEST_CASE(title " (runc.v2)", tags "[runc-v2]") { body(::exec_e2e::kRuncV2); }        \
  TEST_CASE(title " (embed)", tags EMBED_EXEC_TAGS) { body(::exec_e2e::kEmbed); }

namespace exec_e2e {

using namespace e2e;

struct Runtime {
  const char* name;  // what `ctr run --runtime` takes
  bool embed;        // our shim: the checks only it promises apply too
};
inline constexpr Runtime kRuncV2{"io.containerd.runc.v2", false};
inline constexpr Runtime kEmbed{shim_test::kRuntime, true};

// Our shim's answer to Exec/ResizePty/terminal Create before the feature
// (shim/task/task_service.cc): seeing it means the gate above was opened early.
inline void FailIfUnimplemented(const Runtime& rt, std::string_view ctr_output) {
  if (!rt.embed) return;
  if (Contains(ctr_output, "not supported by containerd-shim-embed-v1") ||
      Contains(ctr_output, "are not supported yet")) {
    FAIL("io.containerd.embed.v1 has no exec/tty yet (it answers Unimplemented). These cases "
         "are gated by EMBED_EXEC_TAGS in test/integration/exec_util.h until it does. ctr said:\n"
         << ctr_output);
  }
}

// Where ctr makes the stdio fifos of the runs and execs here: under the
// fixture's directory (not ctr's default /run/containerd/fifo), so that the
// fixture's teardown removes what a killed ctr could not.
inline std::string FifoDir(PrivateContainerd& cd) {
  const std::string dir = cd.dir() + "/fifo";
  REQUIRE_OK(test_support::MakeDirs(dir));
  return dir;
}

// `ctr -n ns run <flags> --fifo-dir <FifoDir> --runtime <rt> --env PATH=/bin
//  --rootfs ROOTFS ID CMD...`
inline std::vector<std::string> RunArgsFor(PrivateContainerd& cd, const Runtime& rt,
                                           const std::string& ns, std::vector<std::string> flags,
                                           const std::string& rootfs, const std::string& id,
                                           std::vector<std::string> cmd) {
  std::vector<std::string> a = {"-n", ns, "run"};
  a.insert(a.end(), flags.begin(), flags.end());
  a.insert(a.end(), {"--fifo-dir", FifoDir(cd)});
  for (const char* s : {"--runtime", rt.name, "--env", "PATH=/bin", "--rootfs"}) a.push_back(s);
  a.push_back(rootfs);
  a.push_back(id);
  a.insert(a.end(), cmd.begin(), cmd.end());
  return a;
}

// `ctr -n ns task exec <flags> --fifo-dir <FifoDir> --exec-id EXEC_ID TASK CMD...`
inline std::vector<std::string> ExecArgs(PrivateContainerd& cd, const std::string& ns,
                                         const std::string& task, const std::string& exec_id,
                                         std::vector<std::string> cmd,
                                         std::vector<std::string> flags = {}) {
  std::vector<std::string> a = {"-n", ns, "task", "exec"};
  a.insert(a.end(), flags.begin(), flags.end());
  a.insert(a.end(), {"--fifo-dir", FifoDir(cd), "--exec-id", exec_id, task});
  a.insert(a.end(), cmd.begin(), cmd.end());
  return a;
}

// Runs a `ctr task exec` to its end; FAILs at once with a clear message on
// our shim's Unimplemented.
inline Result Exec(PrivateContainerd& cd, const Runtime& rt, const std::string& ns,
                   const std::string& task, const std::string& exec_id,
                   std::vector<std::string> cmd, std::vector<std::string> flags = {},
                   Clock::duration timeout = 60s) {
  absl::StatusOr<Result> r =
      cd.Ctr(ExecArgs(cd, ns, task, exec_id, std::move(cmd), std::move(flags)), timeout);
  REQUIRE_OK(r);
  FailIfUnimplemented(rt, r->err);
  return *r;
}

// A detached `sleep 100000` of runtime `rt`; returns its init pid.
inline pid_t RunSleeper(PrivateContainerd& cd, const Runtime& rt, const std::string& ns,
                        const std::string& rootfs, const std::string& id) {
  CtrOk(cd, RunArgsFor(cd, rt, ns, {"-d"}, rootfs, id, {"sleep", "100000"}));
  return RequireRunning(cd, ns, id);
}

// Polls `ctr task ls` (a round trip through containerd and the shim each
// time, not a sleep) until task `id` has `status`; returns the last list.
inline std::map<std::string, Task> WaitTaskStatus(PrivateContainerd& cd, const std::string& ns,
                                                  const std::string& id,
                                                  const std::string& status, Deadline deadline) {
  return survival::WaitTasks(cd, ns, deadline, [&](const std::map<std::string, Task>& t) {
    auto it = t.find(id);
    return it != t.end() && it->second.status == status;
  });
}

// The pids `ctr task ps TASK` lists (must succeed).
inline std::vector<pid_t> TaskPids(PrivateContainerd& cd, const std::string& ns,
                                   const std::string& task) {
  std::vector<pid_t> pids;
  for (const std::string& line : test_support::SplitLines(CtrOk(cd, {"-n", ns, "task", "ps", task}))) {
    if (line.empty() || !isdigit(static_cast<unsigned char>(line[0]))) continue;  // the header
    pids.push_back(static_cast<pid_t>(std::stol(line)));
  }
  std::sort(pids.begin(), pids.end());
  return pids;
}

// The entries of a directory (not recursive), sorted; empty if unreadable.
inline std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> out;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), &closedir);
  if (!d) return out;
  while (dirent* e = readdir(d.get())) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

inline std::string Joined(const std::vector<std::string>& v, std::string_view sep = "\n") {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : std::string(sep)) + x;
  return s;
}

// A process's open fds as "N -> target", sorted by N.
inline std::vector<std::string> FdTable(pid_t pid) {
  const std::string dir = fmt::format("/proc/{}/fd", pid);
  std::vector<std::pair<int, std::string>> fds;
  for (const std::string& name : DirEntries(dir)) {
    char buf[4096];
    ssize_t n = readlink((dir + "/" + name).c_str(), buf, sizeof buf - 1);
    fds.emplace_back(std::atoi(name.c_str()), n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?");
  }
  std::sort(fds.begin(), fds.end());
  std::vector<std::string> out;
  for (const auto& [fd, target] : fds) out.push_back(fmt::format("{} -> {}", fd, target));
  return out;
}

// ---------------------------------------------------------------------------
// `ctr events` lines: "<date> <time> <zone> UTC <namespace> <topic> <json>".

struct Event {
  std::string ns;
  std::string topic;
  std::string json;
  std::string line;
};

inline std::vector<Event> ParseEvents(const std::string& text) {
  std::vector<Event> out;
  for (const std::string& line : test_support::SplitLines(text)) {
    size_t topic_at = line.find(" /");
    if (topic_at == std::string::npos) continue;
    size_t topic_end = line.find(' ', topic_at + 1);
    Event e;
    e.topic = line.substr(topic_at + 1, topic_end == std::string::npos ? std::string::npos
                                                                      : topic_end - topic_at - 1);
    e.json = topic_end == std::string::npos ? "" : line.substr(topic_end + 1);
    std::vector<std::string> before = test_support::Split(line.substr(0, topic_at), ' ');
    if (!before.empty()) e.ns = before.back();
    e.line = line;
    out.push_back(std::move(e));
  }
  return out;
}

// A string field of an event's JSON ("" if absent).
inline std::string JsonString(const std::string& json, std::string_view key) {
  std::string k = fmt::format("\"{}\":\"", key);
  size_t at = json.find(k);
  if (at == std::string::npos) return "";
  size_t end = json.find('"', at + k.size());
  return json.substr(at + k.size(), end - at - k.size());
}

// A number field of an event's JSON (0 if absent: Go omits zero values).
inline long JsonNumber(const std::string& json, std::string_view key) {
  std::string k = fmt::format("\"{}\":", key);
  size_t at = json.find(k);
  if (at == std::string::npos) return 0;
  return std::strtol(json.c_str() + at + k.size(), nullptr, 10);
}

// The events of exec `exec_id` of `container` in namespace `ns`, in the
// order `ctr events` showed them. TaskExecAdded and TaskExecStarted name the
// exec "exec_id", TaskExit names it "id".
inline std::vector<Event> ExecEvents(const std::string& events_text, const std::string& ns,
                                     const std::string& container, const std::string& exec_id) {
  std::vector<Event> out;
  for (Event& e : ParseEvents(events_text)) {
    if (e.ns != ns || JsonString(e.json, "container_id") != container) continue;
    if (JsonString(e.json, "exec_id") == exec_id || JsonString(e.json, "id") == exec_id)
      out.push_back(std::move(e));
  }
  return out;
}

// What `ctr events` prints at the start of an exec's TaskExecStarted and
// TaskExit (fields in proto order), to wait for.
inline std::string ExecStartedText(const std::string& container, const std::string& exec_id) {
  return fmt::format(R"(/tasks/exec-started {{"container_id":"{}","exec_id":"{}",)", container,
                     exec_id);
}
inline std::string ExecExitText(const std::string& container, const std::string& exec_id) {
  return fmt::format(R"(/tasks/exit {{"container_id":"{}","id":"{}",)", container, exec_id);
}

// The stdin fifo ctr made for exec `exec_id` under FifoDir(cd) (cio names
// it <fifo dir>/<random>/<exec id>-stdin); "" if there is none. Writing to
// it feeds the exec even while its ctr is stopped.
inline std::string ExecStdinFifo(PrivateContainerd& cd, const std::string& exec_id) {
  const std::string root = FifoDir(cd);
  for (const std::string& sub : DirEntries(root)) {
    const std::string path = fmt::format("{}/{}/{}-stdin", root, sub, exec_id);
    if (PathExists(path)) return path;
  }
  return "";
}

}  // namespace exec_e2e
