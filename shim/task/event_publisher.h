// EventPublisher: forwards task events to containerd over its ttrpc events
// service ($TTRPC_ADDRESS, Events/Forward), one at a time and in order.
//
// Every event is spooled to a file before anything else happens, and the
// file goes only once containerd has taken the event. So events survive a
// restart of the server (a new one resends the spool, in order) and wait,
// in order, while containerd is unreachable.
#pragma once

#include <deque>
#include <memory>
#include <string>

#include <string_view>

#include "base/event_loop.h"
#include "google/protobuf/message_lite.h"
#include "shim/process/environment.h"
#include "ttrpc/client.h"

namespace shim {

// containerd's message name for the event of `topic` ("/tasks/exit" ->
// "containerd.events.TaskExit"); empty for a topic the shim does not send.
std::string_view EventTypeOf(std::string_view topic);

// What a spool file says about its event.
struct SpooledEvent {
  std::string topic, ns, container_id, process_id;
};

// A spool file's bytes: a ForwardRequest as Publish wrote it. DataLoss for
// anything else, e.g. no envelope (containerd 1.6 crashes on one), a topic
// the shim does not send, an event type that is not the topic's, or a
// namespace that is not an identifier: containerd could refuse such an
// event forever, and it would block every event behind it.
absl::StatusOr<SpooledEvent> DecodeSpooledEvent(std::string_view bytes);

class EventPublisher final : public process::EventSink {
 public:
  // `spool_dir` holds one file per undelivered event; what it holds already
  // (from an earlier server) is sent first.
  EventPublisher(base::EventLoop& loop, std::string ttrpc_address, std::string spool_dir);

  // Spools `event` under `topic` ("/tasks/exit") in `ns`, stamped now, and
  // sends it when its turn comes. Loop thread.
  void Publish(const std::string& ns, const std::string& topic,
               const google::protobuf::MessageLite& event) override;

  // Whether an event of `topic` for container `id` in `ns` waits in the
  // spool; with `process_id`, only one naming that process (TaskExit's `id`,
  // an exec event's `exec_id`).
  bool Spooled(const std::string& topic, const std::string& ns, const std::string& id,
               const std::string& process_id = "") const override;

  size_t queued() const { return queue_.size(); }
  uint64_t delivered() const { return delivered_; }

 private:
  struct Queued {
    uint64_t seq;
    std::string topic, ns, container_id, process_id;
    std::string request;  // a serialised ForwardRequest
  };
  void LoadSpool();
  std::string SpoolPath(uint64_t seq) const;
  void Pump();
  void Retry();

  base::EventLoop& loop_;
  std::string address_;
  std::string spool_dir_;
  std::shared_ptr<ttrpc::Client> client_;
  std::deque<Queued> queue_;  // oldest first
  uint64_t next_seq_ = 1;
  bool in_flight_ = false;
  bool retry_armed_ = false;
  absl::Duration backoff_ = absl::Milliseconds(50);
  uint64_t delivered_ = 0;
};

}  // namespace shim
