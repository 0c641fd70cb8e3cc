// What an init and an exec share: applying transitions, exits and their
// waiters, stdio handed to the keeper, State and Delete answers.
#include "shim/process/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "bpf/pidfd.h"
#include "fmt/format.h"
#include "shim/process/clock.h"
#include "shim/process/container.h"

namespace shim::process {

namespace task = containerd::task::v2;

Status Process::visible_status() const {
  const Status init = container_.init().status();
  if (kind_ == Kind::kExec && status_ == Status::kRunning && init == Status::kPaused)
    return Status::kPaused;
  return status_;
}

std::string_view Process::PidCheck() const {
  auto same = bpf::IsSameLiveProcess(pid(), start_boottime());
  if (same.ok() && *same) return "same";
  return kill(pid(), 0) == 0 && status_ != Status::kStopped ? "reused" : "exited";
}

void Process::Apply(Event event) {
  auto next = Transition(kind_, status_, event);
  if (!next.ok()) {
    base::LogFor(base::LogLevel::kError, container_.ns(), container_.id(), "{}{}: {} (ignored)",
           kind_ == Kind::kExec ? "exec " : "", exec_id(), next.status());
    return;
  }
  status_ = *next;
}

task::WaitResponse Process::WaitResponse() const {
  task::WaitResponse resp;
  resp.set_exit_status(exit_status_);
  SetTimestamp(resp.mutable_exited_at(), exited_at_);
  return resp;
}

void Process::AddWaiter(ttrpc::Responder waiter) {
  if (status_ == Status::kStopped) return waiter.Reply(WaitResponse().SerializeAsString());
  waiters_.push_back(std::move(waiter));
}

void Process::OnExit(const bpf::ExitRecord& exit) {
  if (status_ == Status::kStarting) {
    held_exit_ = exit;  // TaskStart first: ReleaseHeldExit applies it
    return;
  }
  if (status_ == Status::kStopped || status_ == Status::kDeleted) {
    (void)container_.env().exits.Forget(exit.pid);  // reported already
    return;
  }
  ApplyExit(exit);
}

void Process::ReleaseHeldExit() {
  if (!held_exit_) return;
  bpf::ExitRecord exit = *held_exit_;
  held_exit_.reset();
  OnExit(exit);
}

void Process::SetExit(const bpf::ExitRecord& exit) {
  Apply(Event::kExit);
  exit_status_ = ExitStatusOf(exit.wait_status);
  exited_at_ = exit.exited_at_ns;
}

void Process::AnswerWaiters() {
  std::string bytes = WaitResponse().SerializeAsString();
  for (auto& w : waiters_) w.Reply(bytes);
  waiters_.clear();
}

void Process::FillState(task::StateResponse& resp) const {
  resp.set_id(kind_ == Kind::kInit ? container_.id() : exec_id());
  resp.set_exec_id(exec_id());
  resp.set_bundle(container_.bundle());
  resp.set_pid(pid_);
  resp.set_status(
      static_cast<containerd::v1::types::Status>(ToContainerdStatus(visible_status())));
  resp.set_stdin(stdin_path());
  resp.set_stdout(stdout_path());
  resp.set_stderr(stderr_path());
  resp.set_terminal(terminal());
  resp.set_exit_status(exit_status_);
  if (status_ == Status::kStopped) SetTimestamp(resp.mutable_exited_at(), exited_at_);
}

ProcessEnd Process::End() const {
  return {container_.id(), kind_ == Kind::kInit ? container_.id() : exec_id(), pid_, exit_status_,
          exited_at_};
}

std::string Process::KeeperName(std::string_view what) const {
  // The init's names are those of earlier servers ("stdin/<ns>/<id>").
  if (kind_ == Kind::kInit) return fmt::format("{}/{}/{}", what, container_.ns(), container_.id());
  return fmt::format("{}/{}/{}/{}", what, container_.ns(), container_.id(), exec_id());
}

void Process::KeepStdio(Spawned& spawned) {
  FdKeeper& keeper = container_.env().keeper;
  if (spawned.stdin_keepalive) keeper.Keep(KeeperName("stdin"), std::move(spawned.stdin_keepalive));
  if (spawned.terminal.master) keeper.RelayTty(KeeperName("tty"), std::move(spawned.terminal));
}

void Process::HoldOutputWhileStarting() {
  FdKeeper& keeper = container_.env().keeper;
  int n = 0;
  for (const std::string* path : {&stdout_path(), &stderr_path()}) {
    const std::string name = KeeperName(fmt::format("hold{}", n++));
    struct stat st;
    if (path->empty() || (*path)[0] != '/' || stat(path->c_str(), &st) != 0 ||
        !S_ISFIFO(st.st_mode))
      continue;
    // O_RDWR never blocks on a fifo, and adds no reader that could matter.
    base::UniqueFd fd(open(path->c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd) continue;
    keeper.Keep(name, std::move(fd));
    output_holds_.push_back(name);
  }
}

void Process::DropOutputHoldsOfDeadServer() {
  FdKeeper& keeper = container_.env().keeper;
  for (int n = 0; n < 2; ++n) keeper.Drop(KeeperName(fmt::format("hold{}", n)));
  output_holds_.clear();
}

void Process::ReleaseOutputHold() {
  FdKeeper& keeper = container_.env().keeper;
  for (const std::string& name : output_holds_) keeper.Drop(name);
  output_holds_.clear();
}

void Process::DropStdio() {
  FdKeeper& keeper = container_.env().keeper;
  keeper.Drop(KeeperName("stdin"));
  if (terminal()) keeper.DropTty(KeeperName("tty"));
}

void Process::CloseIO() {
  FdKeeper& keeper = container_.env().keeper;
  if (terminal()) keeper.CloseTtyInput(KeeperName("tty"));
  else keeper.Drop(KeeperName("stdin"));
}

void Process::ResizePty(uint32_t width, uint32_t height) {
  if (terminal()) container_.env().keeper.ResizeTty(KeeperName("tty"), width, height);
}

}  // namespace shim::process
