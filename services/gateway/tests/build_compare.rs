#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `strata build` side by side with buildah (Debian's buildah 1.28, `bud --layers`, chroot
//! isolation, a private vfs storage): a corpus of small Dockerfiles is built by both from the same
//! base image in a real registry, both images are exported as OCI layouts (`strata save`,
//! `buildah push oci-archive:`), and the results are compared: the flattened file systems
//! (paths, kinds, modes, owners, contents, link targets), the image configs and the number of
//! non-empty layers. A rebuild with nothing changed must give the same image ID on both.
//!
//! Every difference the comparison finds must be listed in [`ACCEPTED`] with a reason; a listed
//! difference of one named case that is no longer seen fails the test too, so the list follows
//! the behaviour (it feeds docs/compatibility.md).

use serde_json::{Map, Value};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use strata_testkit::run;
use strata_testkit::stack::Stack;

mod common;
use common::{World, build_base_layer, world_of};

/// Who accepts a difference.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Why {
    /// buildah does it differently from BuildKit (or leaves build artifacts behind), strata
    /// does as BuildKit does: accepted for good.
    Buildah,
    // A strata bug found here is fixed, not accepted: the three this test found (FROM scratch
    // without the default PATH, a linked COPY source copied as the link, scratch counted as a
    // step run) are fixed in the gateway.
}

/// One accepted difference: in `case` (`*`: any case) a difference line starting with `diff`.
/// An entry naming a case must be seen in it, so that a change of behaviour (a fixed bug
/// above all) fails the test until the entry is removed; `*` entries may or may not show.
struct Accepted {
    case: &'static str,
    diff: &'static str,
    why: Why,
    reason: &'static str,
}

/// Every difference between strata and buildah this test accepts.
///
/// The runtime mount points: buildah's chroot isolation creates `/dev`, `/proc`, `/sys`, `/run`
/// (empty directories) and `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` (empty files) in the
/// rootfs to bind-mount over while a RUN step runs, and leaves them in the step's layer. strata
/// (like BuildKit) mounts them in the container only and leaves them out of the layer. Only these
/// exact paths are accepted and only as present in buildah's image alone. (`/dev`, `/proc` and
/// `/sys` show in some runs and not in others; the `/etc` files and `/run` in every RUN case.)
const ACCEPTED: &[Accepted] = &[
    Accepted {
        case: "*",
        diff: "fs only in buildah: /dev (dir ",
        why: Why::Buildah,
        reason: "buildah's chroot isolation leaves its /dev mount point in RUN layers",
    },
    Accepted {
        case: "*",
        diff: "fs only in buildah: /proc (dir ",
        why: Why::Buildah,
        reason: "buildah's chroot isolation leaves its /proc mount point in RUN layers",
    },
    Accepted {
        case: "*",
        diff: "fs only in buildah: /sys (dir ",
        why: Why::Buildah,
        reason: "buildah's chroot isolation leaves its /sys mount point in RUN layers",
    },
    Accepted {
        case: "*",
        diff: "fs only in buildah: /run (dir ",
        why: Why::Buildah,
        reason: "buildah's chroot isolation leaves its /run mount point in RUN layers",
    },
    Accepted {
        case: "*",
        diff: "fs only in buildah: /etc/hostname (file ",
        why: Why::Buildah,
        reason: "buildah leaves an empty /etc/hostname (its bind-mount target) in RUN layers",
    },
    Accepted {
        case: "*",
        diff: "fs only in buildah: /etc/hosts (file ",
        why: Why::Buildah,
        reason: "buildah leaves an empty /etc/hosts (its bind-mount target) in RUN layers",
    },
    Accepted {
        case: "*",
        diff: "fs only in buildah: /etc/resolv.conf (file ",
        why: Why::Buildah,
        reason: "buildah leaves an empty /etc/resolv.conf (its bind-mount target) in RUN layers",
    },
    Accepted {
        case: "*",
        diff: "config Labels io.buildah.version: buildah \"",
        why: Why::Buildah,
        reason: "buildah labels every image it builds with its version",
    },
    // WORKDIR: BuildKit (and strata) create the directory in a layer of its own at once;
    // buildah 1.28 only creates it in the working container, so it lands in the next step's
    // layer, or in no layer at all when no later step commits one.
    Accepted {
        case: "env_arg_expansion",
        diff: "layers: buildah 4 non-empty, strata 5",
        why: Why::Buildah,
        reason: "buildah commits no layer for WORKDIR (its directory goes into the next step's layer)",
    },
    Accepted {
        case: "workdir_dirs",
        diff: "layers: buildah 2 non-empty, strata 5",
        why: Why::Buildah,
        reason: "buildah commits no layer for WORKDIR (its directory goes into the next step's layer)",
    },
    Accepted {
        case: "workdir_dirs",
        diff: "fs only in strata: /w/x/y/rel (dir 0755 0:0)",
        why: Why::Buildah,
        reason: "buildah leaves out a WORKDIR directory no later step commits; BuildKit creates it",
    },
    Accepted {
        case: "config_shell_forms",
        diff: "layers: buildah 1 non-empty, strata 2",
        why: Why::Buildah,
        reason: "buildah commits no layer for WORKDIR (and here no later step commits its directory)",
    },
    Accepted {
        case: "config_shell_forms",
        diff: "fs only in strata: /home (dir 0755 0:0)",
        why: Why::Buildah,
        reason: "buildah leaves out a WORKDIR directory no later step commits; BuildKit creates it",
    },
    Accepted {
        case: "config_shell_forms",
        diff: "fs only in strata: /home/app (dir 0755 0:0)",
        why: Why::Buildah,
        reason: "buildah leaves out a WORKDIR directory no later step commits; BuildKit creates it",
    },
    Accepted {
        case: "shell_instruction",
        diff: "config Cmd: buildah [\"/bin/sh\",\"-c\",\"echo shell form\"], strata [\"/bin/busybox\",\"sh\",\"-c\",\"echo shell form\"]",
        why: Why::Buildah,
        reason: "buildah ignores SHELL for the shell form of CMD; Docker and BuildKit use the SHELL in effect",
    },
    Accepted {
        case: "escape_directive",
        diff: "config Env X: buildah \"a` b\", strata \"a b\"",
        why: Why::Buildah,
        reason: "buildah 1.28 keeps the escape character of `# escape=` in ENV values; BuildKit removes it",
    },
    Accepted {
        case: "escape_directive",
        diff: "fs /x.txt: buildah file 0644 0:0 sha256:f3dcfd7b994f5df2, strata file 0644 0:0 sha256:01186fcf04b4b447",
        why: Why::Buildah,
        reason: "the ENV value above as RUN wrote it (\"a` b\" with buildah, \"a b\" with strata)",
    },
];

/// A Dockerfile of the corpus with its context. `{BASE}` in the Dockerfile is the base image.
struct Case {
    name: &'static str,
    dockerfile: &'static str,
    files: &'static [(&'static str, &'static str)],
    build_args: &'static [&'static str],
    /// Build with buildah's Docker format: buildah keeps SHELL and HEALTHCHECK in it only (in
    /// its OCI format it ignores both, with a warning). The OCI layout buildah pushes drops
    /// them again, so they are read from `buildah inspect` and compared with strata's config.
    docker_format: bool,
    /// More context set-up (links, modes, archives).
    setup: Option<fn(&Path)>,
    /// Paths both images must have, and paths neither may have: a check of this test's reader
    /// (whiteouts, unpacking, ignoring) beside the comparison.
    must: &'static [&'static str],
    must_not: &'static [&'static str],
}

impl Case {
    const fn new(name: &'static str, dockerfile: &'static str) -> Self {
        Self {
            name,
            dockerfile,
            files: &[],
            build_args: &[],
            docker_format: false,
            setup: None,
            must: &[],
            must_not: &[],
        }
    }
    const fn must(
        mut self,
        must: &'static [&'static str],
        must_not: &'static [&'static str],
    ) -> Self {
        self.must = must;
        self.must_not = must_not;
        self
    }
    const fn files(mut self, files: &'static [(&'static str, &'static str)]) -> Self {
        self.files = files;
        self
    }
    const fn args(mut self, build_args: &'static [&'static str]) -> Self {
        self.build_args = build_args;
        self
    }
    const fn docker_format(mut self) -> Self {
        self.docker_format = true;
        self
    }
    const fn setup(mut self, f: fn(&Path)) -> Self {
        self.setup = Some(f);
        self
    }
}

fn corpus() -> Vec<Case> {
    vec![
        Case::new(
            "run_cmd",
            "FROM {BASE}\n\
             RUN echo hello > /hello.txt && mkdir -p /opt/x && touch /opt/x/y && chmod 600 /opt/x/y\n\
             CMD [\"cat\", \"/hello.txt\"]\n",
        ),
        Case::new(
            "env_arg_expansion",
            r#"FROM {BASE}
ARG DIR=/srv
ENV APP=$DIR/app SUB=data
ENV DERIVED="${APP}/x" DEFAULTED=${UNSET:-dflt} ALT=${APP:+set}
WORKDIR ${APP}/${SUB}
COPY a.txt ${APP}/conf/
COPY b.txt $SUB/
RUN pwd > /pwd.txt && echo "$APP $DIR ${UNSET:-dflt}" > /vars.txt
"#,
        )
        .files(&[("a.txt", "a\n"), ("b.txt", "b\n")]),
        Case::new(
            "build_args",
            r#"FROM {BASE}
ARG VERSION=0
ARG FLAVOR
ARG UNUSED_DEFAULT=kept
ENV BUILT_VERSION=$VERSION
RUN echo "$VERSION-$FLAVOR-$UNUSED_DEFAULT" > /version.txt
LABEL version=$VERSION flavor="${FLAVOR}"
"#,
        )
        .args(&["VERSION=2.5", "FLAVOR=slim"]),
        Case::new(
            "workdir_dirs",
            r"FROM {BASE}
WORKDIR /w/x/y
WORKDIR rel
WORKDIR ../z
RUN pwd > here.txt
",
        ),
        Case::new(
            "copy_forms",
            r"FROM {BASE}
COPY one.txt /dest/
COPY dir/ /contents/
COPY dir /contents2
COPY *.txt /wild/
COPY src/*.txt src/n?.md /wild2/
COPY one.txt /renamed.txt
COPY run.sh one.txt /bin/
",
        )
        .files(&[
            ("one.txt", "one\n"),
            ("two.txt", "two\n"),
            ("dir/a", "a\n"),
            ("dir/sub/b", "b\n"),
            ("src/x.txt", "x\n"),
            ("src/y.txt", "y\n"),
            ("src/n1.md", "n1\n"),
            ("src/other.md", "other\n"),
            ("run.sh", "#!/bin/sh\necho run\n"),
        ])
        .setup(|dir| {
            chmod(&dir.join("run.sh"), 0o755);
            chmod(&dir.join("dir/sub"), 0o700);
            chmod(&dir.join("dir/sub/b"), 0o600);
        }),
        Case::new(
            "copy_chown",
            r"FROM {BASE}
COPY --chown=app:staff a.txt /owned/
COPY --chown=1000:50 dir/ /numeric/
COPY --chown=app b.txt /useronly/
COPY --chown=2000:3000 a.txt /unknown.txt
COPY --chown=app:staff dir /parents/deep/
",
        )
        .files(&[("a.txt", "a\n"), ("b.txt", "b\n"), ("dir/c", "c\n")]),
        Case::new(
            "copy_chmod",
            r"FROM {BASE}
COPY --chmod=0750 a.txt /x/
COPY --chmod=640 --chown=app:staff dir/ /y/
",
        )
        .files(&[("a.txt", "a\n"), ("dir/b", "b\n"), ("dir/sub/c", "c\n")]),
        Case::new(
            "add_forms",
            r"FROM {BASE}
ADD archive.tar.gz /unpacked/
ADD archive.tar.gz /unpacked2
ADD plain.txt /plain/
ADD --chown=app:staff plain.txt /owned.txt
",
        )
        .files(&[("plain.txt", "plain\n")])
        .setup(write_archive)
        .must(
            &[
                "/unpacked/pkg/conf/x.conf",
                "/unpacked2/pkg/link",
                "/plain/plain.txt",
                "/owned.txt",
            ],
            &["/unpacked/archive.tar.gz", "/unpacked2/archive.tar.gz"],
        ),
        Case::new("dockerignore", "FROM {BASE}\nCOPY . /ctx/\n")
            .files(&[
                (
                    ".dockerignore",
                    "*.log\nsecret/\n!keep.log\n**/*.tmp\ndocs/*\n!docs/README.md\n",
                ),
                ("a.log", "x"),
                ("keep.log", "k"),
                ("secret/key", "s"),
                ("src/main.c", "int main;"),
                ("src/deep/x.tmp", "t"),
                ("docs/README.md", "r"),
                ("docs/other.md", "o"),
            ])
            .must(
                &[
                    "/ctx/keep.log",
                    "/ctx/src/main.c",
                    "/ctx/docs/README.md",
                    "/ctx/Dockerfile",
                ],
                &[
                    "/ctx/a.log",
                    "/ctx/secret",
                    "/ctx/src/deep/x.tmp",
                    "/ctx/docs/other.md",
                ],
            ),
        Case::new(
            "multi_stage",
            r#"FROM {BASE} AS builder
RUN mkdir -p /out && echo compiled > /out/app.bin && chmod 750 /out/app.bin

FROM {BASE} AS second
RUN echo second > /second.txt

FROM {BASE}
COPY --from=builder /out/ /opt/
COPY --from=1 /second.txt /from-index.txt
COPY --from=0 /out/app.bin /bin/app
CMD ["/bin/app"]
"#,
        ),
        Case::new(
            "scratch_copy",
            "FROM scratch\nCOPY a.txt /\nCOPY dir /data/\nCMD [\"/a.txt\"]\n",
        )
        .files(&[("a.txt", "a\n"), ("dir/b", "b\n")]),
        Case::new(
            "config_exec_forms",
            r#"FROM {BASE}
USER app:staff
EXPOSE 80 443/tcp 53/udp
LABEL a=1 "b c"="d e"
LABEL multi="x \
y"
VOLUME /data
VOLUME ["/logs", "/cache"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/echo", "entry"]
CMD ["hello", "world"]
"#,
        ),
        Case::new(
            "config_shell_forms",
            r#"FROM {BASE}
USER 1000
WORKDIR /home/app
ENTRYPOINT echo "entry $HOME"
CMD echo cmd
STOPSIGNAL 9
"#,
        ),
        Case::new(
            "entrypoint_resets_inherited_cmd",
            "FROM {BASE}\nENTRYPOINT [\"/bin/sh\", \"-c\"]\n",
        ),
        Case::new(
            "shell_instruction",
            r#"FROM {BASE}
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "$-" | grep -q e && echo errexit > /flags.txt
SHELL ["/bin/busybox", "sh", "-c"]
RUN echo "$0" > /zero.txt
CMD echo shell form
"#,
        )
        .docker_format(),
        Case::new(
            "healthcheck",
            r#"FROM {BASE}
HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=4 CMD cat /etc/passwd || exit 1
"#,
        )
        .docker_format(),
        Case::new(
            "healthcheck_exec_form",
            "FROM {BASE}\nHEALTHCHECK --interval=1m CMD [\"true\"]\n",
        )
        .docker_format(),
        Case::new(
            "continuations",
            r#"FROM {BASE}
RUN echo one \
    two \
# a comment inside the continuation
    three > /line.txt

ENV LONG=a\
b C="with space" D=with\ escaped
RUN echo "$LONG $C $D" > /env.txt
"#,
        ),
        Case::new(
            "escape_directive",
            "# escape=`\nFROM {BASE}\nRUN echo one `\n    two > /line.txt\nRUN echo 'a\\b' > /bs.txt\nENV X=a` b\nRUN echo \"$X\" > /x.txt\n",
        ),
        Case::new(
            "whiteouts",
            r"FROM {BASE}
RUN mkdir -p /data/sub && echo x > /data/sub/f && echo y > /data/keep && echo z > /data/gone
RUN rm -rf /data/sub /data/gone /bin/sed /etc/group && echo new > /data/new
RUN rm -rf /data && mkdir /data && echo only > /data/only
COPY a.txt /data/
",
        )
        .files(&[("a.txt", "a\n")])
        .must(
            &["/data/only", "/data/a.txt", "/bin/busybox", "/etc/passwd"],
            &[
                "/data/keep",
                "/data/new",
                "/data/sub",
                "/data/sub/f",
                "/bin/sed",
                "/etc/group",
            ],
        ),
        Case::new(
            "symlinks_in_context",
            r"FROM {BASE}
COPY dir /d/
COPY link.txt /l/
COPY . /all/
",
        )
        .files(&[("real.txt", "real\n"), ("dir/f", "f\n")])
        .setup(|dir| {
            let ln = |target: &str, link: &str| {
                std::os::unix::fs::symlink(target, dir.join(link)).unwrap();
            };
            ln("real.txt", "link.txt");
            ln("../real.txt", "dir/inner");
            ln("/etc/passwd", "dir/abs");
            ln("nowhere", "dir/dangling");
            ln("f", "dir/sibling");
        }),
    ]
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `archive.tar.gz`: a directory owned by 1000:50, an executable, a private file, a link.
fn write_archive(dir: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, owner: (u64, u64), data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if kind == tar::EntryType::Symlink {
            h.set_size(0);
            b.append_link(&mut h, path, std::str::from_utf8(data).unwrap())
                .unwrap();
        } else {
            b.append_data(&mut h, path, data).unwrap();
        }
    };
    add("pkg/", tar::EntryType::Directory, 0o755, (1000, 50), b"");
    add(
        "pkg/bin.sh",
        tar::EntryType::Regular,
        0o755,
        (0, 0),
        b"#!/bin/sh\n",
    );
    add("pkg/conf/", tar::EntryType::Directory, 0o750, (0, 50), b"");
    add(
        "pkg/conf/x.conf",
        tar::EntryType::Regular,
        0o600,
        (1000, 1000),
        b"x=1\n",
    );
    add(
        "pkg/link",
        tar::EntryType::Symlink,
        0o777,
        (0, 0),
        b"bin.sh",
    );
    let tar = b.into_inner().unwrap();
    let out = run(Command::new("gzip").args(["-n", "-c"]), Some(&tar));
    assert!(out.status.success());
    std::fs::write(dir.join("archive.tar.gz"), out.stdout).unwrap();
}

/// The context directory of `case`.
fn context(w: &World, case: &Case) -> PathBuf {
    let dir = w.stack.path().join("contexts").join(case.name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        case.dockerfile.replace("{BASE}", &w.image),
    )
    .unwrap();
    for (p, data) in case.files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
    if let Some(setup) = case.setup {
        setup(&dir);
    }
    dir
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds `case` with strata as `cmp-NAME`; returns the image ID and the output.
fn strata_build(w: &World, case: &Case, dir: &Path) -> (String, String) {
    let tag = format!("cmp-{}", case.name.replace('_', "-"));
    let mut args = vec!["build".to_owned(), "-t".into(), tag];
    for a in case.build_args {
        args.push("--build-arg".into());
        args.push((*a).to_owned());
    }
    args.push(dir.display().to_string());
    let out = run(w.stack.cli().args(&args), None);
    assert!(
        out.status.success(),
        "strata build of {}: {}\n{}",
        case.name,
        text(&out),
        w.stack.logs()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("built "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image ID in {stdout}"))
        .to_owned();
    (id, stdout)
}

/// buildah with a storage of its own under `root`.
struct Buildah {
    root: PathBuf,
    policy: PathBuf,
}

impl Buildah {
    fn new(root: PathBuf) -> Self {
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        // Our own policy and registries files: nothing of /etc/containers is needed or written.
        let policy = root.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::write(root.join("registries.conf"), "").unwrap();
        Self { root, policy }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("/usr/bin/buildah");
        c.env("BUILDAH_ISOLATION", "chroot")
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.root.join("registries.conf"),
            )
            .env("TMPDIR", self.root.join("tmp"))
            .arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    fn ok(&self, args: &[&str], what: &str) -> String {
        let out = run(self.cmd().args(args), None);
        assert!(out.status.success(), "buildah {what}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds `case` as `cmp-NAME`; returns the image ID.
    fn build(&self, case: &Case, dir: &Path) -> String {
        let iid = self.root.join("iid");
        let tag = format!("cmp-{}", case.name.replace('_', "-"));
        let mut c = self.cmd();
        c.arg("bud")
            .arg("--signature-policy")
            .arg(&self.policy)
            .args(["--layers", "--isolation", "chroot", "--tls-verify=false"])
            .args([
                "--format",
                if case.docker_format { "docker" } else { "oci" },
            ])
            .arg("--iidfile")
            .arg(&iid)
            .args(["-t", &tag, "-f"])
            .arg(dir.join("Dockerfile"));
        for a in case.build_args {
            c.args(["--build-arg", a]);
        }
        c.arg(dir);
        let out = run(&mut c, None);
        assert!(
            out.status.success(),
            "buildah bud of {}: {}",
            case.name,
            text(&out)
        );
        std::fs::read_to_string(&iid).unwrap().trim().to_owned()
    }

    fn push(&self, name: &str, archive: &Path) {
        let dest = format!("oci-archive:{}", archive.display());
        let policy = self.policy.display().to_string();
        self.ok(
            &["push", "--signature-policy", &policy, name, &dest],
            "push",
        );
    }

    /// The Docker-format config of an image (where buildah keeps Healthcheck and Shell).
    fn docker_config(&self, name: &str) -> Value {
        let v: Value =
            serde_json::from_str(&self.ok(&["inspect", "--type", "image", name], "inspect"))
                .unwrap();
        v["Docker"]["config"].clone()
    }
}

/// An image read from an OCI layout: its config and its layers (uncompressed tars).
struct Image {
    config: Value,
    layers: Vec<Vec<u8>>,
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// The image of an OCI layout archive (a tar of the layout), unpacked into `into`: follows
/// index.json (and nested indexes, taking this machine's platform) to a manifest, its config and
/// layers; layers are gzip or plain tar (sniffed).
fn read_layout_archive(archive: &Path, into: &Path) -> Image {
    std::fs::create_dir_all(into).unwrap();
    tar::Archive::new(std::fs::File::open(archive).unwrap())
        .unpack(into)
        .unwrap();
    read_layout(into)
}

fn read_layout(layout: &Path) -> Image {
    let mut doc = read_json(&layout.join("index.json"));
    let manifest = loop {
        if doc.get("layers").is_some() {
            break doc;
        }
        let manifests = doc["manifests"]
            .as_array()
            .expect("an index without manifests");
        let arch = strata_testkit::registry::host_arch();
        let pick = manifests
            .iter()
            .find(|m| {
                m["platform"]["architecture"] == arch
                    || m["platform"].is_null()
                        && !m["mediaType"]
                            .as_str()
                            .unwrap_or("")
                            .contains("attestation")
            })
            .unwrap_or(&manifests[0]);
        doc = read_json(&blob(layout, pick["digest"].as_str().unwrap()));
    };
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let data = std::fs::read(blob(layout, l["digest"].as_str().unwrap())).unwrap();
            let c = strata_archive::detect_compression(&data);
            let mut out = Vec::new();
            strata_archive::decompress(&data[..], c)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            out
        })
        .collect();
    Image { config, layers }
}

/// One path of a flattened file system.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    /// sha256 of a file's content (a hard link's: its target's), a link's target.
    data: String,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if !self.data.is_empty() {
            write!(f, " {}", self.data)?;
        }
        Ok(())
    }
}

/// `/a/b` for a tar path (`./a/b/`, `a/b`); `None` for the root.
fn norm(p: &Path) -> Option<String> {
    let s = p.to_string_lossy();
    let s = s.trim_start_matches("./").trim_matches('/');
    (!s.is_empty() && s != ".").then(|| format!("/{s}"))
}

fn parent_of(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn remove_tree(fs: &mut BTreeMap<String, Node>, path: &str, keep_self: bool) {
    let prefix = if path == "/" {
        "/".to_owned()
    } else {
        format!("{path}/")
    };
    let doomed: Vec<String> = fs
        .keys()
        .filter(|k| k.starts_with(&prefix) || (!keep_self && k.as_str() == path))
        .cloned()
        .collect();
    for k in doomed {
        fs.remove(&k);
    }
}

/// Applies the layers bottom first, with OCI whiteouts (`.wh.NAME` removes NAME of the layers
/// below, `.wh..wh..opq` everything below in its directory). The root directory is left out
/// (neither builder changes it; its entry in a layer is an encoding detail), and a hard link
/// is taken as a file with its target's content.
fn flatten(layers: &[Vec<u8>]) -> BTreeMap<String, Node> {
    let mut fs: BTreeMap<String, Node> = BTreeMap::new();
    for tar in layers {
        let mut removed = Vec::new();
        let mut opaque = Vec::new();
        let mut added: Vec<(String, Node)> = Vec::new();
        let mut archive = tar::Archive::new(&tar[..]);
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let Some(path) = norm(&e.path().unwrap()) else {
                continue;
            };
            let name = path.rsplit('/').next().unwrap().to_owned();
            let parent = parent_of(&path).to_owned();
            if name == ".wh..wh..opq" {
                opaque.push(parent);
                continue;
            }
            if let Some(real) = name.strip_prefix(".wh.") {
                removed.push(if parent == "/" {
                    format!("/{real}")
                } else {
                    format!("{parent}/{real}")
                });
                continue;
            }
            let h = e.header();
            let (mode, uid, gid) = (
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap(),
            );
            let link = || {
                e.link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let (kind, data) = match h.entry_type() {
                tar::EntryType::Directory => ("dir", String::new()),
                tar::EntryType::Symlink => ("symlink", format!("-> {}", link())),
                tar::EntryType::Link => {
                    let target = norm(Path::new(&link())).unwrap_or_default();
                    let data = added
                        .iter()
                        .rev()
                        .find(|(p, _)| *p == target)
                        .map(|(_, n)| n.data.clone())
                        .or_else(|| fs.get(&target).map(|n| n.data.clone()))
                        .unwrap_or_else(|| format!("hard link to missing {target}"));
                    ("file", data)
                }
                tar::EntryType::Fifo => ("fifo", String::new()),
                tar::EntryType::Char => ("char", String::new()),
                tar::EntryType::Block => ("block", String::new()),
                _ => {
                    let mut content = Vec::new();
                    e.read_to_end(&mut content).unwrap();
                    let sum = hex::encode(sha2::Sha256::digest(&content));
                    ("file", format!("sha256:{}", &sum[..16]))
                }
            };
            added.push((
                path,
                Node {
                    kind,
                    mode,
                    uid,
                    gid,
                    data,
                },
            ));
        }
        for p in &removed {
            remove_tree(&mut fs, p, false);
        }
        for p in &opaque {
            remove_tree(&mut fs, p, true);
        }
        for (p, n) in added {
            if n.kind != "dir" {
                remove_tree(&mut fs, &p, true);
            }
            fs.insert(p, n);
        }
    }
    fs
}

/// Layers with at least one entry.
fn non_empty_layers(layers: &[Vec<u8>]) -> usize {
    layers
        .iter()
        .filter(|t| {
            tar::Archive::new(&t[..])
                .entries()
                .unwrap()
                .next()
                .is_some()
        })
        .count()
}

fn compare_fs(b: &BTreeMap<String, Node>, s: &BTreeMap<String, Node>, diffs: &mut Vec<String>) {
    let paths: BTreeSet<&String> = b.keys().chain(s.keys()).collect();
    for p in paths {
        match (b.get(p), s.get(p)) {
            (Some(x), None) => diffs.push(format!("fs only in buildah: {p} ({x})")),
            (None, Some(y)) => diffs.push(format!("fs only in strata: {p} ({y})")),
            (Some(x), Some(y)) if x != y => {
                diffs.push(format!("fs {p}: buildah {x}, strata {y}"));
            }
            _ => {}
        }
    }
}

/// A config value with absent, null, "", [] and {} all as `None`.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    })
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "absent".to_owned(), Value::to_string)
}

/// Env as NAME → value (and the names in order).
fn env_map(v: Option<&Value>) -> (BTreeMap<String, String>, Vec<String>) {
    let mut m = BTreeMap::new();
    let mut order = Vec::new();
    for e in v.and_then(Value::as_array).into_iter().flatten() {
        let s = e.as_str().unwrap_or_default();
        let (k, val) = s.split_once('=').unwrap_or((s, ""));
        m.insert(k.to_owned(), val.to_owned());
        order.push(k.to_owned());
    }
    (m, order)
}

fn compare_config(b: &Map<String, Value>, s: &Map<String, Value>, diffs: &mut Vec<String>) {
    for key in [
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "StopSignal",
        "Healthcheck",
        "Shell",
    ] {
        let (x, y) = (present(b.get(key)), present(s.get(key)));
        if x != y {
            diffs.push(format!(
                "config {key}: buildah {}, strata {}",
                show(x),
                show(y)
            ));
        }
    }
    // Maps: one difference a key, so that one accepted key does not hide others.
    for key in ["Labels", "ExposedPorts", "Volumes"] {
        let empty = Map::new();
        let x = present(b.get(key))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let y = present(s.get(key))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for k in keys {
            if x.get(k) != y.get(k) {
                diffs.push(format!(
                    "config {key} {k}: buildah {}, strata {}",
                    show(x.get(k)),
                    show(y.get(k))
                ));
            }
        }
    }
    let (x, xo) = env_map(b.get("Env"));
    let (y, yo) = env_map(s.get("Env"));
    let names: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    for k in names {
        if x.get(k) != y.get(k) {
            let q =
                |v: Option<&String>| v.map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"));
            diffs.push(format!(
                "config Env {k}: buildah {}, strata {}",
                q(x.get(k)),
                q(y.get(k))
            ));
        }
    }
    if x == y && xo != yo {
        diffs.push(format!("config Env order: buildah {xo:?}, strata {yo:?}"));
    }
}

/// What one case found.
struct Outcome {
    case: &'static str,
    diffs: Vec<String>,
}

fn compare_case(w: &World, bh: &Buildah, case: &Case) -> Outcome {
    let dir = context(w, case);
    let tag = format!("cmp-{}", case.name.replace('_', "-"));
    let work = w.stack.path().join("compare").join(case.name);

    let (sid, _) = strata_build(w, case, &dir);
    let (sid2, sout2) = strata_build(w, case, &dir);
    let bid = bh.build(case, &dir);
    let bid2 = bh.build(case, &dir);

    let mut diffs = Vec::new();
    if sid2 != sid {
        diffs.push(format!("cache: strata rebuilt {sid} as {sid2}"));
    }
    if !sout2.contains("(0 steps run") {
        let built = sout2
            .lines()
            .find(|l| l.starts_with("built "))
            .unwrap_or_default();
        diffs.push(format!(
            "cache: strata ran steps again: {}",
            built.split_once(' ').map_or(built, |(_, rest)| rest
                .split_once(' ')
                .map_or(rest, |(_, r)| r))
        ));
    }
    if bid2 != bid {
        diffs.push(format!("cache: buildah rebuilt {bid} as {bid2}"));
    }

    let s_archive = work.join("strata.tar");
    std::fs::create_dir_all(&work).unwrap();
    let s_archive_arg = s_archive.display().to_string();
    w.ok(&["save", "-o", &s_archive_arg, &tag]);
    let b_archive = work.join("buildah.tar");
    bh.push(&tag, &b_archive);

    let simg = read_layout_archive(&s_archive, &work.join("strata"));
    let bimg = read_layout_archive(&b_archive, &work.join("buildah"));

    let (bfs, sfs) = (flatten(&bimg.layers), flatten(&simg.layers));
    compare_fs(&bfs, &sfs, &mut diffs);

    for (side, fs) in [("buildah", &bfs), ("strata", &sfs)] {
        for p in case.must {
            if !fs.contains_key(*p) {
                diffs.push(format!("expect: {side} has no {p}"));
            }
        }
        for p in case.must_not {
            if fs.contains_key(*p) {
                diffs.push(format!("expect: {side} has {p}"));
            }
        }
    }

    let empty = Map::new();
    let mut bconf = bimg.config["config"].as_object().unwrap_or(&empty).clone();
    let sconf = simg.config["config"].as_object().unwrap_or(&empty).clone();
    if case.docker_format {
        let docker = bh.docker_config(&tag);
        for key in ["Healthcheck", "Shell"] {
            if let Some(v) = docker.get(key) {
                bconf.insert(key.to_owned(), v.clone());
            }
        }
    }
    compare_config(&bconf, &sconf, &mut diffs);

    let (bl, sl) = (
        non_empty_layers(&bimg.layers),
        non_empty_layers(&simg.layers),
    );
    if bl != sl {
        diffs.push(format!("layers: buildah {bl} non-empty, strata {sl}"));
    }
    Outcome {
        case: case.name,
        diffs,
    }
}

fn accepted_for(case: &str, diff: &str) -> Option<&'static Accepted> {
    ACCEPTED
        .iter()
        .find(|a| (a.case == "*" || a.case == case) && diff.starts_with(a.diff))
}

#[test]
fn strata_and_buildah_build_the_corpus_alike() {
    let start = Instant::now();
    let w = world_of(Stack::start(), vec![build_base_layer()], "base:1");
    let bh = Buildah::new(w.stack.path().join("buildah"));
    let mut corpus = corpus();
    assert!(corpus.len() >= 15);
    // STRATA_COMPARE_CASES=a,b runs only these cases (while working on one).
    let only = std::env::var("STRATA_COMPARE_CASES").ok();
    let selected: Option<BTreeSet<String>> = only
        .as_deref()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let names: BTreeSet<&str> = corpus.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), corpus.len(), "case names repeat");
    for a in ACCEPTED {
        assert!(
            a.case == "*" || names.contains(a.case),
            "ACCEPTED names no case of the corpus: {}",
            a.case
        );
    }

    if let Some(sel) = &selected {
        corpus.retain(|c| sel.contains(c.name));
    }
    let mut unexpected = Vec::new();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut report = String::new();
    for case in &corpus {
        let t = Instant::now();
        let outcome = compare_case(&w, &bh, case);
        report.push_str(&format!(
            "{} ({:.1}s): {} differences\n",
            outcome.case,
            t.elapsed().as_secs_f64(),
            outcome.diffs.len()
        ));
        for d in &outcome.diffs {
            match accepted_for(outcome.case, d) {
                Some(a) => {
                    seen.insert((a.case, a.diff));
                    report.push_str(&format!("  accepted ({:?}: {}): {d}\n", a.why, a.reason));
                }
                None => {
                    report.push_str(&format!("  UNEXPECTED: {d}\n"));
                    unexpected.push(format!("{}: {d}", outcome.case));
                }
            }
        }
    }
    eprintln!(
        "{report}corpus of {} compared in {:.1}s",
        corpus.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        unexpected.is_empty(),
        "differences between strata and buildah not in ACCEPTED:\n{}\n\nfull report:\n{report}",
        unexpected.join("\n")
    );
    let gone: Vec<String> = ACCEPTED
        .iter()
        .filter(|a| a.case != "*" && !seen.contains(&(a.case, a.diff)))
        .filter(|a| selected.as_ref().is_none_or(|sel| sel.contains(a.case)))
        .map(|a| format!("{}: {} ({:?}: {})", a.case, a.diff, a.why, a.reason))
        .collect();
    assert!(
        gone.is_empty(),
        "accepted differences no longer seen (update ACCEPTED and docs/compatibility.md):\n{}\n\nfull report:\n{report}",
        gone.join("\n")
    );
}
