#include "shim/process/container.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "events_task.pb.h"
#include "fmt/format.h"
#include "shim/oci/spec.h"
#include "shim/process/clock.h"
#include "shim/process/identifier.h"
#include "shim/process/runtime_options.h"

namespace shim::process {

namespace events = containerd::events;

namespace {
// Long enough for any replay of an exec's Delete (as the init's tombstone).
constexpr absl::Duration kDeletedExecLife = absl::Minutes(2);
}  // namespace

Container::Container(Environment& env, ExitRouter& router, embedshim::ContainerRecord record)
    : env_(env),
      router_(router),
      record_(std::move(record)),
      init_(*this, FromRecord(record_.status())) {
  record_.clear_execs();
  init_.Restore(record_);
  // Decided once per server, at Create or recovery (before exits replay):
  // the spec in the bundle does not change. A small file on tmpfs.
  init_.set_kill_all_on_exit(oci::ShouldKillAllOnExit(record_.bundle()));
}

absl::Status Container::CheckCreateRequest(const containerd::task::v2::CreateTaskRequest& req) {
  if (!IsValidIdentifier(req.id()))
    return absl::InvalidArgumentError(fmt::format("container id {:?} is not valid", req.id()));
  if (req.bundle().empty() || req.bundle()[0] != '/')
    return absl::InvalidArgumentError(
        fmt::format("bundle {:?} must be an absolute path", req.bundle()));
  struct stat st;
  if (stat((req.bundle() + "/config.json").c_str(), &st) != 0)
    return absl::NotFoundError(
        fmt::format("bundle {}: no config.json: {}", req.bundle(), std::strerror(errno)));
  return absl::OkStatus();
}

absl::StatusOr<embedshim::ContainerRecord> Container::RecordForCreate(
    const std::string& ns, const containerd::task::v2::CreateTaskRequest& req) {
  auto options = DecodeRuntimeOptions(req.options());
  if (!options.ok()) return options.status();
  embedshim::ContainerRecord r;
  r.set_namespace_(ns);
  r.set_id(req.id());
  r.set_bundle(req.bundle());
  r.set_stdin(req.stdin());
  r.set_stdout(req.stdout());
  r.set_stderr(req.stderr());
  r.set_terminal(req.terminal());
  *r.mutable_options() = WithDefaults(*std::move(options));
  r.set_created_at_unix_nano(NowUnixNano());
  r.set_status(embedshim::CREATING);
  // A restore: Start runs `runc restore`. Options.CriuImagePath asks for one
  // too (containerd turns it into the checkpoint for runc's runtimes only).
  r.set_restore_checkpoint(!req.checkpoint().empty() ? req.checkpoint()
                                                     : r.options().criu_image_path());
  r.set_restore_parent_checkpoint(req.parent_checkpoint());
  for (const auto& m : req.rootfs()) {
    auto* mr = r.add_rootfs();
    mr->set_type(m.type());
    mr->set_source(m.source());
    for (const auto& o : m.options()) mr->add_options(o);
  }
  return r;
}

Container::~Container() {
  router_.Remove(init_.pid(), &init_);
  for (auto& [id, e] : execs_) router_.Remove(e->pid(), e.get());
}

embedshim::ContainerRecord Container::Record() const {
  embedshim::ContainerRecord r = record_;
  r.set_status(ToRecord(init_.status()));
  r.set_pid(static_cast<uint32_t>(init_.pid()));
  r.set_start_boottime(init_.start_boottime());
  r.set_exit_status(init_.exit_status());
  r.set_exited_at_unix_nano(init_.exited_at_unix_nano());
  for (const auto& [id, e] : execs_) *r.add_execs() = e->Record();
  return r;
}

void Container::Persist() const {
  if (absl::Status st = env_.store.Save(Record()); !st.ok())
    base::LogFor(base::LogLevel::kError, ns(), id(), "persisting state: {}", st);
}

absl::StatusOr<Process*> Container::Find(const std::string& exec_id) {
  if (exec_id.empty()) return &init_;
  auto e = FindExec(exec_id);
  if (!e.ok()) return e.status();
  if ((*e)->status() == Status::kDeleted)
    return absl::NotFoundError(fmt::format("exec {} of container {} not found", exec_id, id()));
  return *e;
}

absl::StatusOr<ExecProcess*> Container::FindExec(const std::string& exec_id) {
  auto it = execs_.find(exec_id);
  if (it == execs_.end())
    return absl::NotFoundError(fmt::format("exec {} of container {} not found", exec_id, id()));
  return it->second.get();
}

bool Container::AnyExecAlive() const {
  for (const auto& [id, e] : execs_)
    if (e->alive()) return true;
  return false;
}

absl::flat_hash_map<pid_t, std::string> Container::LiveExecIdsByPid() const {
  absl::flat_hash_map<pid_t, std::string> out;
  for (const auto& [id, e] : execs_)
    if (e->alive()) out[e->pid()] = id;
  return out;
}

std::vector<std::string> Container::TtyRelayNames() const {
  std::vector<std::string> out;
  if (record_.terminal()) out.push_back(init_.KeeperName("tty"));
  for (const auto& [id, e] : execs_)
    if (e->status() != Status::kDeleted) out.push_back(e->KeeperName("tty"));
  return out;
}

absl::Status Container::AddExec(const containerd::task::v2::ExecProcessRequest& req,
                                bool replayed) {
  if (!IsValidIdentifier(req.exec_id()))
    return absl::InvalidArgumentError(fmt::format("exec id {:?} is not valid", req.exec_id()));
  PruneDeletedExecs();
  if (auto it = execs_.find(req.exec_id()); it != execs_.end()) {
    if (replayed) return absl::OkStatus();  // the earlier server added it
    if (it->second->status() != Status::kDeleted)
      return absl::AlreadyExistsError(
          fmt::format("exec {} of container {} already exists", req.exec_id(), id()));
  }
  // runc-v2: a stopped (or deleted) init takes no new execs.
  if (init_.status() == Status::kStopped || init_.status() == Status::kDeleted ||
      init_.status() == Status::kCreating)
    return absl::FailedPreconditionError(fmt::format(
        "cannot exec in container {}: its init process is {}", id(), Name(init_.status())));
  embedshim::ExecRecord r;
  r.set_exec_id(req.exec_id());
  r.set_spec(req.spec().value());
  r.set_stdin(req.stdin());
  r.set_stdout(req.stdout());
  r.set_stderr(req.stderr());
  r.set_terminal(req.terminal());
  r.set_status(embedshim::CREATED);
  execs_[req.exec_id()] = std::make_unique<ExecProcess>(*this, std::move(r));
  Persist();
  events::TaskExecAdded ev;
  ev.set_container_id(id());
  ev.set_exec_id(req.exec_id());
  env_.events.Publish(ns(), "/tasks/exec-added", ev);
  base::LogFor(base::LogLevel::kInfo, ns(), id(), "exec {} added terminal={}", req.exec_id(), req.terminal());
  return absl::OkStatus();
}

ExecProcess& Container::RestoreExec(const embedshim::ExecRecord& r) {
  auto& e = execs_[r.exec_id()];
  e = std::make_unique<ExecProcess>(*this, r);
  if (e->alive()) router_.Add(e->pid(), e.get());
  return *e;
}

void Container::PruneDeletedExecs() {
  const int64_t before = NowUnixNano() - absl::ToInt64Nanoseconds(kDeletedExecLife);
  for (auto it = execs_.begin(); it != execs_.end();) {
    const ExecProcess& e = *it->second;
    if (e.status() == Status::kDeleted && e.deleted_at_unix_nano() < before) {
      router_.Remove(e.pid(), &e);
      it = execs_.erase(it);
    } else {
      ++it;
    }
  }
}

void Container::Recover() {
  for (auto& [id, e] : execs_) e->Recover();
}

void Container::WatchOom(bool recovered) {
  if (absl::Status st = env_.oom.Watch(Record()); !st.ok()) {
    base::LogFor(base::LogLevel::kWarn, ns(), id(), "no OOM events for this container: {}", st);
    return;
  }
  std::optional<uint64_t> counted = env_.oom.OomKills(ns(), id());
  if (!counted) return;
  if (!recovered) {
    record_.set_oom_kills_reported(*counted);
    return;
  }
  // TaskOOM is spooled before the count is persisted: one still waiting in
  // the spool was published by a server that died in between.
  if (*counted > record_.oom_kills_reported() && env_.events.Spooled("/tasks/oom", ns(), id())) {
    record_.set_oom_kills_reported(*counted);
    return Persist();
  }
  OnOomKills(*counted);
}

void Container::OnOomKills(uint64_t oom_kills) {
  const uint64_t reported = record_.oom_kills_reported();
  if (oom_kills == reported) return;
  // Fewer than published: a new cgroup under the old path counts afresh.
  for (uint64_t n = reported; n < oom_kills; ++n) {
    events::TaskOOM ev;
    ev.set_container_id(id());
    env_.events.Publish(ns(), "/tasks/oom", ev);
  }
  if (oom_kills > reported)
    base::LogFor(base::LogLevel::kInfo, ns(), id(), "OOM kills: {} (published {} new)", oom_kills,
           oom_kills - reported);
  record_.set_oom_kills_reported(oom_kills);
  Persist();
}

void Container::CheckOom() {
  if (std::optional<uint64_t> n = env_.oom.OomKills(ns(), id())) OnOomKills(*n);
}

}  // namespace shim::process
