// The init's side of recovery: a create the dead server left in flight,
// whose `runc create` may still run as an orphan, is waited for and then
// adopted (its pid taken as if this server had created it) or undone.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <optional>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/worker_pool.h"
#include "bpf/pidfd.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "shim/oci/runc.h"
#include "shim/oci/stdio_uri.h"
#include "shim/process/container.h"
#include "shim/process/process.h"
#include "shim/process/runtime_marker.h"

namespace shim::process {

namespace task = containerd::task::v2;

namespace {
// How long recovery waits for a dead server's `runc create` (as for an
// exec's `runc exec`: runc's own limit).
constexpr absl::Duration kOrphanedCreateLimit = absl::Seconds(60);
}  // namespace

void InitProcess::PublishCreatedFromRecord() {
  const embedshim::ContainerRecord& r = container_.base();
  task::CreateTaskRequest req;
  req.set_stdin(r.stdin());
  req.set_stdout(r.stdout());
  req.set_stderr(r.stderr());
  req.set_terminal(r.terminal());
  for (const auto& m : r.rootfs()) {
    auto* mount = req.add_rootfs();
    mount->set_type(m.type());
    mount->set_source(m.source());
    for (const auto& o : m.options()) mount->add_options(o);
  }
  PublishCreated(req);
}

namespace {
// A binary:// logger is started with the create; the dead server's is
// known to nobody now, so such a create is not adopted.
bool HasLogger(const embedshim::ContainerRecord& r) {
  for (const std::string* uri : {&r.stdout(), &r.stderr()}) {
    auto parsed = oci::ParseStdioUri(*uri);
    if (parsed.ok() && parsed->scheme == "binary") return true;
  }
  return false;
}

// The shim's own writer of a created init's stdin fifo (see oci::OpenStdio):
// the dead server's went with it. The init holds the read end, so a
// non-blocking open finds a reader.
base::UniqueFd ReopenStdinKeepalive(const std::string& path) {
  struct stat st;
  if (path.empty() || path[0] != '/' || stat(path.c_str(), &st) != 0 || !S_ISFIFO(st.st_mode))
    return {};
  base::UniqueFd fd(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (fd) fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return fd;
}
}  // namespace

std::optional<Spawned> InitProcess::AdoptOrphanedCreate(Runtime& runtime,
                                                        const embedshim::ContainerRecord& r) {
  // Rare (a server killed during `runc create`), bounded, on a worker.
  (void)WaitForMarkedRuntime(CreateRuntimeMarker(r.bundle()), kOrphanedCreateLimit);
  // A terminal's pty master was sent to the dead server.
  if (r.terminal() || HasLogger(r)) return std::nullopt;
  auto pid = oci::ReadPidFile(r.bundle() + "/init.pid");
  if (!pid.ok()) return std::nullopt;  // that create failed
  auto start = bpf::ReadStartBoottime(*pid);
  if (!start.ok() || !runtime.WaitsInInit(*pid)) return std::nullopt;
  Spawned s;
  s.pid = *pid;
  s.start_boottime = *start;
  s.stdin_keepalive = ReopenStdinKeepalive(r.stdin());
  return s;
}

void InitProcess::SettleOrphanedCreate(Then<bool> then) {
  base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
         "a create was in flight: waiting for the runc create the previous server started");
  Environment& env = container_.env();
  env.pool.Run<std::shared_ptr<std::optional<Spawned>>>(
      [&runtime = env.runtime, record = container_.Record()] {
        auto adopted = std::make_shared<std::optional<Spawned>>(AdoptOrphanedCreate(runtime, record));
        // Its runc has finished: undoing what it left races nothing now.
        if (!*adopted) (void)runtime.Delete(record, /*force=*/true);
        return adopted;
      },
      [this, then = std::move(then)](std::shared_ptr<std::optional<Spawned>> adopted) {
        Environment& env = container_.env();
        const std::string marker = CreateRuntimeMarker(container_.bundle());
        if (!*adopted) {
          unlink(marker.c_str());
          base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
                 "the create the previous server left in flight is undone");
          return then(false);
        }
        Spawned& s = **adopted;
        TakeCreatedInit(s);
        DropOutputHoldsOfDeadServer();  // the init holds its output now
        Apply(Event::kCreated);
        container_.WatchOom(/*recovered=*/false);
        // Spooled first, then persisted: a server that dies in between finds
        // the marker again, adopts again, and finds TaskCreate spooled.
        if (!env.events.Spooled("/tasks/create", container_.ns(), container_.id()))
          PublishCreatedFromRecord();
        container_.Persist();
        unlink(marker.c_str());
        base::LogFor(base::LogLevel::kWarn, container_.ns(), container_.id(),
               "adopted pid {}, created by the previous server's runc create", pid_);
        then(true);
      });
}

}  // namespace shim::process
