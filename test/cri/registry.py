#!/usr/bin/env python3
"""The images critest pulls, built offline, and a registry that serves them.

  registry.py --busybox-deb DEB --programs DIR --store DIR [--listen 127.0.0.1:0]

Builds every image into DIR (blobs/sha256/<hex> and refs.json), then serves
them read-only over HTTP with the distribution API's pull side (GET/HEAD of
/v2/, manifests by tag or digest, blobs). containerd's CRI config names it as
the mirror of every registry, so repository names drop the host:
registry.k8s.io/pause:3.6 is /v2/pause/manifests/3.6. It prints
"listening HOST:PORT" once it serves, and leaves on SIGTERM.

The base layer is Debian's dynamic busybox (the package DEB, not installed:
it conflicts with busybox-static) with the host's libraries it needs, because
busybox-static's sh runs applets as built-ins instead of the files on PATH
(the MaskedPaths spec masks /bin/ls). Neither Debian build has pgrep or ipcs,
which specs run: those are the host's (procps, util-linux). --programs DIR
holds the static helpers test/cri/images/*.c builds: pause, webserver,
nonewprivs.
"""

import argparse
import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
HOST_PROGRAMS = ("/usr/bin/pgrep", "/usr/bin/ipcs")

# /etc of the base image: root, the www-data of the USER images, nobody.
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""


class Layer:
    """An uncompressed tar layer built in memory; entries are root-owned,
    mtime 0, so the same inputs give the same digests every run."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.seen = set()

    def _info(self, path, kind, mode):
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
        return info

    def dir(self, path, mode=0o755):
        parent = os.path.dirname(path.rstrip("/"))
        if parent and parent != "/" and parent not in self.seen:
            self.dir(parent)
        if path in self.seen:
            return
        self.seen.add(path)
        self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode))

    def file(self, path, data, mode=0o644):
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        self.seen.add(path)

    def hardlink(self, path, target):
        """Applets are hard links, as in the upstream busybox image: a
        MaskedPaths entry (/dev/null bound over /bin/ls) then hides that one
        name, not the busybox binary a symlink would resolve to."""
        if path in self.seen:
            return
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.LNKTYPE, 0o755)
        info.linkname = target.lstrip("/")
        self.tar.addfile(info)
        self.seen.add(path)

    def close(self):
        self.tar.close()
        return self.buf.getvalue()


class Store:
    def __init__(self, root):
        self.root = root
        self.refs = {}  # repository -> {tag: manifest digest}
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    def put(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.rename(path + ".tmp", path)
        return digest

    def blob_path(self, digest):
        return os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])

    def image(self, refs, layers, config, label):
        """refs: ["repo:tag", ...]; layers: [bytes]; config: the image config's
        "config" part. `label` makes the image id (config digest) its own."""
        config = dict(config)
        config.setdefault("Env", [PATH_ENV])
        config["Labels"] = dict(config.get("Labels", {}), **{"embed.test/image": label})
        diff_ids = [self.put(layer) for layer in layers]
        cfg = json.dumps({
            "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "test/cri/registry.py"} for _ in layers],
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.put(cfg), "size": len(cfg)},
            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": len(l)}
                       for d, l in zip(diff_ids, layers)],
        }, sort_keys=True).encode()
        digest = self.put(manifest)
        for ref in refs:
            repo, tag = ref.rsplit(":", 1)
            self.refs.setdefault(repo, {})[tag] = digest
        return digest

    def save(self):
        with open(os.path.join(self.root, "refs.json"), "w") as f:
            json.dump(self.refs, f, indent=1, sort_keys=True)


def add_libraries(layer, program):
    """The shared libraries `program` links, from the host (ldd)."""
    ldd = subprocess.run(["ldd", program], check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in ldd.splitlines():
        words = line.split()
        path = words[2] if "=>" in words and len(words) > 2 else words[0]
        if path.startswith("/") and path not in layer.seen:  # not linux-vdso
            with open(os.path.realpath(path), "rb") as f:
                layer.file(path, f.read(), 0o755)


def busybox_layer(deb):
    layer = Layer()
    fsys = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True,
                          stdout=subprocess.PIPE).stdout
    with tarfile.open(fileobj=io.BytesIO(fsys)) as t:
        binary = t.extractfile("./bin/busybox").read()
    layer.file("/bin/busybox", binary, 0o755)
    scratch = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"busybox-{os.getpid()}")
    with open(scratch, "wb") as f:
        f.write(binary)
    os.chmod(scratch, 0o755)
    try:
        add_libraries(layer, scratch)
        applets = subprocess.run([scratch, "--list-full"], check=True, stdout=subprocess.PIPE,
                                 text=True).stdout.split()
    finally:
        os.unlink(scratch)
    for applet in applets:
        if applet != "bin/busybox":
            layer.hardlink("/" + applet, "/bin/busybox")
    # What specs run that Debian's busybox lacks (the upstream image has
    # them): the host's own, with their libraries.
    for program in HOST_PROGRAMS:
        with open(program, "rb") as f:
            layer.file(program, f.read(), 0o755)
        add_libraries(layer, program)
    for d, mode in (("/tmp", 0o1777), ("/root", 0o700), ("/var/run", 0o755), ("/var/www", 0o755),
                    ("/home", 0o755), ("/proc", 0o755), ("/sys", 0o755), ("/dev", 0o755)):
        layer.dir(d, mode)
    layer.file("/etc/passwd", PASSWD.encode())
    layer.file("/etc/group", GROUP.encode())
    return layer.close()


def program_layer(programs, name, dest, mode=0o755, extra=None):
    layer = Layer()
    with open(os.path.join(programs, name), "rb") as f:
        layer.file(dest, f.read(), mode)
    for path, data in (extra or {}).items():
        layer.file(path, data.encode())
    return layer.close()


def build(store, deb, programs):
    base = busybox_layer(deb)
    k8s = "e2e-test-images/"
    staging = "k8s-staging-cri-tools/"
    store.image(["pause:3.6"], [program_layer(programs, "pause", "/pause")],
                {"Entrypoint": ["/pause"], "Env": []}, "pause")
    store.image([k8s + "busybox:1.29-2"], [base], {"Cmd": ["sh"]}, "busybox")
    nginx = program_layer(programs, "webserver", "/usr/sbin/nginx")
    for ref, port, label in ((k8s + "nginx:1.14-2", 80, "nginx"),
                             (staging + "hostnet-nginx-amd64:latest", 12003, "hostnet-nginx")):
        store.image([ref], [base, nginx], {
            "Cmd": ["nginx", "-g", "daemon off;"], "StopSignal": "SIGQUIT",
            "Env": [PATH_ENV, f"PORT={port}", "PID_FILE=/var/run/nginx.pid"],
            "ExposedPorts": {f"{port}/tcp": {}}}, label)
    store.image([k8s + "httpd:2.4.39-4"],
                [base, program_layer(programs, "webserver", "/usr/local/apache2/bin/httpd")], {
                    "Cmd": ["httpd", "-D", "FOREGROUND"], "WorkingDir": "/usr/local/apache2",
                    "Env": ["PATH=/usr/local/apache2/bin:" + PATH_ENV[len("PATH="):]],
                    "ExposedPorts": {"80/tcp": {}}}, "httpd")
    store.image([k8s + "nonewprivs:1.3"],
                [base, program_layer(programs, "nonewprivs", "/usr/local/bin/nonewprivs", 0o4755)],
                {"Entrypoint": ["/usr/local/bin/nonewprivs"]}, "nonewprivs")
    # Image Manager specs: tags of images of their own; one image, three tags.
    for ref in ("test-image-latest:latest", "test-image-tag:test", "test-image-tag:all",
                "test-image-1:latest", "test-image-2:latest", "test-image-3:latest"):
        store.image([staging + ref], [base], {"Cmd": ["sh"]}, ref)
    store.image([staging + "test-image-tags:1", staging + "test-image-tags:2",
                 staging + "test-image-tags:3"], [base], {"Cmd": ["sh"]}, "test-image-tags")
    for ref, user in (("test-image-user-uid", "1002"), ("test-image-user-username", "www-data"),
                      ("test-image-user-uid-group", "1003:users"),
                      ("test-image-user-username-group", "www-data:www-data")):
        store.image([staging + ref + ":latest"], [base], {"Cmd": ["sh"], "User": user}, ref)
    # default-user (1000) belongs to group-defined-in-image (50000).
    groups = Layer()
    groups.file("/etc/passwd", (PASSWD + "default-user:x:1000:1000::/home/default-user:/bin/sh\n")
                .encode())
    groups.file("/etc/group", (GROUP + "default-user:x:1000:\n"
                               "group-defined-in-image:x:50000:default-user\n").encode())
    store.image([staging + "test-image-predefined-group:latest"], [base, groups.close()],
                {"Cmd": ["sh"], "User": "1000"}, "test-image-predefined-group")
    store.save()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store = None

    def log_message(self, fmt, *args):
        sys.stderr.write("registry: " + (fmt % args) + "\n")

    def _send(self, code, body=b"", ctype="application/json", digest=None, head=False):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head):
        path = self.path.split("?", 1)[0]
        if path in ("/v2", "/v2/"):
            return self._send(200, b"{}", head=head)
        unknown = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
        for kind in ("/manifests/", "/blobs/"):
            if path.startswith("/v2/") and kind in path:
                repo, ref = path[len("/v2/"):].rsplit(kind, 1)
                break
        else:
            return self._send(404, unknown, head=head)
        digest = ref if ref.startswith("sha256:") else self.store.refs.get(repo, {}).get(ref)
        known = digest and (kind == "/blobs/" or digest in self.store.refs.get(repo, {}).values())
        if not known or not os.path.exists(self.store.blob_path(digest)):
            return self._send(404, unknown, head=head)
        with open(self.store.blob_path(digest), "rb") as f:
            body = f.read()
        ctype = OCI_MANIFEST if kind == "/manifests/" else "application/octet-stream"
        self._send(200, body, ctype, digest, head)

    def do_GET(self):
        self._serve(head=False)

    def do_HEAD(self):
        self._serve(head=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--busybox-deb", required=True)
    p.add_argument("--programs", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args()
    store = Store(args.store)
    build(store, args.busybox_deb, args.programs)
    Handler.store = store
    host, port = args.listen.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"listening {host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
