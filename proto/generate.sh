#!/bin/sh
# Generates C++ from containerd's own .proto files, as Debian installs them.
#
# Usage: generate.sh PROTOC OUTDIR
#
# The files are copied, not retyped. Two mechanical rewrites make them build:
#  - protoc 3.21's C++ generator aborts on `import weak`, so it becomes `import`;
#  - meson outputs cannot live in subdirectories, so each file is staged under a
#    flat name and its imports are pointed at those names. Package and message
#    names are untouched, so type URLs and the wire format are containerd's.
# One more for the cgroup metrics (the Stats answer): they are generated for
# the lite runtime, so the server does not register their descriptors (about
# 60 messages and fields it only ever serialises) when it starts.
set -eu
protoc=$1
out=$(cd "$2" && pwd)
gocode=${GOCODE:-/usr/share/gocode/src}
ctrd=$gocode/github.com/containerd/containerd
stage=$out/staged
mkdir -p "$stage"

# flat name           source
set -- \
  gogo.proto          "$gocode/github.com/gogo/protobuf/gogoproto/gogo.proto" \
  fieldpath.proto     "$ctrd/protobuf/plugin/fieldpath.proto" \
  types_mount.proto   "$ctrd/api/types/mount.proto" \
  types_task.proto    "$ctrd/api/types/task/task.proto" \
  shim.proto          "$ctrd/runtime/v2/task/shim.proto" \
  events_task.proto   "$ctrd/api/events/task.proto" \
  events_ttrpc.proto  "$ctrd/api/services/ttrpc/events/v1/events.proto" \
  runc_options.proto  "$ctrd/runtime/v2/runc/options/oci.proto" \
  runctypes.proto     "$ctrd/runtime/linux/runctypes/runc.proto" \
  runtimeoptions.proto "$ctrd/pkg/runtimeoptions/v1/api.proto" \
  cgroups_v1.proto    "$gocode/github.com/containerd/cgroups/stats/v1/metrics.proto" \
  cgroups_v2.proto    "$gocode/github.com/containerd/cgroups/v2/stats/metrics.proto"

names=""
while [ $# -gt 0 ]; do
  name=$1 src=$2
  shift 2
  if [ ! -f "$src" ]; then
    echo "generate.sh: $src is missing: install golang-github-containerd-containerd-dev, golang-github-containerd-cgroups-dev and golang-github-gogo-protobuf-dev" >&2
    exit 1
  fi
  lite=""
  case $name in cgroups_*) lite='/^package /a option optimize_for = LITE_RUNTIME;' ;; esac
  sed -e 's/^import weak /import /' \
      -e "${lite:-s/^\$//}" \
      -e 's#"gogoproto/gogo.proto"#"gogo.proto"#' \
      -e 's#"github.com/gogo/protobuf/gogoproto/gogo.proto"#"gogo.proto"#' \
      -e 's#"github.com/containerd/containerd/protobuf/plugin/fieldpath.proto"#"fieldpath.proto"#' \
      -e 's#"github.com/containerd/containerd/api/types/mount.proto"#"types_mount.proto"#' \
      -e 's#"github.com/containerd/containerd/api/types/task/task.proto"#"types_task.proto"#' \
      "$src" > "$stage/$name"
  names="$names $name"
done

cd "$stage"
# /usr/include first, so google/protobuf/*.proto come from libprotobuf-dev.
"$protoc" -I/usr/include -I. --cpp_out="$out" $names
