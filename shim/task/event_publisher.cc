#include "shim/task/event_publisher.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

#include "base/absl_fmt.h"
#include "base/corrupt_file.h"
#include "base/dir.h"
#include "base/log.h"
#include "base/read_file.h"
#include "base/unique_fd.h"
#include "events_task.pb.h"
#include "events_ttrpc.pb.h"
#include "shim/process/clock.h"
#include "shim/process/identifier.h"
#include "shim/store/paths.h"

namespace shim {

namespace {

using ForwardRequest = containerd::services::events::ttrpc::v1::ForwardRequest;

// Every task event carries its container id in field 1; TaskExit (`id`),
// TaskExecAdded and TaskExecStarted (`exec_id`) name their process in field 2.
std::pair<std::string, std::string> IdsOf(const google::protobuf::Any& any) {
  containerd::events::TaskExit probe;
  if (!probe.ParseFromString(any.value())) return {};
  return {probe.container_id(), probe.id()};
}

}  // namespace

std::string_view EventTypeOf(std::string_view topic) {
  // Spelled out rather than read from the message's descriptor: that would
  // build the reflection descriptors of events_task.proto and all it
  // imports, descriptor.proto included, in a server that needs none.
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {"/tasks/create", "containerd.events.TaskCreate"},
      {"/tasks/start", "containerd.events.TaskStart"},
      {"/tasks/exit", "containerd.events.TaskExit"},
      {"/tasks/delete", "containerd.events.TaskDelete"},
      {"/tasks/oom", "containerd.events.TaskOOM"},
      {"/tasks/paused", "containerd.events.TaskPaused"},
      {"/tasks/resumed", "containerd.events.TaskResumed"},
      {"/tasks/exec-added", "containerd.events.TaskExecAdded"},
      {"/tasks/exec-started", "containerd.events.TaskExecStarted"},
  };
  for (const auto& [t, type] : kTypes)
    if (t == topic) return type;
  return {};
}

EventPublisher::EventPublisher(base::EventLoop& loop, std::string ttrpc_address,
                               std::string spool_dir)
    : loop_(loop), address_(std::move(ttrpc_address)), spool_dir_(std::move(spool_dir)) {
  mkdir(spool_dir_.c_str(), 0700);
  LoadSpool();
}

std::string EventPublisher::SpoolPath(uint64_t seq) const {
  return fmt::format("{}/{:020}", spool_dir_, seq);
}

absl::StatusOr<SpooledEvent> DecodeSpooledEvent(std::string_view bytes) {
  ForwardRequest req;
  if (bytes.size() > INT32_MAX || !req.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return absl::DataLossError("not a ForwardRequest (protobuf does not parse)");
  // An empty message parses too; containerd 1.6 dereferences the missing
  // envelope and crashes, so never send one.
  if (!req.has_envelope()) return absl::DataLossError("no envelope");
  const auto& env = req.envelope();
  std::string_view type = EventTypeOf(env.topic());
  if (type.empty())
    return absl::DataLossError(fmt::format("topic {:?} is none the shim sends", env.topic()));
  if (env.event().type_url() != type)
    return absl::DataLossError(
        fmt::format("event type {:?} is not {}'s", env.event().type_url(), env.topic()));
  if (!IsValidIdentifier(env.namespace_()))
    return absl::DataLossError(fmt::format("namespace {:?} is not valid", env.namespace_()));
  auto [container_id, process_id] = IdsOf(env.event());
  return SpooledEvent{env.topic(), env.namespace_(), std::move(container_id),
                      std::move(process_id)};
}

void EventPublisher::LoadSpool() {
  std::vector<uint64_t> seqs;
  base::ForEachEntry(spool_dir_, [&](const dirent& e) {
    std::string name = e.d_name;
    if (base::IsCorruptName(name)) return;
    std::string path = spool_dir_ + "/" + name;
    // Only whole events: a "<seq>.tmp" is one a dying server never
    // finished writing, and it was never sent.
    if (name.size() == 24 && name.ends_with(".tmp")) {
      unlink(path.c_str());
      return;
    }
    // Exactly SpoolPath's name, so that the seq names this file and no other.
    uint64_t seq = 0;
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), seq);
    if (ec != std::errc() || end != name.data() + name.size() || SpoolPath(seq) != path) {
      base::MoveAsideCorrupt(path, "not a spool file's name");
      return;
    }
    seqs.push_back(seq);
  });
  std::sort(seqs.begin(), seqs.end());
  for (uint64_t seq : seqs) {
    // Past every file seen, readable or not: a new event never takes the
    // name of one (a corrupt one is renamed, but may not have been).
    next_seq_ = std::max(next_seq_, seq + 1);
    absl::StatusOr<std::string> bytes = base::ReadFile(SpoolPath(seq));
    if (!bytes.ok()) {
      base::LogError("events: cannot read spool file {}: {}; left for the next server",
               SpoolPath(seq), bytes.status());
      continue;
    }
    absl::StatusOr<SpooledEvent> event = DecodeSpooledEvent(*bytes);
    if (!event.ok()) {
      base::MoveAsideCorrupt(SpoolPath(seq), std::string(event.status().message()));
      continue;
    }
    queue_.push_back({seq, std::move(event->topic), std::move(event->ns),
                      std::move(event->container_id), std::move(event->process_id),
                      std::move(*bytes)});
  }
  if (!queue_.empty()) {
    base::LogInfo("events: {} undelivered events from an earlier server", queue_.size());
    loop_.Post([this] { Pump(); });
  }
}

bool EventPublisher::Spooled(const std::string& topic, const std::string& ns,
                             const std::string& id, const std::string& process_id) const {
  return std::any_of(queue_.begin(), queue_.end(), [&](const Queued& q) {
    return q.topic == topic && q.ns == ns && q.container_id == id &&
           (process_id.empty() || q.process_id == process_id);
  });
}

void EventPublisher::Publish(const std::string& ns, const std::string& topic,
                             const google::protobuf::MessageLite& event) {
  std::string_view type = EventTypeOf(topic);
  if (type.empty()) {
    base::LogError("events: no event type for topic {}; not sent", topic);
    return;
  }
  ForwardRequest req;
  auto* env = req.mutable_envelope();
  SetTimestamp(env->mutable_timestamp(), NowUnixNano());
  env->set_namespace_(ns);
  env->set_topic(topic);
  // containerd 1.6 resolves bare message names, not type.googleapis.com/ URLs.
  env->mutable_event()->set_type_url(std::string(type));
  env->mutable_event()->set_value(event.SerializeAsString());
  auto [container_id, process_id] = IdsOf(env->event());
  Queued q{next_seq_++, topic, ns, container_id, process_id, req.SerializeAsString()};
  std::string tmp = SpoolPath(q.seq) + ".tmp";
  if (base::UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)); fd) {
    bool ok = write(fd.get(), q.request.data(), q.request.size()) ==
              static_cast<ssize_t>(q.request.size());
    fd.Reset();
    if (!ok || rename(tmp.c_str(), SpoolPath(q.seq).c_str()) != 0)
      base::LogError("events: cannot spool {}; it is kept in memory only", topic);
  }
  base::LogFor(base::LogLevel::kDebug, ns, q.container_id, "queued event {}", topic);
  queue_.push_back(std::move(q));
  Pump();
}

void EventPublisher::Pump() {
  if (in_flight_ || retry_armed_ || queue_.empty()) return;
  if (address_.empty()) {
    base::LogError("TTRPC_ADDRESS is not set: {} events cannot be delivered", queue_.size());
    return;
  }
  if (!client_ || client_->closed()) {
    auto c = ttrpc::Client::Connect(loop_, address_);
    if (!c.ok()) {
      base::LogWarn("events: connect {}: {}; retrying", address_, c.status());
      Retry();
      return;
    }
    client_ = std::move(*c);
  }
  in_flight_ = true;
  ttrpc::CallOptions opts;
  opts.timeout = absl::Seconds(5);
  client_->Call("containerd.services.events.ttrpc.v1.Events", "Forward",
                queue_.front().request, std::move(opts), [this](absl::StatusOr<std::string> r) {
                  in_flight_ = false;
                  if (r.ok() || absl::IsInvalidArgument(r.status())) {
                    // InvalidArgument will never succeed: say so and move on.
                    if (!r.ok()) base::LogError("events: containerd refused an event: {}", r.status());
                    unlink(SpoolPath(queue_.front().seq).c_str());
                    queue_.pop_front();
                    ++delivered_;
                    backoff_ = absl::Milliseconds(50);
                    Pump();
                    return;
                  }
                  base::LogWarn("events: forward failed: {}; {} queued, retrying", r.status(),
                          queue_.size());
                  if (client_) client_->Close();
                  client_.reset();
                  Retry();
                });
}

void EventPublisher::Retry() {
  retry_armed_ = true;
  loop_.RunAfter(backoff_, [this] {
    retry_armed_ = false;
    Pump();
  });
  backoff_ = std::min(backoff_ * 2, absl::Seconds(2));
}

}  // namespace shim
