// What recovery does with a file it cannot read (a state record, a spooled
// event, the keeper's upgrade state): it is kept, under a name no loader
// picks up again, with an error line in the log naming the file and the
// reason, and recovery goes on with everything else. Kept rather than
// removed: whoever looks into why can read it.
#pragma once

#include <string>
#include <string_view>

namespace base {

// The name a corrupt `path` is kept under: "<path>.corrupt-<unix seconds>".
std::string CorruptName(const std::string& path);

// Whether a directory entry is one such kept file.
bool IsCorruptName(std::string_view name);

// Renames `path` to CorruptName(path) and logs it with `reason`. Returns the
// new name, or "" if the rename failed (logged too; then the file is removed
// so that it cannot stop the next recovery).
std::string MoveAsideCorrupt(const std::string& path, std::string_view reason);

// For state that never was a file (the keeper's memfd): writes `bytes` to
// CorruptName(path) and logs it with `reason`.
void KeepCorruptCopy(const std::string& path, std::string_view bytes, std::string_view reason);

}  // namespace base
