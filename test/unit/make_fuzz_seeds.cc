// make_fuzz_seeds DIR: writes the binary seeds of the fuzz targets into
// DIR/<target>/ (test/fuzz/corpus in git is its output, plus the hand-made
// text seeds). Each seed is a small valid input of the real shape, so the
// fuzzer starts past the first parse. Run by hand when a format changes:
//   build/test/unit/make_fuzz_seeds test/fuzz/corpus
#include <sys/stat.h>

#include <cstdio>
#include <string>

#include "events_task.pb.h"
#include "events_ttrpc.pb.h"
#include "google/protobuf/any.pb.h"
#include "keeper/channel.h"
#include "keeper/upgrade_state.h"
#include "runc_options.pb.h"
#include "runctypes.pb.h"
#include "runtimeoptions.pb.h"
#include "shim.pb.h"
#include "shim/manager/bootstrap.pb.h"
#include "shim/store/state.pb.h"
#include "ttrpc/wire.h"

namespace {

std::string root;

void Put(const std::string& target, const std::string& name, const std::string& bytes) {
  std::string dir = root + "/" + target;
  mkdir(dir.c_str(), 0755);
  std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fclose(f);
}

// The datagram keeper::SendMsg sends (fds apart).
std::string Datagram(keeper::MsgType type, uint64_t conn, uint32_t arg, const std::string& text,
                     const std::string& data) {
  std::string out(1, static_cast<char>(type));
  out.append(reinterpret_cast<const char*>(&conn), 8);
  out.append(reinterpret_cast<const char*>(&arg), 4);
  uint32_t len = static_cast<uint32_t>(text.size());
  out.append(reinterpret_cast<const char*>(&len), 4);
  return out + text + data;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  root = argv[1];
  mkdir(root.c_str(), 0755);

  // ttrpc frames: a Create and a Kill request (frame_fuzz takes a split byte first).
  containerd::task::v2::CreateTaskRequest create;
  create.set_id("c1");
  create.set_bundle("/run/b/c1");
  create.set_stdout("/run/fifo/out");
  std::string create_frame = ttrpc::EncodeRequestFrame(
      1, "containerd.task.v2.Task", "Create", create.SerializeAsString(), {}, absl::Seconds(1));
  containerd::task::v2::KillRequest kill;
  kill.set_id("c1");
  kill.set_signal(9);
  std::string kill_frame = ttrpc::EncodeRequestFrame(3, "containerd.task.v2.Task", "Kill",
                                                     kill.SerializeAsString(), {}, {});
  Put("frame_fuzz", "create", "\x07" + create_frame);
  Put("frame_fuzz", "kill", std::string(1, '\0') + kill_frame);
  Put("server_fuzz", "echo", ttrpc::EncodeRequestFrame(1, "svc", "Echo", "hi", {}, {}));
  Put("server_fuzz", "hold-then-echo",
      ttrpc::EncodeRequestFrame(1, "svc", "Hold", "", {}, {}) +
          ttrpc::EncodeRequestFrame(3, "svc", "Echo", "x", {}, {}));

  // The keeper channel: a frame, a connection, a terminal resize.
  Put("channel_fuzz", "frame", Datagram(keeper::MsgType::kFrame, 4, keeper::kFrameReplayed, "", kill_frame));
  Put("channel_fuzz", "conn-open", Datagram(keeper::MsgType::kConnOpen, 4, 0, "default", ""));
  Put("channel_fuzz", "tty-resize", Datagram(keeper::MsgType::kTtyResize, 24, 80, "tty/ns/c1/", ""));

  // A state record: a running container with an exec.
  embedshim::ContainerRecord record;
  record.set_namespace_("ns");
  record.set_id("c1");
  record.set_bundle("/run/b/c1");
  record.set_pid(4242);
  record.set_start_boottime(123456789);
  record.set_status(embedshim::RUNNING);
  record.set_stdout("/run/fifo/out");
  record.mutable_options()->set_binary_name("runc");
  auto* mount = record.add_rootfs();
  mount->set_type("overlay");
  mount->add_options("lowerdir=/a");
  auto* exec = record.add_execs();
  exec->set_exec_id("e1");
  exec->set_spec(R"({"args":["true"]})");
  exec->set_status(embedshim::STOPPED);
  exec->set_exit_status(3);
  Put("state_record_fuzz", "running-with-exec", record.SerializeAsString());
  record.clear_execs();
  record.set_status(embedshim::DELETED);
  Put("state_record_fuzz", "tombstone", record.SerializeAsString());

  // A spooled TaskExit, as Publish writes it.
  containerd::events::TaskExit exit;
  exit.set_container_id("c1");
  exit.set_id("c1");
  exit.set_pid(4242);
  exit.set_exit_status(7);
  containerd::services::events::ttrpc::v1::ForwardRequest forward;
  forward.mutable_envelope()->set_namespace_("default");
  forward.mutable_envelope()->set_topic("/tasks/exit");
  forward.mutable_envelope()->mutable_event()->set_type_url("containerd.events.TaskExit");
  forward.mutable_envelope()->mutable_event()->set_value(exit.SerializeAsString());
  Put("event_spool_fuzz", "task-exit", forward.SerializeAsString());

  // Runtime options: the first byte picks the type (runtime_options_fuzz.cc).
  containerd::runc::v1::Options runc;
  runc.set_binary_name("crun");
  runc.set_systemd_cgroup(true);
  runc.set_io_uid(1000);
  Put("runtime_options_fuzz", "runc-v1", std::string(1, '\0') + runc.SerializeAsString());
  containerd::linux::runc::CreateOptions create_options;
  create_options.set_no_pivot_root(true);
  Put("runtime_options_fuzz", "create-options",
      std::string(1, '\3') + create_options.SerializeAsString());

  // start's stdin: an options Any, and 2.3's BootstrapParams carrying one.
  google::protobuf::Any any;
  any.set_type_url("containerd.runc.v1.Options");
  any.set_value(runc.SerializeAsString());
  Put("start_input_fuzz", "options-any", any.SerializeAsString());
  containerd::runtime::bootstrap::v1::BootstrapParams params;
  params.set_instance_id("c1");
  params.set_namespace_("default");
  params.set_containerd_version("v2.3.0");
  *params.add_extensions()->mutable_value() = any;
  Put("start_input_fuzz", "bootstrap", params.SerializeAsString());
  return 0;
}
