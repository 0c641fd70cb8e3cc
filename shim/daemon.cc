#include "shim/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>

#include "absl/container/flat_hash_set.h"

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/startup_code.h"
#include "base/worker_pool.h"
#include "bpf/exit_monitor.h"
#include "keeper/link.h"
#include "shim/manager/instance_lock.h"
#include "shim/process/identifier.h"
#include "shim/process/runc_runtime.h"
#include "shim/store/paths.h"
#include "shim/store/state_store.h"
#include "shim/task/admin_service.h"
#include "shim/task/event_publisher.h"
#include "shim/task/oom_watcher.h"
#include "shim/task/task_service.h"
#include "ttrpc/server.h"

namespace shim {
namespace {

// After the last container goes, wait this long for a new one: containerd
// may be about to dial an address that a `start` handed out just before.
// (Starts that answer during the linger are counted and keep the daemon;
// see the end of RunDaemon.) $EMBED_SHIM_IDLE_LINGER_MS overrides it (tests).
constexpr absl::Duration kIdleLinger = absl::Seconds(1);
// How long undelivered events may hold up an idle exit.
constexpr absl::Duration kEventFlushLimit = absl::Seconds(5);
// A daemon that no Create reaches within this long leaves
// (TaskService::ShutdownIfUnused). $EMBED_SHIM_UNUSED_LIMIT_MS overrides it.
constexpr absl::Duration kUnusedLimit = absl::Minutes(1);

absl::Duration MillisecondsFromEnv(const char* name, absl::Duration otherwise) {
  const char* ms = std::getenv(name);
  return ms && *ms ? absl::Milliseconds(std::atoll(ms)) : otherwise;
}

// Removes everything the instance created. Called with the start lock held,
// so no `start` sees a half-removed instance.
void RemoveInstance(const InstancePaths& paths) {
  if (absl::Status st = bpf::ExitMonitor::RemovePins(paths.bpf); !st.ok())
    base::LogError("removing pins {}: {}", paths.bpf, st);
  // Sockets (main and per-namespace), state, log and the lock file we hold.
  std::error_code ec;
  std::filesystem::remove_all(paths.dir, ec);
  if (ec) base::LogError("removing {}: {}", paths.dir, ec.message());
}

// The process layer's seams, onto the pinned exit monitor and the keeper.
class MonitorExits final : public process::ExitTracker {
 public:
  explicit MonitorExits(bpf::ExitMonitor& monitor) : monitor_(monitor) {}
  absl::Status Track(pid_t pid, uint64_t start) override { return monitor_.Track(pid, start); }
  absl::Status TrackSpawner(pid_t pid) override { return monitor_.TrackSpawner(pid); }
  absl::Status Untrack(pid_t pid) override { return monitor_.Untrack(pid); }
  absl::Status Forget(pid_t pid) override { return monitor_.Forget(pid); }

 private:
  bpf::ExitMonitor& monitor_;
};

class KeeperFds final : public process::FdKeeper {
 public:
  explicit KeeperFds(keeper::Link& keeper) : keeper_(keeper) {}
  void Keep(const std::string& name, base::UniqueFd fd) override {
    keeper_.Keep(name, std::move(fd));
  }
  void Drop(const std::string& name) override { keeper_.Drop(name); }
  void RelayTty(const std::string& name, process::TerminalFds fds) override {
    keeper_.RelayTty(name, std::move(fds.master), std::move(fds.in), std::move(fds.out));
  }
  void ResizeTty(const std::string& name, uint32_t width, uint32_t height) override {
    keeper_.ResizeTty(name, width, height);
  }
  void CloseTtyInput(const std::string& name) override { keeper_.CloseTtyInput(name); }
  void DropTty(const std::string& name) override { keeper_.DropTty(name); }

 private:
  keeper::Link& keeper_;
};

}  // namespace

int RunDaemon(const Flags& flags) {
  InstancePaths paths = PathsFor(flags.address);
  base::Log::Init(paths.log, flags.debug);
  const char* keeper_fd = std::getenv("EMBED_SHIM_KEEPER_FD");
  if (!keeper_fd) {
    base::LogError("serve: no keeper channel ($EMBED_SHIM_KEEPER_FD); the server is started by "
             "containerd-shim-embed-v1-keeper, which `start` runs");
    return 2;
  }
  base::UniqueFd channel(std::atoi(keeper_fd));
  unsetenv("EMBED_SHIM_KEEPER_FD");
  chdir("/");  // never pin a bundle directory
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // before any thread starts
  base::UniqueFd signal_fd(signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  absl::Time started = absl::Now();

  auto loop_or = base::EventLoop::Create();
  if (!loop_or.ok()) {
    base::LogError("event loop: {}", loop_or.status());
    return 1;
  }
  base::EventLoop& loop = **loop_or;

  bpf::SetLibbpfLogSink([](std::string_view line) { base::LogDebug("libbpf: {}", line); });
  auto monitor = bpf::ExitMonitor::Open(paths.bpf);
  if (!monitor.ok()) {
    base::LogError("exit monitor: {}", monitor.status());
    return 1;
  }

  base::WorkerPool pool(loop, 8);
  StateStore store(paths.state);
  const char* ttrpc_address = std::getenv("TTRPC_ADDRESS");
  EventPublisher events(loop, ttrpc_address ? ttrpc_address : "", paths.dir + "/events");

  ttrpc::ServerOptions server_options;
  server_options.log = [](std::string_view line) { base::LogWarn("ttrpc: {}", line); };
  auto server = std::make_unique<ttrpc::Server>(loop, server_options);
  keeper::Link keeper(loop, std::move(channel), *server);

  MonitorExits exits(**monitor);
  KeeperFds keeper_fds(keeper);
  process::RuncRuntime runtime;
  OomWatcher oom(loop);  // before the service, which it reports to
  process::Environment env{loop, pool, runtime, exits, events, keeper_fds, store, oom};
  TaskService service(env, [&] { return (*monitor)->Replay(); });
  oom.SetOnCount([&](const std::string& ns, const std::string& id, uint64_t oom_kills) {
    service.OnOomKills(ns, id, oom_kills);
  });
  service.RegisterOn(*server);
  service.Recover();

  bool keeper_gone = false;
  keeper.SetOnKeeperGone([&] {
    keeper_gone = true;
    loop.Stop();
  });
  if (absl::Status st = keeper.Start(); !st.ok()) {
    base::LogError("keeper channel: {}", st);
    return 1;
  }
  service.DropUnknownTtys(keeper.ttys());

  // One socket per namespace (see InstancePaths::NamespaceSocket); the keeper
  // holds the listeners, so they survive this process.
  auto serve_namespace = [&](const std::string& ns) -> absl::StatusOr<std::string> {
    if (!IsValidIdentifier(ns))
      return absl::InvalidArgumentError(fmt::format("namespace {:?} is not valid", ns));
    std::string path = paths.NamespaceSocket(ns);
    if (keeper.listening().contains(ns)) return "unix://" + path;
    unlink(path.c_str());
    auto fd = base::ListenUnix(path);
    if (!fd.ok()) return fd.status();
    keeper.Listen(ns, std::move(*fd));
    base::LogInfo("serving namespace {} on {}", ns, path);
    return "unix://" + path;
  };
  AdminService admin(service, **monitor, events, keeper, *server, serve_namespace);
  admin.RegisterOn(*server);
  std::vector<std::string> namespaces = service.Namespaces();
  if (!flags.namespace_.empty()) namespaces.push_back(flags.namespace_);
  for (const auto& ns : namespaces) {
    if (auto st = serve_namespace(ns); !st.ok()) base::LogError("namespace {}: {}", ns, st.status());
  }

  bpf::ExitMonitor& mon = **monitor;
  (void)loop.Add(mon.fd(), EPOLLIN, [&](uint32_t) {
    if (auto n = mon.Drain([&](const bpf::ExitRecord& e) { service.OnExit(e); }); !n.ok())
      base::LogError("exit monitor: {}", n.status());
  });

  const absl::Duration idle_linger = MillisecondsFromEnv("EMBED_SHIM_IDLE_LINGER_MS", kIdleLinger);
  bool idle_exit = false;
  absl::Time idle_since;
  uint64_t starts_when_idle = 0;  // AnsweredStarts() when the linger began
  std::function<void()> check_idle = [&] {
    if (service.container_count() > 0 || !service.shutdown_requested()) return;
    // The timer of an earlier idleness that a Create ended: the last one decides.
    if (absl::Now() - idle_since < idle_linger) return;
    if (events.queued() > 0 && absl::Now() - idle_since < kEventFlushLimit) {
      loop.RunAfter(absl::Milliseconds(50), check_idle);
      return;
    }
    idle_exit = true;
    loop.Stop();
  };
  auto linger = [&] {
    idle_since = absl::Now();
    starts_when_idle = AnsweredStarts(paths);
    base::LogInfo("idle: no container left; leaving in {} unless a start answers with this shim",
            absl::FormatDuration(idle_linger));
    loop.RunAfter(idle_linger, check_idle);
  };
  service.SetOnIdle(linger);
  const absl::Duration unused_limit = MillisecondsFromEnv("EMBED_SHIM_UNUSED_LIMIT_MS", kUnusedLimit);
  loop.RunAfter(unused_limit, [&] {
    if (service.ShutdownIfUnused())
      base::LogInfo("no container arrived within {}: leaving", absl::FormatDuration(unused_limit));
  });
  (void)loop.Add(signal_fd.get(), EPOLLIN, [&](uint32_t) {
    signalfd_siginfo info;
    (void)!read(signal_fd.get(), &info, sizeof info);
    base::LogInfo("signal {}: stopping; {} containers keep running", info.ssi_signo,
            service.container_count());
    loop.Stop();
  });

  base::LogInfo("serving for containerd {} in {:.1f} ms: {} containers, exit monitor {}",
          flags.address, absl::ToDoubleMilliseconds(absl::Now() - started),
          service.container_count(), bpf::ExitMonitor::Version());
  keeper.Ready();
  base::DropStartupCode();
  for (;;) {
    loop.Run();
    if (!idle_exit || keeper_gone) break;
    idle_exit = false;
    // Under the start lock, so every `start` is on one side: one that
    // answered with this daemon before counted itself (its task's Create is
    // on its way: stay), one after finds no socket and starts a new daemon.
    InstanceLock lock = InstanceLock::Acquire(paths.lock);
    if (service.container_count() > 0) continue;  // a Create got in meanwhile
    const uint64_t starts = AnsweredStarts(paths);
    if (starts == starts_when_idle) {
      base::LogInfo("idle: removing {}", paths.dir);
      keeper.ShutdownAndWait();
      server.reset();
      RemoveInstance(paths);
      break;
    }
    base::LogInfo("idle: a start answered with this shim while it lingered (answered starts {} -> "
            "{}): staying", starts_when_idle, starts);
    linger();
  }
  return 0;
}

}  // namespace shim
