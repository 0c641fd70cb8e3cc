// StateStore: one ContainerRecord per container, binary protobuf, replaced
// atomically (write a temp file, rename). What a restarted server and the
// `delete` subcommand read back.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "shim/process/environment.h"
#include "shim/store/state.pb.h"

namespace shim {

// The record `bytes` hold, stored as <ns>/<id>.pb. DataLoss, saying what is
// wrong, for bytes that do not parse and for a record recovery cannot trust:
// another namespace or id, an id that is no identifier, an unknown status,
// a pid no process can have, an exec id that is empty, a path component or
// named twice.
absl::StatusOr<embedshim::ContainerRecord> DecodeRecord(std::string_view bytes,
                                                        const std::string& ns,
                                                        const std::string& id);

class StateStore final : public process::RecordStore {
 public:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}

  absl::Status Save(const embedshim::ContainerRecord& record) const override;
  absl::StatusOr<embedshim::ContainerRecord> Load(const std::string& ns,
                                                  const std::string& id) const;
  absl::Status Remove(const std::string& ns, const std::string& id) const override;
  // Every record; unreadable ones are reported in `errors` and skipped.
  // A corrupt one (DecodeRecord fails) is moved aside (base/corrupt_file.h),
  // so that it neither stops this recovery nor comes back in the next.
  std::vector<embedshim::ContainerRecord> LoadAll(std::vector<std::string>* errors) const override;

 private:
  std::string Path(const std::string& ns, const std::string& id) const;
  std::string dir_;
};

}  // namespace shim
