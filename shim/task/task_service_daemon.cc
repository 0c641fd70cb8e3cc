// TaskService's side towards the daemon and the admin service rather than
// containerd: recovery at start-up (the records are read back by
// process::RecoverContainers), the creates it left in flight, ps's snapshot,
// upgrade's terminal relays, OOM kills and the unused server's exit.
#include <algorithm>
#include <memory>

#include "base/log.h"
#include "shim/process/recovery.h"
#include "shim/task/task_service.h"

namespace shim {

using process::Container;

void TaskService::OnOomKills(const std::string& ns, const std::string& id, uint64_t oom_kills) {
  if (auto it = containers_.find(Key{ns, id}); it != containers_.end())
    it->second->OnOomKills(oom_kills);
}

void TaskService::SettleOrphanedCreate(Container& c) {
  c.queue().Run([this, key = Key{c.ns(), c.id()}](Turn turn) {
    auto it = containers_.find(key);
    if (it == containers_.end()) return;
    it->second->init().SettleOrphanedCreate(
        [this, key, turn = std::make_shared<Turn>(std::move(turn))](absl::StatusOr<bool> adopted) {
          if (adopted.ok() && *adopted) return;
          Forget(key);  // a replayed Create queued behind it creates afresh
        });
  });
}

bool TaskService::ShutdownIfUnused() {
  if (creates_seen_ > 0 || !containers_.empty()) return false;
  shutdown_requested_ = true;
  MaybeIdle();
  return true;
}

std::vector<embedshim::ContainerStatus> TaskService::Snapshot() const {
  std::vector<embedshim::ContainerStatus> out;
  for (const auto& [key, c] : containers_) {
    const process::InitProcess& init = c->init();
    embedshim::ContainerStatus s;
    s.set_namespace_(c->ns());
    s.set_id(c->id());
    s.set_pid(static_cast<uint32_t>(init.pid()));
    s.set_status(std::string(process::Name(init.status())));
    s.set_exit_status(init.exit_status());
    s.set_created_at_unix_nano(c->base().created_at_unix_nano());
    s.set_exited_at_unix_nano(init.exited_at_unix_nano());
    s.set_pid_check(std::string(init.PidCheck()));
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.namespace_(), a.id()) < std::tie(b.namespace_(), b.id());
  });
  return out;
}

std::vector<std::string> TaskService::Namespaces() const {
  std::vector<std::string> out;
  for (const auto& [key, c] : containers_) {
    if (std::find(out.begin(), out.end(), key.first) == out.end()) out.push_back(key.first);
  }
  return out;
}

void TaskService::DropUnknownTtys(absl::flat_hash_set<std::string> held) {
  absl::flat_hash_set<std::string> known;
  for (const auto& [key, c] : containers_)
    for (auto& name : c->TtyRelayNames()) known.insert(std::move(name));
  for (const auto& name : held) {
    if (known.contains(name)) continue;
    base::LogWarn("dropping terminal relay {}: no such process", name);
    env_.keeper.DropTty(name);
  }
}

void TaskService::Recover() {
  process::RecoveredContainers recovered = process::RecoverContainers(env_, router_);
  for (const auto& record : recovered.deleted) tombstones_.Add(record);
  for (auto& c : recovered.live) containers_[Key{c->ns(), c->id()}] = std::move(c);
  for (auto& c : recovered.orphaned_creates) {
    Container& settling = *c;
    containers_[Key{c->ns(), c->id()}] = std::move(c);
    SettleOrphanedCreate(settling);
  }
  // Exits recorded while no server ran: the pinned map is the truth.
  if (auto exits = replay_(); exits.ok()) {
    for (const auto& exit : *exits) OnExit(exit);
  }
  base::LogInfo("recovered {} containers", containers_.size());
}

}  // namespace shim
