//! `strata build`: an image from a Dockerfile and a build context.
//!
//! The Dockerfile is parsed by `strata-dockerfile`; the stages the target needs run in order,
//! each instruction one step over the state the step before left (config, layers, history):
//!
//! - FROM takes a local image (pulled when missing), an earlier stage or `scratch`; the base's
//!   ONBUILD triggers run first.
//! - RUN is a container of the state so far (created, started and removed through the same
//!   code as `strata run`); its changes become a layer the way `strata commit` makes one.
//! - COPY, ADD and WORKDIR write into an active snapshot over the state's layers, mounted here
//!   ([`files`]); its changes become a layer and the snapshot is committed under the layer's
//!   chain ID.
//! - Every other instruction changes the config and adds an `empty_layer` history entry.
//!
//! **Cache.** A step's key is the hash of its parent's key, its instruction, the build
//! arguments it sees and, for COPY and ADD, a checksum of what it copies. A step that wrote a
//! layer (and the build's last) leaves its state as an image record named
//! [`CACHE_PREFIX`]`<key>`: a later step with the same key takes that image instead of running.
//! The cache is thus ordinary images: it survives restarts, the collector keeps what they
//! name as it keeps any image's, every build on the host shares it, `strata builder prune`
//! ([`prune`]) removes the records, and `strata images` does not list them.
//!
//! Everything a build writes is held by one lease until records hold it; what a failed or
//! cancelled build was running is removed ([`Cleanup`]).

pub mod files;

use crate::Backends;
use crate::catalog::find_image;
use crate::commit::{Entry, NewLayer, Top, append, layer_of, store};
use crate::image::{chain_ids, details};
use crate::pull::Pull;
use crate::run::RunOptions;
use crate::tasks::OutputEvent;
use files::{Copier, CopyOptions, Owner, Tree};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use strata_core::containers::Container;
use strata_core::images::{DeleteOptions, Image, ImageStore};
use strata_core::leases::LeaseStore;
use strata_core::snapshots::SnapshotStore;
use strata_core::{Digest, Error, Kind, Result};
use strata_dockerfile::{
    Command, CopySpec, Dockerfile, Healthcheck, Instruction, Kind as Ins, Stage,
};
use strata_registry::{Platform, media_types};
use tokio::sync::mpsc;

/// Names of the build cache's image records: this prefix and the step's key.
pub const CACHE_PREFIX: &str = "strata-build-cache/step:";

/// The PATH an image built from scratch gets (BuildKit's, buildah's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Largest /etc/passwd or /etc/group read to resolve `--chown` names.
const ACCOUNTS_LIMIT: u64 = 4 << 20;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dockerfile: String,
    /// How messages name the Dockerfile.
    pub dockerfile_name: String,
    pub tags: Vec<String>,
    pub build_args: HashMap<String, String>,
    /// The stage to build; empty for the last.
    pub target: String,
    pub no_cache: bool,
    /// Network of RUN steps: "" or "bridge", "none", "host".
    pub network: String,
    /// Pull base images even when present.
    pub pull: bool,
}

/// A step begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub stage: usize,
    pub stage_name: String,
    pub number: usize,
    pub total: usize,
    pub instruction: String,
    pub cached: bool,
}

/// What a build reports as it goes.
#[derive(Debug)]
pub enum Event {
    Step(Step),
    /// A RUN step's output.
    Output(bytes::Bytes),
    /// A base image's pull.
    Pull(crate::pull::Event),
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct Built {
    pub id: Digest,
    pub names: Vec<String>,
    pub steps_run: usize,
    pub steps_cached: usize,
}

/// What a build has running, removed when it fails or is cancelled.
#[derive(Default)]
pub struct Cleanup {
    containers: Mutex<Vec<String>>,
    lease: Mutex<Option<String>>,
}

impl Cleanup {
    fn add(&self, id: &str) {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.to_owned());
    }

    fn done(&self, id: &str) {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|c| c != id);
    }

    fn set_lease(&self, lease: &str) {
        *self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lease.to_owned());
    }

    /// Removes the containers still there and drops the build's lease (a build that ended
    /// dropped it already; one cancelled midway did not).
    pub async fn run(&self, b: &Backends, ns: &str) {
        let ids = std::mem::take(
            &mut *self
                .containers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for id in ids {
            if let Err(e) = crate::run::remove(b, ns, &id, true).await
                && e.kind() != Kind::NotFound
            {
                tracing::warn!(container = %id, error = %e, "removing a build's container");
            }
        }
        let lease = self
            .lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(id) = lease
            && let Err(e) = b.leases.delete(ns, &id, false).await
            && e.kind() != Kind::NotFound
        {
            tracing::warn!(error = %e.message(), "dropping a cancelled build's lease");
        }
    }
}

/// One stage's state: the image so far.
#[derive(Clone)]
struct State {
    /// The image config but its `config` (the run config), which is `rc`.
    config: Map<String, Value>,
    rc: Map<String, Value>,
    top: Top,
    /// The cache key of this state.
    key: String,
    /// An image record holding exactly this state, if one was written or found.
    record: Option<String>,
    /// Build arguments declared in this stage, with their values.
    args: BTreeMap<String, Option<String>>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

impl State {
    fn run_config(&mut self) -> &mut Map<String, Value> {
        &mut self.rc
    }

    /// The whole image config.
    fn full(&self) -> Map<String, Value> {
        let mut c = self.config.clone();
        c.insert("config".into(), Value::Object(self.rc.clone()));
        c
    }

    /// The run config's list of strings at `key` (Env, Shell, OnBuild); empty when absent.
    fn strings(&self, key: &str) -> Vec<String> {
        self.rc
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn env(&self) -> Vec<String> {
        self.strings("Env")
    }

    fn env_value(&self, name: &str) -> Option<String> {
        self.env().iter().find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
    }

    /// How `$NAME` expands in this stage: ENV first, then declared build arguments.
    fn lookup(&self, name: &str) -> Option<String> {
        self.env_value(name)
            .or_else(|| self.args.get(name).cloned().flatten())
    }

    /// Build arguments RUN sees: those with a value that ENV does not set.
    fn run_args(&self) -> Vec<String> {
        self.args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .filter(|(k, _)| self.env_value(k).is_none())
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    fn str_field(&self, field: &str) -> String {
        self.rc
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn workdir(&self) -> String {
        let w = self.str_field("WorkingDir");
        if w.is_empty() { "/".to_owned() } else { w }
    }

    fn shell(&self) -> Vec<String> {
        let s = self.strings("Shell");
        if s.is_empty() {
            vec!["/bin/sh".to_owned(), "-c".to_owned()]
        } else {
            s
        }
    }

    /// Adds a history entry without a layer: the config changed only.
    fn note(&mut self, created_by: String) {
        let top = std::mem::replace(
            &mut self.top,
            Top {
                layers: Vec::new(),
                diff_ids: Vec::new(),
                docker: false,
            },
        );
        self.top = append(
            top,
            &mut self.config,
            None,
            &Entry {
                created_by,
                ..Entry::default()
            },
        );
        self.record = None;
    }
}

fn scratch() -> State {
    let host = Platform::host();
    let mut config = Map::new();
    config.insert("architecture".into(), Value::String(host.architecture));
    config.insert("os".into(), Value::String(host.os));
    config.insert("rootfs".into(), json!({"type": "layers", "diff_ids": []}));
    config.insert("history".into(), Value::Array(Vec::new()));
    // As BuildKit: an image from scratch gets the default PATH.
    let mut rc = Map::new();
    rc.insert("Env".into(), json!([format!("PATH={DEFAULT_PATH}")]));
    State {
        config,
        rc,
        top: Top {
            layers: Vec::new(),
            diff_ids: Vec::new(),
            docker: false,
        },
        key: hash(&["scratch"]),
        record: None,
        args: BTreeMap::new(),
        cmd_set: false,
    }
}

/// The stages the target needs, in Dockerfile order.
fn needed(df: &Dockerfile, target: usize) -> Vec<usize> {
    let mut need = vec![false; df.stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if need[i] {
            continue;
        }
        need[i] = true;
        let stage = &df.stages[i];
        let mut refs = vec![stage.base.clone()];
        for ins in &stage.instructions {
            if let Ins::Copy(c) | Ins::Add(c) = &ins.kind
                && let Some(f) = &c.from
            {
                refs.push(f.clone());
            }
        }
        for r in refs {
            if let Some(j) = stage_index(df, &r, i) {
                todo.push(j);
            }
        }
    }
    (0..df.stages.len()).filter(|i| need[*i]).collect()
}

/// The stage `name` (a name or a number) names, among those before stage `before`.
fn stage_index(df: &Dockerfile, name: &str, before: usize) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    df.stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

/// The running build.
struct Builder<'a> {
    b: &'a Arc<Backends>,
    ns: String,
    opts: &'a Options,
    df: &'a Dockerfile,
    p: &'a Pull<'a>,
    context: &'a Path,
    events: &'a mpsc::Sender<Event>,
    cleanup: &'a Cleanup,
    id: String,
    meta: BTreeMap<String, Option<String>>,
    stages: Vec<Option<State>>,
    number: usize,
    total: usize,
    run: usize,
    cached: usize,
}

fn random_id() -> Result<String> {
    let mut buf = [0u8; 6];
    getrandom(&mut buf)?;
    Ok(hex::encode(buf))
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::internal(format!("reading /dev/urandom: {e}")))
}

/// Builds the image `opts` describes from the context unpacked at `context`.
pub async fn build(
    b: &Arc<Backends>,
    ns: &str,
    opts: &Options,
    context: &Path,
    events: mpsc::Sender<Event>,
    cleanup: &Cleanup,
) -> Result<Built> {
    let name = if opts.dockerfile_name.is_empty() {
        "Dockerfile"
    } else {
        opts.dockerfile_name.as_str()
    };
    let df = Dockerfile::parse(&opts.dockerfile)
        .map_err(|e| Error::invalid_argument(format!("{name}: {e}")))?;
    if df.stages.is_empty() {
        return Err(Error::invalid_argument(format!(
            "{name}: no FROM instruction: a Dockerfile starts with FROM"
        )));
    }
    let target = if opts.target.is_empty() {
        df.stages.len() - 1
    } else {
        stage_index(&df, &opts.target, df.stages.len()).ok_or_else(|| {
            Error::invalid_argument(format!(
                "target stage {:?}: no such stage in {name}",
                opts.target
            ))
        })?
    };
    for t in &opts.tags {
        strata_registry::Reference::parse(t)
            .map_err(|e| Error::invalid_argument(format!("tag {t:?}: {e}")))?;
    }
    let stages = needed(&df, target);
    let total = stages
        .iter()
        .map(|i| df.stages[*i].instructions.len() + 1)
        .sum();
    // Build arguments declared before the first FROM: for FROM lines, and as defaults of the
    // stages that declare them again.
    let mut meta = BTreeMap::new();
    for ins in &df.meta_args {
        let Ins::Arg(args) = &ins.kind else { continue };
        for (k, default) in args {
            let v = match opts.build_args.get(k) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => Some(
                        strata_dockerfile::expand(d, df.escape, &|n| meta_lookup(&meta, n))
                            .map_err(|e| {
                                Error::invalid_argument(format!("{name}: line {}: {e}", ins.line))
                            })?,
                    ),
                    None => None,
                },
            };
            meta.insert(k.clone(), v);
        }
    }
    let (events_tx, mut events_rx) = mpsc::channel(16);
    // Pull progress of the build's own lease is not reported: it writes no blob from a
    // registry (base images come through `pull`, reported as they go).
    tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
    let p = Pull::start(b, ns, None, b.snapshotter.clone(), events_tx).await?;
    cleanup.set_lease(p.lease());
    let mut builder = Builder {
        b,
        ns: ns.to_owned(),
        opts,
        df: &df,
        p: &p,
        context,
        events: &events,
        cleanup,
        id: random_id()?,
        meta,
        stages: vec![None; df.stages.len()],
        number: 0,
        total,
        run: 0,
        cached: 0,
    };
    let built = builder.all(&stages, target).await;
    p.end().await;
    built
}

fn meta_lookup(meta: &BTreeMap<String, Option<String>>, name: &str) -> Option<String> {
    meta.get(name).cloned().flatten()
}

impl Builder<'_> {
    async fn all(&mut self, stages: &[usize], target: usize) -> Result<Built> {
        for &i in stages {
            let state = self.stage(i).await?;
            self.stages[i] = Some(state);
        }
        let mut state = self.stages[target]
            .take()
            .ok_or_else(|| Error::internal("the target stage was not built"))?;
        let record = self.record(&mut state).await?;
        let img = self.image(&record).await?;
        let d = details(self.b, &self.ns, img.clone()).await?;
        let mut names = Vec::new();
        if self.opts.tags.is_empty() {
            let name = d.config_digest.to_string();
            crate::pull::put_image(self.b, &self.ns, &name, img.target.clone(), HashMap::new())
                .await?;
            names.push(name);
        }
        for t in &self.opts.tags {
            let r = crate::push::tag(self.b, &self.ns, &record, t).await?;
            names.push(r.name);
        }
        Ok(Built {
            id: d.config_digest,
            names,
            steps_run: self.run,
            steps_cached: self.cached,
        })
    }

    async fn image(&self, name: &str) -> Result<Image> {
        self.b.images.get(&self.ns, name).await
    }

    /// The state an image record holds.
    async fn load(&self, img: Image, key: String) -> Result<State> {
        let record = img.name.clone();
        let d = details(self.b, &self.ns, img).await?;
        // Read (and verified) once by `details`: from the gateway's metadata cache.
        let bytes = self
            .b
            .metadata
            .read(&self.b.content, &self.ns, &d.config_digest)
            .await?;
        let mut config: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::failed_precondition(format!("image config {}: {e}", d.config_digest))
        })?;
        let rc = match config.remove("config") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(State {
            config,
            rc,
            top: Top {
                layers: d.manifest.layers.clone(),
                diff_ids: d.diff_ids().to_vec(),
                docker: d.manifest.media_type.as_deref() == Some(media_types::DOCKER_MANIFEST),
            },
            key,
            record: Some(record),
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    /// The cached state of key `key`, unless the build wants none.
    async fn cached(&self, key: &str) -> Result<Option<State>> {
        if self.opts.no_cache {
            return Ok(None);
        }
        match self.image(&format!("{CACHE_PREFIX}{key}")).await {
            Ok(img) => {
                // An entry whose content went (a half-collected cache) is a miss.
                match self.load(img, key.to_owned()).await {
                    Ok(s) => Ok(Some(s)),
                    Err(e) if e.kind() == Kind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the state as an image record (its cache entry) unless one holds it already;
    /// answers the record's name.
    async fn record(&self, state: &mut State) -> Result<String> {
        if let Some(r) = &state.record {
            return Ok(r.clone());
        }
        let name = format!("{CACHE_PREFIX}{}", state.key);
        store(self.p, state.top.clone(), &state.full(), Some(name.clone())).await?;
        state.record = Some(name.clone());
        Ok(name)
    }

    async fn event(&self, e: Event) {
        let _ = self.events.send(e).await;
    }

    async fn step_event(&mut self, stage: usize, instruction: &str, cached: bool) {
        self.number += 1;
        if cached {
            self.cached += 1;
        } else {
            self.run += 1;
        }
        let s = &self.df.stages[stage];
        self.event(Event::Step(Step {
            stage,
            stage_name: s.name.clone().unwrap_or_default(),
            number: self.number,
            total: self.total,
            instruction: instruction.to_owned(),
            cached,
        }))
        .await;
    }

    fn where_(&self, line: usize, what: &str) -> String {
        let name = if self.opts.dockerfile_name.is_empty() {
            "Dockerfile"
        } else {
            self.opts.dockerfile_name.as_str()
        };
        format!("{name}: line {line}: {what}")
    }

    async fn stage(&mut self, i: usize) -> Result<State> {
        let stage: &Stage = &self.df.stages[i];
        let base =
            strata_dockerfile::expand(&stage.base, self.df.escape, &|n| meta_lookup(&self.meta, n))
                .map_err(|e| {
                    Error::invalid_argument(self.where_(stage.line, &format!("FROM: {e}")))
                })?;
        if let Some(platform) = &stage.platform {
            let want = strata_dockerfile::expand(platform, self.df.escape, &|n| {
                meta_lookup(&self.meta, n)
            })
            .map_err(|e| Error::invalid_argument(self.where_(stage.line, &format!("FROM: {e}"))))?;
            let host = Platform::host();
            let p = Platform::parse(&want).map_err(|e| {
                Error::invalid_argument(self.where_(stage.line, &format!("FROM --platform: {e}")))
            })?;
            if p.normalized() != host.normalized() {
                return Err(Error::failed_precondition(self.where_(
                    stage.line,
                    &format!("FROM --platform={want}: this host builds for {host} only"),
                )));
            }
        }
        let mut state = if base.eq_ignore_ascii_case("scratch") {
            scratch()
        } else if let Some(j) = stage_index(self.df, &base, i) {
            let mut s = self.stages[j]
                .clone()
                .ok_or_else(|| Error::internal(format!("stage {j} was needed but not built")))?;
            s.args.clear();
            s.cmd_set = false;
            s
        } else {
            self.base_image(&base, stage.line).await?
        };
        // Nothing runs for a base image present or for scratch.
        let cached = state.record.is_some() || base.eq_ignore_ascii_case("scratch");
        self.step_event(i, &first_line(&format!("FROM {base}")), cached)
            .await;
        // The base's ONBUILD triggers run first, then go from the config.
        let triggers = state.strings("OnBuild");
        if !triggers.is_empty() {
            state.run_config().remove("OnBuild");
            state.record = None;
            for t in triggers {
                let df = Dockerfile::parse(&format!("FROM scratch\n{t}\n")).map_err(|e| {
                    Error::invalid_argument(format!("the base image's ONBUILD {t:?}: {e}"))
                })?;
                let ins = df
                    .stages
                    .first()
                    .and_then(|s| s.instructions.first())
                    .cloned()
                    .ok_or_else(|| {
                        Error::invalid_argument(format!("the base image's ONBUILD {t:?}: empty"))
                    })?;
                state = self.instruction(i, state, &ins, false).await?;
            }
        }
        for ins in &stage.instructions {
            state = self.instruction(i, state, ins, true).await?;
        }
        Ok(state)
    }

    async fn base_image(&self, base: &str, line: usize) -> Result<State> {
        let found = if self.opts.pull {
            None
        } else {
            match find_image(self.b, &self.ns, base).await {
                Ok(i) => Some(i),
                Err(e) if e.kind() == Kind::NotFound => None,
                Err(e) => return Err(e),
            }
        };
        let img = match found {
            Some(i) => i,
            None => {
                self.pull(base).await.map_err(|e| {
                    e.context(self.where_(line, &format!("FROM {base}: pulling the base image")))
                })?;
                find_image(self.b, &self.ns, base).await?
            }
        };
        let target = img.target.clone();
        let key = hash(&["FROM", &target.digest.to_string()]);
        self.load(img, key).await
    }

    async fn pull(&self, reference: &str) -> Result<()> {
        let (tx, mut rx) = mpsc::channel(16);
        let events = self.events.clone();
        let forward = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                let _ = events.send(Event::Pull(e)).await;
            }
        });
        let req = crate::pull::Request {
            reference: reference.to_owned(),
            platform: String::new(),
            plain_http: false,
            snapshotter: self.b.snapshotter.clone(),
        };
        let r = crate::pull::pull(self.b, &self.ns, &req, tx).await;
        let _ = forward.await;
        r
    }

    /// Runs one instruction over `state`.
    async fn instruction(
        &mut self,
        stage: usize,
        mut state: State,
        ins: &Instruction,
        counted: bool,
    ) -> Result<State> {
        let escape = self.df.escape;
        let kind = {
            let s = &state;
            ins.expanded(escape, &|n| s.lookup(n))
                .map_err(|e| Error::invalid_argument(self.where_(ins.line, &e.to_string())))?
        };
        let text = first_line(&ins.original);
        unsupported_flags(ins, &kind)
            .map_err(|e| Error::invalid_argument(self.where_(ins.line, &e)))?;
        // ARG changes what later steps see, nothing of the image.
        if let Ins::Arg(args) = &kind {
            for (k, default) in args {
                let v = self
                    .opts
                    .build_args
                    .get(k)
                    .cloned()
                    .or_else(|| default.clone())
                    .or_else(|| meta_lookup(&self.meta, k));
                state.args.insert(k.clone(), v);
            }
            if counted {
                self.step_event(stage, &text, false).await;
                // Nothing ran: a rebuild's count of steps run stays 0.
                self.run -= 1;
            }
            return Ok(state);
        }
        let visible = state.run_args().join("\n");
        let mut extra = String::new();
        if let Ins::Copy(c) | Ins::Add(c) = &kind {
            extra = self.copy_checksum(stage, c, ins).await?;
        }
        let key = hash(&[&state.key, &ins.original, &visible, &extra]);
        if let Some(mut hit) = self.cached(&key).await? {
            hit.args = state.args.clone();
            hit.cmd_set = state.cmd_set || matches!(kind, Ins::Cmd(_));
            if counted {
                self.step_event(stage, &text, true).await;
            }
            return Ok(hit);
        }
        if counted {
            self.step_event(stage, &text, false).await;
        }
        let mut next = match &kind {
            Ins::Run { command, network } => {
                self.run_step(&mut state, command, network.as_deref(), ins)
                    .await?
            }
            Ins::Copy(c) => self.copy_step(stage, &mut state, c, false, ins).await?,
            Ins::Add(c) => self.copy_step(stage, &mut state, c, true, ins).await?,
            Ins::Workdir(w) => self.workdir_step(&mut state, w, ins).await?,
            other => {
                config_change(&mut state, other, ins)
                    .map_err(|e| Error::invalid_argument(self.where_(ins.line, &e)))?;
                state
            }
        };
        next.key = key;
        next.record = None;
        // Every step's state is a cache entry: a rebuild finds each one.
        self.record(&mut next).await?;
        Ok(next)
    }

    async fn copy_checksum(&self, stage: usize, c: &CopySpec, ins: &Instruction) -> Result<String> {
        if let Some(from) = &c.from {
            if let Some(j) = stage_index(self.df, from, stage) {
                let key = self.stages[j]
                    .as_ref()
                    .map(|s| s.key.clone())
                    .unwrap_or_default();
                return Ok(format!("stage:{key}"));
            }
            // An image (pulled now when missing): its key names its content.
            let image = self.base_image(from, ins.line).await?;
            return Ok(format!("image:{}", image.key));
        }
        let context = self.context.to_path_buf();
        let sources = c.sources.clone();
        let line = ins.line;
        let what = self.where_(line, "");
        tokio::task::spawn_blocking(move || -> Result<String> {
            let tree = Tree::open(&context, "the build context")
                .map_err(|e| Error::internal(e.to_string()))?;
            let mut all = Vec::new();
            for s in &sources {
                if is_url(s) {
                    all.push(PathBuf::from(s));
                    continue;
                }
                let found = files::resolve_sources(&tree, s)
                    .map_err(|e| Error::invalid_argument(format!("{what}COPY: {e}")))?;
                all.extend(found);
            }
            files::checksum(&tree, &all, false).map_err(|e| Error::internal(format!("{what}{e}")))
        })
        .await
        .map_err(|e| Error::internal(format!("checksumming the build context: {e}")))?
    }

    async fn run_step(
        &mut self,
        state: &mut State,
        command: &Command,
        network: Option<&str>,
        ins: &Instruction,
    ) -> Result<State> {
        let argv: Vec<String> = match command {
            Command::Shell(s) => {
                let mut v = state.shell();
                v.push(s.clone());
                v
            }
            Command::Exec(v) => v.clone(),
        };
        let Some((first, rest)) = argv.split_first() else {
            return Err(Error::invalid_argument(
                self.where_(ins.line, "RUN: no command"),
            ));
        };
        let args = state.run_args();
        let created_by = {
            let mut s = "RUN ".to_owned();
            if !args.is_empty() {
                s.push_str(&format!("|{} {} ", args.len(), args.join(" ")));
            }
            s.push_str(&argv.join(" "));
            s.push_str(" # buildkit");
            s
        };
        let record = self.record(state).await?;
        let network = match network.unwrap_or(self.opts.network.as_str()) {
            "" | "default" | "bridge" => String::new(),
            "none" => "none".to_owned(),
            "host" => "host".to_owned(),
            other => {
                return Err(Error::invalid_argument(self.where_(
                    ins.line,
                    &format!("RUN --network={other}: one of default, none and host"),
                )));
            }
        };
        let id = format!("strata-build-{}-{}", self.id, self.number);
        let req = RunOptions {
            image: record.clone(),
            name: id.clone(),
            entrypoint: vec![first.clone()],
            // With the entrypoint given, the image's CMD is not appended.
            args: rest.to_vec(),
            env: args,
            network: if network.is_empty() && self.b.network.is_none() {
                "private".to_owned()
            } else {
                network
            },
            labels: HashMap::from([("io.strata.build".to_owned(), self.id.clone())]),
            ..Default::default()
        };
        self.cleanup.add(&id);
        let ran = self.run_container(req, &id).await;
        let layer = match ran {
            Ok(0) => {
                let img = self.image(&record).await?;
                let base = details(self.b, &self.ns, img).await?;
                let c = crate::commit::container(self.b, &self.ns, &id).await?;
                self.remove_stubs(&c).await?;
                crate::commit::container_layer(self.p, &c, &base, state.top.docker, false).await
            }
            Ok(code) => Err(Error::failed_precondition(self.where_(
                ins.line,
                &format!(
                    "{}: the command exited with code {code}",
                    first_line(&ins.original)
                ),
            ))),
            Err(e) => Err(e.context(self.where_(ins.line, &first_line(&ins.original)))),
        };
        let removed = crate::run::remove(self.b, &self.ns, &id, true).await;
        self.cleanup.done(&id);
        let layer = layer?;
        removed?;
        self.next_state(state, layer, created_by).await
    }

    /// With the step's task gone (its root unmounted), removes from the container's layer
    /// the mount points its runtime made there.
    async fn remove_stubs(&self, c: &Container) -> Result<()> {
        crate::run::delete_task(self.b, &self.ns, &c.id).await?;
        let spec = crate::run::spec_of(c)?;
        let destinations: Vec<String> = spec["mounts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["destination"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mounts = self
            .b
            .snapshots
            .mounts(&self.p.snapshotter, &self.ns, &c.snapshot_key)
            .await?;
        let Some(overlay) = mounts.iter().find(|m| m.kind == "overlay") else {
            // A snapshotter without an upper directory (native): its copies hold no stubs
            // we can tell from the image's own entries.
            return Ok(());
        };
        let opt = |k: &str| {
            overlay
                .options
                .iter()
                .find_map(|o| o.strip_prefix(k).map(str::to_owned))
        };
        let (Some(upper), lowers) = (opt("upperdir="), opt("lowerdir=").unwrap_or_default()) else {
            return Ok(());
        };
        let lowers: Vec<PathBuf> = lowers
            .split(':')
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect();
        tokio::task::spawn_blocking(move || {
            files::remove_mount_stubs(Path::new(&upper), &lowers, &destinations);
        })
        .await
        .map_err(|e| Error::internal(format!("removing a step's mount points: {e}")))
    }

    /// Runs the container to its end, streaming its output; answers its exit code.
    async fn run_container(&self, req: RunOptions, id: &str) -> Result<u32> {
        crate::run::create(self.b, &self.ns, req).await?;
        let start = crate::run::AttachStart {
            container_id: id.to_owned(),
            exec_id: String::new(),
            logs: true,
            stdin: false,
        };
        crate::run::start(self.b, &self.ns, id, false).await?;
        let mut a = crate::run::attach(self.b, &self.ns, &start).await?;
        loop {
            let event = a.output.next().await?.ok_or_else(|| {
                Error::unavailable(format!("container {id:?}: output ended early"))
            })?;
            match event {
                OutputEvent::Output { data, .. } => self.event(Event::Output(data)).await,
                OutputEvent::Exit { status, .. } => return Ok(status),
            }
        }
    }

    /// The state after a step that wrote `layer` (none: it changed nothing), recorded as
    /// its cache entry.
    async fn next_state(
        &self,
        state: &State,
        layer: Option<NewLayer>,
        created_by: String,
    ) -> Result<State> {
        let mut next = state.clone();
        next.top = append(
            state.top.clone(),
            &mut next.config,
            layer,
            &Entry {
                created_by,
                ..Entry::default()
            },
        );
        next.record = None;
        Ok(next)
    }

    /// Runs `work` on the mounted root of a new active snapshot over the state's layers;
    /// answers the state with the resulting layer.
    async fn file_step<F>(
        &mut self,
        state: &mut State,
        created_by: String,
        work: F,
    ) -> Result<State>
    where
        F: FnOnce(&Tree) -> Result<()> + Send + 'static,
    {
        let (b, ns, sn) = (self.b, self.ns.clone(), self.p.snapshotter.clone());
        let key = format!("strata-build-{}-{}", self.id, self.number);
        let parent = chain_ids(&state.top.diff_ids)
            .last()
            .map(ToString::to_string)
            .unwrap_or_default();
        // Leased before it exists: the collector never sees it unheld.
        self.p.lease_add_snapshot(&key).await?;
        let mounts = b
            .snapshots
            .prepare(&sn, &ns, &key, &parent, HashMap::new())
            .await?;
        let worked = async {
            let tmp = b.root.join("tmp");
            tokio::task::spawn_blocking(move || -> Result<()> {
                std::fs::create_dir_all(&tmp)
                    .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
                let m = strata_mount::TempMount::new(&mounts, &tmp).map_err(|e| {
                    Error::internal(format!("mounting the step's root file system: {e}"))
                })?;
                let root = Tree::open(m.path(), "the image")
                    .map_err(|e| Error::internal(e.to_string()))?;
                work(&root)
            })
            .await
            .map_err(|e| Error::internal(format!("the step's file work: {e}")))??;
            layer_of(
                self.p,
                &key,
                &format!("build step {}", self.number),
                &state.top.diff_ids,
                state.top.docker,
                None,
                true,
            )
            .await
        }
        .await;
        // Taken (committed) when it made a layer; otherwise it goes now.
        if b.snapshots.stat(&sn, &ns, &key).await.is_ok() {
            let _ = b.snapshots.remove(&sn, &ns, &key).await;
        }
        let layer = worked?;
        self.next_state(state, layer, created_by).await
    }

    async fn workdir_step(
        &mut self,
        state: &mut State,
        dir: &str,
        ins: &Instruction,
    ) -> Result<State> {
        let path = Path::new(&state.workdir()).join(dir);
        let path = clean(&path);
        state
            .run_config()
            .insert("WorkingDir".into(), Value::String(path.clone()));
        let created_by = format!("WORKDIR {path}");
        let line = ins.line;
        let what = self.where_(line, "WORKDIR");
        self.file_step(state, created_by, move |root| {
            root.mkdir_all(Path::new(&path), None)
                .map(|_| ())
                .map_err(|e| Error::failed_precondition(format!("{what}: {e}")))
        })
        .await
    }

    async fn copy_step(
        &mut self,
        stage: usize,
        state: &mut State,
        c: &CopySpec,
        add: bool,
        ins: &Instruction,
    ) -> Result<State> {
        let word = if add { "ADD" } else { "COPY" };
        let what = self.where_(ins.line, word);
        if let Some(u) = c.sources.iter().find(|s| is_url(s)) {
            return Err(Error::invalid_argument(format!(
                "{what}: {u}: sources from URLs are not supported; fetch them in a RUN step"
            )));
        }
        if c.link {
            // --link changes only how a layer is made, not what it holds.
            tracing::debug!("{what}: --link builds the same layer here");
        }
        let mode = c
            .chmod
            .as_deref()
            .map(|m| {
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        Error::invalid_argument(format!("{what}: --chmod={m}: not an octal mode"))
                    })
            })
            .transpose()?;
        // Where the sources come from: the context, another stage or an image.
        let (from_root, view, from_mount) = match &c.from {
            None => (self.context.to_path_buf(), None, None),
            Some(f) => self.copy_from(f, stage, ins.line).await?,
        };
        let from_name = match &c.from {
            None => "the build context".to_owned(),
            Some(f) => format!("stage {f}"),
        };
        let workdir = state.workdir();
        let dest_raw = c.dest.clone();
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", workdir.trim_end_matches('/'))
        };
        let dir_dest = dest_raw.ends_with('/') || dest_raw.ends_with("/.") || dest_raw == ".";
        let sources = c.sources.clone();
        let chown = c.chown.clone();
        let keep_owner = c.from.is_some();
        let created_by = format!("{} # buildkit", first_line(&ins.original));
        let what2 = what.clone();
        let result = self
            .file_step(state, created_by, move |root| {
                let owner = match &chown {
                    Some(ch) => Some(resolve_owner(root, ch).map_err(|e| {
                        Error::invalid_argument(format!("{what2}: --chown={ch}: {e}"))
                    })?),
                    None if keep_owner => None,
                    None => Some(Owner { uid: 0, gid: 0 }),
                };
                if from_root.as_os_str().is_empty() {
                    return Err(Error::invalid_argument(format!(
                        "{what2}: {from_name} is empty"
                    )));
                }
                let from = Tree::open(&from_root, &from_name)
                    .map_err(|e| Error::internal(e.to_string()))?;
                copy_into(
                    root,
                    &from,
                    &sources,
                    &dest,
                    dir_dest,
                    add,
                    CopyOptions { owner, mode },
                )
                .map_err(|e| Error::failed_precondition(format!("{what2}: {e}")))
            })
            .await;
        drop(from_mount);
        if let Some(v) = view {
            let _ = self
                .b
                .snapshots
                .remove(&self.p.snapshotter, &self.ns, &v)
                .await;
        }
        result
    }

    /// The root of COPY --from=`f` (stage or image `f`): its path, the key of the view
    /// snapshot to remove after the copy, and the mount to keep until then. An empty path
    /// (and neither) when `f` has no layers.
    async fn copy_from(
        &mut self,
        f: &str,
        stage: usize,
        line: usize,
    ) -> Result<(PathBuf, Option<String>, Option<strata_mount::TempMount>)> {
        let diff_ids = if let Some(j) = stage_index(self.df, f, stage) {
            self.stages[j]
                .as_ref()
                .map(|s| s.top.diff_ids.clone())
                .unwrap_or_default()
        } else {
            let s = self.base_image(f, line).await?;
            s.top.diff_ids
        };
        let key = format!("strata-build-{}-{}-from", self.id, self.number);
        let parent = chain_ids(&diff_ids)
            .last()
            .map(ToString::to_string)
            .unwrap_or_default();
        if parent.is_empty() {
            return Ok((PathBuf::new(), None, None));
        }
        let view = Some(key.clone());
        self.p.lease_add_snapshot(&key).await?;
        let mounts = self
            .b
            .snapshots
            .view(&self.p.snapshotter, &self.ns, &key, &parent, HashMap::new())
            .await?;
        let tmp = self.b.root.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
        let m = tokio::task::spawn_blocking(move || strata_mount::TempMount::new(&mounts, &tmp))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(|e| Error::internal(format!("mounting {f}: {e}")))?;
        let path = m.path().to_path_buf();
        Ok((path, view, Some(m)))
    }
}

/// Flags the parser knows that this builder cannot honour: refused, never ignored.
fn unsupported_flags(ins: &Instruction, kind: &Ins) -> std::result::Result<(), String> {
    let allowed: &[&str] = match kind {
        Ins::Run { .. } => &["network"],
        Ins::Copy(_) => &["from", "chown", "chmod", "link"],
        Ins::Add(_) => &["chown", "chmod", "link"],
        _ => return Ok(()),
    };
    for f in ins.flags() {
        let name = f
            .trim_start_matches('-')
            .split('=')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !allowed.contains(&name.as_str()) {
            let word = ins.original.split_whitespace().next().unwrap_or_default();
            return Err(format!(
                "{} --{name}: not supported by strata build (supported: {})",
                word.to_ascii_uppercase(),
                allowed
                    .iter()
                    .map(|a| format!("--{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
}

fn first_line(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        let mut t: String = one.chars().take(197).collect();
        t.push_str("...");
        t
    } else {
        one
    }
}

/// A path made absolute and clean: `.` and `..` resolved lexically.
fn clean(p: &Path) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}

/// `user[:group]` by name (from the root's /etc/passwd and /etc/group) or number.
fn resolve_owner(root: &Tree, spec: &str) -> std::result::Result<Owner, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |f: &str| -> std::result::Result<String, String> {
        root.read(Path::new(f), ACCOUNTS_LIMIT)
            .map(|b| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned())
            .map_err(|e| format!("reading the image's {f}: {e}"))
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let passwd = read("/etc/passwd")?;
            lookup_id(&passwd, user).ok_or_else(|| format!("no user {user:?} in /etc/passwd"))?
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read("/etc/group")?;
                lookup_id(&groups, g).ok_or_else(|| format!("no group {g:?} in /etc/group"))?
            }
        },
        // A user alone: its group is the same number (as Docker and BuildKit do).
        None => {
            if user.parse::<u32>().is_ok() {
                uid
            } else {
                let passwd = read("/etc/passwd")?;
                passwd
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.first() == Some(&user))
                    .and_then(|f| f.get(3).and_then(|g| g.parse().ok()))
                    .unwrap_or(uid)
            }
        }
    };
    Ok(Owner { uid, gid })
}

fn lookup_id(file: &str, name: &str) -> Option<u32> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2).and_then(|id| id.parse().ok()))
}

/// Copies `sources` of `from` to `dest` in `root`, as COPY (or ADD, which unpacks local tar
/// archives) does.
fn copy_into(
    root: &Tree,
    from: &Tree,
    sources: &[String],
    dest: &str,
    dir_dest: bool,
    add: bool,
    opts: CopyOptions,
) -> std::result::Result<(), String> {
    let mut found = Vec::new();
    for s in sources {
        let got = files::resolve_sources(from, s).map_err(|e| e.to_string())?;
        if got.is_empty() {
            return Err(format!(
                "{s}: no source files were specified (nothing matches)"
            ));
        }
        found.extend(got);
    }
    let many = found.len() > 1 || sources.iter().any(|s| files::has_wildcard(s));
    let dest_path = Path::new(dest);
    let copier = Copier { from, opts };
    let e = |x: std::io::Error| x.to_string();
    for src in &found {
        // A source that is a link counts as what it points to.
        let st = from
            .stat(src)
            .map_err(e)?
            .ok_or_else(|| format!("{}: not found", src.display()))?;
        if files::is_dir(&st) {
            let d = root.mkdir_all(dest_path, opts.owner).map_err(e)?;
            copier.copy_contents(src, d.as_fd()).map_err(e)?;
            continue;
        }
        if add && let Some(c) = archive_kind(from, src)? {
            let d = root.mkdir_all(dest_path, opts.owner).map_err(e)?;
            let f = from.open_file(src).map_err(e)?;
            let target = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&d)
            ));
            strata_archive::apply(
                f,
                c,
                &target,
                &strata_archive::ApplyOptions::new(strata_archive::WhiteoutMode::Delete),
                None,
            )
            .map_err(|x| format!("unpacking {}: {x}", src.display()))?;
            continue;
        }
        let name = src
            .file_name()
            .map(std::ffi::OsStr::to_owned)
            .unwrap_or_default();
        let into_dir = dir_dest
            || many
            || root
                .stat(dest_path)
                .map_err(e)?
                .is_some_and(|s| files::is_dir(&s));
        if into_dir {
            let d = root.mkdir_all(dest_path, opts.owner).map_err(e)?;
            copier.copy_entry(src, d.as_fd(), &name).map_err(e)?;
        } else {
            let parent = dest_path.parent().unwrap_or(Path::new("/"));
            let file = dest_path
                .file_name()
                .ok_or_else(|| format!("{dest}: not a file name"))?;
            let d = root.mkdir_all(parent, opts.owner).map_err(e)?;
            copier.copy_entry(src, d.as_fd(), file).map_err(e)?;
        }
    }
    Ok(())
}

/// The compression of a local tar archive ADD unpacks; `None` for any other file.
fn archive_kind(
    from: &Tree,
    src: &Path,
) -> std::result::Result<Option<strata_archive::Compression>, String> {
    use std::io::Read as _;
    let mut f = from.open_file(src).map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(e.to_string()),
        }
    }
    head.truncate(n);
    let c = strata_archive::detect_compression(&head);
    match c {
        strata_archive::Compression::None => {
            // An uncompressed tar says "ustar" at offset 257.
            if head.len() >= 262 && &head[257..262] == b"ustar" {
                Ok(Some(c))
            } else {
                Ok(None)
            }
        }
        _ => Ok(Some(c)),
    }
}

/// The object at `key` of `map`, made one (empty) when absent or of another type.
fn object_in<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let v = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
}

/// Applies a config-only instruction.
fn config_change(
    state: &mut State,
    kind: &Ins,
    ins: &Instruction,
) -> std::result::Result<(), String> {
    let shell = state.shell();
    let as_list = |c: &Command| -> Value {
        match c {
            Command::Exec(v) => json!(v),
            Command::Shell(s) => {
                let mut v = shell.clone();
                v.push(s.clone());
                json!(v)
            }
        }
    };
    let created_by = first_line(&ins.original);
    match kind {
        Ins::Env(pairs) => set_env(state, pairs),
        Ins::Cmd(c) => {
            let v = as_list(c);
            state.run_config().insert("Cmd".into(), v);
            state.cmd_set = true;
        }
        Ins::Entrypoint(c) => {
            let v = as_list(c);
            let rc = state.run_config();
            rc.insert("Entrypoint".into(), v);
            if !state.cmd_set {
                state.run_config().insert("Cmd".into(), Value::Null);
            }
        }
        Ins::Shell(v) => {
            if v.is_empty() {
                return Err("SHELL: needs at least one word".into());
            }
            state.run_config().insert("Shell".into(), json!(v));
        }
        Ins::User(u) => {
            state.run_config().insert("User".into(), json!(u));
        }
        Ins::Label(pairs) => {
            if let Some(m) = object_in(state.run_config(), "Labels") {
                for (k, v) in pairs {
                    m.insert(k.clone(), json!(v));
                }
            }
        }
        Ins::Expose(ports) => expose(state, ports)?,
        Ins::Volume(vols) => {
            if let Some(m) = object_in(state.run_config(), "Volumes") {
                for v in vols {
                    if v.is_empty() {
                        return Err("VOLUME: an empty path".into());
                    }
                    m.insert(v.clone(), json!({}));
                }
            }
        }
        Ins::StopSignal(s) => {
            state.run_config().insert("StopSignal".into(), json!(s));
        }
        Ins::Healthcheck(h) => {
            state
                .run_config()
                .insert("Healthcheck".into(), healthcheck(h));
        }
        Ins::Onbuild(t) => {
            let rc = state.run_config();
            let e = rc.entry("OnBuild").or_insert_with(|| json!([]));
            if !e.is_array() {
                *e = json!([]);
            }
            if let Value::Array(a) = e {
                a.push(json!(t));
            }
        }
        Ins::Maintainer(m) => {
            state.config.insert("author".into(), json!(m));
        }
        Ins::Run { .. } | Ins::Copy(_) | Ins::Add(_) | Ins::Workdir(_) | Ins::Arg(_) => {
            return Err("not a config instruction".into());
        }
    }
    state.note(created_by);
    Ok(())
}

/// ENV: sets each pair in the config's environment, replacing a variable already there.
fn set_env(state: &mut State, pairs: &[(String, String)]) {
    let mut env = state.env();
    for (k, v) in pairs {
        let kv = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|x| x.0) == Some(k))
        {
            Some(e) => *e = kv,
            None => env.push(kv),
        }
    }
    state.run_config().insert("Env".into(), json!(env));
}

/// EXPOSE: adds each `port[/proto]` (or range) to the config's exposed ports.
fn expose(state: &mut State, ports: &[String]) -> std::result::Result<(), String> {
    if let Some(m) = object_in(state.run_config(), "ExposedPorts") {
        for p in ports {
            let p = p.to_ascii_lowercase();
            let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
            let ok = port.split_once('-').map_or_else(
                || port.parse::<u16>().is_ok(),
                |(a, b)| a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok(),
            );
            if !ok || !matches!(proto, "tcp" | "udp" | "sctp") {
                return Err(format!("EXPOSE {p}: not a port[/tcp|udp|sctp]"));
            }
            m.insert(format!("{port}/{proto}"), json!({}));
        }
    }
    Ok(())
}

/// HEALTHCHECK: the config's `Healthcheck` object, durations in nanoseconds.
fn healthcheck(h: &Healthcheck) -> Value {
    let mut m = Map::new();
    if let Some(t) = &h.test {
        m.insert("Test".into(), json!(t));
    }
    let ns = |d: &std::time::Duration| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    if let Some(d) = &h.interval {
        m.insert("Interval".into(), ns(d));
    }
    if let Some(d) = &h.timeout {
        m.insert("Timeout".into(), ns(d));
    }
    if let Some(d) = &h.start_period {
        m.insert("StartPeriod".into(), ns(d));
    }
    if let Some(d) = &h.start_interval {
        m.insert("StartInterval".into(), ns(d));
    }
    if let Some(r) = h.retries {
        m.insert("Retries".into(), json!(r));
    }
    Value::Object(m)
}

/// Removes every build cache record; answers how many.
pub async fn prune(b: &Backends, ns: &str) -> Result<usize> {
    let images = crate::catalog::list_images(b, ns, Vec::new()).await?;
    let mut n = 0;
    for img in images {
        if !img.name.starts_with(CACHE_PREFIX) {
            continue;
        }
        let opts = DeleteOptions {
            sync: true,
            target: None,
        };
        match b.images.delete(ns, &img.name, opts).await {
            Ok(()) => n += 1,
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Unpacks the build context (a tar stream the client sent, in `tar`) into `dir`: paths stay
/// inside it, owners are not kept (COPY sets them).
pub fn unpack_context(tar: &Path, dir: &Path) -> Result<()> {
    let f =
        std::fs::File::open(tar).map_err(|e| Error::internal(format!("{}: {e}", tar.display())))?;
    let tree = Tree::open(dir, "the build context").map_err(|e| Error::internal(e.to_string()))?;
    files::unpack_context(std::io::BufReader::new(f), &tree).map_err(|e| {
        Error::invalid_argument(format!("the build context: not a valid tar stream: {e}"))
    })
}

/// Largest build context accepted (the tar stream as sent).
pub const MAX_CONTEXT: u64 = 16 << 30;

/// Builds from a context sent as a tar stream: `context` carries its bytes in order and ends
/// when the context is complete (an error in it, such as the client's stream breaking, ends
/// the build). The context is written to a scratch directory under the gateway's root,
/// unpacked, and built from; the scratch directory goes in the background afterwards.
pub async fn build_streamed(
    b: &Arc<Backends>,
    ns: &str,
    opts: &Options,
    context: mpsc::Receiver<Result<bytes::Bytes>>,
    events: mpsc::Sender<Event>,
    cleanup: &Cleanup,
) -> Result<Built> {
    let dir_parent = b.root.join("builds");
    tokio::fs::create_dir_all(&dir_parent)
        .await
        .map_err(|e| Error::internal(format!("{}: {e}", dir_parent.display())))?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&dir_parent)
        .map_err(|e| Error::internal(format!("{}: {e}", dir_parent.display())))?;
    let tar = work.path().join("context.tar");
    receive_context(context, &tar).await?;
    let dir = work.path().join("context");
    {
        let (tar, dir) = (tar.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&dir)
                .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
            unpack_context(&tar, &dir)
        })
        .await
        .map_err(|e| Error::internal(format!("unpacking the build context: {e}")))??;
    }
    let _ = tokio::fs::remove_file(&tar).await;
    let built = build(b, ns, opts, &dir, events, cleanup).await;
    // The unpacked context goes in the background: the answer does not wait for it.
    tokio::task::spawn_blocking(move || drop(work));
    built
}

/// Writes the context's bytes to the file `tar`, at most [`MAX_CONTEXT`] of them.
async fn receive_context(
    mut context: mpsc::Receiver<Result<bytes::Bytes>>,
    tar: &Path,
) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut f = tokio::fs::File::create(tar)
        .await
        .map_err(|e| Error::internal(format!("{}: {e}", tar.display())))?;
    let mut size = 0u64;
    while let Some(data) = context.recv().await {
        let data = data?;
        size += data.len() as u64;
        if size > MAX_CONTEXT {
            return Err(Error::invalid_argument(format!(
                "build: the context is larger than {MAX_CONTEXT} bytes"
            )));
        }
        f.write_all(&data)
            .await
            .map_err(|e| Error::internal(format!("{}: {e}", tar.display())))?;
    }
    f.flush()
        .await
        .map_err(|e| Error::internal(format!("{}: {e}", tar.display())))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_lexically() {
        assert_eq!(clean(Path::new("/a/b/../c/./d")), "/a/c/d");
        assert_eq!(clean(Path::new("/../..")), "/");
    }

    #[test]
    fn owners_resolve_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let t = Tree::open(d.path(), "the image").unwrap();
        assert_eq!(
            resolve_owner(&t, "app").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            resolve_owner(&t, "app:staff").unwrap(),
            Owner { uid: 1000, gid: 50 }
        );
        assert_eq!(resolve_owner(&t, "7:8").unwrap(), Owner { uid: 7, gid: 8 });
        assert_eq!(resolve_owner(&t, "7").unwrap(), Owner { uid: 7, gid: 7 });
        assert!(resolve_owner(&t, "nobody").unwrap_err().contains("no user"));
    }
}
