#include "shim/oci/stdio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "base/absl_fmt.h"
#include "base/errno_status.h"
#include "fmt/format.h"
#include "shim/oci/logger.h"
#include "shim/oci/stdio_uri.h"

namespace shim::oci {
namespace {

enum class Kind {
  kNone,
  kPath,     // an existing file: fifo or not, decided when opening
  kFileUri,  // file://: created if missing
  kBinary,   // binary://: a logger
};

struct Target {
  Kind kind = Kind::kNone;
  std::string path;
  StdioUri uri;  // kBinary
};

absl::StatusOr<Target> ParseTarget(const std::string& value, std::string_view stream,
                                   bool allow_uris) {
  if (value.empty()) return Target{};
  absl::StatusOr<StdioUri> uri = ParseStdioUri(value);
  if (!uri.ok())
    return absl::Status(uri.status().code(), fmt::format("{} {}", stream, uri.status().message()));
  if (uri->scheme.empty()) return Target{Kind::kPath, value, {}};
  if (allow_uris && (uri->scheme == "file" || uri->scheme == "binary")) {
    if (uri->path.empty() || uri->path.front() != '/') {
      return absl::InvalidArgumentError(
          fmt::format("{} '{}': a {}:// URI needs an absolute path", stream, value, uri->scheme));
    }
    Kind kind = uri->scheme == "file" ? Kind::kFileUri : Kind::kBinary;
    std::string path = uri->path;
    return Target{kind, std::move(path), std::move(*uri)};
  }
  return absl::InvalidArgumentError(
      fmt::format("{} '{}': unsupported scheme '{}'", stream, value, uri->scheme));
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

// A fifo the container gets, owned by io_uid/io_gid (see stdio.h).
absl::Status ChownFifo(int fd, const StdioOptions& options, std::string_view what) {
  if (options.io_uid == 0 && options.io_gid == 0) return absl::OkStatus();
  if (fchown(fd, options.io_uid, options.io_gid) != 0)
    return base::ErrnoStatus(
        fmt::format("{}: chown to {}:{}", what, options.io_uid, options.io_gid));
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

absl::StatusOr<base::UniqueFd> OpenOutput(const Target& target, std::string_view stream,
                                          const StdioOptions& options) {
  switch (target.kind) {
    case Kind::kNone:
      return base::UniqueFd();
    case Kind::kBinary:
      return absl::InternalError("a binary:// target is not opened as a file");
    case Kind::kFileUri: {
      if (absl::Status s = MakeParents(target.path); !s.ok()) {
        return absl::Status(s.code(), fmt::format("{} file {}: {}", stream, target.path, s.message()));
      }
      // 0644, as runc-v2 creates it.
      base::UniqueFd fd(open(target.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
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
        const std::string what = fmt::format("open {} fifo {} O_RDWR", stream, target.path);
        absl::StatusOr<base::UniqueFd> fd = OpenChecked(target.path, O_RDWR, true, what);
        if (!fd.ok()) return fd.status();
        if (absl::Status s = ChownFifo(fd->get(), options, what); !s.ok()) return s;
        return fd;
      }
      return OpenChecked(target.path, O_WRONLY | O_APPEND, false,
                         fmt::format("open {} {} O_WRONLY|O_APPEND", stream, target.path));
    }
  }
  return absl::InternalError("bad stdio target kind");
}

absl::Status OpenInput(const Target& target, const StdioOptions& options, OpenedStdio& opened) {
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
  if (absl::Status s = ChownFifo(reader->get(), options, reader_what); !s.ok()) return s;
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

absl::Status StartLoggerFor(const Target& target, const StdioOptions& options,
                            OpenedStdio& opened) {
  absl::StatusOr<LoggerCommand> command = LoggerCommandOf(target.uri);
  if (!command.ok()) return command.status();
  LoggerOptions logger_options;
  logger_options.ns = options.ns;
  logger_options.id = options.id;
  logger_options.io_uid = options.io_uid;
  logger_options.io_gid = options.io_gid;
  logger_options.ready_timeout = options.logger_ready_timeout;
  absl::StatusOr<StartedLogger> logger = StartLogger(*command, logger_options);
  if (!logger.ok()) return logger.status();
  opened.child.out = std::move(logger->out);
  opened.child.err = std::move(logger->err);
  opened.logger_pid = logger->pid;
  opened.logger_pidfd = std::move(logger->pidfd);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenedStdio> OpenStdio(const StdioPaths& paths, const StdioOptions& options) {
  absl::StatusOr<Target> in = ParseTarget(paths.in, "stdin", /*allow_uris=*/false);
  if (!in.ok()) return in.status();
  absl::StatusOr<Target> out = ParseTarget(paths.out, "stdout", /*allow_uris=*/true);
  if (!out.ok()) return out.status();
  // stdout's URI decides for both streams (runc-v2): stderr's value then
  // only says whether there is one.
  const bool stdout_decides = out->kind == Kind::kFileUri || out->kind == Kind::kBinary;
  absl::StatusOr<Target> err = stdout_decides ? Target{} : ParseTarget(paths.err, "stderr", true);
  if (!err.ok()) return err.status();
  if (err->kind == Kind::kBinary) {
    return absl::InvalidArgumentError(fmt::format(
        "stderr '{}': a binary:// logger must be stdout's too (stdout is '{}')", paths.err,
        paths.out));
  }

  OpenedStdio opened;
  if (absl::Status s = OpenInput(*in, options, opened); !s.ok()) return s;

  if (out->kind == Kind::kBinary) {
    if (absl::Status s = StartLoggerFor(*out, options, opened); !s.ok()) return s;
    return opened;
  }

  absl::StatusOr<base::UniqueFd> out_fd = OpenOutput(*out, "stdout", options);
  if (!out_fd.ok()) return out_fd.status();
  opened.child.out = std::move(*out_fd);

  // One file for both: share one open file description, as 2>&1 would.
  const bool same = stdout_decides ? !paths.err.empty()
                                   : opened.child.out && (paths.err == paths.out ||
                                                          SameFile(*err, opened.child.out.get()));
  if (same) {
    opened.child.err.Reset(fcntl(opened.child.out.get(), F_DUPFD_CLOEXEC, 0));
    if (!opened.child.err) return base::ErrnoStatus(fmt::format("dup stdout for stderr {}", paths.err));
    return opened;
  }
  absl::StatusOr<base::UniqueFd> err_fd = OpenOutput(*err, "stderr", options);
  if (!err_fd.ok()) return err_fd.status();
  opened.child.err = std::move(*err_fd);
  return opened;
}

}  // namespace shim::oci
