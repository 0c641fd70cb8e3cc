// Survival, continued (see survival_test.cc): containerd restarting around
// the shim, the keeper itself dying (containerd then cleans up through our
// `delete` subcommand), and `containerd-shim-embed-v1 upgrade` (tagged
// [upgrade]; it skips itself while --help says upgrade is not implemented).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fmt/format.h"
#include "test/integration/survival_util.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace {

using namespace survival;

// Every *.pb below `dir` (records of containers).
std::vector<std::string> RecordFilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().extension() == ".pb") out.push_back(it->path().string());
  }
  return out;
}

ino_t InodeOf(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// `n` detached `sleep` containers, run0..run<n-1> (unique names), in `ns`.
struct Sleepers {
  std::vector<std::string> ids;      // in the order they were started
  std::map<std::string, pid_t> pids;  // their init pids, from `ctr task ls`
};
Sleepers RunSleepers(PrivateContainerd& cd, const std::string& ns, const std::string& rootfs,
                     int n) {
  Sleepers out;
  for (int i = 0; i < n; ++i) {
    out.ids.push_back(UniqueName(fmt::format("run{}", i)));
    out.pids[out.ids.back()] = RunDetached(cd, ns, rootfs, out.ids.back(), {"sleep", "100000"});
  }
  return out;
}

}  // namespace

TEST_CASE("survival: containerd restarted with containers running: all reattach, exits "
          "still reported",
          "[containerd][shim][survival][restart]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("ctrdrestart");
  const std::string rootfs = s->Rootfs();
  Sleepers sleepers = RunSleepers(s->cd(), ns, rootfs, 3);
  std::vector<std::string>& ids = sleepers.ids;
  std::map<std::string, pid_t>& pids = sleepers.pids;
  const pid_t server = s->TheServer();
  const pid_t keeper = s->TheKeeper();
  // containerd 1.6 finds a task's shim again from <bundle>/address
  // (runtime/v2/shim.go loadShim); it never writes that file itself, the
  // shim's `start` does (runc-v2: shim.WriteAddress("address", ...) in the
  // bundle, its cwd). Without it every task is "cleaned up" as dead.
  for (const std::string& id : ids) {
    absl::StatusOr<std::string> address =
        test_support::ReadFile(s->Bundle(ns, id) + "/address");
    INFO("bundle of " << id << ": " << address.status().ToString());
    CHECK(address.ok());
    if (address.ok()) CHECK(address->starts_with("unix://" + s->instance().dir + "/"));
  }

  REQUIRE_OK(s->cd().Restart());

  std::map<std::string, Task> tasks = ListTasks(s->cd(), ns);
  INFO(TasksText(tasks) << s->Logs());
  for (const std::string& id : ids) {
    INFO("task " << id);
    REQUIRE(tasks.contains(id));
    CHECK(tasks[id].status == "RUNNING");
    CHECK(tasks[id].pid == pids[id]);
    CHECK(Alive(pids[id]));
  }
  // containerd's restart is nothing to the shim: same processes.
  CHECK(s->TheServer() == server);
  CHECK(s->TheKeeper() == keeper);

  // An exit after the restart reaches the new containerd.
  CtrOk(s->cd(), {"-n", ns, "tasks", "kill", "-s", "SIGKILL", ids[1]});
  tasks = WaitTasks(s->cd(), ns, DeadlineIn(30s), [&](auto& t) {
    return t.contains(ids[1]) && t.at(ids[1]).status == "STOPPED";
  });
  {
    INFO(TasksText(tasks));
    REQUIRE(tasks.contains(ids[1]));
    CHECK(tasks[ids[1]].status == "STOPPED");
    CHECK(tasks[ids[0]].status == "RUNNING");
    CHECK(tasks[ids[2]].status == "RUNNING");
  }
  const size_t cd_checkpoint = s->CdLogSize();  // nothing deleted before this
  CHECK(RemoveTaskStatus(s->cd(), ns, ids[1]) == 137);

  // A foreground container started after the restart: output and status.
  absl::StatusOr<Result> fg = s->cd().Ctr(RunArgs(ns, {"--rm"}, rootfs, UniqueName("fg"),
                                                  {"sh", "-c", "echo after-restart; exit 3"}));
  REQUIRE_OK(fg);
  INFO(*fg);
  CHECK(fg->exit_code == 3);
  CHECK(fg->out == "after-restart\n");
  CHECK(s->TheKeeper() == keeper);
  CHECK(s->ShimDeathSigns(cd_checkpoint) == "");
}

TEST_CASE("survival: keeper SIGKILLed: containerd cleans up through `delete` with real "
          "statuses, nothing left",
          "[containerd][shim][survival][keeper]") {
  auto s = Survival::Start();
  const std::string ns = UniqueName("keeperkill");
  const std::string rootfs = s->Rootfs("rootfs-exit");
  const std::string sleep_rootfs = s->Rootfs("rootfs-sleep");
  EventLog events(s->cd());

  const std::string exiting = UniqueName("exits42");
  const pid_t exiting_pid =
      RunDetached(s->cd(), ns, rootfs, exiting,
                  {"sh", "-c", "while [ ! -e /go ]; do usleep 10000; done; exit 42"});
  std::vector<std::string> sleepers;
  std::map<std::string, pid_t> pids;
  for (int i = 0; i < 2; ++i) {
    sleepers.push_back(UniqueName(fmt::format("sleep{}", i)));
    pids[sleepers.back()] =
        RunDetached(s->cd(), ns, sleep_rootfs, sleepers.back(), {"sleep", "100000"});
  }
  std::vector<std::string> all = sleepers;
  all.push_back(exiting);

  const pid_t keeper = s->TheKeeper();
  const pid_t server = s->TheServer();
  base::UniqueFd keeper_fd = OpenPidfd(keeper);
  base::UniqueFd server_fd = OpenPidfd(server);
  base::UniqueFd exiting_fd = OpenPidfd(exiting_pid);
  REQUIRE(keeper_fd.valid());
  REQUIRE(server_fd.valid());
  REQUIRE(exiting_fd.valid());

  // One container exits just before the keeper dies.
  REQUIRE_OK(test_support::WriteFile(rootfs + "/go", "go"));
  REQUIRE(WaitExited(exiting_fd, DeadlineIn(30s)));
  REQUIRE(SendSignal(keeper_fd, SIGKILL));
  REQUIRE(WaitExited(keeper_fd, DeadlineIn(10s)));

  // The server leaves too (its channel is gone; nobody could reach it).
  {
    INFO(s->Logs());
    CHECK(WaitExited(server_fd, DeadlineIn(30s)));
  }
  // containerd saw the connections close and ran `delete` for each task.
  for (const std::string& id : all) {
    INFO("exit event of " << id << "\n" << s->Logs() << "\nevents:\n" << events.Text());
    CHECK_OK(events.WaitFor(fmt::format("/tasks/exit {{\"container_id\":\"{}\"", id),
                            DeadlineIn(60s)));
  }
  {
    INFO("events:\n" << events.Text() << s->Logs());
    std::vector<EventLog::Exit> exits = events.ExitsOf(exiting);
    CHECK_FALSE(exits.empty());
    for (const auto& e : exits) {
      INFO(e.line);
      CHECK(e.status == 42);
    }
    for (const std::string& id : sleepers) {
      std::vector<EventLog::Exit> ex = events.ExitsOf(id);
      CHECK_FALSE(ex.empty());
      for (const auto& e : ex) {
        INFO(e.line);
        CHECK(e.status == 137);
      }
      base::UniqueFd fd = OpenPidfd(pids[id]);
      CHECK((!fd || WaitExited(fd, DeadlineIn(10s))));
    }
  }

  // containerd dropped the tasks...
  std::map<std::string, Task> tasks = WaitTasks(s->cd(), ns, DeadlineIn(60s), [&](auto& t) {
    for (const std::string& id : all)
      if (t.contains(id)) return false;
    return true;
  });
  {
    INFO(TasksText(tasks) << s->Logs());
    for (const std::string& id : all) CHECK_FALSE(tasks.contains(id));
  }
  // ...and nothing is left: no mount, no record, no runc state, no shim process.
  for (const std::string& id : all) {
    INFO("container " << id);
    absl::StatusOr<std::vector<std::string>> mounts =
        test_support::MountsUnder(s->Bundle(ns, id));
    REQUIRE_OK(mounts);
    CHECK(mounts->empty());
    absl::StatusOr<Result> runc =
        test_support::Run({"runc", "--root", "/run/containerd/runc/" + ns, "state", id});
    REQUIRE_OK(runc);
    INFO("runc state: " << *runc);
    CHECK(runc->exit_code != 0);
  }
  for (const std::string& dir : {rootfs, sleep_rootfs}) {
    absl::StatusOr<std::vector<std::string>> mounts = test_support::MountsUnder(dir);
    REQUIRE_OK(mounts);
    CHECK(mounts->empty());
  }
  {
    std::vector<std::string> records = RecordFilesUnder(s->instance().state);
    std::string list;
    for (const auto& r : records) list += r + "\n";
    INFO("records left:\n" << list);
    CHECK(records.empty());
  }
  CHECK(s->servers().empty());
  CHECK(s->keepers().empty());
  // Here containerd did take the shim for dead: the check the other cases
  // rely on sees it. The test deleted nothing, so every "shim disconnected"
  // so far counts (2.x logs no "event published" for its own TaskExits).
  CHECK(s->ShimDeathSigns(s->CdLogSize()) != "");

  // The next container gets a fresh shim.
  absl::StatusOr<Result> fg = s->cd().Ctr(RunArgs(ns, {"--rm"}, rootfs, UniqueName("after"),
                                                  {"sh", "-c", "echo fresh; exit 3"}));
  REQUIRE_OK(fg);
  INFO(*fg << s->Logs());
  CHECK(fg->exit_code == 3);
  CHECK(fg->out == "fresh\n");
}

TEST_CASE("survival: upgrade to a rebuilt binary keeps containers and an attached stdin",
          "[containerd][shim][survival][upgrade]") {
  const std::string build_dir = test_support::DefaultShimDir();
  absl::StatusOr<Result> help = test_support::Run({build_dir + "/" + kLauncherName, "--help"});
  REQUIRE_OK(help);
  bool implemented = false;
  for (const std::string& line : test_support::SplitLines(help->out)) {
    if (line.starts_with("upgrade") && !Contains(line, "not implemented")) implemented = true;
  }
  if (!implemented) {
    WARN("skipped: `containerd-shim-embed-v1 --help` lists upgrade as not implemented");
    return;
  }

  // The shim runs from a directory of our own, so that it can be "rebuilt"
  // (replaced by a file with a new inode) under the running shim.
  test_support::ScopedTempDir bin("embed-upgrade-", "/tmp");
  REQUIRE(bin.ok());
  survival::InstallShimBinaries(build_dir, bin.path());
  auto s = Survival::Start(bin.path());
  const std::string ns = UniqueName("upgrade");
  const std::string rootfs = s->Rootfs();
  Sleepers sleepers = RunSleepers(s->cd(), ns, rootfs, 3);
  std::vector<std::string>& ids = sleepers.ids;
  std::map<std::string, pid_t>& pids = sleepers.pids;
  // A container attached to ctr's stdin (ctr 1.6 has no -i: a foreground
  // `ctr run` always passes its stdin on).
  SpawnOptions o;
  o.stdin_pipe = true;
  const std::string echo = UniqueName("echo");
  absl::StatusOr<Subprocess> cat = s->cd().RunCtrAsync(
      RunArgs(ns, {"--rm"}, rootfs, echo,
              {"sh", "-c", "while read l; do echo \"got $l\"; done; echo eof"}),
      std::move(o));
  REQUIRE_OK(cat);
  auto send = [&](std::string_view line) {
    std::string l = std::string(line) + "\n";
    REQUIRE(write(cat->stdin_pipe().get(), l.data(), l.size()) == static_cast<ssize_t>(l.size()));
  };
  send("before");
  REQUIRE_OK(cat->WaitForOutput("got before\n", DeadlineIn(60s)));

  const pid_t server = s->TheServer();
  const pid_t keeper = s->TheKeeper();
  const ino_t old_server_inode = ExeInode(server);
  const ino_t old_keeper_inode = ExeInode(keeper);
  survival::InstallShimBinaries(build_dir, bin.path());
  const ino_t new_server_inode = InodeOf(bin.Sub(kServerName));
  const ino_t new_keeper_inode = InodeOf(bin.Sub(kKeeperName));
  REQUIRE(new_server_inode != old_server_inode);
  REQUIRE(new_keeper_inode != old_keeper_inode);

  const size_t offset = FileSize(s->instance().log);
  absl::StatusOr<Result> up =
      test_support::Run({bin.Sub(kLauncherName), "-address", s->address(), "upgrade"}, 60s);
  REQUIRE_OK(up);
  INFO("upgrade: " << *up << "\n" << s->Logs());
  REQUIRE(up->exit_code == 0);
  absl::StatusOr<pid_t> next = WaitServing(s->instance().log, offset, server, DeadlineIn(30s));
  REQUIRE_OK(next);
  const pid_t new_server = s->TheServer();
  CHECK(new_server == *next);
  CHECK(new_server != server);
  CHECK(ExeInode(new_server) == new_server_inode);
  // The keeper re-executed itself: same pid, the new binary.
  CHECK(s->TheKeeper() == keeper);
  CHECK(ExeInode(keeper) == new_keeper_inode);

  std::map<std::string, Task> tasks = ListTasks(s->cd(), ns);
  {
    INFO(TasksText(tasks));
    for (const std::string& id : ids) {
      INFO("task " << id);
      REQUIRE(tasks.contains(id));
      CHECK(tasks[id].status == "RUNNING");
      CHECK(tasks[id].pid == pids[id]);
    }
    REQUIRE(tasks.contains(echo));
    CHECK(tasks[echo].status == "RUNNING");
  }
  send("after");
  CHECK_OK(cat->WaitForOutput("got after\n", DeadlineIn(30s)));
  const size_t cd_checkpoint = s->CdLogSize();  // nothing deleted before this
  cat->stdin_pipe().Reset();  // EOF: the loop ends, ctr run returns
  CHECK_OK(cat->WaitForOutput("eof\n", DeadlineIn(30s)));
  absl::StatusOr<test_support::ExitStatus> st = cat->Wait(DeadlineIn(60s));
  REQUIRE_OK(st);
  CHECK(st->success());
  CHECK(cat->out() == "got before\ngot after\neof\n");

  // An exit after the upgrade is reported with its status.
  CtrOk(s->cd(), {"-n", ns, "tasks", "kill", "-s", "SIGKILL", ids[0]});
  tasks = WaitTasks(s->cd(), ns, DeadlineIn(30s), [&](auto& t) {
    return t.contains(ids[0]) && t.at(ids[0]).status == "STOPPED";
  });
  INFO(TasksText(tasks) << s->Logs());
  REQUIRE(tasks.contains(ids[0]));
  CHECK(tasks[ids[0]].status == "STOPPED");
  CHECK(RemoveTaskStatus(s->cd(), ns, ids[0]) == 137);
  CHECK(s->ShimDeathSigns(cd_checkpoint) == "");
}
