#include "shim/manager/start_input.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "base/errno_status.h"
#include "fmt/format.h"
#include "google/protobuf/unknown_field_set.h"

namespace shim {
namespace {

// The option types this shim reads (shim/process/runtime_options.h); the options
// are the first extension of one of them.
bool IsRuntimeOptionsType(std::string_view type_url) {
  if (size_t slash = type_url.rfind('/'); slash != std::string_view::npos)
    type_url.remove_prefix(slash + 1);
  for (std::string_view known : {"containerd.runc.v1.Options", "containerd.linux.runc.RuncOptions",
                                 "containerd.linux.runc.CreateOptions", "runtimeoptions.v1.Options"})
    if (type_url == known) return true;
  return false;
}

// Whether fields 1 and 2 of `bytes` are -id and -namespace, as in a
// BootstrapParams for this task. Read as raw fields: an Any's value (the
// options) need not be UTF-8, and decoding it as a string field would fail
// with a protobuf error on stderr.
bool NamesThisTask(std::string_view bytes, const Flags& flags) {
  google::protobuf::UnknownFieldSet fields;
  if (flags.id.empty() || !fields.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return false;
  std::string_view id, ns;
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& f = fields.field(i);
    if (f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    if (f.number() == 1) id = f.length_delimited();
    if (f.number() == 2) ns = f.length_delimited();
  }
  return id == flags.id && ns == flags.namespace_;
}

}  // namespace

absl::StatusOr<StartInput> ParseStartInput(std::string_view bytes, const Flags& flags) {
  StartInput input;
  if (bytes.empty()) return input;
  const int size = static_cast<int>(bytes.size());
  containerd::runtime::bootstrap::v1::BootstrapParams params;
  if (NamesThisTask(bytes, flags) && params.ParseFromArray(bytes.data(), size)) {
    for (const auto& extension : params.extensions()) {
      if (extension.has_value() && IsRuntimeOptionsType(extension.value().type_url())) {
        input.options = extension.value();
        break;
      }
    }
    input.bootstrap = std::move(params);
    return input;
  }
  // An Any has fields 1 and 2 only: anything more (containerd's version,
  // addresses, extensions) is not one.
  google::protobuf::Any any;
  if (any.ParseFromArray(bytes.data(), size) && any.GetReflection()->GetUnknownFields(any).empty()) {
    input.options = std::move(any);
    return input;
  }
  if (params.ParseFromArray(bytes.data(), size))
    return absl::InvalidArgumentError(fmt::format(
        "stdin is a BootstrapParams for task {:?} in namespace {:?}, not for -id {:?} "
        "-namespace {:?}",
        params.instance_id(), params.namespace_(), flags.id, flags.namespace_));
  return absl::InvalidArgumentError(fmt::format(
      "stdin ({} bytes) is neither the runtime options (a google.protobuf.Any) nor a "
      "BootstrapParams",
      bytes.size()));
}

absl::StatusOr<std::string> ReadStartStdin(int fd, int timeout_ms) {
  if (isatty(fd)) return std::string();
  std::string all;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int ready = poll(&p, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return base::ErrnoStatus("poll stdin");
    if (ready == 0)
      return absl::DeadlineExceededError(fmt::format(
          "stdin: no end of file after {} ms (containerd closes it at once)", timeout_ms));
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == EBADF) return all;  // no stdin at all
      return base::ErrnoStatus("read stdin");
    }
    if (n == 0) return all;
    all.append(buf, static_cast<size_t>(n));
    if (all.size() > kMaxStartInput)
      return absl::InvalidArgumentError(
          fmt::format("stdin: more than {} bytes: not containerd's options", kMaxStartInput));
  }
}

}  // namespace shim
