// Fuzzes what recovery reads from state/<ns>/<id>.pb (shim/store/state_store.*):
// DecodeRecord on arbitrary bytes, and StateStore::LoadAll on a directory
// holding them, which takes the record or moves the file aside.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "base/log.h"
#include "shim/store/state_store.h"

namespace {

const std::string& Dir() {
  static const std::string* dir = [] {
    char tmpl[] = "/tmp/state-record-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) __builtin_trap();
    base::Log::Init("/dev/null", false);  // one error line per corrupt input
    return new std::string(tmpl);
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<embedshim::ContainerRecord> record = shim::DecodeRecord(bytes, "ns", "c1");
  if (record.ok()) {
    // What decodes, saved again, decodes again.
    if (!shim::DecodeRecord(record->SerializeAsString(), "ns", "c1").ok()) __builtin_trap();
  }

  const std::string& dir = Dir();
  mkdir((dir + "/ns").c_str(), 0700);
  std::string path = dir + "/ns/c1.pb";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 0;
  bool written = write(fd, data, size) == static_cast<ssize_t>(size);
  close(fd);
  if (!written) return 0;
  shim::StateStore store(dir);
  std::vector<std::string> errors;
  std::vector<embedshim::ContainerRecord> loaded = store.LoadAll(&errors);
  // Taken exactly when it decodes; otherwise moved aside, not left behind.
  if (loaded.size() != (record.ok() ? 1u : 0u)) __builtin_trap();
  if (!record.ok() && std::filesystem::exists(path)) __builtin_trap();
  std::error_code ec;
  std::filesystem::remove_all(dir + "/ns", ec);
  return 0;
}
