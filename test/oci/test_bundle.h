// Real-container helpers of the shim/oci root tests: a bundle with a busybox
// rootfs, and a guard that deletes the container however the test ends.
// Header-only; Catch2 assertions inside.
#pragma once

#include <string>
#include <utility>

#include <catch2/catch.hpp>

#include "shim/oci/runc.h"
#include "test/support/busybox_rootfs.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"
#include "test/support/subprocess.h"

namespace oci_test {

// A bundle made by `runc spec`, with a busybox rootfs, the given process args
// (a JSON list body) and, unless `terminal`, no terminal.
struct TestBundle {
  explicit TestBundle(const std::string& args_json, bool terminal = false) {
    REQUIRE_OK(tmp.status());
    bundle = tmp.Sub("bundle");
    root = tmp.Sub("runtime-root");
    REQUIRE_OK(test_support::MakeDirs(bundle));
    REQUIRE_OK(test_support::BusyboxRootfs(bundle + "/rootfs"));
    auto spec = test_support::Run({"runc", "spec", "--bundle", bundle});
    REQUIRE_OK(spec);
    REQUIRE(spec->ok());
    auto config = test_support::ReadFile(bundle + "/config.json");
    REQUIRE_OK(config);
    if (!terminal) Replace(*config, "\"terminal\": true", "\"terminal\": false");
    Replace(*config, "\"args\": [\n\t\t\t\"sh\"\n\t\t]", "\"args\": [" + args_json + "]");
    REQUIRE_OK(test_support::WriteFile(bundle + "/config.json", *config));
  }

  static void Replace(std::string& text, const std::string& from, const std::string& to) {
    size_t at = text.find(from);
    INFO("config.json does not contain: " << from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
  }

  shim::oci::RuncConfig Config(const std::string& binary) const {
    shim::oci::RuncConfig c;
    c.binary = binary;
    c.root = root;
    c.log_path = bundle + "/log.json";
    return c;
  }

  test_support::ScopedTempDir tmp;
  std::string bundle, root;
};

// Deletes the container however the test ends.
struct ContainerGuard {
  ContainerGuard(const shim::oci::Runc& runc, std::string id) : runc(runc), id(std::move(id)) {}
  ~ContainerGuard() { (void)runc.Delete(id, /*force=*/true); }
  const shim::oci::Runc& runc;
  std::string id;
};

}  // namespace oci_test
