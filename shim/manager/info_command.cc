// `-info`: containerd 2.x's introspection of a runtime (`ctr plugins
// inspect-runtime`, CRI's runtime handler features, idmap checks at create).
// Answered as runc-v2 answers it: a containerd.types.RuntimeInfo on stdout.
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "base/absl_fmt.h"
#include "google/protobuf/any.pb.h"
#include "shim/manager/commands.h"
#include "shim/manager/introspection.pb.h"
#include "shim/manager/start_input.h"
#include "shim/oci/runc.h"
#include "shim/process/runtime_options.h"

namespace shim {
namespace {

constexpr char kRuntimeName[] = "io.containerd.embed.v1";
// The type URL runc-v2 gives the features (a Go struct registered with
// typeurl, JSON in the Any's value): what containerd's CRI unpacks.
constexpr char kFeaturesTypeUrl[] =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

std::string TrimNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

int RunInfo(const Flags&) {
  absl::StatusOr<std::string> stdin_bytes = ReadStartStdin();
  if (!stdin_bytes.ok()) {
    fmt::print(stderr, "-info: {}\n", stdin_bytes.status());
    return 1;
  }
  containerd::types::RuntimeInfo info;
  info.set_name(kRuntimeName);
  info.mutable_version()->set_version(SHIM_VERSION);

  embedshim::RuntimeOptions options;
  if (!stdin_bytes->empty()) {
    google::protobuf::Any any;
    if (!any.ParseFromString(*stdin_bytes)) {
      fmt::print(stderr, "-info: stdin is not the runtime options (a google.protobuf.Any)\n");
      return 1;
    }
    absl::StatusOr<embedshim::RuntimeOptions> decoded = DecodeRuntimeOptions(any);
    if (!decoded.ok()) {
      fmt::print(stderr, "-info: {}\n", decoded.status());
      return 1;
    }
    options = *decoded;
    *info.mutable_options() = std::move(any);
  }
  options = WithDefaults(options);

  // As runc-v2: a runtime without `features` (youki, old runc) still gets
  // an answer, only without features. Nothing goes to stderr then: the
  // answer is what containerd reads.
  oci::RuncConfig config;
  config.binary = options.binary_name();
  config.timeout = std::chrono::seconds(10);
  if (absl::StatusOr<std::string> features = oci::Runc(config).Features(); features.ok()) {
    google::protobuf::Any* any = info.mutable_features();
    any->set_type_url(kFeaturesTypeUrl);
    any->set_value(TrimNewlines(*features));
  }

  std::string out;
  if (!info.SerializeToString(&out)) {
    fmt::print(stderr, "-info: cannot serialize the RuntimeInfo\n");
    return 1;
  }
  if (fwrite(out.data(), 1, out.size(), stdout) != out.size() || fflush(stdout) != 0) return 1;
  return 0;
}

}  // namespace shim
