// StateStore: one ContainerRecord per container, as JSON, replaced
// atomically (write a temp file, rename). What a restarted server and the
// `delete` subcommand read back.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "shim/process/environment.h"
#include "shim/state.pb.h"

namespace shim {

class StateStore final : public process::RecordStore {
 public:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}

  absl::Status Save(const embedshim::ContainerRecord& record) const override;
  absl::StatusOr<embedshim::ContainerRecord> Load(const std::string& ns,
                                                  const std::string& id) const;
  absl::Status Remove(const std::string& ns, const std::string& id) const override;
  // Every record; unreadable ones are reported in `errors` and skipped.
  std::vector<embedshim::ContainerRecord> LoadAll(std::vector<std::string>* errors) const override;

 private:
  std::string Path(const std::string& ns, const std::string& id) const;
  std::string dir_;
};

}  // namespace shim
