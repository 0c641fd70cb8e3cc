#include "shim/task/task_service.h"

#include <unistd.h>

#include "base/absl_fmt.h"
#include "base/log.h"
#include "base/worker_pool.h"
#include "keeper/link.h"
#include "bpf/pidfd.h"
#include "fmt/format.h"
#include "google/protobuf/empty.pb.h"
#include "runc_options.pb.h"
#include "shim.pb.h"
#include "shim/process/checkpoint_options.h"
#include "shim/process/exit_report.h"
#include "shim/process/identifier.h"
#include "shim/task/cgroup_metrics.h"

namespace shim {

namespace task = containerd::task::v2;
using process::Container;
using process::Event;
using process::Process;
using process::Status;

struct TaskService::Call {
  std::string ns;
  std::string payload;
  ttrpc::Responder responder;
  bool replayed = false;  // an earlier server may already have acted on it

  template <class Req>
  absl::StatusOr<Req> Parse() const {
    Req req;
    if (!req.ParseFromString(payload))
      return absl::InvalidArgumentError(
          fmt::format("cannot decode {}", Req::descriptor()->full_name()));
    return req;
  }
  void Reply(const google::protobuf::Message& resp) const {
    responder.Reply(resp.SerializeAsString());
  }
  void Fail(const absl::Status& status) const { responder.Reply(status); }
  // Empty on success, else the error.
  void Answer(const absl::Status& status) const {
    if (status.ok()) Reply(google::protobuf::Empty());
    else Fail(status);
  }
};

namespace {

constexpr char kNamespaceKey[] = "containerd-namespace-ttrpc";

// The turn, held by whichever callback finishes the call.
using SharedTurn = std::shared_ptr<process::SerialQueue::Turn>;
SharedTurn Share(process::SerialQueue::Turn turn) {
  return std::make_shared<process::SerialQueue::Turn>(std::move(turn));
}

}  // namespace

TaskService::TaskService(process::Environment& env, ReplayExits replay)
    : env_(env), replay_(std::move(replay)), router_(env.exits) {}

void TaskService::RegisterOn(ttrpc::Server& server) {
  using Method = void (TaskService::*)(Call);
  const std::pair<const char*, Method> methods[] = {
      {"Create", &TaskService::Create},     {"Start", &TaskService::Start},
      {"State", &TaskService::State},       {"Kill", &TaskService::Kill},
      {"Wait", &TaskService::Wait},         {"Delete", &TaskService::Delete},
      {"Pids", &TaskService::Pids},         {"Connect", &TaskService::Connect},
      {"Shutdown", &TaskService::Shutdown}, {"CloseIO", &TaskService::CloseIO},
      {"Pause", &TaskService::Pause},       {"Resume", &TaskService::Resume},
      {"Stats", &TaskService::Stats},       {"Exec", &TaskService::Exec},
      {"ResizePty", &TaskService::ResizePty}, {"Update", &TaskService::Update},
      {"Checkpoint", &TaskService::Checkpoint},
  };
  // containerd 2.x may speak v3; its messages are v2's under another name.
  for (const char* service : {"containerd.task.v2.Task", "containerd.task.v3.Task"}) {
    for (auto [name, method] : methods) {
      server.Register(service, name, [this, method](ttrpc::RequestContext ctx,
                                                    std::string payload,
                                                    ttrpc::Responder responder) {
        // containerd 1.7+ name the namespace in metadata; 1.6 does not, and
        // then the socket the connection came in on names it.
        Call call{std::string(ttrpc::FindMetadata(ctx.metadata, kNamespaceKey)
                                  .value_or(keeper::ListenerLabel(ctx))),
                  std::move(payload), std::move(responder), keeper::Replayed(ctx)};
        if (!IsValidIdentifier(call.ns)) {
          call.Fail(absl::InvalidArgumentError(fmt::format(
              "request namespace {:?} is not a valid identifier (send {} metadata, or "
              "use the socket `start` returned for the namespace)", call.ns, kNamespaceKey)));
          return;
        }
        (this->*method)(std::move(call));
      });
    }
  }
}

absl::StatusOr<Container*> TaskService::Find(const std::string& ns, const std::string& id) {
  if (!IsValidIdentifier(id))
    return absl::InvalidArgumentError(fmt::format("container id {:?} is not valid", id));
  auto it = containers_.find(Key{ns, id});
  if (it == containers_.end())
    return absl::NotFoundError(fmt::format("container {} not created", id));
  return it->second.get();
}

absl::StatusOr<Process*> TaskService::FindProcess(const std::string& ns, const std::string& id,
                                                  const std::string& exec_id) {
  auto c = Find(ns, id);
  if (!c.ok()) return c.status();
  return (*c)->Find(exec_id);
}

void TaskService::Serially(Call call, const std::string& id,
                           std::function<void(Call, Container&, Turn)> op) {
  auto found = Find(call.ns, id);
  if (!found.ok()) return call.Fail(found.status());
  (*found)->queue().Run([this, key = Key{call.ns, id}, call = std::move(call),
                         op = std::move(op)](Turn turn) mutable {
    auto it = containers_.find(key);
    if (it == containers_.end())
      return call.Fail(absl::NotFoundError(fmt::format("container {} not found", key.second)));
    op(std::move(call), *it->second, std::move(turn));
  });
}

void TaskService::Create(Call call) {
  ++creates_seen_;
  auto req = call.Parse<task::CreateTaskRequest>();
  if (!req.ok()) return call.Fail(req.status());
  const std::string id = req->id();  // a copy: req is moved into the op below
  if (absl::Status st = Container::CheckCreateRequest(*req); !st.ok()) return call.Fail(st);
  Key key{call.ns, id};
  if (auto it = containers_.find(key); it != containers_.end()) {
    // A replayed Create for the same bundle gets the same answer.
    const Container& c = *it->second;
    if (c.bundle() == req->bundle() && c.init().pid() != 0) {
      task::CreateTaskResponse resp;
      resp.set_pid(static_cast<uint32_t>(c.init().pid()));
      return call.Reply(resp);
    }
    // The dead server's create is being settled (adopted or undone): the
    // replay is answered after it, with the adopted pid or a create afresh.
    if (call.replayed && c.bundle() == req->bundle() && c.init().status() == Status::kCreating &&
        it->second->queue().busy()) {
      return it->second->queue().Run([this, call = std::move(call)](Turn turn) mutable {
        turn.Release();
        Create(std::move(call));
      });
    }
    return call.Fail(absl::AlreadyExistsError(fmt::format("container {} already exists", id)));
  }
  auto record = Container::RecordForCreate(call.ns, *req);
  if (!record.ok()) return call.Fail(record.status());
  // One shim serves every container: it cannot move into each one's
  // ShimCgroup (docs/OPTIONS.md). Said when it changes, never an error.
  if (const std::string& cg = record->options().shim_cgroup(); !cg.empty() && cg != shim_cgroup_noted_) {
    shim_cgroup_noted_ = cg;
    base::LogInfo("ShimCgroup {} is not applied per container: the shared shim stays in the cgroup "
            "its launching start joined", cg);
  }
  base::LogFor(base::LogLevel::kInfo, call.ns, id, "create bundle={} runtime={} terminal={}",
               record->bundle(), record->options().binary_name(), record->terminal());
  auto& slot = containers_[key];
  slot = std::make_unique<Container>(env_, router_, *std::move(record));
  tombstones_.Erase(call.ns, id);
  Serially(std::move(call), id, [this, key, req = std::move(*req)](Call call, Container& c,
                                                                   Turn turn) {
    c.init().Create(call.replayed, req, [this, key, call, turn = Share(std::move(turn))](
                                            absl::StatusOr<pid_t> pid) {
      if (!pid.ok()) {
        call.Fail(pid.status());
        return Forget(key);  // calls queued behind it find no container
      }
      task::CreateTaskResponse resp;
      resp.set_pid(static_cast<uint32_t>(*pid));
      call.Reply(resp);
    });
  });
}

void TaskService::Start(Call call) {
  auto req = call.Parse<task::StartRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Serially(std::move(call), req->id(), [exec_id = req->exec_id()](Call call, Container& c,
                                                                  Turn turn) {
    auto p = c.Find(exec_id);
    if (!p.ok()) return call.Fail(p.status());
    (*p)->Start(call.replayed, [call, turn = Share(std::move(turn))](absl::StatusOr<pid_t> pid) {
      if (!pid.ok()) return call.Fail(pid.status());
      task::StartResponse resp;
      resp.set_pid(static_cast<uint32_t>(*pid));
      call.Reply(resp);
    });
  });
}

void TaskService::Exec(Call call) {
  auto req = call.Parse<task::ExecProcessRequest>();
  if (!req.ok()) return call.Fail(req.status());
  const std::string id = req->id();  // before req is moved into the op
  Serially(std::move(call), id, [req = std::move(*req)](Call call, Container& c, Turn) {
    call.Answer(c.AddExec(req, call.replayed));
  });
}

void TaskService::State(Call call) {
  auto req = call.Parse<task::StateRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  task::StateResponse resp;
  (*p)->FillState(resp);
  call.Reply(resp);
}

void TaskService::Kill(Call call) {
  auto req = call.Parse<task::KillRequest>();
  if (!req.ok()) return call.Fail(req.status());
  const std::string id = req->id();  // before req is moved into the op
  Serially(std::move(call), id, [req = std::move(*req)](Call call, Container& c,
                                                               Turn turn) {
    auto p = c.Find(req.exec_id());
    if (!p.ok()) return call.Fail(p.status());
    (*p)->Kill(static_cast<int>(req.signal()), req.all(), call.replayed,
               [call, turn = Share(std::move(turn))](absl::Status st) { call.Answer(st); });
  });
}

void TaskService::Pause(Call call) {
  auto req = call.Parse<task::PauseRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Freeze(std::move(call), req->id(), Event::kPause);
}

void TaskService::Resume(Call call) {
  auto req = call.Parse<task::ResumeRequest>();
  if (!req.ok()) return call.Fail(req.status());
  Freeze(std::move(call), req->id(), Event::kResume);
}

void TaskService::Freeze(Call call, const std::string& id, Event event) {
  Serially(std::move(call), id, [event](Call call, Container& c, Turn turn) {
    c.init().Freeze(event, call.replayed,
                    [call, turn = Share(std::move(turn))](absl::Status st) { call.Answer(st); });
  });
}

void TaskService::Checkpoint(Call call) {
  auto req = call.Parse<task::CheckpointTaskRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto spec = process::CheckpointSpecOf(*req);
  if (!spec.ok()) return call.Fail(spec.status());
  Serially(std::move(call), req->id(), [spec = std::move(*spec)](Call call, Container& c,
                                                                   Turn turn) {
    c.init().Checkpoint(spec, [call, turn = Share(std::move(turn))](absl::Status st) {
      call.Answer(st);
    });
  });
}

void TaskService::Update(Call call) {
  auto req = call.Parse<task::UpdateTaskRequest>();
  if (!req.ok()) return call.Fail(req.status());
  // Like runc-v2: the Any's value is specs.LinuxResources as JSON, whatever
  // its type_url says, and the annotations are not used.
  if (req->resources().value().empty())
    return call.Fail(absl::InvalidArgumentError(
        fmt::format("update of container {} carries no resources", req->id())));
  const std::string id = req->id();  // before req is moved into the op
  Serially(std::move(call), id, [resources = std::move(*req->mutable_resources()->mutable_value())](
                                    Call call, Container& c, Turn turn) mutable {
    c.init().Update(std::move(resources), [call, turn = Share(std::move(turn))](absl::Status st) {
      call.Answer(st);
    });
  });
}

void TaskService::Wait(Call call) {
  auto req = call.Parse<task::WaitRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  (*p)->AddWaiter(std::move(call.responder));
}

void TaskService::Delete(Call call) {
  auto req = call.Parse<task::DeleteRequest>();
  if (!req.ok()) return call.Fail(req.status());
  if (!containers_.contains(Key{call.ns, req->id()}) && call.replayed && req->exec_id().empty()) {
    if (auto* tomb = tombstones_.Find(call.ns, req->id()))
      return call.Reply(DeleteResponseOf(*tomb));  // the earlier server deleted it
  }
  Serially(std::move(call), req->id(), [this, exec_id = req->exec_id()](Call call, Container& c,
                                                                       Turn turn) {
    if (!exec_id.empty()) {
      auto e = c.FindExec(exec_id);
      if (!e.ok()) return call.Fail(e.status());
      auto resp = (*e)->Delete(call.replayed);
      if (!resp.ok()) return call.Fail(resp.status());
      return call.Reply(*resp);
    }
    c.init().Delete([this, &c, call, turn = Share(std::move(turn))](
                        absl::StatusOr<task::DeleteResponse> resp) {
      if (!resp.ok()) return call.Fail(resp.status());
      call.Reply(*resp);
      Remove(c);  // calls queued behind it find no container
    });
  });
}

void TaskService::Remove(Container& c) {
  tombstones_.Bury(c);
  env_.oom.Unwatch(c.ns(), c.id());
  containers_.erase(Key{c.ns(), c.id()});
  MaybeIdle();
}

void TaskService::Forget(const Key& key) {
  (void)env_.store.Remove(key.first, key.second);
  containers_.erase(key);
  MaybeIdle();
}

void TaskService::Pids(Call call) {
  auto req = call.Parse<task::PidsRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id());
  if (!found.ok()) return call.Fail(found.status());
  Container& c = **found;
  env_.pool.Run<absl::StatusOr<std::vector<pid_t>>>(
      [&runtime = env_.runtime, record = c.Record()] { return runtime.Ps(record); },
      [call = std::move(call), exec_ids = c.LiveExecIdsByPid()](
          absl::StatusOr<std::vector<pid_t>> pids) {
        if (!pids.ok()) return call.Fail(pids.status());
        task::PidsResponse resp;
        for (pid_t p : *pids) {
          auto* info = resp.add_processes();
          info->set_pid(static_cast<uint32_t>(p));
          if (auto it = exec_ids.find(p); it != exec_ids.end()) {
            containerd::runc::v1::ProcessDetails details;
            details.set_exec_id(it->second);
            info->mutable_info()->set_type_url("containerd.runc.v1.ProcessDetails");
            info->mutable_info()->set_value(details.SerializeAsString());
          }
        }
        call.Reply(resp);
      });
}

void TaskService::Stats(Call call) {
  auto req = call.Parse<task::StatsRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id());
  if (!found.ok()) return call.Fail(found.status());
  const process::InitProcess& init = (*found)->init();
  auto exited = [id = req->id()] {
    return absl::FailedPreconditionError(
        fmt::format("container {} has exited: no cgroup to read", id));
  };
  if (init.status() == Status::kStopped) return call.Fail(exited());
  env_.pool.Run<absl::StatusOr<CgroupMetrics>>(
      [pid = init.pid(), start = init.start_boottime(),
       exited]() -> absl::StatusOr<CgroupMetrics> {
        // The pid must still be the container's init: pids get reused.
        auto same = bpf::IsSameLiveProcess(pid, start);
        if (!same.ok() || !*same) return exited();
        return ReadCgroupMetrics(pid);
      },
      [call = std::move(call)](absl::StatusOr<CgroupMetrics> metrics) {
        if (!metrics.ok()) return call.Fail(metrics.status());
        task::StatsResponse resp;
        resp.mutable_stats()->set_type_url(metrics->type_url);
        resp.mutable_stats()->set_value(std::move(metrics->value));
        call.Reply(resp);
      });
}

void TaskService::Connect(Call call) {
  auto req = call.Parse<task::ConnectRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto found = Find(call.ns, req->id());
  if (!found.ok()) return call.Fail(found.status());
  task::ConnectResponse resp;
  resp.set_shim_pid(static_cast<uint32_t>(getpid()));
  resp.set_task_pid(static_cast<uint32_t>((*found)->init().pid()));
  call.Reply(resp);
}

void TaskService::Shutdown(Call call) {
  // Other containers may still be served: the daemon exits only once none is
  // left (MaybeIdle), never because one task's owner asked.
  shutdown_requested_ = true;
  call.Reply(google::protobuf::Empty());
  MaybeIdle();
}

void TaskService::CloseIO(Call call) {
  auto req = call.Parse<task::CloseIORequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  if (req->stdin()) (*p)->CloseIO();
  call.Reply(google::protobuf::Empty());
}

void TaskService::ResizePty(Call call) {
  auto req = call.Parse<task::ResizePtyRequest>();
  if (!req.ok()) return call.Fail(req.status());
  auto p = FindProcess(call.ns, req->id(), req->exec_id());
  if (!p.ok()) return call.Fail(p.status());
  if (req->width() > 0xffff || req->height() > 0xffff)
    return call.Fail(absl::InvalidArgumentError(
        fmt::format("window size {}x{} is out of range", req->width(), req->height())));
  (*p)->ResizePty(req->width(), req->height());
  call.Reply(google::protobuf::Empty());
}

void TaskService::MaybeIdle() {
  if (shutdown_requested_ && containers_.empty() && on_idle_) on_idle_();
}

}  // namespace shim
