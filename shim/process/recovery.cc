#include "shim/process/recovery.h"

#include <unistd.h>

#include "base/absl_fmt.h"
#include "base/event_loop.h"
#include "base/log.h"
#include "bpf/pidfd.h"
#include "shim/process/clock.h"
#include "shim/process/runtime_marker.h"

namespace shim::process {

RecoveredContainers RecoverContainers(Environment& env, ExitRouter& router) {
  RecoveredContainers out;
  std::vector<std::string> errors;
  for (auto& record : env.store.LoadAll(&errors)) {
    if (record.status() == embedshim::DELETED) {
      out.deleted.push_back(std::move(record));
      continue;
    }
    if (record.status() == embedshim::CREATING &&
        access(CreateRuntimeMarker(record.bundle()).c_str(), F_OK) == 0) {
      // Its `runc create` was spawned and may run on as an orphan: waited
      // for and adopted (or undone), never raced by a second one.
      out.orphaned_creates.push_back(std::make_unique<Container>(env, router, record));
      continue;
    }
    if (record.status() == embedshim::CREATING) {
      // The server died during a create before it spawned `runc create`:
      // undo it. The replayed Create, if containerd still waits for it,
      // then starts afresh. Rare, so done here, synchronously.
      base::LogFor(base::LogLevel::kWarn, record.namespace_(), record.id(),
             "cleaning up a create that was in flight");
      (void)env.runtime.Delete(record, /*force=*/true);
      (void)env.store.Remove(record.namespace_(), record.id());
      continue;
    }
    auto c = std::make_unique<Container>(env, router, record);
    for (const auto& exec : record.execs()) c->RestoreExec(exec);
    const InitProcess& init = c->init();
    if (init.alive()) {
      // Still the same process? (A stopped one is reported by the replay.)
      auto same = bpf::IsSameLiveProcess(init.pid(), init.start_boottime());
      if (same.ok() && !*same)
        base::LogFor(base::LogLevel::kWarn, c->ns(), c->id(), "pid {} is no longer the container's process",
               init.pid());
    }
    // `runc start` ran but the server died before it said so: once runc
    // init has exec'd the user's process, the container was started.
    if (init.status() == Status::kCreated && !env.runtime.WaitsInInit(init.pid()))
      c->init().MarkStarted();
    c->Recover();
    // Its cgroup lives until the Delete; an exit replayed after recovery is
    // then preceded by the OOM kills counted meanwhile.
    if (c->init().status() != Status::kStopped) c->WatchOom(/*recovered=*/true);
    out.live.push_back(std::move(c));
  }
  for (const auto& e : errors) base::LogError("recover: {}", e);
  return out;
}

void Tombstones::Bury(const Container& c) {
  // A tombstone, so that a Delete replayed to a later server gets this answer.
  embedshim::ContainerRecord record = c.Record();
  record.set_deleted_at_unix_nano(NowUnixNano());
  if (absl::Status st = env_.store.Save(record); !st.ok())
    base::LogFor(base::LogLevel::kError, c.ns(), c.id(), "persisting state: {}", st);
  Add(record);
}

void Tombstones::Add(const embedshim::ContainerRecord& r) {
  Key key{r.namespace_(), r.id()};
  tombstones_[key] = r;
  // Long enough for any replay of the Delete; then the record goes.
  env_.loop.RunAfter(kLife, [this, key, deleted_at = r.deleted_at_unix_nano()] {
    auto it = tombstones_.find(key);
    if (it == tombstones_.end() || it->second.deleted_at_unix_nano() != deleted_at) return;
    tombstones_.erase(it);
    if (!has_container_(key.first, key.second)) (void)env_.store.Remove(key.first, key.second);
  });
}

const embedshim::ContainerRecord* Tombstones::Find(const std::string& ns,
                                                   const std::string& id) const {
  auto it = tombstones_.find(Key{ns, id});
  return it == tombstones_.end() ? nullptr : &it->second;
}

}  // namespace shim::process
