// Which Task API a containerd takes from `start`, and the answer that says
// so. containerd 1.6 reads all of start's stdout as the address, 1.7 rejects
// a bootstrap of version 3, 2.x takes {"version":3,...} and then calls
// containerd.task.v3.Task (containerd v2.0.0 core/runtime/v2/shim.go and
// pkg/shim/shim.go; 1.7 rejects version > 2 in the same parser). The server
// serves v2 and v3 alike; this only picks what to announce.
//
// Protobuf-free: the launcher's fast path (start_fast.cc) uses it too.
#pragma once

#include <string>
#include <string_view>

namespace shim {

// 3 if `containerd_binary` (start's -publish-binary: containerd's own
// executable) is containerd 2.x, else 2. Nothing in the environment or the
// flags tells 1.7 from 2.0-2.2 (MAX_SHIM_VERSION is 2 in all of them), but
// Go's build info in the executable names the module: from 2.0 on it is
// github.com/containerd/containerd/v2. A few small reads of the ELF file;
// anything unreadable is 2, which every containerd accepts.
int TaskApiVersionOf(const std::string& containerd_binary);

// Whether Go build info `modinfo` (or any text holding it) names
// containerd's v2 module, as the main module or a dependency.
bool NamesContainerdV2Module(std::string_view modinfo);

// What `start` prints for `address` (unix://...): the address itself for
// version 2; for 3 the bootstrap JSON {"version":3,"address":...,"protocol":"ttrpc"}.
std::string StartAnswer(const std::string& address, int task_api_version);

}  // namespace shim
