// Recovery: what a restarted server (after a crash or a live upgrade) reads
// back from the records, and the tombstones that let a Delete replayed to a
// later server get the answer the earlier one gave. Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "shim/process/container.h"
#include "shim/process/environment.h"
#include "shim/process/exit_router.h"
#include "shim/store/state.pb.h"

namespace shim::process {

struct RecoveredContainers {
  // Restored with their execs; starts in flight resolved, OOM kills watched.
  std::vector<std::unique_ptr<Container>> live;
  // Creates in flight whose `runc create` the dead server had spawned: each
  // is settled on its container's turn (InitProcess::SettleOrphanedCreate).
  std::vector<std::unique_ptr<Container>> orphaned_creates;
  // Deleted containers' last records, for Tombstones::Add.
  std::vector<embedshim::ContainerRecord> deleted;
};

// Reads every record back. A create in flight whose `runc create` was never
// spawned is undone here (its record removed); read errors are logged. The
// exits that happened while no server ran are the caller's to replay, once
// the containers are in place.
RecoveredContainers RecoverContainers(Environment& env, ExitRouter& router);

// Deleted containers' last records, kept kLife for replayed Deletes.
class Tombstones {
 public:
  static constexpr absl::Duration kLife = absl::Minutes(2);

  // `has_container(ns, id)`: a container of that key lives again, so the
  // record in the store is its own and an expiring tombstone leaves it.
  Tombstones(Environment& env, std::function<bool(const std::string&, const std::string&)> has_container)
      : env_(env), has_container_(std::move(has_container)) {}

  // Saves c's record as deleted (now) and keeps it.
  void Bury(const Container& c);
  // Keeps `record` (deleted) for kLife; then its record leaves the store.
  void Add(const embedshim::ContainerRecord& record);
  // The deleted container's last record, or null.
  const embedshim::ContainerRecord* Find(const std::string& ns, const std::string& id) const;
  // A container of that key is created again.
  void Erase(const std::string& ns, const std::string& id) { tombstones_.erase(Key{ns, id}); }

 private:
  using Key = std::pair<std::string, std::string>;  // (namespace, id)

  Environment& env_;
  std::function<bool(const std::string&, const std::string&)> has_container_;
  absl::flat_hash_map<Key, embedshim::ContainerRecord> tombstones_;
};

}  // namespace shim::process
