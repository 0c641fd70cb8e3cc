#!/usr/bin/python3
"""Calls containerd's own gRPC API where ctr has no command for it.

    containerd_api.py update ADDRESS NAMESPACE ID RESOURCES_JSON

update: Tasks.Update of task ID with RESOURCES_JSON (an OCI LinuxResources)
as the resources, packed as containerd's client packs them (typeurl: the
JSON of specs.LinuxResources). Exit 0 on success; else 1 with
"containerd_api: <gRPC code>: <message>" on stderr.

containerd's api/*.proto (Debian's golang-github-containerd-containerd-dev)
are compiled into a temporary directory at each run with grpc_tools, so
nothing generated is kept. Needs python3-grpcio and python3-grpc-tools
(Debian's /usr/bin/python3, not another interpreter first on PATH).
"""

import importlib
import os
import sys
import tempfile

GOCODE = os.environ.get("GOCODE", "/usr/share/gocode/src")
CTRD = GOCODE + "/github.com/containerd/containerd"
# Flat name -> source, as proto/generate.sh stages them: tasks.proto and what
# it imports (besides google/protobuf/*).
STAGED = {
    "tasks.proto": CTRD + "/api/services/tasks/v1/tasks.proto",
    "types_mount.proto": CTRD + "/api/types/mount.proto",
    "types_metrics.proto": CTRD + "/api/types/metrics.proto",
    "types_descriptor.proto": CTRD + "/api/types/descriptor.proto",
    "types_task.proto": CTRD + "/api/types/task/task.proto",
    "gogo.proto": GOCODE + "/github.com/gogo/protobuf/gogoproto/gogo.proto",
}
IMPORTS = {
    "gogoproto/gogo.proto": "gogo.proto",
    "github.com/containerd/containerd/api/types/mount.proto": "types_mount.proto",
    "github.com/containerd/containerd/api/types/metrics.proto": "types_metrics.proto",
    "github.com/containerd/containerd/api/types/descriptor.proto": "types_descriptor.proto",
    "github.com/containerd/containerd/api/types/task/task.proto": "types_task.proto",
}
RESOURCES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


def compile_protos(out):
    """tasks_pb2 and tasks_pb2_grpc, generated into `out`."""
    from grpc_tools import protoc
    import grpc_tools

    # Copied, not retyped; only `import weak` and the import paths change,
    # so that the modules get flat names.
    for name, src in STAGED.items():
        if not os.path.exists(src):
            sys.exit("containerd_api: {} is missing: install golang-github-containerd-containerd-dev "
                     "and golang-github-gogo-protobuf-dev".format(src))
        with open(src) as f:
            text = f.read().replace("import weak ", "import ")
        for path, flat in IMPORTS.items():
            text = text.replace('"{}"'.format(path), '"{}"'.format(flat))
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    includes = [out, "/usr/include", os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")]
    args = ["protoc"] + ["-I" + i for i in includes if os.path.isdir(i)]
    args += ["--python_out=" + out, "--grpc_python_out=" + out] + list(STAGED)
    if protoc.main(args) != 0:
        sys.exit("containerd_api: protoc failed on " + STAGED["tasks.proto"])
    sys.path.insert(0, out)
    return importlib.import_module("tasks_pb2"), importlib.import_module("tasks_pb2_grpc")


def update(address, namespace, task_id, resources_json):
    import grpc

    with tempfile.TemporaryDirectory(prefix="containerd-api-") as out:
        pb, pb_grpc = compile_protos(out)
        req = pb.UpdateTaskRequest(container_id=task_id)
        req.resources.type_url = RESOURCES_TYPE
        req.resources.value = resources_json.encode()
        with grpc.insecure_channel("unix://" + address) as channel:
            stub = pb_grpc.TasksStub(channel)
            try:
                stub.Update(req, metadata=[("containerd-namespace", namespace)], timeout=60)
            except grpc.RpcError as e:
                print("containerd_api: {}: {}".format(e.code().name, e.details()), file=sys.stderr)
                return 1
    return 0


def main(argv):
    if len(argv) == 6 and argv[1] == "update":
        return update(*argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
