// Pure functions of shim/oci: ps output and runtime log errors (read with
// nlohmann::json), error codes, mount options, pid files.
#include <sys/mount.h>

#include <catch2/catch.hpp>

#include "shim/oci/mount.h"
#include "shim/oci/runc.h"
#include "test/support/fs_util.h"
#include "test/support/status_matchers.h"

namespace {

using shim::oci::LastLogError;
using shim::oci::ParseMountOptions;
using shim::oci::ParsePsJson;
using shim::oci::ReadPidFile;
using shim::oci::RuntimeError;

std::vector<pid_t> Pids(std::initializer_list<pid_t> l) { return l; }

TEST_CASE("ParsePsJson reads runc's and crun's arrays, and null", "[unit]") {
  auto p = ParsePsJson("[1234,5678]\n");
  REQUIRE_OK(p);
  CHECK(*p == Pids({1234, 5678}));

  p = ParsePsJson("[\n  25268\n]\n");  // crun pretty-prints
  REQUIRE_OK(p);
  CHECK(*p == Pids({25268}));

  p = ParsePsJson("null\n");
  REQUIRE_OK(p);
  CHECK(p->empty());

  p = ParsePsJson(" [ ] ");
  REQUIRE_OK(p);
  CHECK(p->empty());
}

TEST_CASE("ParsePsJson rejects what is not an array of pids", "[unit]") {
  for (std::string_view bad : {"", "[", "[1,", "[1 2]", "[1.5]", "[-1]", "[0]", "[\"1\"]", "{}",
                               "[1] x", "nullx", "[99999999999]", "[2147483648]",
                               "[1e3]", "[true]", "[null]", "[[1]]", "{\"pids\":[1]}",
                               "Incorrect Usage.\n"}) {
    INFO("input: '" << bad << "'");
    auto p = ParsePsJson(bad);
    CHECK(p.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("LastLogError takes the last error entry's msg", "[unit]") {
  // runc's field order, then crun's.
  std::string log =
      R"({"level":"info","msg":"starting","time":"2023-01-01T00:00:00Z"})"
      "\n"
      R"({"level":"error","msg":"first failure","time":"2023-01-01T00:00:00Z"})"
      "\n"
      R"({"msg":"kill container: No such process","level":"error","time":"2023-01-01T00:00:00.1Z"})"
      "\n"
      R"({"level":"warning","msg":"not this one"})"
      "\n";
  CHECK(LastLogError(log) == "kill container: No such process");
}

TEST_CASE("LastLogError decodes escapes and skips junk lines", "[unit]") {
  std::string log =
      "plain text that is not JSON\n"
      R"({"level":"error","msg":"exec: \"foo\": executable file not found in $PATH\n","x":{"a":[1,2]}})"
      "\n"
      R"({"level":"error","msg":"partial line without end)";
  CHECK(LastLogError(log) == "exec: \"foo\": executable file not found in $PATH");
  CHECK(LastLogError(R"({"level":"error","msg":"caf\u00e9 \ud83d\ude00 \/"})") ==
        "caf\xc3\xa9 \xf0\x9f\x98\x80 /");
  CHECK(LastLogError("").empty());
  CHECK(LastLogError(R"({"level":"info","msg":"fine"})").empty());
  CHECK(LastLogError(R"({"level":"fatal","msg":"dead"})") == "dead");
}

TEST_CASE("LastLogError reads only the level and msg strings of each object", "[unit]") {
  // Other members of any type are skipped; so are entries whose level or msg
  // is not a string, and lines that are not objects.
  CHECK(LastLogError(R"( { "x" : 12, "o": {"k": ["v", null]}, "level" : "error", "msg": "m" } )") ==
        "m");
  CHECK(LastLogError(R"({"level":"error","msg":7})").empty());
  CHECK(LastLogError(R"({"level":["error"],"msg":"m"})").empty());
  CHECK(LastLogError(R"(["level","error","msg","m"])").empty());
  CHECK(LastLogError(R"({"level":"error","msg":})").empty());
  CHECK(LastLogError(R"({"level":"error","msg":"m")").empty());
  // An earlier good entry survives a broken last line.
  CHECK(LastLogError("{\"level\":\"error\",\"msg\":\"kept\"}\n{\"level\":\"error\",\"msg\":") ==
        "kept");
}

TEST_CASE("Deep nesting is refused without overflowing the stack", "[unit]") {
  std::string deep(200000, '[');
  CHECK(ParsePsJson(deep).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParsePsJson(deep + std::string(200000, ']')).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(LastLogError(R"({"level":"error","msg":"m","x":)" + deep).empty());
}

TEST_CASE("RuntimeError maps 'gone' messages to NotFound, the rest to Unknown", "[unit]") {
  for (std::string_view gone : {"container does not exist", "container not running",
                                "kill container: No such process", "process already finished",
                                "cannot kill: NOT RUNNING"}) {
    INFO(gone);
    absl::Status s = RuntimeError("runc kill", gone);
    CHECK(s.code() == absl::StatusCode::kNotFound);
    CHECK(std::string(s.message()) == "runc kill: " + std::string(gone));
  }
  absl::Status s = RuntimeError("runc create", "JSON specification file config.json not found");
  CHECK(s.code() == absl::StatusCode::kUnknown);
  CHECK(std::string(s.message()) == "runc create: JSON specification file config.json not found");
}

TEST_CASE("ParseMountOptions: flags, clearing words, propagation, data", "[unit]") {
  auto o = ParseMountOptions({"rbind", "ro", "nosuid", "nodev", "noexec", "relatime"});
  CHECK(o.flags == (MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME));
  CHECK(o.propagation == 0);
  CHECK(o.data.empty());

  // A later word undoes an earlier one.
  o = ParseMountOptions({"ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync",
                         "async", "noatime", "atime", "relatime", "norelatime", "strictatime",
                         "nostrictatime", "nodiratime", "diratime", "defaults"});
  CHECK(o.flags == 0);

  o = ParseMountOptions({"bind", "remount", "sync", "nodiratime", "noatime", "strictatime"});
  CHECK(o.flags == (MS_BIND | MS_REMOUNT | MS_SYNCHRONOUS | MS_NODIRATIME | MS_NOATIME |
                    MS_STRICTATIME));

  // Filesystem-specific options keep their order in the data string.
  o = ParseMountOptions({"ro", "lowerdir=/a:/b", "upperdir=/u", "index=off", "workdir=/w"});
  CHECK(o.flags == MS_RDONLY);
  CHECK(o.data == "lowerdir=/a:/b,upperdir=/u,index=off,workdir=/w");
}

TEST_CASE("ParseMountOptions: propagation words, the last one winning", "[unit]") {
  struct Case {
    const char* word;
    unsigned long want;
  } cases[] = {
      {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
      {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
      {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
      {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
  };
  for (const Case& c : cases) {
    INFO(c.word);
    auto o = ParseMountOptions({"bind", c.word});
    CHECK(o.propagation == c.want);
    CHECK(o.flags == MS_BIND);  // never mixed into the main call's flags
    CHECK(o.data.empty());
  }
  CHECK(ParseMountOptions({"rshared", "private"}).propagation == MS_PRIVATE);
}

TEST_CASE("ReadPidFile", "[unit]") {
  test_support::ScopedTempDir dir;
  REQUIRE_OK(dir.status());
  REQUIRE_OK(test_support::WriteFile(dir.Sub("ok"), "1234\n"));
  auto pid = ReadPidFile(dir.Sub("ok"));
  REQUIRE_OK(pid);
  CHECK(*pid == 1234);

  REQUIRE_OK(test_support::WriteFile(dir.Sub("runc-style"), "42"));  // runc writes no newline
  pid = ReadPidFile(dir.Sub("runc-style"));
  REQUIRE_OK(pid);
  CHECK(*pid == 42);

  CHECK(ReadPidFile(dir.Sub("missing")).status().code() == absl::StatusCode::kNotFound);
  for (const char* bad : {"", "abc", "12x", "-5", "0"}) {
    INFO("content: '" << bad << "'");
    REQUIRE_OK(test_support::WriteFile(dir.Sub("bad"), bad));
    CHECK(ReadPidFile(dir.Sub("bad")).status().code() == absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
