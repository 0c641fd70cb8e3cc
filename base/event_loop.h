// EventLoop: one epoll loop run by one thread. Everything that touches a
// loop's state runs on that thread; other threads hand work over with Post().
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"

namespace base {

class EventLoop {
 public:
  using FdCallback = std::function<void(uint32_t epoll_events)>;
  using Task = std::function<void()>;
  using TimerId = uint64_t;

  static absl::StatusOr<std::unique_ptr<EventLoop>> Create();
  ~EventLoop();

  // Watches fd (not owned) for `events`. Loop thread only, or before Run().
  absl::Status Add(int fd, uint32_t events, FdCallback cb);
  absl::Status Modify(int fd, uint32_t events);
  // Safe to call from inside that fd's own callback.
  void Remove(int fd);

  // Runs `task` on the loop thread soon. Safe from any thread.
  void Post(Task task);

  // Runs `task` on the loop thread after `delay`. Loop thread only.
  TimerId RunAfter(absl::Duration delay, Task task);
  void CancelTimer(TimerId id);

  // Dispatches until Stop(). Runs on the calling thread.
  void Run();
  // Safe from any thread.
  void Stop();
  bool InLoopThread() const { return std::this_thread::get_id() == owner_.load(); }

 private:
  EventLoop(base::UniqueFd epoll, base::UniqueFd wake, base::UniqueFd timer);
  void DrainPosted();
  void FireTimers();
  void ArmTimer();


  base::UniqueFd epoll_;
  base::UniqueFd wake_;   // eventfd: Post() and Stop() wake the loop
  base::UniqueFd timer_;  // timerfd armed for the earliest timer
  // Each Add() gets a fresh token, so an event for a removed (or removed and
  // re-added) fd finds no callback and is dropped.
  absl::flat_hash_map<uint64_t, std::shared_ptr<FdCallback>> callbacks_;
  absl::flat_hash_map<int, uint64_t> tokens_;
  uint64_t next_token_ = 1;

  std::multimap<absl::Time, std::pair<TimerId, Task>> timers_;
  absl::flat_hash_map<TimerId, absl::Time> timer_deadlines_;
  TimerId next_timer_ = 1;

  std::mutex mu_;  // guards posted_ and stop_
  std::vector<Task> posted_;
  bool stop_ = false;
  // The thread in Run(); none before, so that work handed over from another
  // thread before the loop starts is queued, never run on the wrong thread.
  std::atomic<std::thread::id> owner_{std::thread::id{}};
};

}  // namespace base
