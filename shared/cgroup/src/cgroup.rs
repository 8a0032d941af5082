//! A container's cgroup: opened from `linux.cgroupsPath`, created, joined by its processes,
//! frozen and thawed, listed and removed, on cgroup v1 or v2 (the host's layout decides which).

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::hierarchy::{CGROUP_ROOT, v1_mounts, v2_root};

/// A cgroup (a container's, or the one a process was found in), on whichever cgroup version
/// the host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// One directory per mounted v1 controller: (controller, directory).
    V1(Vec<(String, PathBuf)>),
    /// The cgroup's directory in the unified hierarchy.
    V2(PathBuf),
}

/// `linux.cgroupsPath` made relative, refusing `..` and systemd `slice:prefix:name` paths.
fn relative(cgroups_path: &Path) -> Result<PathBuf> {
    let s = cgroups_path.to_string_lossy();
    if !s.starts_with('/') && s.contains(':') {
        return Err(Error::Unsupported(format!(
            "systemd cgroups path {s:?}: use an absolute cgroupfs path"
        )));
    }
    let mut rel = PathBuf::new();
    for c in cgroups_path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "cgroups path {s:?}: must not contain '..'"
                )));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(Error::InvalidSpec(format!(
            "cgroups path {s:?}: must name a cgroup below the root"
        )));
    }
    Ok(rel)
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::io("write", path, e))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

impl Cgroup {
    /// The cgroup at `cgroups_path` (relative to each hierarchy's root); nothing is created.
    pub fn open(cgroups_path: &Path) -> Result<Cgroup> {
        let rel = relative(cgroups_path)?;
        if let Some(root) = v2_root()? {
            return Ok(Cgroup::V2(root.join(rel)));
        }
        let mut dirs = Vec::new();
        for (mountpoint, controllers) in v1_mounts()? {
            for c in controllers {
                if !dirs.iter().any(|(name, _)| *name == c) {
                    dirs.push((c, mountpoint.join(&rel)));
                }
            }
        }
        Ok(Cgroup::V1(dirs))
    }

    pub(crate) fn dir(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(dirs) => dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
            Cgroup::V2(d) => Some(d),
        }
    }

    /// Creates the cgroup directories (and, on v2, enables controllers in the ancestors).
    pub fn create(&self) -> Result<()> {
        match self {
            Cgroup::V1(dirs) => {
                for (controller, dir) in dirs {
                    if controller == "cpuset" {
                        create_cpuset(dir)?;
                    } else {
                        fs::create_dir_all(dir).map_err(|e| Error::io("create cgroup", dir, e))?;
                    }
                }
                Ok(())
            }
            Cgroup::V2(dir) => {
                let root = v2_root()?.unwrap_or_else(|| PathBuf::from(CGROUP_ROOT));
                let rel = dir.strip_prefix(&root).unwrap_or(dir);
                let mut cur = root.to_path_buf();
                for c in rel.components() {
                    let available = read(&cur.join("cgroup.controllers")).unwrap_or_default();
                    let enable = available
                        .split_whitespace()
                        .filter(|c| ["cpu", "cpuset", "memory", "pids", "io"].contains(c))
                        .map(|c| format!("+{c}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    if !enable.is_empty() {
                        // Best effort: a parent with processes refuses (no internal processes).
                        if let Err(e) = write(&cur.join("cgroup.subtree_control"), &enable) {
                            tracing::warn!("{e}");
                        }
                    }
                    cur.push(c);
                    match fs::create_dir(&cur) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io("create cgroup", &cur, e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Moves `pid` into the cgroup (every v1 controller, or the v2 directory).
    pub fn add(&self, pid: Pid) -> Result<()> {
        let pid = pid.to_string();
        match self {
            Cgroup::V1(dirs) => dirs
                .iter()
                .try_for_each(|(_, d)| write(&d.join("cgroup.procs"), &pid)),
            Cgroup::V2(d) => write(&d.join("cgroup.procs"), &pid),
        }
    }

    /// Freezes (`true`) or thaws (`false`) every process of the cgroup and waits until the
    /// kernel reports the new state.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self {
            Cgroup::V1(_) => {
                let dir = self
                    .dir("freezer")
                    .ok_or_else(|| Error::Unsupported("freezer: no v1 freezer hierarchy".into()))?;
                let file = dir.join("freezer.state");
                let want = if frozen { "FROZEN" } else { "THAWED" };
                for _ in 0..2000 {
                    write(&file, want)?;
                    if read(&file)?.trim() == want {
                        return Ok(());
                    }
                    sleep(Duration::from_millis(5));
                }
                Err(Error::sys(
                    "set freezer state",
                    format!("{} to {want}", file.display()),
                    nix::errno::Errno::EBUSY,
                ))
            }
            Cgroup::V2(dir) => {
                write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let events = dir.join("cgroup.events");
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                for _ in 0..2000 {
                    if read(&events)?.lines().any(|l| l.trim() == want) {
                        return Ok(());
                    }
                    sleep(Duration::from_millis(5));
                }
                Err(Error::sys(
                    "wait for",
                    format!("{} to say {want:?}", events.display()),
                    nix::errno::Errno::EBUSY,
                ))
            }
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match self {
            Cgroup::V1(_) => self
                .dir("freezer")
                .and_then(|d| fs::read_to_string(d.join("freezer.state")).ok())
                .is_some_and(|s| s.trim() == "FROZEN"),
            Cgroup::V2(d) => fs::read_to_string(d.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1")),
        }
    }

    /// The host pids of every process in the cgroup.
    pub fn pids(&self) -> Result<Vec<Pid>> {
        let dir = match self {
            Cgroup::V1(dirs) => self
                .dir("pids")
                .or_else(|| self.dir("freezer"))
                .or_else(|| dirs.first().map(|(_, d)| d.as_path())),
            Cgroup::V2(d) => Some(d.as_path()),
        };
        let Some(dir) = dir else {
            return Ok(Vec::new());
        };
        let file = dir.join("cgroup.procs");
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", file, e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .map(Pid::from_raw)
            .collect())
    }

    /// Removes the cgroup's directories; waits (bounded) for dying processes to leave.
    pub fn remove(&self) -> Result<()> {
        let dirs: Vec<&Path> = match self {
            Cgroup::V1(dirs) => dirs.iter().map(|(_, d)| d.as_path()).collect(),
            Cgroup::V2(d) => vec![d.as_path()],
        };
        for dir in dirs {
            let mut attempt = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 500 => {
                        attempt += 1;
                        sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(Error::io("remove cgroup", dir, e)),
                }
            }
        }
        Ok(())
    }

    /// The directories of the cgroup (for tests and diagnostics).
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(dirs) => dirs.iter().map(|(_, d)| d.clone()).collect(),
            Cgroup::V2(d) => vec![d.clone()],
        }
    }
}

/// Creates a v1 cpuset cgroup, copying `cpuset.cpus`/`cpuset.mems` down from the parent into
/// every new level (an empty cpuset refuses tasks).
///
/// A level that exists is not yet a level that is ready: a container created at the same time
/// may have made it and not yet copied the values into it, so whoever finds one empty fills it
/// in too (with the same values: both copy from the same parent).
fn create_cpuset(dir: &Path) -> Result<()> {
    let filled = |d: &Path| {
        ["cpuset.cpus", "cpuset.mems"]
            .iter()
            .all(|f| read(&d.join(f)).is_ok_and(|v| !v.trim().is_empty()))
    };
    if filled(dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_cpuset(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Made meanwhile by a container created at the same time: it copies the values too.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create cgroup", dir, e)),
    }
    if let Some(parent) = dir.parent() {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if read(&dir.join(f))?.trim().is_empty() {
                write(&dir.join(f), read(&parent.join(f))?.trim())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/strata/a")).expect("ok"),
            PathBuf::from("strata/a")
        );
        assert!(relative(Path::new("/a/../b")).is_err());
        assert!(relative(Path::new("system.slice:strata:a")).is_err());
        assert!(relative(Path::new("/")).is_err());
    }
}
