#include "base/event_loop.h"

#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "base/errno_status.h"

namespace base {
namespace {
constexpr uint64_t kWakeToken = 0;
constexpr uint64_t kTimerToken = ~uint64_t{0};
}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create() {
  base::UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return base::ErrnoStatus("epoll_create1");
  base::UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return base::ErrnoStatus("eventfd");
  base::UniqueFd timer(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer) return base::ErrnoStatus("timerfd_create");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (epoll_ctl(ep.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0)
    return base::ErrnoStatus("epoll_ctl(eventfd)");
  ev.data.u64 = kTimerToken;
  if (epoll_ctl(ep.get(), EPOLL_CTL_ADD, timer.get(), &ev) != 0)
    return base::ErrnoStatus("epoll_ctl(timerfd)");
  return std::unique_ptr<EventLoop>(
      new EventLoop(std::move(ep), std::move(wake), std::move(timer)));
}

EventLoop::EventLoop(base::UniqueFd epoll, base::UniqueFd wake, base::UniqueFd timer)
    : epoll_(std::move(epoll)), wake_(std::move(wake)), timer_(std::move(timer)) {}

EventLoop::~EventLoop() = default;

absl::Status EventLoop::Add(int fd, uint32_t events, FdCallback cb) {
  uint64_t token = next_token_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return base::ErrnoStatus("epoll_ctl(ADD)");
  callbacks_[token] = std::make_shared<FdCallback>(std::move(cb));
  tokens_[fd] = token;
  return absl::OkStatus();
}

absl::Status EventLoop::Modify(int fd, uint32_t events) {
  auto it = tokens_.find(fd);
  if (it == tokens_.end()) return absl::NotFoundError("fd is not watched");
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = it->second;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return base::ErrnoStatus("epoll_ctl(MOD)");
  return absl::OkStatus();
}

void EventLoop::Remove(int fd) {
  auto it = tokens_.find(fd);
  if (it == tokens_.end()) return;
  callbacks_.erase(it->second);
  tokens_.erase(it);
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

void EventLoop::Post(Task task) {
  {
    std::lock_guard lock(mu_);
    posted_.push_back(std::move(task));
  }
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
}

void EventLoop::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
}

EventLoop::TimerId EventLoop::RunAfter(absl::Duration delay, Task task) {
  TimerId id = next_timer_++;
  absl::Time when = absl::Now() + delay;
  timers_.emplace(when, std::make_pair(id, std::move(task)));
  timer_deadlines_[id] = when;
  ArmTimer();
  return id;
}

void EventLoop::CancelTimer(TimerId id) {
  auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return;
  auto [lo, hi] = timers_.equal_range(it->second);
  for (auto t = lo; t != hi; ++t) {
    if (t->second.first == id) {
      timers_.erase(t);
      break;
    }
  }
  timer_deadlines_.erase(it);
  ArmTimer();
}

void EventLoop::ArmTimer() {
  itimerspec spec{};
  if (!timers_.empty()) {
    absl::Duration d = timers_.begin()->first - absl::Now();
    // A zero it_value disarms the timer, so an overdue timer fires in 1 ns.
    if (d < absl::Nanoseconds(1)) d = absl::Nanoseconds(1);
    spec.it_value = absl::ToTimespec(d);
  }
  timerfd_settime(timer_.get(), 0, &spec, nullptr);
}

void EventLoop::FireTimers() {
  uint64_t expirations;
  (void)!read(timer_.get(), &expirations, sizeof expirations);
  absl::Time now = absl::Now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_deadlines_.erase(node.mapped().first);
    node.mapped().second();
  }
  ArmTimer();
}

void EventLoop::DrainPosted() {
  uint64_t count;
  (void)!read(wake_.get(), &count, sizeof count);
  std::vector<Task> tasks;
  {
    std::lock_guard lock(mu_);
    tasks.swap(posted_);
  }
  for (auto& t : tasks) t();
}

void EventLoop::Run() {
  owner_ = std::this_thread::get_id();
  epoll_event events[64];
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stop_) {
        stop_ = false;
        return;
      }
    }
    int n = epoll_wait(epoll_.get(), events, 64, -1);
    if (n < 0) continue;  // EINTR
    for (int i = 0; i < n; ++i) {
      uint64_t token = events[i].data.u64;
      if (token == kWakeToken) {
        DrainPosted();
        continue;
      }
      if (token == kTimerToken) {
        FireTimers();
        continue;
      }
      auto it = callbacks_.find(token);
      if (it == callbacks_.end()) continue;  // removed earlier in this batch
      std::shared_ptr<FdCallback> cb = it->second;  // survives its own Remove()
      (*cb)(events[i].events);
    }
  }
}

}  // namespace base
