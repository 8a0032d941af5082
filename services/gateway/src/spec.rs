//! The OCI runtime spec of a container `strata run` creates: containerd's defaults (see
//! [`strata_runtime::default_spec`]), the image's execution defaults (entrypoint, cmd, env,
//! working dir, user) and the request's options on top.

use crate::run::{ExecOptions, RunOptions};
use serde_json::{Value, json};
use strata_core::{Error, Result};
use strata_registry::ContainerConfig;

pub const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
pub const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A resolved user: what `process.user` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The command: entrypoint and cmd as Docker combines them. A request's entrypoint drops the
/// image's cmd; a request's args replace it.
pub fn command(
    req_entrypoint: &[String],
    req_args: &[String],
    image: &ContainerConfig,
) -> Vec<String> {
    let (entrypoint, cmd) = if req_entrypoint.is_empty() {
        (
            image.entrypoint.clone().unwrap_or_default(),
            if req_args.is_empty() {
                image.cmd.clone().unwrap_or_default()
            } else {
                req_args.to_vec()
            },
        )
    } else {
        (req_entrypoint.to_vec(), req_args.to_vec())
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// `base` with each of `extra`'s KEY=VALUE added, replacing a variable of the same name.
pub fn merge_env(base: &[String], extra: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = base.to_vec();
    for kv in extra {
        let Some((k, _)) = kv.split_once('=') else {
            return Err(Error::invalid_argument(format!(
                "environment variable {kv:?}: expected KEY=VALUE"
            )));
        };
        if k.is_empty() {
            return Err(Error::invalid_argument(format!(
                "environment variable {kv:?}: empty name"
            )));
        }
        let prefix = format!("{k}=");
        match out.iter_mut().find(|e| e.starts_with(&prefix)) {
            Some(e) => e.clone_from(kv),
            None => out.push(kv.clone()),
        }
    }
    Ok(out)
}

fn env_has(env: &[String], key: &str) -> bool {
    let prefix = format!("{key}=");
    env.iter().any(|e| e.starts_with(&prefix))
}

fn user_json(u: &User) -> Value {
    let mut v = json!({"uid": u.uid, "gid": u.gid});
    if !u.additional_gids.is_empty() {
        v["additionalGids"] = json!(u.additional_gids);
    }
    v
}

fn bind(source: &str, destination: &str, read_only: bool) -> Value {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

/// The spec of container `id` of an image whose execution defaults are `image`.
pub fn build(id: &str, req: &RunOptions, image: &ContainerConfig, user: &User) -> Result<Value> {
    let args = command(&req.entrypoint, &req.args, image);
    if args.is_empty() {
        return Err(Error::invalid_argument(format!(
            "image {:?} has no command and none was given",
            req.image
        )));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let spec = strata_runtime::default_spec(std::path::Path::new("rootfs"), &refs)
        .map_err(|e| Error::internal(format!("default spec: {e}")))?;
    let mut spec =
        serde_json::to_value(spec).map_err(|e| Error::internal(format!("default spec: {e}")))?;

    let mut env = image.env.clone().unwrap_or_default();
    if !env_has(&env, "PATH") {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    if req.tty && !env_has(&env, "TERM") && !req.env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    let env = merge_env(&env, &req.env)?;
    let hostname = if !req.hostname.is_empty() {
        req.hostname.clone()
    } else {
        id.chars().take(12).collect()
    };
    let cwd = [
        req.workdir.as_str(),
        image.working_dir.as_deref().unwrap_or(""),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("/")
    .to_owned();
    if !cwd.starts_with('/') {
        return Err(Error::invalid_argument(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    let p = &mut spec["process"];
    p["args"] = json!(args);
    p["env"] = json!(env);
    p["cwd"] = json!(cwd);
    p["terminal"] = json!(req.tty);
    p["user"] = user_json(user);
    spec["root"]["readonly"] = json!(req.read_only);

    let mut mounts: Vec<Value> = spec["mounts"].as_array().cloned().unwrap_or_default();
    for v in &req.volumes {
        if !v.source.starts_with('/') || !v.destination.starts_with('/') {
            return Err(Error::invalid_argument(format!(
                "volume {}:{}: both paths must be absolute",
                v.source, v.destination
            )));
        }
        mounts.push(bind(&v.source, &v.destination, v.read_only));
    }
    let namespaces = spec["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let keep: Vec<Value> = match req.network.as_str() {
        // A namespace of its own: loopback only, or the one the network service makes for
        // a network (joined by path; see `net::apply`).
        "" | "none" | "private" => {
            spec["hostname"] = json!(hostname);
            namespaces
        }
        "host" => {
            // The host's network and its name, as `docker run --network host`.
            for f in ["/etc/resolv.conf", "/etc/hosts"] {
                if std::path::Path::new(f).exists() {
                    mounts.push(bind(f, f, true));
                }
            }
            namespaces
                .into_iter()
                .filter(|n| n["type"] != "network" && n["type"] != "uts")
                .collect()
        }
        // A network's name, or `container:NAME` (the gateway puts the path of the namespace to
        // join in, see `net::apply` and `net::join_container`).
        name if !name.is_empty() && name != "container:" => {
            spec["hostname"] = json!(hostname);
            namespaces
        }
        other => {
            return Err(Error::invalid_argument(format!(
                "network {other:?}: give a network's name, none, host or container:NAME"
            )));
        }
    };
    spec["mounts"] = json!(mounts);
    spec["linux"]["namespaces"] = json!(keep);

    apply_limits(&mut spec, req)?;
    crate::confine::apply(&mut spec, req)?;
    Ok(spec)
}

/// `--memory`, `--cpus` and `--pids-limit`: the spec's resources, checked.
fn apply_limits(spec: &mut Value, req: &RunOptions) -> Result<()> {
    let r = &mut spec["linux"]["resources"];
    if req.memory < 0 || req.pids_limit < 0 || req.cpus < 0.0 || !req.cpus.is_finite() {
        return Err(Error::invalid_argument(format!(
            "limits must not be negative (memory {}, cpus {}, pids {})",
            req.memory, req.cpus, req.pids_limit
        )));
    }
    if req.memory > 0 {
        if req.memory < 6 << 20 {
            return Err(Error::invalid_argument(format!(
                "memory limit {} bytes: the minimum is 6 MiB",
                req.memory
            )));
        }
        // No swap beyond the limit: a container over its limit is killed, not swapped.
        r["memory"] = json!({"limit": req.memory, "swap": req.memory});
    }
    if req.cpus > 0.0 {
        let period: u64 = 100_000;
        #[allow(clippy::cast_possible_truncation)]
        let quota = (req.cpus * period as f64).round() as i64;
        if quota < 1000 {
            return Err(Error::invalid_argument(format!(
                "cpus {}: the minimum is 0.01",
                req.cpus
            )));
        }
        r["cpu"] = json!({"quota": quota, "period": period});
    }
    if req.pids_limit > 0 {
        r["pids"] = json!({"limit": req.pids_limit});
    }
    Ok(())
}

/// The process of an exec into a container whose spec is `spec`: the container's process
/// (capabilities, rlimits, environment, user, working dir) with the request's changes.
pub fn exec_process(spec: &Value, req: &ExecOptions, user: Option<&User>) -> Result<Value> {
    if req.args.is_empty() {
        return Err(Error::invalid_argument(format!(
            "exec into {:?}: no command given",
            req.container_id
        )));
    }
    let mut p = spec["process"].clone();
    if !p.is_object() {
        return Err(Error::failed_precondition(format!(
            "container {:?} has no process in its spec",
            req.container_id
        )));
    }
    let base: Vec<String> = p["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut env = merge_env(&base, &req.env)?;
    if req.tty && !env_has(&env, "TERM") {
        env.push("TERM=xterm".to_owned());
    }
    p["args"] = json!(req.args);
    p["env"] = json!(env);
    p["terminal"] = json!(req.tty);
    if !req.workdir.is_empty() {
        if !req.workdir.starts_with('/') {
            return Err(Error::invalid_argument(format!(
                "working directory {:?} is not absolute",
                req.workdir
            )));
        }
        p["cwd"] = json!(req.workdir);
    }
    if let Some(u) = user {
        p["user"] = user_json(u);
    }
    if let Some(obj) = p.as_object_mut() {
        obj.remove("consoleSize");
    }
    Ok(p)
}

/// Parses `user[:group]` where both are numbers; `None` when a name needs the image's
/// /etc/passwd or /etc/group.
pub fn numeric_user(s: &str) -> Option<User> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u.parse().ok()?;
    let gid = match g {
        Some(g) => g.parse().ok()?,
        None => 0,
    };
    Some(User {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

/// Resolves `user[:group]` with the image's /etc/passwd and /etc/group contents.
pub fn resolve_user(s: &str, passwd: &str, group: &str) -> Result<User> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect()
    };
    let users = entries(passwd);
    let groups = entries(group);
    let pw = users
        .iter()
        .find(|e| e.len() >= 4 && (e[0] == u || e[2] == u));
    let uid = match (u.parse::<u32>(), pw) {
        (Ok(n), _) => n,
        (Err(_), Some(e)) => e[2].parse().map_err(|_| {
            Error::invalid_argument(format!("user {u:?}: bad uid in the image's /etc/passwd"))
        })?,
        (Err(_), None) => {
            return Err(Error::invalid_argument(format!(
                "user {u:?}: no such user in the image's /etc/passwd"
            )));
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "group {g:?}: no such group in the image's /etc/group"
                    ))
                })?,
        },
        None => pw.and_then(|e| e[3].parse().ok()).unwrap_or(0),
    };
    let name = pw.map(|e| e[0].clone());
    let additional_gids = match &name {
        Some(name) => groups
            .iter()
            .filter(|e| e.len() >= 4 && e[3].split(',').any(|m| m == name))
            .filter_map(|e| e[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn image() -> ContainerConfig {
        ContainerConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["a".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            working_dir: Some("/w".into()),
            ..Default::default()
        }
    }

    #[test]
    fn command_combines_like_docker() {
        let i = image();
        assert_eq!(command(&[], &[], &i), ["/entry", "a"]);
        assert_eq!(command(&[], &["b".into()], &i), ["/entry", "b"]);
        assert_eq!(command(&["/x".into()], &[], &i), ["/x"]);
    }

    #[test]
    fn env_is_merged_by_name() {
        let e = merge_env(&["A=1".into(), "B=2".into()], &["B=3".into(), "C=".into()]).unwrap();
        assert_eq!(e, ["A=1", "B=3", "C="]);
        assert!(merge_env(&[], &["novalue".into()]).is_err());
    }

    #[test]
    fn spec_carries_the_request() {
        let req = RunOptions {
            image: "busybox".into(),
            args: vec!["sh".into()],
            env: vec!["A=2".into()],
            tty: true,
            memory: 64 << 20,
            cpus: 0.5,
            pids_limit: 10,
            read_only: true,
            volumes: vec![crate::run::Volume {
                source: "/srv".into(),
                destination: "/data".into(),
                read_only: true,
            }],
            ..Default::default()
        };
        let s = build("0123456789abcdef", &req, &image(), &User::default()).unwrap();
        assert_eq!(s["process"]["args"], json!(["/entry", "sh"]));
        assert_eq!(
            s["process"]["env"],
            json!(["PATH=/bin", "A=2", "TERM=xterm"])
        );
        assert_eq!(s["process"]["cwd"], "/w");
        assert_eq!(s["hostname"], "0123456789ab");
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 10);
        let m = s["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(m["destination"], "/data");
        assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
        let host = RunOptions {
            network: "host".into(),
            ..req.clone()
        };
        let s = build("x", &host, &image(), &User::default()).unwrap();
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().all(|n| n["type"] != "network"));
        let bad = RunOptions {
            network: "container:".into(),
            ..req
        };
        assert!(build("x", &bad, &image(), &User::default()).is_err());
    }

    #[test]
    fn users_resolve_from_the_image() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/:/bin/false\n";
        let group = "root:x:0:\nwww:x:34:\nextra:x:50:www\n";
        let u = resolve_user("www", passwd, group).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (33, 34, vec![50]));
        assert_eq!(resolve_user("33:root", passwd, group).unwrap().gid, 0);
        assert!(resolve_user("nobody", passwd, group).is_err());
        assert_eq!(numeric_user("5:6").unwrap().gid, 6);
        assert!(numeric_user("www").is_none());
    }
}
