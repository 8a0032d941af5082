//! The typed view: stages, every instruction, expansion, error messages.

use std::time::Duration;

use strata_dockerfile::{Command, CopySpec, Dockerfile, Error, Healthcheck, Kind, parse_ast};

const MULTI: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=alpine:3.20
ARG VERSION
FROM --platform=$BUILDPLATFORM ${BASE} AS Builder
MAINTAINER someone <a@b.c>
ENV GOPATH=/go PATH="/go/bin:$PATH"
ENV OLD form with spaces
ARG TARGET=prod FLAG
WORKDIR /src
COPY --chown=1:1 --chmod=644 --link go.mod go.sum ./
ADD https://example.com/x.tgz /tmp/
RUN --network=none --mount=type=cache,target=/root/.cache \
    go build -o /out/app ./cmd/app
LABEL org.opencontainers.image.title="my app" version=1
USER 1000:1000
EXPOSE 8080 9090/udp
VOLUME ["/data", "/cache"]
STOPSIGNAL SIGTERM
SHELL ["/bin/bash", "-c"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --retries=3 CMD curl -f http://localhost/
ONBUILD COPY . /app
CMD ["serve", "--port=8080"]
ENTRYPOINT /out/app

from scratch
COPY --from=builder /out/app /app
HEALTHCHECK NONE
ENTRYPOINT ["/app"]
"#;

/// The instructions of `MULTI`'s first stage, as parsed.
fn builder_stage() -> Vec<Kind> {
    vec![
        Kind::Maintainer("someone <a@b.c>".into()),
        Kind::Env(vec![
            ("GOPATH".into(), "/go".into()),
            ("PATH".into(), "\"/go/bin:$PATH\"".into()),
        ]),
        Kind::Env(vec![("OLD".into(), "form with spaces".into())]),
        Kind::Arg(vec![
            ("TARGET".into(), Some("prod".into())),
            ("FLAG".into(), None),
        ]),
        Kind::Workdir("/src".into()),
        Kind::Copy(CopySpec {
            sources: vec!["go.mod".into(), "go.sum".into()],
            dest: "./".into(),
            from: None,
            chown: Some("1:1".into()),
            chmod: Some("644".into()),
            link: true,
        }),
        Kind::Add(CopySpec {
            sources: vec!["https://example.com/x.tgz".into()],
            dest: "/tmp/".into(),
            from: None,
            chown: None,
            chmod: None,
            link: false,
        }),
        Kind::Run {
            command: Command::Shell(
                "    go build -o /out/app ./cmd/app"
                    .trim_start()
                    .to_string(),
            ),
            network: Some("none".into()),
        },
        Kind::Label(vec![
            ("org.opencontainers.image.title".into(), "\"my app\"".into()),
            ("version".into(), "1".into()),
        ]),
        Kind::User("1000:1000".into()),
        Kind::Expose(vec!["8080".into(), "9090/udp".into()]),
        Kind::Volume(vec!["/data".into(), "/cache".into()]),
        Kind::StopSignal("SIGTERM".into()),
        Kind::Shell(vec!["/bin/bash".into(), "-c".into()]),
        Kind::Healthcheck(Healthcheck {
            test: Some(vec!["CMD-SHELL".into(), "curl -f http://localhost/".into()]),
            interval: Some(Duration::from_secs(30)),
            timeout: Some(Duration::from_secs(3)),
            start_period: Some(Duration::from_secs(60)),
            start_interval: None,
            retries: Some(3),
        }),
        Kind::Onbuild("COPY . /app".into()),
        Kind::Cmd(Command::Exec(vec!["serve".into(), "--port=8080".into()])),
        Kind::Entrypoint(Command::Shell("/out/app".into())),
    ]
}

#[test]
fn multi_stage_with_every_instruction() {
    let df = Dockerfile::parse(MULTI).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.escape, '\\');
    assert_eq!(df.meta_args.len(), 2);
    assert_eq!(
        df.meta_args[0].kind,
        Kind::Arg(vec![("BASE".into(), Some("alpine:3.20".into()))])
    );
    assert_eq!(
        df.meta_args[1].kind,
        Kind::Arg(vec![("VERSION".into(), None)])
    );
    assert_eq!(df.stages.len(), 2);

    let b = &df.stages[0];
    assert_eq!(b.name.as_deref(), Some("builder"));
    assert_eq!(b.base, "${BASE}");
    assert_eq!(b.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(b.line, 4);
    let kinds: Vec<&Kind> = b.instructions.iter().map(|i| &i.kind).collect();
    let expected = builder_stage();
    assert_eq!(kinds.len(), expected.len());
    for (got, want) in kinds.iter().zip(&expected) {
        assert_eq!(*got, want);
    }
    let run = &b.instructions[7];
    assert_eq!(run.line, 12);
    assert_eq!(
        run.flag_values("mount"),
        vec!["type=cache,target=/root/.cache".to_string()]
    );

    let s = &df.stages[1];
    assert_eq!(s.name, None);
    assert_eq!(s.base, "scratch");
    assert_eq!(s.line, 25);
    assert_eq!(
        s.instructions[0].kind,
        Kind::Copy(CopySpec {
            sources: vec!["/out/app".into()],
            dest: "/app".into(),
            from: Some("builder".into()),
            chown: None,
            chmod: None,
            link: false,
        })
    );
    assert!(matches!(&s.instructions[1].kind,
        Kind::Healthcheck(h) if h.test == Some(vec!["NONE".to_string()])));
    assert_eq!(
        s.instructions[2].kind,
        Kind::Entrypoint(Command::Exec(vec!["/app".into()]))
    );
}

#[test]
fn nothing_is_expanded_until_asked() {
    let df = Dockerfile::parse(MULTI).unwrap_or_else(|e| panic!("{e}"));
    let lookup = |k: &str| match k {
        "BASE" => Some("alpine:3.20".to_string()),
        "PATH" => Some("/usr/bin".to_string()),
        "BUILDPLATFORM" => Some("linux/amd64".to_string()),
        _ => None,
    };
    let b = &df.stages[0];
    assert_eq!(
        b.expanded_base('\\', &lookup).ok().as_deref(),
        Some("alpine:3.20")
    );
    assert_eq!(
        b.expanded_platform('\\', &lookup).ok().flatten().as_deref(),
        Some("linux/amd64")
    );
    assert_eq!(
        b.instructions[1].expanded('\\', &lookup),
        Ok(Kind::Env(vec![
            ("GOPATH".into(), "/go".into()),
            ("PATH".into(), "/go/bin:/usr/bin".into()),
        ]))
    );
    assert_eq!(
        b.instructions[8].expanded('\\', &lookup),
        Ok(Kind::Label(vec![
            ("org.opencontainers.image.title".into(), "my app".into()),
            ("version".into(), "1".into()),
        ]))
    );
    // RUN is left to the shell.
    let run = &b.instructions[7];
    assert_eq!(run.expanded('\\', &lookup), Ok(run.kind.clone()));
}

#[test]
fn expansion_per_instruction() {
    let df = Dockerfile::parse(
        "FROM x\nWORKDIR $DIR/sub\nCOPY ${SRC:-a} \"$DIR\" /dst/\nEXPOSE $PORTS\nUSER ${U}\nCMD echo $DIR\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let lookup = |k: &str| match k {
        "DIR" => Some("/w".to_string()),
        "PORTS" => Some("80 443".to_string()),
        "U" => Some("app".to_string()),
        _ => None,
    };
    let ins = &df.stages[0].instructions;
    assert_eq!(
        ins[0].expanded('\\', &lookup),
        Ok(Kind::Workdir("/w/sub".into()))
    );
    assert!(matches!(ins[1].expanded('\\', &lookup),
        Ok(Kind::Copy(c)) if c.sources == vec!["a".to_string(), "/w".to_string()] && c.dest == "/dst/"));
    assert_eq!(
        ins[2].expanded('\\', &lookup),
        Ok(Kind::Expose(vec!["80".into(), "443".into()]))
    );
    assert_eq!(ins[3].expanded('\\', &lookup), Ok(Kind::User("app".into())));
    assert_eq!(
        ins[4].expanded('\\', &lookup),
        Ok(Kind::Cmd(Command::Shell("echo $DIR".into())))
    );
    let bad = Dockerfile::parse("FROM x\nWORKDIR ${X:?needed}\n").unwrap_or_else(|e| panic!("{e}"));
    let e = bad.stages[0].instructions[0].expanded('\\', &|_| None);
    assert!(
        e.as_ref()
            .err()
            .is_some_and(|e| e.to_string().starts_with("line 2: WORKDIR: ")),
        "{e:?}"
    );
}

#[test]
fn escape_directive_and_continuations() {
    let df = Dockerfile::parse(
        "# escape=`\nFROM mcr.microsoft.com/windows\nRUN dir `\n  C:\\x\nWORKDIR C:\\app\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.escape, '`');
    let ins = &df.stages[0].instructions;
    assert_eq!(
        ins[0].kind,
        Kind::Run {
            command: Command::Shell("dir   C:\\x".into()),
            network: None
        }
    );
    assert_eq!(ins[1].kind, Kind::Workdir("C:\\app".into()));
    assert_eq!(
        ins[1].expanded('`', &|_| None),
        Ok(Kind::Workdir("C:\\app".into()))
    );
    let ast =
        parse_ast("# syntax=docker/dockerfile:1.7\nFROM x\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ast.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
}

#[test]
fn heredocs() {
    let text = "FROM x\nRUN <<EOF\necho hi\necho there\nEOF\nCOPY <<-CONF /etc/app.conf\n\tkey=value\n\tCONF\nRUN cat <<'A' > /f\n$literal\nA\nUSER nobody\n";
    let df = Dockerfile::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let ins = &df.stages[0].instructions;
    assert_eq!(ins.len(), 4);
    assert_eq!(
        ins[0].kind,
        Kind::Run {
            command: Command::Shell("echo hi\necho there\n".into()),
            network: None
        }
    );
    let docs = ins[1].heredocs();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].name, "CONF");
    assert!(docs[0].chomp);
    assert_eq!(docs[0].chomped_content(), "key=value\n");
    assert!(matches!(&ins[1].kind, Kind::Copy(c) if c.sources == vec!["<<-CONF".to_string()]));
    assert_eq!(
        ins[2].kind,
        Kind::Run {
            command: Command::Shell("cat <<'A' > /f\n$literal\nA".into()),
            network: None
        }
    );
    assert!(!ins[2].heredocs()[0].expand);
    assert_eq!(ins[3].line, 12);
    let ast = parse_ast(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((ast.nodes[1].start_line, ast.nodes[1].end_line), (2, 5));
    assert!(matches!(
        Dockerfile::parse("FROM x\nRUN <<EOF\necho\n"),
        Err(Error::Instruction { line: 2, .. })
    ));
}

fn err(text: &str) -> String {
    match Dockerfile::parse(text) {
        Ok(df) => panic!("accepted: {df:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_line_and_instruction() {
    assert_eq!(
        err("FROM x\n\nCOPY onlyone\n"),
        "line 3: COPY: requires at least two arguments"
    );
    assert_eq!(
        err("FROM x\nRUN a\n\n\nFOOBAR baz\n"),
        "line 5: unknown instruction: FOOBAR"
    );
    assert_eq!(
        err("FROM x\nENV PATH\n"),
        "line 2: ENV: ENV must have two arguments"
    );
    assert_eq!(
        err("FROM x\nCMD [\"a\", 1]\n")
            .split(':')
            .take(2)
            .collect::<Vec<_>>(),
        vec!["line 2", " CMD"]
    );
    assert!(err("FROM x\nCOPY --nope=1 a b\n").starts_with("line 2: COPY: unknown flag: --nope"));
    assert!(err("FROM x\nONBUILD ONBUILD RUN x\n").starts_with("line 2: ONBUILD: Chaining"));
    assert!(err("FROM x\nONBUILD FROM y\n").starts_with("line 2: ONBUILD: FROM isn't allowed"));
    assert!(err("FROM x\nONBUILD MAINTAINER y\n").starts_with("line 2: ONBUILD: MAINTAINER"));
    assert!(err("FROM a b\n").starts_with("line 1: FROM: requires either one or three"));
    assert!(err("FROM a AS 1st\n").starts_with("line 1: FROM: invalid name for build stage"));
    assert!(err("RUN x\nFROM a\n").starts_with("line 1: RUN: no build stage"));
    assert!(
        err("FROM a\nHEALTHCHECK CONNECT TCP 7000\n")
            .starts_with("line 2: HEALTHCHECK: Unknown type")
    );
    assert!(err("FROM a\nHEALTHCHECK --interval=1us CMD x\n").starts_with("line 2: HEALTHCHECK: "));
    assert!(err("FROM a\nHEALTHCHECK NONE x\n").starts_with("line 2: HEALTHCHECK: "));
    assert!(err("FROM a\nSHELL /bin/sh -c\n").starts_with("line 2: SHELL: "));
    assert!(err("FROM a\nWORKDIR\n").starts_with("line 2: WORKDIR: requires exactly one"));
    assert!(
        err("FROM a\nRUN --network=bridge x\n").starts_with("line 2: RUN: unsupported network")
    );
    assert!(err("# escape=x\nFROM a\n").starts_with("line 1: parser directive: invalid escape"));
    assert!(
        err("# escape=`\n# escape=`\nFROM a\n")
            .starts_with("line 2: parser directive: only one escape")
    );
    assert!(err("").contains("no instructions"));
    assert!(err("# just a comment\n\n").contains("no instructions"));
    assert!(err("ARG A=1\n").starts_with("line 1: FROM: "));
}

#[test]
fn directives_only_at_the_top() {
    // A directive after an instruction or a plain comment is just a comment.
    let df = Dockerfile::parse("# hello\n# escape=`\nFROM a\nRUN x \\\n y\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.escape, '\\');
    assert_eq!(
        df.stages[0].instructions[0].kind,
        Kind::Run {
            command: Command::Shell("x  y".into()),
            network: None
        }
    );
}

#[test]
fn ast_dump_of_flags_and_onbuild() {
    let ast = parse_ast(
        "FROM a\nONBUILD ADD --chown=1 [\"x\", \"y\"]\nCOPY --from=b --chown=\"1 2\" s d\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ast.dump(),
        "(from \"a\")\n(onbuild (add [\"--chown=1\"] \"x\" \"y\"))\n(copy [\"--from=b\" \"--chown=1 2\"] \"s\" \"d\")"
    );
    assert_eq!(ast.nodes[2].flags, vec!["--from=b", "--chown=1 2"]);
    assert!(ast.nodes[1].args.len() == 1 && !ast.nodes[1].json);
}
