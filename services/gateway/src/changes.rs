//! The Dockerfile instructions `strata commit -c` applies to an image config, as
//! `docker commit --change` takes them: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME,
//! WORKDIR and STOPSIGNAL, in their JSON (exec) and shell forms. Arguments are unquoted and
//! `$VAR`/`${VAR}` (with `:-`, `-`, `:+`, `+`) are expanded from the config's environment as a
//! Dockerfile would, except in the JSON form and in the command of the shell form.

use serde_json::{Map, Value};
use strata_core::{Error, Result};

/// The instructions a commit takes.
const TAKEN: &str = "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL";

/// Applies changes one after another to `config` (an image config's `config` object, Docker's
/// field names). An ENTRYPOINT clears the CMD unless a CMD came before it in `changes`, as in a
/// Dockerfile.
pub fn apply_all(config: &mut Map<String, Value>, changes: &[String]) -> Result<()> {
    let mut cmd_set = false;
    for c in changes {
        apply(config, c, &mut cmd_set).map_err(|e| e.context(format!("change {c:?}")))?;
    }
    Ok(())
}

fn apply(config: &mut Map<String, Value>, line: &str, cmd_set: &mut bool) -> Result<()> {
    let line = line.trim();
    let (word, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(w, r)| (w, r.trim()));
    let instruction = word.to_ascii_uppercase();
    let taken = [
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "LABEL",
        "USER",
        "VOLUME",
        "WORKDIR",
        "STOPSIGNAL",
    ];
    if !taken.contains(&instruction.as_str()) {
        return Err(Error::invalid_argument(format!(
            "{word:?} is not an instruction commit takes ({TAKEN})"
        )));
    }
    if rest.is_empty() {
        return Err(Error::invalid_argument(format!(
            "{instruction} requires at least one argument"
        )));
    }
    let env = Env::of(config);
    match instruction.as_str() {
        "CMD" => {
            let cmd = command(config, rest);
            config.insert("Cmd".into(), strings(cmd));
            *cmd_set = true;
        }
        "ENTRYPOINT" => {
            let ep = command(config, rest);
            config.insert("Entrypoint".into(), strings(ep));
            if !*cmd_set {
                config.insert("Cmd".into(), Value::Null);
            }
        }
        "ENV" => {
            for (k, v) in pairs(rest, &env, "ENV")? {
                set_env(config, &k, &v);
            }
        }
        "LABEL" => {
            let labels = pairs(rest, &env, "LABEL")?;
            let labels = labels.into_iter().map(|(k, v)| (k, Value::String(v)));
            merge(config, "Labels", labels.collect());
        }
        "EXPOSE" => {
            let mut ports = Vec::new();
            for w in lex(rest, &env, true)? {
                ports.extend(expose(&w)?);
            }
            let ports = ports.into_iter().map(|p| (p, Value::Object(Map::new())));
            merge(config, "ExposedPorts", ports.collect());
        }
        "VOLUME" => {
            let paths = match json_array(rest) {
                Some(a) => a,
                None => lex(rest, &env, true)?,
            };
            if paths.iter().any(String::is_empty) {
                return Err(Error::invalid_argument("VOLUME names an empty path"));
            }
            let paths = paths.into_iter().map(|p| (p, Value::Object(Map::new())));
            merge(config, "Volumes", paths.collect());
        }
        "USER" => {
            let user = single(rest, &env, "USER")?;
            config.insert("User".into(), Value::String(user));
        }
        "WORKDIR" => {
            let dir = single(rest, &env, "WORKDIR")?;
            let current = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("/");
            config.insert(
                "WorkingDir".into(),
                Value::String(join_clean(current, &dir)),
            );
        }
        "STOPSIGNAL" => {
            let sig = single(rest, &env, "STOPSIGNAL")?;
            check_signal(&sig)?;
            config.insert("StopSignal".into(), Value::String(sig));
        }
        _ => {}
    }
    Ok(())
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// Adds `entries` to the object `config[key]` (made one if it is missing or null).
fn merge(config: &mut Map<String, Value>, key: &str, entries: Vec<(String, Value)>) {
    let mut m = match config.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.extend(entries);
    config.insert(key.to_owned(), Value::Object(m));
}

/// A JSON array of strings (the exec form), or `None` for anything else (the shell form).
fn json_array(s: &str) -> Option<Vec<String>> {
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s).ok()
}

/// CMD or ENTRYPOINT: the exec form as given, the shell form run by the image's shell.
fn command(config: &Map<String, Value>, rest: &str) -> Vec<String> {
    if let Some(a) = json_array(rest) {
        return a;
    }
    let mut shell: Vec<String> = config
        .get("Shell")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .filter(|v: &Vec<String>| !v.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()]);
    shell.push(rest.to_owned());
    shell
}

fn set_env(config: &mut Map<String, Value>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    let env = config
        .entry("Env".to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !env.is_array() {
        *env = Value::Array(Vec::new());
    }
    if let Value::Array(list) = env {
        let prefix = format!("{key}=");
        match list.iter_mut().find(|v| {
            v.as_str()
                .is_some_and(|s| s.starts_with(&prefix) || s == key)
        }) {
            Some(v) => *v = Value::String(entry),
            None => list.push(Value::String(entry)),
        }
    }
}

/// `KEY=VALUE…` pairs, or the legacy `KEY VALUE` form (the value is the rest of the line).
fn pairs(rest: &str, env: &Env, what: &str) -> Result<Vec<(String, String)>> {
    let first = rest.split(char::is_whitespace).next().unwrap_or_default();
    if !first.contains('=') {
        let (key, value) = rest
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k, v.trim()))
            .ok_or_else(|| {
                Error::invalid_argument(format!("{what} needs KEY=VALUE or KEY VALUE"))
            })?;
        let key = single(key, env, what)?;
        let value = lex(value, env, false)?.concat();
        return Ok(vec![(key, value)]);
    }
    let mut out = Vec::new();
    for w in split_raw(rest)? {
        let (k, v) = w.split_once('=').ok_or_else(|| {
            Error::invalid_argument(format!("{what} argument {w:?} is not KEY=VALUE"))
        })?;
        let k = lex(k, env, false)?.concat();
        if k.is_empty() {
            return Err(Error::invalid_argument(format!(
                "{what} argument {w:?} has an empty key"
            )));
        }
        let v = lex(v, env, false)?.concat();
        out.push((k, v));
    }
    Ok(out)
}

/// One argument, unquoted and expanded (it may hold spaces, quoted).
fn single(rest: &str, env: &Env, what: &str) -> Result<String> {
    let v = lex(rest, env, false)?.concat();
    if v.is_empty() {
        return Err(Error::invalid_argument(format!("{what} is empty")));
    }
    Ok(v)
}

/// EXPOSE's `PORT[-PORT][/PROTO]` as the config's keys.
fn expose(word: &str) -> Result<Vec<String>> {
    let bad = || Error::invalid_argument(format!("invalid port {word:?} for EXPOSE"));
    let (ports, proto) = word.split_once('/').unwrap_or((word, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(bad());
    }
    let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo == 0 || hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn check_signal(sig: &str) -> Result<()> {
    if let Ok(n) = sig.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(());
        }
    } else {
        let up = sig.to_ascii_uppercase();
        let name = up.strip_prefix("SIG").unwrap_or(&up);
        let known = [
            "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1",
            "SEGV", "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP",
            "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR",
            "SYS",
        ];
        if known.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") {
            return Ok(());
        }
    }
    Err(Error::invalid_argument(format!(
        "STOPSIGNAL: invalid signal {sig:?}"
    )))
}

/// `dir` against `current` (a relative WORKDIR is below the previous one), `.` and `..`
/// resolved lexically.
fn join_clean(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_owned()
    } else {
        format!("{current}/{dir}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The config's environment, for expansion.
struct Env(Vec<(String, String)>);

impl Env {
    fn of(config: &Map<String, Value>) -> Self {
        let vars = config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| {
                        let (k, v) = s.split_once('=').unwrap_or((s, ""));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self(vars)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits on unquoted whitespace, keeping quotes and escapes for [`lex`].
fn split_raw(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                word.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                word.push(c);
            }
            (q, '\\') if q != Some('\'') => {
                word.push('\\');
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (_, c) => word.push(c),
        }
    }
    if quote.is_some() {
        return Err(Error::invalid_argument(format!("unmatched quote in {s:?}")));
    }
    if !word.is_empty() {
        out.push(word);
    }
    Ok(out)
}

/// Removes quotes and escapes and expands variables; with `split`, unquoted whitespace
/// separates words (a quoted empty string is a word).
fn lex(s: &str, env: &Env, split: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut started = false;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            c if split && c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            '\\' => {
                started = true;
                match chars.get(i) {
                    Some(n) => {
                        word.push(*n);
                        i += 1;
                    }
                    None => word.push('\\'),
                }
            }
            '\'' => {
                started = true;
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or_else(|| Error::invalid_argument(format!("unmatched ' in {s:?}")))?;
                word.extend(&chars[i..i + end]);
                i += end + 1;
            }
            '"' => {
                started = true;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(Error::invalid_argument(format!("unmatched \" in {s:?}")));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => match chars.get(i) {
                            Some(&n) if matches!(n, '"' | '\\' | '$') => {
                                word.push(n);
                                i += 1;
                            }
                            _ => word.push('\\'),
                        },
                        '$' => i = expand(&chars, i, env, &mut word)?,
                        c => word.push(c),
                    }
                }
            }
            '$' => {
                started = true;
                i = expand(&chars, i, env, &mut word)?;
            }
            c => {
                started = true;
                word.push(c);
            }
        }
    }
    if started || !split {
        out.push(word);
    }
    Ok(out)
}

/// Expands the variable after a `$` at `chars[i-1]` into `word`; returns the index after it.
fn expand(chars: &[char], i: usize, env: &Env, word: &mut String) -> Result<usize> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i) {
        Some('{') => {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '}')
                .ok_or_else(|| Error::invalid_argument("missing '}' in a ${…} expansion"))?;
            let inner: String = chars[i + 1..i + end].iter().collect();
            let name_len = inner.chars().take_while(|&c| is_name(c)).count();
            let (name, op) = inner.split_at(name_len);
            if name.is_empty() {
                return Err(Error::invalid_argument(format!(
                    "bad substitution ${{{inner}}}"
                )));
            }
            let value = env.get(name);
            let text = match op {
                "" => value.unwrap_or_default().to_owned(),
                _ if op.starts_with(":-") => match value {
                    Some(v) if !v.is_empty() => v.to_owned(),
                    _ => op[2..].to_owned(),
                },
                _ if op.starts_with(":+") => match value {
                    Some(v) if !v.is_empty() => op[2..].to_owned(),
                    _ => String::new(),
                },
                _ if op.starts_with('-') => value.map_or_else(|| op[1..].to_owned(), str::to_owned),
                _ if op.starts_with('+') => value.map(|_| op[1..].to_owned()).unwrap_or_default(),
                _ => {
                    return Err(Error::invalid_argument(format!(
                        "bad substitution ${{{inner}}}"
                    )));
                }
            };
            word.push_str(&text);
            Ok(i + end + 1)
        }
        Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
            let len = chars[i..].iter().take_while(|&&c| is_name(c)).count();
            let name: String = chars[i..i + len].iter().collect();
            word.push_str(env.get(&name).unwrap_or_default());
            Ok(i + len)
        }
        _ => {
            word.push('$');
            Ok(i)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn applied(base: Value, changes: &[&str]) -> Value {
        let mut m = base.as_object().unwrap().clone();
        let changes: Vec<String> = changes.iter().map(|s| (*s).to_owned()).collect();
        apply_all(&mut m, &changes).unwrap();
        Value::Object(m)
    }

    fn refused(changes: &[&str]) -> String {
        let mut m = Map::new();
        let changes: Vec<String> = changes.iter().map(|s| (*s).to_owned()).collect();
        apply_all(&mut m, &changes).unwrap_err().to_string()
    }

    #[test]
    fn cmd_and_entrypoint_in_both_forms() {
        let c = applied(json!({}), &[r#"CMD ["echo", "a b"]"#]);
        assert_eq!(c["Cmd"], json!(["echo", "a b"]));
        let c = applied(json!({}), &["cmd echo $HOME"]);
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo $HOME"]));
        let c = applied(json!({"Shell": ["/bin/bash", "-ec"]}), &["CMD x"]);
        assert_eq!(c["Cmd"], json!(["/bin/bash", "-ec", "x"]));
        // Not valid JSON: the shell form, as Docker takes it.
        let c = applied(json!({}), &["CMD [x"]);
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "[x"]));
        let c = applied(json!({"Cmd": ["sh"]}), &[r#"ENTRYPOINT ["/e"]"#]);
        assert_eq!(c["Entrypoint"], json!(["/e"]));
        assert_eq!(c["Cmd"], Value::Null);
        let c = applied(json!({}), &[r#"CMD ["c"]"#, r#"ENTRYPOINT ["/e"]"#]);
        assert_eq!(c["Cmd"], json!(["c"]));
    }

    #[test]
    fn env_and_labels() {
        let c = applied(
            json!({"Env": ["PATH=/bin", "A=0"]}),
            &[
                "ENV A=1 B=\"two words\" C=$PATH:/x",
                "ENV D  legacy value",
                "ENV E=${A}${NOPE:-dflt}${A:+set} F='$A'",
            ],
        );
        assert_eq!(
            c["Env"],
            json!([
                "PATH=/bin",
                "A=1",
                "B=two words",
                "C=/bin:/x",
                "D=legacy value",
                "E=1dfltset",
                "F=$A"
            ])
        );
        let c = applied(json!({}), &[r#"LABEL a=1 "b c"=d e="f g""#]);
        assert_eq!(c["Labels"], json!({"a": "1", "b c": "d", "e": "f g"}));
    }

    #[test]
    fn expose_volume_user_workdir_stopsignal() {
        let c = applied(
            json!({"WorkingDir": "/a"}),
            &[
                "EXPOSE 80 53/udp 8000-8001",
                r#"VOLUME ["/data", "/logs"]"#,
                "VOLUME /more",
                "USER nobody:nogroup",
                "WORKDIR b/../c",
                "STOPSIGNAL SIGQUIT",
            ],
        );
        assert_eq!(
            c["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
        );
        assert_eq!(c["Volumes"], json!({"/data": {}, "/logs": {}, "/more": {}}));
        assert_eq!(c["User"], "nobody:nogroup");
        assert_eq!(c["WorkingDir"], "/a/c");
        assert_eq!(c["StopSignal"], "SIGQUIT");
        let c = applied(json!({}), &["WORKDIR /w"]);
        assert_eq!(c["WorkingDir"], "/w");
    }

    #[test]
    fn bad_changes_are_refused_naming_them() {
        let e = refused(&["RUN echo"]);
        assert!(
            e.contains("\"RUN\" is not an instruction commit takes"),
            "{e}"
        );
        assert!(e.contains("change \"RUN echo\""), "{e}");
        assert!(refused(&["CMD"]).contains("requires at least one argument"));
        assert!(refused(&["EXPOSE 70000"]).contains("invalid port"));
        assert!(refused(&["EXPOSE 80/xyz"]).contains("invalid port"));
        assert!(refused(&["STOPSIGNAL SIGNOPE"]).contains("invalid signal"));
        assert!(refused(&["ENV A=\"x"]).contains("unmatched"));
        assert!(refused(&["ENV =x"]).contains("empty key"));
        assert!(refused(&["LABEL a"]).contains("KEY=VALUE"));
    }
}
