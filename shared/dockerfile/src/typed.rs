//! The high level view: build stages of typed instructions, with BuildKit's checks.

use std::time::Duration;

use crate::ast::{self, Heredoc, Node};
use crate::error::Error;
use crate::lex::{expand, expand_words};

/// A parsed Dockerfile: its build stages, nothing expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\`, or `` ` `` from the `# escape=` directive).
    pub escape: char,
    /// The ARG instructions before the first FROM (global build arguments, usable in FROM).
    pub meta_args: Vec<Instruction>,
    /// The build stages, in order.
    pub stages: Vec<Stage>,
}

/// A build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The `AS name`, lower-cased.
    pub name: Option<String>,
    /// The base image (or stage) as written, not expanded.
    pub base: String,
    /// The `--platform=` flag, as written.
    pub platform: Option<String>,
    /// The FROM's line (1-based).
    pub line: usize,
    /// The stage's instructions (FROM excluded).
    pub instructions: Vec<Instruction>,
}

/// One typed instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// The instruction's first line (1-based).
    pub line: usize,
    /// The instruction as written, continuation lines joined; heredoc bodies follow it, each
    /// as `"\n" + content + terminator`.
    pub original: String,
    /// What it is.
    pub kind: Kind,
}

/// A command of RUN, CMD, ENTRYPOINT.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Shell form: run with the stage's shell (`/bin/sh -c` by default).
    Shell(String),
    /// Exec (JSON array) form.
    Exec(Vec<String>),
}

/// The arguments of COPY and ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct CopySpec {
    /// The sources. A heredoc source stays as its marker (`<<EOF`); see
    /// [`Instruction::heredocs`].
    pub sources: Vec<String>,
    /// The destination.
    pub dest: String,
    /// `--from=` (COPY only): a stage name or index, or an image.
    pub from: Option<String>,
    /// `--chown=`.
    pub chown: Option<String>,
    /// `--chmod=`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
}

/// HEALTHCHECK's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` (exec form) or `["CMD-SHELL", "command"]`.
    pub test: Option<Vec<String>>,
    /// `--interval=` (a zero duration is left `None`: the default).
    pub interval: Option<Duration>,
    /// `--timeout=`.
    pub timeout: Option<Duration>,
    /// `--start-period=`.
    pub start_period: Option<Duration>,
    /// `--start-interval=`.
    pub start_interval: Option<Duration>,
    /// `--retries=`.
    pub retries: Option<u32>,
}

/// The typed instructions (FROM is a [`Stage`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// RUN. Its other flags (`--mount`, `--security`, `--device`) are accepted and
    /// available through [`Instruction::flags`].
    Run {
        /// The command.
        command: Command,
        /// `--network=`: `default`, `none` or `host`.
        network: Option<String>,
    },
    /// COPY. `--exclude` and `--parents` are available through [`Instruction::flags`].
    Copy(CopySpec),
    /// ADD. `--checksum`, `--keep-git-dir`, `--unpack` and `--exclude` are available through
    /// [`Instruction::flags`].
    Add(CopySpec),
    /// ENV pairs (both forms), values unexpanded.
    Env(Vec<(String, String)>),
    /// ARG names with their defaults, unexpanded.
    Arg(Vec<(String, Option<String>)>),
    /// WORKDIR.
    Workdir(String),
    /// CMD.
    Cmd(Command),
    /// ENTRYPOINT.
    Entrypoint(Command),
    /// SHELL (JSON form only).
    Shell(Vec<String>),
    /// USER.
    User(String),
    /// LABEL pairs, unexpanded.
    Label(Vec<(String, String)>),
    /// EXPOSE ports as written.
    Expose(Vec<String>),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// ONBUILD: the trigger instruction's text.
    Onbuild(String),
    /// MAINTAINER (deprecated).
    Maintainer(String),
}

impl Dockerfile {
    /// Parses a Dockerfile into stages of typed instructions, checking each instruction as
    /// BuildKit does. Nothing is expanded.
    pub fn parse(text: &str) -> Result<Dockerfile, Error> {
        let ast = ast::parse_ast(text)?;
        let mut meta_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for node in &ast.nodes {
            if node.keyword == "from" {
                stages.push(parse_from(node)?);
                continue;
            }
            let ins = parse_instruction(node)?;
            match stages.last_mut() {
                Some(stage) => stage.instructions.push(ins),
                None if matches!(ins.kind, Kind::Arg(_)) => meta_args.push(ins),
                None => {
                    return Err(Error::instruction(
                        node.start_line,
                        &node.keyword,
                        "no build stage in current context (an instruction before the first FROM)",
                    ));
                }
            }
        }
        if stages.is_empty() {
            let line = ast.nodes.last().map(|n| n.end_line).unwrap_or(0);
            return Err(Error::instruction(
                line,
                "FROM",
                "the Dockerfile has no build stage (no FROM instruction)",
            ));
        }
        Ok(Dockerfile {
            escape: ast.directives.escape,
            meta_args,
            stages,
        })
    }
}

impl Stage {
    /// The base name with the global build arguments expanded, as BuildKit does for FROM.
    pub fn expanded_base(
        &self,
        escape: char,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, Error> {
        expand(&self.base, escape, lookup).map_err(|e| wrap(self.line, "FROM", e))
    }

    /// The `--platform=` value with the global build arguments expanded.
    pub fn expanded_platform(
        &self,
        escape: char,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, Error> {
        self.platform
            .as_deref()
            .map(|p| expand(p, escape, lookup))
            .transpose()
            .map_err(|e| wrap(self.line, "FROM", e))
    }
}

fn wrap(line: usize, keyword: &str, e: Error) -> Error {
    match e {
        Error::Expand { .. } => Error::instruction(line, keyword, e.to_string()),
        other => other,
    }
}

impl Kind {
    /// The instruction's keyword, upper-case (`RUN`, `COPY`, ...).
    pub fn keyword(&self) -> &'static str {
        match self {
            Kind::Run { .. } => "RUN",
            Kind::Copy(_) => "COPY",
            Kind::Add(_) => "ADD",
            Kind::Env(_) => "ENV",
            Kind::Arg(_) => "ARG",
            Kind::Workdir(_) => "WORKDIR",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Shell(_) => "SHELL",
            Kind::User(_) => "USER",
            Kind::Label(_) => "LABEL",
            Kind::Expose(_) => "EXPOSE",
            Kind::Volume(_) => "VOLUME",
            Kind::StopSignal(_) => "STOPSIGNAL",
            Kind::Healthcheck(_) => "HEALTHCHECK",
            Kind::Onbuild(_) => "ONBUILD",
            Kind::Maintainer(_) => "MAINTAINER",
        }
    }
}

impl Instruction {
    /// The instruction with its words expanded as BuildKit does for that instruction (ADD,
    /// COPY, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ARG names and defaults);
    /// RUN, CMD, ENTRYPOINT, SHELL, ONBUILD, HEALTHCHECK and MAINTAINER come back as they are.
    /// COPY's `--from` is not expanded (BuildKit refuses variables there).
    pub fn expanded(
        &self,
        escape: char,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Kind, Error> {
        let kw = self.kind.keyword();
        let x = |w: &str| expand(w, escape, lookup).map_err(|e| wrap(self.line, kw, e));
        let xo = |w: &Option<String>| w.as_deref().map(x).transpose();
        let copy = |c: &CopySpec| -> Result<CopySpec, Error> {
            Ok(CopySpec {
                sources: c.sources.iter().map(|s| x(s)).collect::<Result<_, _>>()?,
                dest: x(&c.dest)?,
                from: c.from.clone(),
                chown: xo(&c.chown)?,
                chmod: xo(&c.chmod)?,
                link: c.link,
            })
        };
        let pairs = |p: &[(String, String)]| -> Result<Vec<(String, String)>, Error> {
            p.iter().map(|(k, v)| Ok((x(k)?, x(v)?))).collect()
        };
        Ok(match &self.kind {
            Kind::Copy(c) => Kind::Copy(copy(c)?),
            Kind::Add(c) => Kind::Add(copy(c)?),
            Kind::Env(p) => Kind::Env(pairs(p)?),
            Kind::Label(p) => Kind::Label(pairs(p)?),
            Kind::Arg(p) => Kind::Arg(
                p.iter()
                    .map(|(k, v)| Ok((x(k)?, xo(v)?)))
                    .collect::<Result<_, Error>>()?,
            ),
            Kind::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    out.extend(
                        expand_words(p, escape, lookup).map_err(|e| wrap(self.line, kw, e))?,
                    );
                }
                Kind::Expose(out)
            }
            Kind::Volume(v) => Kind::Volume(v.iter().map(|s| x(s)).collect::<Result<_, _>>()?),
            Kind::StopSignal(s) => Kind::StopSignal(x(s)?),
            Kind::User(s) => Kind::User(x(s)?),
            Kind::Workdir(s) => Kind::Workdir(x(s)?),
            other => other.clone(),
        })
    }

    /// The `--flags` the instruction was written with (`--mount=type=cache,target=/x`), as
    /// BuildKit's parser extracts them.
    pub fn flags(&self) -> Vec<String> {
        split_original(&self.original)
            .0
            .map(|n| n.flags)
            .unwrap_or_default()
    }

    /// The values of one flag (`flag_values("mount")` for every `--mount=`), in order.
    pub fn flag_values(&self, name: &str) -> Vec<String> {
        let prefix = format!("--{name}=");
        self.flags()
            .iter()
            .filter_map(|f| f.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// The heredocs the instruction carries (from `original`), content as written; for
    /// `<<-` use [`Heredoc::chomped_content`].
    pub fn heredocs(&self) -> Vec<Heredoc> {
        split_original(&self.original).1
    }
}

/// Reads an instruction's `original` back: its first line as a node, and its heredocs.
fn split_original(original: &str) -> (Option<Node>, Vec<Heredoc>) {
    let mut lines = original.split_inclusive('\n');
    let first = lines.next().unwrap_or_default();
    let first = first.strip_suffix('\n').unwrap_or(first);
    let d = ast::DirectiveState::with_escape('\\');
    let Ok(node) = ast::new_node_from_line(first, &d, 1) else {
        return (None, Vec::new());
    };
    let mut docs = Vec::new();
    if first.contains("<<") {
        let words = crate::lex::Lexer::new(
            '\\',
            crate::lex::LexOptions {
                raw_quotes: true,
                raw_escapes: true,
                skip_unset_env: true,
            },
            &|_| None,
        )
        .process_words(first)
        .unwrap_or_default();
        for w in words {
            let Ok(Some(mut doc)) = ast::parse_heredoc(&w) else {
                continue;
            };
            let mut content = String::new();
            for l in lines.by_ref() {
                let mut candidate = l.trim_end_matches(['\r', '\n']);
                if doc.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == doc.name {
                    break;
                }
                content.push_str(l);
            }
            doc.content = content;
            docs.push(doc);
        }
    }
    (Some(node), docs)
}

/// The original text of a node, heredoc bodies appended as BuildKit does for ONBUILD.
fn original_with_heredocs(node: &Node) -> String {
    let mut s = node.original.clone();
    for h in &node.heredocs {
        s.push('\n');
        s.push_str(&h.content);
        s.push_str(&h.name);
    }
    s
}

#[derive(Clone, Copy, PartialEq)]
enum FlagType {
    Bool,
    String,
    Strings,
}

/// Parsed flags: (name, values) for those given.
struct Flags(Vec<(String, Vec<String>)>);

impl Flags {
    fn parse(node: &Node, spec: &[(&str, FlagType)]) -> Result<Flags, Error> {
        let err = |m: String| Error::instruction(node.start_line, &node.keyword, m);
        let mut used: Vec<(String, Vec<String>)> = Vec::new();
        for a in &node.flags {
            if a == "--" {
                break;
            }
            let Some(body) = a.strip_prefix("--") else {
                return Err(err(format!("arg should start with -- : {a}")));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(_, ty)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(err(format!("unknown flag: --{name}")));
            };
            let entry = used.iter().position(|(n, _)| n == name);
            if entry.is_some() && ty != FlagType::Strings {
                return Err(err(format!("duplicate flag specified: --{name}")));
            }
            let v = match ty {
                FlagType::Bool => match value.map(str::to_ascii_lowercase).as_deref() {
                    Some("") => return Err(err(format!("missing a value on flag: --{name}"))),
                    None | Some("true") => "true".to_string(),
                    Some("false") => "false".to_string(),
                    Some(_) => {
                        return Err(err(format!(
                            "expecting boolean value for flag --{name}, not: {}",
                            value.unwrap_or_default()
                        )));
                    }
                },
                FlagType::String | FlagType::Strings => match value {
                    Some(v) => v.to_string(),
                    None => return Err(err(format!("missing a value on flag: --{name}"))),
                },
            };
            match entry.and_then(|i| used.get_mut(i)) {
                Some((_, vals)) => vals.push(v),
                None => used.push((name.to_string(), vec![v])),
            }
        }
        Ok(Flags(used))
    }

    fn string(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.last().cloned())
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }
}

fn parse_from(node: &Node) -> Result<Stage, Error> {
    let err = |m: String| Error::instruction(node.start_line, "FROM", m);
    let args = &node.args;
    let name = match args.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(err(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    ast::go_quote(name)
                )));
            }
            Some(lower)
        }
        _ => return Err(err("requires either one or three arguments".into())),
    };
    let flags = Flags::parse(node, &[("platform", FlagType::String)])?;
    Ok(Stage {
        name,
        base: args.first().cloned().unwrap_or_default(),
        platform: flags.string("platform"),
        line: node.start_line,
        instructions: Vec::new(),
    })
}

fn command_of(node: &Node) -> Command {
    if node.json {
        Command::Exec(node.args.clone())
    } else if node.args.is_empty() {
        Command::Exec(Vec::new())
    } else {
        Command::Shell(node.args.join(" "))
    }
}

/// The shell command of a shell-form RUN with heredocs: a lone heredoc is the script itself;
/// otherwise the whole text, bodies included, for the shell to read its heredocs.
fn run_shell_command(node: &Node) -> Command {
    let cmd = node.args.join(" ");
    if let [doc] = node.heredocs.as_slice()
        && ast::parse_heredoc(cmd.trim())
            .ok()
            .flatten()
            .is_some_and(|h| h.name == doc.name)
    {
        return Command::Shell(doc.chomped_content());
    }
    if node.heredocs.is_empty() {
        return Command::Shell(cmd);
    }
    let mut s = cmd;
    for h in &node.heredocs {
        s.push('\n');
        s.push_str(&h.content);
        s.push_str(&h.name);
    }
    Command::Shell(s)
}

fn parse_instruction(node: &Node) -> Result<Instruction, Error> {
    let line = node.start_line;
    let kw = node.keyword.as_str();
    let err = |m: &str| Error::instruction(line, kw, m);
    let no_flags = || Flags::parse(node, &[]).map(|_| ());
    let args = &node.args;
    let kind = match kw {
        "env" | "label" => parse_env_or_label(node)?,
        "maintainer" => {
            let [m] = args.as_slice() else {
                return Err(err("requires exactly one argument"));
            };
            no_flags()?;
            Kind::Maintainer(m.clone())
        }
        "add" | "copy" => parse_add_or_copy(node)?,
        "onbuild" => parse_onbuild(node)?,
        "workdir" => {
            let [p] = args.as_slice() else {
                return Err(err("requires exactly one argument"));
            };
            no_flags()?;
            Kind::Workdir(p.clone())
        }
        "run" => parse_run(node)?,
        "cmd" => {
            no_flags()?;
            Kind::Cmd(command_of(node))
        }
        "entrypoint" => {
            no_flags()?;
            Kind::Entrypoint(command_of(node))
        }
        "healthcheck" => Kind::Healthcheck(parse_healthcheck(node)?),
        "expose" => {
            if args.is_empty() {
                return Err(err("requires at least one argument"));
            }
            no_flags()?;
            Kind::Expose(args.clone())
        }
        "user" => {
            let [u] = args.as_slice() else {
                return Err(err("requires exactly one argument"));
            };
            no_flags()?;
            Kind::User(u.clone())
        }
        "volume" => parse_volume(node)?,
        "stopsignal" => {
            let [s] = args.as_slice() else {
                return Err(err("requires exactly one argument"));
            };
            no_flags()?;
            Kind::StopSignal(s.clone())
        }
        "arg" => parse_arg(node)?,
        "shell" => {
            no_flags()?;
            if args.is_empty() {
                return Err(err("requires at least one argument"));
            }
            if !node.json {
                return Err(err("requires the arguments to be in JSON form"));
            }
            Kind::Shell(args.clone())
        }
        _ => {
            return Err(Error::UnknownInstruction {
                line,
                instruction: kw.to_uppercase(),
            });
        }
    };
    Ok(Instruction {
        line,
        original: original_with_heredocs(node),
        kind,
    })
}

/// ENV or LABEL: `key value` pairs (the parser gives them as triples).
fn parse_env_or_label(node: &Node) -> Result<Kind, Error> {
    let kw = node.keyword.as_str();
    let err = |m: &str| Error::instruction(node.start_line, kw, m);
    let args = &node.args;
    Flags::parse(node, &[])?;
    if args.is_empty() {
        return Err(err("requires at least one argument"));
    }
    let mut pairs = Vec::new();
    for t in args.chunks(3) {
        let [k, v, _] = t else {
            return Err(err("too many arguments"));
        };
        if k.is_empty() {
            return Err(err("names can not be blank"));
        }
        pairs.push((k.clone(), v.clone()));
    }
    Ok(if kw == "env" {
        Kind::Env(pairs)
    } else {
        Kind::Label(pairs)
    })
}

/// ADD or COPY: sources, a destination and each one's flags.
fn parse_add_or_copy(node: &Node) -> Result<Kind, Error> {
    let kw = node.keyword.as_str();
    let err = |m: &str| Error::instruction(node.start_line, kw, m);
    let args = &node.args;
    if args.len() < 2 {
        return Err(err("requires at least two arguments"));
    }
    let spec: &[(&str, FlagType)] = if kw == "add" {
        &[
            ("chown", FlagType::String),
            ("chmod", FlagType::String),
            ("link", FlagType::Bool),
            ("keep-git-dir", FlagType::Bool),
            ("checksum", FlagType::String),
            ("unpack", FlagType::Bool),
            ("exclude", FlagType::Strings),
        ]
    } else {
        &[
            ("chown", FlagType::String),
            ("from", FlagType::String),
            ("chmod", FlagType::String),
            ("link", FlagType::Bool),
            ("exclude", FlagType::Strings),
            ("parents", FlagType::Bool),
        ]
    };
    let flags = Flags::parse(node, spec)?;
    let (dest, sources) = match args.split_last() {
        Some((d, s)) => (d.clone(), s.to_vec()),
        None => return Err(err("requires at least two arguments")),
    };
    if ast::parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(err("cannot accept a heredoc as a destination"));
    }
    let spec = CopySpec {
        sources,
        dest,
        from: flags.string("from").filter(|s| !s.is_empty()),
        chown: flags.string("chown").filter(|s| !s.is_empty()),
        chmod: flags.string("chmod").filter(|s| !s.is_empty()),
        link: flags.bool("link"),
    };
    Ok(if kw == "add" {
        Kind::Add(spec)
    } else {
        Kind::Copy(spec)
    })
}

/// ONBUILD: the trigger, kept as written (heredocs included).
fn parse_onbuild(node: &Node) -> Result<Kind, Error> {
    let err = |m: &str| Error::instruction(node.start_line, &node.keyword, m);
    let Some(trigger) = node.args.first() else {
        return Err(err("requires at least one argument"));
    };
    Flags::parse(node, &[])?;
    let trigger_kw = trigger
        .split(char::is_whitespace)
        .next()
        .unwrap_or_default()
        .to_uppercase();
    match trigger_kw.as_str() {
        "ONBUILD" => {
            return Err(err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
        }
        "MAINTAINER" | "FROM" => {
            return Err(err(&format!(
                "{trigger_kw} isn't allowed as an ONBUILD trigger"
            )));
        }
        _ => {}
    }
    let full = original_with_heredocs(node);
    let t = full.trim_start();
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("onbuild") => &t[7..],
        _ => t,
    };
    Ok(Kind::Onbuild(t.trim_start().to_string()))
}

/// RUN: its command and network mode (`--mount`, `--security` and `--device` are accepted).
fn parse_run(node: &Node) -> Result<Kind, Error> {
    let err = |m: &str| Error::instruction(node.start_line, &node.keyword, m);
    let args = &node.args;
    let flags = Flags::parse(
        node,
        &[
            ("mount", FlagType::Strings),
            ("network", FlagType::String),
            ("security", FlagType::String),
            ("device", FlagType::Strings),
        ],
    )?;
    let network = flags.string("network");
    if let Some(n) = &network
        && !matches!(n.as_str(), "default" | "none" | "host")
    {
        return Err(err(&format!("unsupported network mode {n:?}")));
    }
    if let Some(s) = flags.string("security")
        && !matches!(s.as_str(), "sandbox" | "insecure")
    {
        return Err(err(&format!("unsupported security mode {s:?}")));
    }
    if args.is_empty() || (!node.json && args.iter().all(|a| a.trim().is_empty())) {
        return Err(err("requires at least one argument"));
    }
    let command = if node.json {
        Command::Exec(args.clone())
    } else {
        run_shell_command(node)
    };
    Ok(Kind::Run { command, network })
}

/// VOLUME: the paths, trimmed.
fn parse_volume(node: &Node) -> Result<Kind, Error> {
    let err = |m: &str| Error::instruction(node.start_line, &node.keyword, m);
    if node.args.is_empty() {
        return Err(err("requires at least one argument"));
    }
    Flags::parse(node, &[])?;
    let mut v = Vec::new();
    for a in &node.args {
        let a = a.trim();
        if a.is_empty() {
            return Err(err("VOLUME specified can not be an empty string"));
        }
        v.push(a.to_string());
    }
    Ok(Kind::Volume(v))
}

/// ARG: names, each with its default value if it has one.
fn parse_arg(node: &Node) -> Result<Kind, Error> {
    let err = |m: &str| Error::instruction(node.start_line, &node.keyword, m);
    if node.args.is_empty() {
        return Err(err("requires at least one argument"));
    }
    Flags::parse(node, &[])?;
    let mut pairs = Vec::new();
    for a in &node.args {
        match a.split_once('=') {
            Some(("", _)) => return Err(err("names can not be blank")),
            Some((k, v)) => pairs.push((k.to_string(), Some(v.to_string()))),
            None => pairs.push((a.clone(), None)),
        }
    }
    Ok(Kind::Arg(pairs))
}

fn parse_healthcheck(node: &Node) -> Result<Healthcheck, Error> {
    let err = |m: String| Error::instruction(node.start_line, "HEALTHCHECK", m);
    let Some((typ, rest)) = node.args.split_first() else {
        return Err(err("requires at least one argument".into()));
    };
    let typ = typ.to_uppercase();
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(err("HEALTHCHECK NONE takes no arguments".into()));
        }
        Flags::parse(node, &[])?;
        return Ok(Healthcheck {
            test: Some(vec![typ]),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        });
    }
    let flags = Flags::parse(
        node,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    if typ != "CMD" {
        return Err(err(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            ast::go_quote(&typ)
        )));
    }
    let cmd: Vec<String> = if node.json {
        rest.to_vec()
    } else if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err(err("Missing command after HEALTHCHECK CMD".into()));
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(cmd);
    let interval = |name: &str| -> Result<Option<Duration>, Error> {
        let Some(v) = flags.string(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let d = parse_go_duration(&v).map_err(|m| err(format!("--{name}: {m}")))?;
        match d {
            None => Err(err(format!("Interval {name:?} cannot be less than 1ms"))),
            Some(d) if d.is_zero() => Ok(None),
            Some(d) if d < Duration::from_millis(1) => {
                Err(err(format!("Interval {name:?} cannot be less than 1ms")))
            }
            Some(d) => Ok(Some(d)),
        }
    };
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(r) => {
            let n: i64 = r
                .parse()
                .map_err(|_| err(format!("--retries: invalid number {r:?}")))?;
            if n < 0 {
                return Err(err(format!("--retries cannot be negative ({n})")));
            }
            Some(u32::try_from(n).map_err(|_| err(format!("--retries: out of range ({n})")))?)
        }
    };
    Ok(Healthcheck {
        test: Some(test),
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

/// Parses a Go duration (`1h30m`, `1.5s`, `300ms`, `0`). `Ok(None)` for a negative one.
fn parse_go_duration(s: &str) -> Result<Option<Duration>, String> {
    let bad = || format!("invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(Some(Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let flen = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            frac_part = &r[..flen];
            rest = &r[flen..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| !c.is_ascii_digit() && c != '.')
                .len();
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        total = total
            .checked_add(whole.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let f: u128 = digits.parse().map_err(|_| bad())?;
            let scale = 10u128.pow(u32::try_from(digits.len()).map_err(|_| bad())?);
            total = total.checked_add(f * unit / scale).ok_or_else(bad)?;
        }
    }
    if neg && total > 0 {
        return Ok(None);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| bad())?;
    Ok(Some(Duration::new(secs, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5s"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(
            parse_go_duration("1h30m"),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse_go_duration("1.5s"),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            parse_go_duration("300ms"),
            Ok(Some(Duration::from_millis(300)))
        );
        assert_eq!(parse_go_duration("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse_go_duration("-1s"), Ok(None));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("").is_err());
    }
}
