#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target under fuzz/corpus/<target>/ (small files, kept
in the repository; libFuzzer adds what it finds to the same directories when run by hand)."""

import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
SANDBOX_OUTSIDE = "/tmp/strata-fuzz/sandbox/outside"


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar_of(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            kind, name = e[0], e[1]
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            data = b""
            if kind == "file":
                data = e[2]
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e[2]
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = e[2]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = e[2]
            if len(e) > 3 and isinstance(e[3], dict):
                info.pax_headers = e[3]
            t.addfile(info, io.BytesIO(data) if kind == "file" else None)
        end = t.offset
    # The end-of-archive blocks, without the padding to tarfile's 10 KiB records.
    return buf.getvalue()[:end] + bytes(1024)


def layers():
    # The first byte selects the mode: bit 0 Delete (else Overlay), bit 1 a lower layer.
    yield "files_and_dirs", 0, tar_of([
        ("dir", "etc"), ("file", "etc/hostname", b"strata\n"), ("dir", "usr/bin"),
        ("file", "usr/bin/sh", b"\x7fELF"), ("fifo", "run/fifo"), ("chr", "dev/null", (1, 3)),
    ])
    yield "symlink_and_whiteout", 0, tar_of([
        ("dir", "a"), ("file", "a/keep", b"k"), ("symlink", "a/link", "/etc/passwd"),
        ("file", "a/.wh.gone", b""), ("file", "b/.wh..wh..opq", b""),
    ])
    yield "whiteouts_delete", 1, tar_of([
        ("file", "x/one", b"1"), ("file", "x/.wh.one", b""), ("file", "y/.wh..wh..opq", b""),
        ("file", "y/two", b"2"),
    ])
    yield "symlink_escape_relative", 0, tar_of([
        ("symlink", "up", "../outside"), ("file", "up/sentinel", b"overwritten"),
        ("symlink", "deep", "../../../../../../tmp/strata-fuzz/sandbox/outside"),
        ("file", "deep/new", b"x"),
    ])
    yield "symlink_escape_absolute", 0, tar_of([
        ("symlink", "abs", SANDBOX_OUTSIDE), ("file", "abs/sentinel", b"overwritten"),
        ("symlink", "dev", SANDBOX_OUTSIDE + "/dir"), ("chr", "dev/null", (1, 3)),
        ("symlink", "etc", "/tmp/strata-fuzz/sandbox/outside"), ("file", "etc/passwd", b"x"),
    ])
    yield "symlink_chain", 0, tar_of([
        ("symlink", "a", "b"), ("symlink", "b", "c/.."), ("dir", "c"),
        ("symlink", "c/d", "../../.."), ("file", "a/c/d/outside/sentinel", b"x"),
    ])
    yield "hardlink_escape", 0, tar_of([
        ("hardlink", "h", "../outside/sentinel"), ("hardlink", "i", SANDBOX_OUTSIDE + "/sentinel"),
        ("symlink", "s", "../outside"), ("hardlink", "j", "s/sentinel"),
    ])
    yield "dotdot_names", 0, tar_of([
        ("file", "../outside/sentinel", b"x"), ("file", "a/../../outside/new", b"x"),
        ("file", "/abs/file", b"x"), ("dir", "./."),
    ])
    yield "copy_up_from_lower", 2, tar_of([
        ("hardlink", "etc/passwd-link", "etc/passwd"), ("hardlink", "dir/copied", "dir/file"),
        ("hardlink", "dir/through", "dir/out/sentinel"),
    ])
    yield "replace_dir_with_link", 3, tar_of([
        ("dir", "etc"), ("file", "etc/a", b"a"), ("symlink", "etc", "../outside"),
        ("file", "etc/a", b"b"),
    ])
    yield "pax_and_long_names", 0, tar_of([
        ("file", "p/" + "n" * 200, b"long", {"SCHILY.xattr.user.k": "v", "mtime": "1.5"}),
        ("symlink", "l", "t" * 150, {"path": "pax-path"}),
        ("file", "sized", b"abc", {"size": "3"}),
    ], fmt=tarfile.PAX_FORMAT)
    yield "gnu_long_names", 0, tar_of([
        ("file", "g/" + "m" * 300, b"x"), ("symlink", "gl", "/" + "z" * 300),
    ])


def main():
    for name, sel, data in layers():
        write("layer_extract", name, bytes([sel]) + data)

    for i, r in enumerate([
        "busybox", "docker.io/library/busybox:latest", "localhost:5000/a/b:v1",
        "ghcr.io/org/repo@sha256:" + "a" * 64, "[::1]:5000/x:tag@sha256:" + "b" * 64,
        "Registry.Example.com/name", "index.docker.io/foo", "127.0.0.1/a/b/c:1.2-rc_3",
    ]):
        write("reference_parse", f"ref{i}", r.encode())

    for i, f in enumerate([
        "name==docker.io/library/busybox:latest",
        'labels."com.example.key"~=/^v[0-9]+$/,name!=x',
        "labels.a\ntarget.digest",
        "labels.|quoted key|==|v a l|, name~=\"bu.*\"",
        "name~=/(/",
    ]):
        write("filter_parse", f"filter{i}", f.encode())

    digest = "sha256:" + "1" * 64
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
            "size": 528, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [desc, dict(desc, platform={"architecture": "amd64", "os": "linux"})],
             "annotations": {"a": "b"}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": digest, "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": digest, "size": 10, "urls": None}]}
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=b"], "Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [digest]},
              "history": [{"created_by": "x", "empty_layer": True}]}
    write("manifest_parse", "index", b"\x00" + json.dumps(index).encode())
    write("manifest_parse", "docker_list", b"\x01" + json.dumps(
        dict(index, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")).encode())
    write("manifest_parse", "manifest", b"\x02" + json.dumps(manifest).encode())
    write("manifest_parse", "config", b"\x04" + json.dumps(config).encode())

    def frame(kind, flags, payload, stream=1):
        return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

    def literal(name, value):
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

    settings = frame(4, 0, b"", stream=0)
    grpcurl = literal(b":method", b"POST") + literal(b":scheme", b"http") + \
        literal(b":path", b"/grpc.health.v1.Health/Check") + \
        literal(b":authority", b"/run/strata/x.sock") + literal(b"content-type", b"application/grpc")
    write("header_rewrite", "grpcurl_unix_authority", settings + frame(1, 4, grpcurl) +
          frame(0, 1, b"\x00\x00\x00\x00\x00"))
    # Indexed fields and a dynamic table entry, split over HEADERS + CONTINUATION, padded.
    indexed = b"\x83\x86" + b"\x41\x0alocalhost:" + b"\x44\x01/" + b"\xbe"
    write("header_rewrite", "continuation_padded", settings +
          frame(1, 0x8, b"\x02" + indexed[:5] + b"\x00\x00") + frame(9, 4, indexed[5:]))
    write("header_rewrite", "priority_end_stream", settings +
          frame(1, 0x25, b"\x00\x00\x00\x03\x10" + grpcurl) + frame(8, 0, b"\x00\x00\x10\x00", stream=0))


if __name__ == "__main__":
    main()
