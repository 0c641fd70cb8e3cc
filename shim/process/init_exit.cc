// The init's exit: held for the execs still running (and, without a pid
// namespace of its own, for the rest of its cgroup to be killed), then for
// its output to be read, then reported as TaskExit and persisted.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/worker_pool.h"
#include "bpf/pidfd.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "base/event_loop.h"
#include "shim/process/container.h"
#include "shim/process/exit_report.h"
#include "shim/process/process.h"

namespace shim::process {

namespace events = containerd::events;

namespace {
// A pid-namespace init is gone only once the kernel has killed and reaped
// the rest of its namespace; `runc delete` refuses until then.
constexpr absl::Duration kInitGoneLimit = absl::Seconds(10);
}  // namespace

void InitProcess::OnExecExited() {
  if (!exit_after_execs_ || container_.AnyExecAlive()) return;
  bpf::ExitRecord exit = *exit_after_execs_;
  exit_after_execs_.reset();
  ApplyExit(exit);
}

void InitProcess::ApplyExit(const bpf::ExitRecord& exit) {
  if (kill_all_on_exit_ && !killed_all_) return KillAllThenApplyExit(exit);
  if (container_.AnyExecAlive()) {
    // The init's TaskExit is the container's last (runc-v2 >= 1.6.36): it
    // waits for the execs, which cannot outlive it. In a private pid
    // namespace the kernel kills them; sharing the host's, we do. The exit
    // stays in the monitor's map meanwhile, so a restarted server holds it
    // again.
    if (!exit_after_execs_) {
      base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(),
             "init exited; its exit waits for the execs still running");
      for (const auto& [id, e] : container_.execs()) {
        if (!e->alive() || e->pid() <= 0) continue;
        if (auto pidfd = bpf::PidfdIfSameLive(e->pid(), e->start_boottime()); pidfd.ok())
          (void)syscall(SYS_pidfd_send_signal, pidfd->get(), SIGKILL, nullptr, 0);
      }
    }
    exit_after_execs_ = exit;
    return;
  }
  if (exit_waits_for_output_) return;  // the monitor reports at least once
  exit_waits_for_output_ = true;
  WhenOutputRead([this, exit] {
    exit_waits_for_output_ = false;
    FinishExit(exit);
  });
}

void InitProcess::FinishExit(const bpf::ExitRecord& exit) {
  SetExit(exit);
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(), "exited pid={} status={}", exit.pid,
         exit_status_);
  // Order matters across a crash: the event is spooled, then the state is
  // persisted, then the exit record is forgotten. A server that dies between
  // any two steps is followed by one that replays the exit, finds the event
  // already spooled, and does not send it twice.
  Environment& env = container_.env();
  // An OOM kill of the init is counted before it exits: TaskOOM goes first,
  // as with runc-v2.
  container_.CheckOom();
  if (!env.events.Spooled("/tasks/exit", container_.ns(), container_.id(), container_.id()))
    env.events.Publish(container_.ns(), "/tasks/exit", ExitEventOf<events::TaskExit>(End()));
  container_.Persist();
  (void)env.exits.Forget(exit.pid);
  container_.router().Remove(exit.pid, this);
  AnswerWaiters();
}

// The exit monitor reports an exit in do_exit, before the kernel closes the
// process's files (and, for a pid namespace's init, before it kills the rest
// of the namespace), and the TaskExit reached containerd within a
// millisecond. containerd 1.6's CRI closes a container's output fifos as soon
// as it handles TaskExit, so its copy, not yet at EOF, lost the output's end
// ("Failed to pipe stdout of container ...: file already closed"). So the
// exit waits, first until the init is wholly gone (its pidfd: its files are
// closed, and so are those of the rest of its pid namespace), then until no
// output fifo has a reader: containerd closes its reader once it has read to
// EOF. That close is an inotify event (IN_CLOSE_NOWRITE; the container's own
// fds are O_RDWR, and so is nothing else's we wait for); whether a reader is
// left, a non-blocking O_WRONLY open tells (ENXIO: none), and its own close
// (IN_CLOSE_WRITE) wakes nobody. A reader that never reads, or processes of
// a shared pid namespace that keep the fifos, cost kOutputReadLimit.
namespace {
constexpr absl::Duration kOutputReadLimit = absl::Seconds(1);

bool FifoHasReader(const std::string& path) {
  base::UniqueFd probe(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  return probe.valid();  // ENXIO: no reader; anything else: nothing to wait for
}
}  // namespace

void InitProcess::WhenOutputRead(std::function<void()> then) {
  struct Wait {
    base::UniqueFd pidfd;    // until the init is wholly gone
    base::UniqueFd inotify;  // readers' closes
    std::vector<std::string> fifos;
    std::function<void()> then;
    base::EventLoop* loop;
    void Check() {
      if (pidfd.valid()) return;
      if (std::none_of(fifos.begin(), fifos.end(), FifoHasReader)) Fire();
    }
    void Fire() {
      if (!then) return;
      for (base::UniqueFd* fd : {&pidfd, &inotify}) {
        if (fd->valid()) loop->Remove(fd->get());
        fd->Reset();
      }
      std::exchange(then, nullptr)();
    }
  };
  base::EventLoop& loop = container_.env().loop;
  auto wait = std::make_shared<Wait>(Wait{{}, {}, {}, std::move(then), &loop});
  for (const std::string* path : {&stdout_path(), &stderr_path()}) {
    struct stat st;
    if (!path->empty() && (*path)[0] == '/' && stat(path->c_str(), &st) == 0 &&
        S_ISFIFO(st.st_mode))
      wait->fifos.push_back(*path);
  }
  if (wait->fifos.empty()) return wait->Fire();
  // Watch first, then look: a reader that closes in between is not missed.
  wait->inotify.Reset(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!wait->inotify) return wait->Fire();
  for (const std::string& fifo : wait->fifos) {
    if (inotify_add_watch(wait->inotify.get(), fifo.c_str(), IN_CLOSE_NOWRITE) < 0)
      return wait->Fire();
  }
  if (absl::Status st = loop.Add(wait->inotify.get(), EPOLLIN,
                                 [wait](uint32_t) {
                                   char buf[4096];
                                   while (read(wait->inotify.get(), buf, sizeof buf) > 0) {
                                   }
                                   wait->Check();
                                 });
      !st.ok())
    return wait->Fire();
  if (auto pidfd = bpf::PidfdIfSameLive(pid(), start_boottime_); pidfd.ok()) {
    wait->pidfd = std::move(*pidfd);
    if (absl::Status st = loop.Add(wait->pidfd.get(), EPOLLIN,
                                   [wait](uint32_t) {
                                     wait->loop->Remove(wait->pidfd.get());
                                     wait->pidfd.Reset();
                                     wait->Check();
                                   });
        !st.ok())
      return wait->Fire();
  }
  wait->Check();
  if (!wait->then) return;
  loop.RunAfter(kOutputReadLimit, [wait, ns = container_.ns(), id = container_.id()] {
    if (!wait->then) return;
    base::LogFor(base::LogLevel::kWarn, ns, id, "the output is still held {} ms after the exit; reporting it",
           absl::ToInt64Milliseconds(kOutputReadLimit));
    wait->Fire();
  });
}

void InitProcess::WhenGone(std::function<void()> then) {
  if (status_ != Status::kStopped) return then();
  auto pidfd = bpf::PidfdIfSameLive(pid(), start_boottime_);
  if (!pidfd.ok()) return then();  // gone already, or the pid is another process's now
  // Whichever comes first, the pidfd or the time limit, runs `then`.
  struct Wait {
    base::UniqueFd pidfd;
    std::function<void()> then;
    base::EventLoop* loop;
    void Fire() {
      if (!then) return;
      loop->Remove(pidfd.get());
      pidfd.Reset();
      std::exchange(then, nullptr)();
    }
  };
  base::EventLoop& loop = container_.env().loop;
  auto wait = std::make_shared<Wait>(Wait{std::move(*pidfd), std::move(then), &loop});
  if (absl::Status st = loop.Add(wait->pidfd.get(), EPOLLIN, [wait](uint32_t) { wait->Fire(); });
      !st.ok())
    return wait->Fire();
  loop.RunAfter(kInitGoneLimit, [wait, ns = container_.ns(), id = container_.id(), pid = pid_] {
    if (!wait->then) return;
    base::LogFor(base::LogLevel::kWarn, ns, id,
           "init pid {} exited {} s ago and its pid namespace is still not empty", pid,
           absl::ToInt64Seconds(kInitGoneLimit));
    wait->Fire();
  });
}

void InitProcess::KillAllThenApplyExit(const bpf::ExitRecord& exit) {
  exit_after_kill_all_ = exit;
  if (kill_all_in_flight_) return;
  kill_all_in_flight_ = true;
  base::LogFor(base::LogLevel::kInfo, container_.ns(), container_.id(),
         "init pid {} exited without a pid namespace of its own: killing the rest of its cgroup",
         exit.pid);
  Environment& env = container_.env();
  env.pool.Run<absl::Status>(
      [&runtime = env.runtime, record = container_.Record()] {
        return runtime.Kill(record, SIGKILL, /*all=*/true);
      },
      [this](absl::Status st) {
        kill_all_in_flight_ = false;
        killed_all_ = true;
        // NotFound: nothing left to kill, or no container any more.
        if (!st.ok() && !absl::IsNotFound(st))
          base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
                 "killing what the init left: {}", st);
        bpf::ExitRecord exit = *exit_after_kill_all_;
        exit_after_kill_all_.reset();
        if (status_ != Status::kStopped && status_ != Status::kDeleted) ApplyExit(exit);
      });
}

}  // namespace shim::process
