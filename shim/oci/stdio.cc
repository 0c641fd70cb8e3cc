#include "shim/oci/stdio.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <string_view>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"

namespace shim::oci {
namespace {

enum class Kind {
  kNone,
  kPath,     // an existing file: fifo or not, decided when opening
  kFileUri,  // file://: created if missing
};

struct Target {
  Kind kind = Kind::kNone;
  std::string path;
};

absl::StatusOr<Target> ParseTarget(const std::string& uri, std::string_view stream,
                                   bool allow_uris) {
  if (uri.empty()) return Target{};
  if (uri.front() == '/') return Target{Kind::kPath, uri};
  const size_t scheme_end = uri.find("://");
  if (scheme_end == std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("{} '{}': want an absolute path or a URI", stream, uri));
  }
  const std::string_view scheme = std::string_view(uri).substr(0, scheme_end);
  if (scheme == "binary") {
    return absl::UnimplementedError("binary:// logging is not supported by this shim");
  }
  if (scheme == "file" && allow_uris) {
    std::string path = uri.substr(scheme_end + 3);
    if (path.empty() || path.front() != '/') {
      return absl::InvalidArgumentError(
          fmt::format("{} '{}': a file:// URI needs an absolute path", stream, uri));
    }
    return Target{Kind::kFileUri, std::move(path)};
  }
  return absl::InvalidArgumentError(
      fmt::format("{} '{}': unsupported scheme '{}'", stream, uri, scheme));
}

absl::Status MakeParents(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return base::ErrnoStatus(fmt::format("mkdir {}", dir));
    }
  }
  return absl::OkStatus();
}

absl::Status ClearNonblock(int fd, std::string_view what) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return base::ErrnoStatus(fmt::format("{}: clearing O_NONBLOCK", what));
  }
  return absl::OkStatus();
}

// Opens `path` with `flags` and checks that what got opened is (or is not) a
// fifo, as the stat() before said: the path may have been replaced in between.
absl::StatusOr<base::UniqueFd> OpenChecked(const std::string& path, int flags, bool want_fifo,
                                           std::string_view what) {
  base::UniqueFd fd(open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) return base::ErrnoStatus(what);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return base::ErrnoStatus(fmt::format("{}: fstat", what));
  if (S_ISFIFO(st.st_mode) != want_fifo) {
    return absl::FailedPreconditionError(fmt::format("{}: file type changed while opening", what));
  }
  return fd;
}

// stat() of an existing path that a container may use for I/O.
absl::StatusOr<struct stat> StatUsable(const std::string& path, std::string_view stream) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return base::ErrnoStatus(fmt::format("{} {}", stream, path));
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(fmt::format("{} {}: is a directory", stream, path));
  }
  return st;
}

absl::StatusOr<base::UniqueFd> OpenOutput(const Target& target, std::string_view stream) {
  switch (target.kind) {
    case Kind::kNone:
      return base::UniqueFd();
    case Kind::kFileUri: {
      if (absl::Status s = MakeParents(target.path); !s.ok()) {
        return absl::Status(s.code(), fmt::format("{} file {}: {}", stream, target.path, s.message()));
      }
      base::UniqueFd fd(open(target.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
      if (!fd) return base::ErrnoStatus(fmt::format("open {} file {}", stream, target.path));
      return fd;
    }
    case Kind::kPath: {
      absl::StatusOr<struct stat> st = StatUsable(target.path, stream);
      if (!st.ok()) return st.status();
      if (S_ISFIFO(st->st_mode)) {
        // O_RDWR on a fifo never waits for a peer, and makes the container
        // its own reader: with containerd's reader away, output waits in the
        // pipe instead of failing with EPIPE.
        return OpenChecked(target.path, O_RDWR, true,
                           fmt::format("open {} fifo {} O_RDWR", stream, target.path));
      }
      return OpenChecked(target.path, O_WRONLY | O_APPEND, false,
                         fmt::format("open {} {} O_WRONLY|O_APPEND", stream, target.path));
    }
  }
  return absl::InternalError("bad stdio target kind");
}

absl::Status OpenInput(const Target& target, OpenedStdio& opened) {
  if (target.kind == Kind::kNone) return absl::OkStatus();
  absl::StatusOr<struct stat> st = StatUsable(target.path, "stdin");
  if (!st.ok()) return st.status();
  if (!S_ISFIFO(st->st_mode)) {
    absl::StatusOr<base::UniqueFd> fd = OpenChecked(
        target.path, O_RDONLY, false, fmt::format("open stdin {} O_RDONLY", target.path));
    if (!fd.ok()) return fd.status();
    opened.child.in = std::move(*fd);
    return absl::OkStatus();
  }
  // The read end first: O_RDONLY|O_NONBLOCK succeeds without a writer. The
  // container needs blocking reads, hence O_NONBLOCK is cleared afterwards
  // (it belongs to this open file description only).
  const std::string reader_what = fmt::format("open stdin fifo {} O_RDONLY", target.path);
  absl::StatusOr<base::UniqueFd> reader =
      OpenChecked(target.path, O_RDONLY | O_NONBLOCK, true, reader_what);
  if (!reader.ok()) return reader.status();
  if (absl::Status s = ClearNonblock(reader->get(), reader_what); !s.ok()) return s;
  // Then our own writer, which cannot fail with ENXIO now that a reader
  // exists. Holding it keeps the container from seeing EOF before CloseIO.
  const std::string writer_what = fmt::format("open stdin fifo {} O_WRONLY (keepalive)", target.path);
  absl::StatusOr<base::UniqueFd> writer =
      OpenChecked(target.path, O_WRONLY | O_NONBLOCK, true, writer_what);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = ClearNonblock(writer->get(), writer_what); !s.ok()) return s;
  opened.child.in = std::move(*reader);
  opened.stdin_keepalive = std::move(*writer);
  return absl::OkStatus();
}

// Whether `target` is the file `fd` has open.
bool SameFile(const Target& target, int fd) {
  struct stat a, b;
  return target.kind != Kind::kNone && fd >= 0 && stat(target.path.c_str(), &a) == 0 &&
         fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

absl::StatusOr<OpenedStdio> OpenStdio(const StdioPaths& paths) {
  absl::StatusOr<Target> in = ParseTarget(paths.in, "stdin", /*allow_uris=*/false);
  if (!in.ok()) return in.status();
  absl::StatusOr<Target> out = ParseTarget(paths.out, "stdout", /*allow_uris=*/true);
  if (!out.ok()) return out.status();
  absl::StatusOr<Target> err = ParseTarget(paths.err, "stderr", /*allow_uris=*/true);
  if (!err.ok()) return err.status();

  OpenedStdio opened;
  if (absl::Status s = OpenInput(*in, opened); !s.ok()) return s;

  absl::StatusOr<base::UniqueFd> out_fd = OpenOutput(*out, "stdout");
  if (!out_fd.ok()) return out_fd.status();
  opened.child.out = std::move(*out_fd);

  // One file for both: share one open file description, as 2>&1 would.
  if (opened.child.out && (paths.err == paths.out || SameFile(*err, opened.child.out.get()))) {
    opened.child.err.Reset(fcntl(opened.child.out.get(), F_DUPFD_CLOEXEC, 0));
    if (!opened.child.err) return base::ErrnoStatus(fmt::format("dup stdout for stderr {}", paths.err));
    return opened;
  }
  absl::StatusOr<base::UniqueFd> err_fd = OpenOutput(*err, "stderr");
  if (!err_fd.ok()) return err_fd.status();
  opened.child.err = std::move(*err_fd);
  return opened;
}

}  // namespace shim::oci
