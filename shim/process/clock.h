// Wall-clock time as containerd wants it: unix nanoseconds, and
// google.protobuf.Timestamp.
#pragma once

#include <time.h>

#include <cstdint>

#include "google/protobuf/timestamp.pb.h"

namespace shim {

inline int64_t NowUnixNano() {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

inline void SetTimestamp(google::protobuf::Timestamp* ts, int64_t unix_nano) {
  ts->set_seconds(unix_nano / 1'000'000'000);
  ts->set_nanos(static_cast<int32_t>(unix_nano % 1'000'000'000));
}

}  // namespace shim
