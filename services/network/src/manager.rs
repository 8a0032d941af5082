//! The network service's core: networks, attachments, and their reconciliation with what the
//! host really has. Knows nothing of gRPC.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as SyncMutex};
use strata_cni::{Cni, NetworkConfigList, RuntimeConf, netns};
use strata_core::{Error, Kind, Result};
use tokio::sync::Mutex;

use crate::files::{self, HostEntry, Resolv};
use crate::ports::{self, Held, Port};
use crate::records::{self, AttachmentRecord, Link, NetworkRecord, key};
use crate::subnet::{self, Cidr};

/// The default network's name (Docker's).
pub const DEFAULT_NETWORK: &str = "bridge";
/// Names that are not networks one can create: `--net host`, `--net none`.
const RESERVED: &[&str] = &["host", "none", "default", "container"];

/// Where things live and what the default network looks like.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Records, per-container files, the CNI cache and host-local's address files.
    pub root: PathBuf,
    /// Where persistent network namespaces are bound (`/run/strata/netns`).
    pub netns_dir: PathBuf,
    /// Where CNI plugins are looked for.
    pub plugin_dirs: Vec<PathBuf>,
    /// The default network's bridge (`strata0`).
    pub default_bridge: String,
    /// The default network's subnet; chosen free when not given.
    pub default_subnet: Option<String>,
    /// Where an operator installs networks of their own as CNI configuration lists
    /// (`*.conflist`, read at start-up; `/etc/strata/cni/net.d`). `None` for none.
    pub conf_dir: Option<PathBuf>,
}

/// What a container asks of its attachment.
#[derive(Debug, Clone, Default)]
pub struct AttachSpec {
    /// The network; empty for the default.
    pub network: String,
    /// Ports to publish.
    pub ports: Vec<Port>,
    /// Its host name.
    pub hostname: String,
    /// Extra names on a user network.
    pub aliases: Vec<String>,
    /// `--dns`.
    pub dns: Vec<String>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`.
    pub extra_hosts: Vec<String>,
}

#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    attachments: BTreeMap<String, AttachmentRecord>,
    /// Attachments being made or removed: key → network.
    busy: HashMap<String, String>,
}

/// The service's core.
pub struct Manager {
    s: Settings,
    cni: Cni,
    state: Mutex<State>,
    held: SyncMutex<HashMap<String, Vec<Held>>>,
    /// One lock per container: its attach and detach run one at a time, a second waiting.
    keys: SyncMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::internal(format!("reading /dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn cni_error(what: &str, e: strata_cni::Error) -> Error {
    let kind = match &e {
        strata_cni::Error::InvalidArgument { .. } | strata_cni::Error::InvalidConfig { .. } => {
            Kind::InvalidArgument
        }
        strata_cni::Error::PluginNotFound { .. }
        | strata_cni::Error::IncompatibleVersion { .. } => Kind::FailedPrecondition,
        strata_cni::Error::NotAttached { .. } => Kind::NotFound,
        _ => Kind::Internal,
    };
    Error::new(kind, format!("{what}: {e}"))
}

/// The CNI list of a bridge network strata makes: bridge (gateway, hairpin) with host-local
/// addresses, then portmap for published ports (with hairpin and 127.0.0.1; left out of an
/// attachment that publishes none). Outbound NAT and the FORWARD rules are the network's own,
/// set once per network (see [`crate::firewall`]) rather than per container by the plugins
/// (ipMasq, the firewall plugin): each iptables call a plugin makes costs every container start
/// and stop milliseconds, and per-container rules are what crashes leak.
pub fn bridge_conflist(name: &str, bridge: &str, subnet: Cidr, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        // Debian's portmap 1.1.1 fails CHECK of IPv4-only mappings.
        "disableCheck": true,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet.to_string(), "gateway": subnet.gateway().to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ],
    })
}

fn check_plain(what: &str, s: &str, max: usize) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "{what} {s:?}: use letters, digits, '.', '_' and '-' (at most {max}), starting with a \
             letter or digit"
        )))
    }
}

/// What the plugins are told of an attachment: its ID, namespace, `eth0`, and the ports to
/// publish.
fn runtime_conf(cni_id: &str, netns_path: &Path, ports: &[Port]) -> RuntimeConf {
    RuntimeConf {
        container_id: cni_id.to_owned(),
        netns: netns_path.to_owned(),
        ifname: "eth0".into(),
        args: vec![("IgnoreUnknown".into(), "1".into())],
        capability_args: [(
            "portMappings".to_owned(),
            Value::Array(
                ports
                    .iter()
                    .map(|p| {
                        let mut m = json!({
                            "hostPort": p.host_port,
                            "containerPort": p.container_port,
                            "protocol": p.protocol,
                        });
                        if !p.host_ip.is_unspecified() {
                            m["hostIP"] = json!(p.host_ip.to_string());
                        }
                        m
                    })
                    .collect(),
            ),
        )]
        .into_iter()
        .collect(),
    }
}

/// The list an attachment runs: the network's, without portmap when nothing is published on
/// a network strata made (it would run for nothing, at start and at stop).
fn list_for(net: &NetworkRecord, ports: &[Port]) -> Result<NetworkConfigList> {
    let mut config = net.config.clone();
    if ports.is_empty()
        && net.driver == "bridge"
        && let Some(plugins) = config["plugins"].as_array_mut()
    {
        plugins.retain(|p| p["type"] != "portmap");
    }
    NetworkConfigList::from_value(config)
        .map_err(|e| cni_error(&format!("network {:?}", net.name), e))
}

impl Manager {
    /// Opens the service's state, makes the default network if it is missing, re-reserves the
    /// ports of every attachment, and tears down what no record names (results cached by the
    /// plugins' runs, namespaces, address files): whatever a crash left.
    pub async fn open(s: Settings) -> Result<Manager> {
        {
            // Root's only: the records and files of every container's network.
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            let io =
                |e: std::io::Error| Error::internal(format!("creating {}: {e}", s.root.display()));
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&s.root)
                .map_err(io)?;
            std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
        }
        let cni = Cni::new(s.plugin_dirs.clone(), s.root.join("cni-cache"));
        let m = Manager {
            cni,
            state: Mutex::new(State::default()),
            held: SyncMutex::new(HashMap::new()),
            keys: SyncMutex::new(HashMap::new()),
            s,
        };
        {
            let mut st = m.state.lock().await;
            for n in records::load_all::<NetworkRecord>(&m.networks_dir())? {
                st.networks.insert(n.name.clone(), n);
            }
            for n in m.installed_networks() {
                if st.networks.contains_key(&n.name) {
                    tracing::warn!(
                        network = %n.name,
                        "an installed configuration list has the name of a network strata made: skipped"
                    );
                } else {
                    st.networks.insert(n.name.clone(), n);
                }
            }
            for a in records::load_all::<AttachmentRecord>(&m.attachments_dir())? {
                st.attachments.insert(a.key(), a);
            }
            if !st.networks.contains_key(DEFAULT_NETWORK) {
                let subnet = match &m.s.default_subnet {
                    Some(s) => Cidr::parse(s)?,
                    None => {
                        let taken = Self::subnets(&st);
                        subnet::choose(&taken, 16)?
                    }
                };
                let rec = m.network_record(
                    DEFAULT_NETWORK,
                    &m.s.default_bridge,
                    subnet,
                    false,
                    true,
                    BTreeMap::new(),
                );
                records::write(&m.network_file(DEFAULT_NETWORK), &rec)?;
                st.networks.insert(rec.name.clone(), rec);
            }
            for a in st.attachments.values() {
                let peers = Self::peer_entries(&st, a);
                // Files a crash left empty or missing (they are not synced) are made again;
                // others are left as the container may have edited them.
                let whole = ["hostname", "hosts", "resolv.conf"]
                    .iter()
                    .all(|f| std::fs::metadata(a.dir.join(f)).is_ok_and(|md| md.len() > 0));
                if !whole && let Err(e) = m.write_files(a, &peers) {
                    tracing::warn!(container = %a.key(), "writing the container's files: {e}");
                }
                match Self::reserve_all(&a.ports) {
                    Ok((held, _)) => {
                        m.lock_held().insert(a.key(), held);
                    }
                    Err(e) => tracing::warn!(
                        container = %a.key(),
                        "a published port of the container could not be reserved again: {e}"
                    ),
                }
            }
        }
        for (n, _) in m.networks().await {
            if n.driver == "bridge" {
                crate::firewall::ensure(&n.bridge, &n.subnet).await?;
            }
        }
        m.reconcile().await;
        m.restore().await;
        Ok(m)
    }

    /// The networks an operator installed: every `*.conflist` of the configuration directory
    /// that loads (one that does not is logged and skipped), as networks of driver `cni`.
    fn installed_networks(&self) -> Vec<NetworkRecord> {
        let Some(dir) = &self.s.conf_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            match NetworkConfigList::load(&path) {
                Ok(list) => {
                    let first = list.plugins.first().cloned().unwrap_or_default();
                    let range = &first.get("ipam").cloned().unwrap_or_default()["ranges"][0][0];
                    out.push(NetworkRecord {
                        name: list.name.clone(),
                        driver: "cni".into(),
                        subnet: range["subnet"].as_str().unwrap_or_default().to_owned(),
                        gateway: range["gateway"].as_str().unwrap_or_default().to_owned(),
                        bridge: first
                            .get("bridge")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        names: false,
                        default: false,
                        labels: BTreeMap::from([(
                            "strata.network.file".to_owned(),
                            path.display().to_string(),
                        )]),
                        created_at: 0,
                        config: list.raw,
                    });
                }
                Err(e) => tracing::warn!("skipping {}: {e}", path.display()),
            }
        }
        out
    }

    fn networks_dir(&self) -> PathBuf {
        self.s.root.join("networks")
    }
    fn network_file(&self, name: &str) -> PathBuf {
        self.networks_dir().join(format!("{name}.json"))
    }
    fn attachments_dir(&self) -> PathBuf {
        self.s.root.join("attachments")
    }
    fn attachment_file(&self, ns: &str, id: &str) -> PathBuf {
        self.attachments_dir().join(ns).join(format!("{id}.json"))
    }
    fn ipam_dir(&self) -> PathBuf {
        self.s.root.join("ipam")
    }

    fn key_lock(&self, k: &str) -> Arc<Mutex<()>> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(keys.entry(k.to_owned()).or_default())
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Held>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subnets(st: &State) -> Vec<Cidr> {
        st.networks
            .values()
            .filter_map(|n| Cidr::parse(&n.subnet).ok())
            .collect()
    }

    fn network_record(
        &self,
        name: &str,
        bridge: &str,
        subnet: Cidr,
        names: bool,
        default: bool,
        labels: BTreeMap<String, String>,
    ) -> NetworkRecord {
        NetworkRecord {
            name: name.to_owned(),
            driver: "bridge".into(),
            subnet: subnet.to_string(),
            gateway: subnet.gateway().to_string(),
            bridge: bridge.to_owned(),
            names,
            default,
            labels,
            created_at: now(),
            config: bridge_conflist(name, bridge, subnet, &self.ipam_dir()),
        }
    }

    /// Creates a user network: its own bridge and subnet; its containers resolve each other by
    /// name.
    pub async fn create_network(
        &self,
        name: &str,
        subnet: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkRecord> {
        check_plain("network name", name, 64)?;
        if RESERVED.contains(&name) {
            return Err(Error::invalid_argument(format!(
                "network name {name:?} is reserved"
            )));
        }
        let mut st = self.state.lock().await;
        if st.networks.contains_key(name) {
            return Err(Error::already_exists(format!(
                "network {name:?} already exists"
            )));
        }
        let taken = Self::subnets(&st);
        let cidr = if subnet.is_empty() {
            subnet::choose(&taken, 24)?
        } else {
            let c = Cidr::parse(subnet)?;
            if let Some(other) = st
                .networks
                .values()
                .find(|n| Cidr::parse(&n.subnet).is_ok_and(|o| o.overlaps(c)))
            {
                return Err(Error::invalid_argument(format!(
                    "subnet {c} overlaps network {:?} ({})",
                    other.name, other.subnet
                )));
            }
            if let Some(r) = subnet::host_routes().into_iter().find(|r| r.overlaps(c)) {
                return Err(Error::invalid_argument(format!(
                    "subnet {c} overlaps the host's route to {r}"
                )));
            }
            c
        };
        let bridge = format!("stbr-{}", &random_hex(4)?);
        let rec = self.network_record(name, &bridge, cidr, true, false, labels);
        crate::firewall::ensure(&bridge, &cidr.to_string()).await?;
        records::write(&self.network_file(name), &rec)?;
        st.networks.insert(name.to_owned(), rec.clone());
        Ok(rec)
    }

    /// A network by name.
    pub async fn network(&self, name: &str) -> Result<NetworkRecord> {
        let name = if name.is_empty() {
            DEFAULT_NETWORK
        } else {
            name
        };
        self.state
            .lock()
            .await
            .networks
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("network {name:?}: not found")))
    }

    /// Every network, with the keys of the containers attached to each.
    pub async fn networks(&self) -> Vec<(NetworkRecord, Vec<String>)> {
        let st = self.state.lock().await;
        st.networks
            .values()
            .map(|n| {
                let on: Vec<String> = st
                    .attachments
                    .values()
                    .filter(|a| a.is_on(&n.name))
                    .map(AttachmentRecord::key)
                    .collect();
                (n.clone(), on)
            })
            .collect()
    }

    /// The keys of the containers attached to network `name`.
    pub async fn attached_to(&self, name: &str) -> Vec<String> {
        let st = self.state.lock().await;
        st.attachments
            .values()
            .filter(|a| a.is_on(name))
            .map(AttachmentRecord::key)
            .collect()
    }

    /// Removes a user network with no container attached, and its bridge.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        let mut st = self.state.lock().await;
        let rec = st
            .networks
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("network {name:?}: not found")))?;
        if rec.default {
            return Err(Error::failed_precondition(format!(
                "network {name:?} is the default network and cannot be removed"
            )));
        }
        if rec.driver == "cni" {
            return Err(Error::failed_precondition(format!(
                "network {name:?} was installed as a configuration list ({}): remove that file",
                rec.labels
                    .get("strata.network.file")
                    .map_or("", String::as_str)
            )));
        }
        let users: Vec<String> = st
            .attachments
            .values()
            .filter(|a| a.is_on(name))
            .map(AttachmentRecord::key)
            .chain(
                st.busy
                    .iter()
                    .filter(|(_, n)| *n == name)
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        if !users.is_empty() {
            return Err(Error::failed_precondition(format!(
                "network {name:?} is in use by {}",
                users.join(", ")
            )));
        }
        records::remove(&self.network_file(name))?;
        st.networks.remove(name);
        drop(st);
        delete_link(&rec.bridge).await;
        crate::firewall::remove(&rec.bridge, &rec.subnet).await;
        let _ = std::fs::remove_dir_all(self.ipam_dir().join(name));
        Ok(())
    }

    /// Attaches container `id` of namespace `ns`; see the API's Attach.
    pub async fn attach(&self, ns: &str, id: &str, spec: &AttachSpec) -> Result<AttachmentRecord> {
        strata_core::identifiers::validate_namespace(ns)?;
        strata_core::identifiers::validate("container ID", id)?;
        let hostname = if spec.hostname.is_empty() {
            id.chars().take(12).collect()
        } else {
            spec.hostname.clone()
        };
        files::check_name("host name", &hostname)?;
        for a in &spec.aliases {
            files::check_name("network alias", a)?;
        }
        for d in &spec.dns {
            files::check_ip("DNS server", d)?;
        }
        for d in &spec.dns_search {
            files::check_name("DNS search domain", d)?;
        }
        for o in &spec.dns_options {
            if o.is_empty() || o.chars().any(char::is_whitespace) {
                return Err(Error::invalid_argument(format!(
                    "DNS option {o:?}: one word, such as ndots:2"
                )));
            }
        }
        let mut extra = Vec::new();
        for h in &spec.extra_hosts {
            let (name, ip) = h.split_once(':').ok_or_else(|| {
                Error::invalid_argument(format!("extra host {h:?}: expected NAME:IP"))
            })?;
            files::check_name("extra host name", name)?;
            files::check_ip("extra host address", ip)?;
            extra.push((name.to_owned(), ip.to_owned()));
        }
        let k = key(ns, id);
        let key_lock = self.key_lock(&k);
        let _one_at_a_time = key_lock.lock().await;
        let net = {
            let mut st = self.state.lock().await;
            let name = if spec.network.is_empty() {
                DEFAULT_NETWORK
            } else {
                spec.network.as_str()
            };
            let net = st
                .networks
                .get(name)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("network {name:?}: not found")))?;
            if let Some(a) = st.attachments.get(&k) {
                return Err(Error::already_exists(format!(
                    "container {id:?} is already attached to network {:?}",
                    a.network
                )));
            }
            st.busy.insert(k.clone(), net.name.clone());
            net
        };
        let made = self.attach_to(ns, id, &net, spec, hostname, extra).await;
        let mut st = self.state.lock().await;
        st.busy.remove(&k);
        let rec = made?;
        st.attachments.insert(k, rec.clone());
        if net.names {
            self.rewrite_hosts(&st, &net.name);
        }
        Ok(rec)
    }

    fn reserve_all(ports: &[Port]) -> Result<(Vec<Held>, Vec<Port>)> {
        let mut held = Vec::new();
        let mut bound = Vec::new();
        for p in ports {
            let (h, b) = ports::reserve(p)?;
            held.push(h);
            bound.push(b);
        }
        Ok((held, bound))
    }

    async fn attach_to(
        &self,
        ns: &str,
        id: &str,
        net: &NetworkRecord,
        spec: &AttachSpec,
        hostname: String,
        extra_hosts: Vec<(String, String)>,
    ) -> Result<AttachmentRecord> {
        let (held, ports) = Self::reserve_all(&spec.ports)?;
        let cni_id = random_hex(16)?;
        let netns_path = self.s.netns_dir.join(&cni_id);
        let dir = self.s.root.join("containers").join(ns).join(id);
        let rt = runtime_conf(&cni_id, &netns_path, &ports);
        let list = list_for(net, &ports)?;
        let what = format!("attaching container {id:?} to network {:?}", net.name);
        let undo = |stage: u8| {
            let rt = rt.clone();
            let netns_path = netns_path.clone();
            let dir = dir.clone();
            let net_name = net.name.clone();
            async move {
                if stage >= 2 {
                    let _ = self.cni.del(&net_name, None, &rt).await;
                }
                if stage >= 1 {
                    let _ = netns::remove(&netns_path);
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        };
        netns::create(&netns_path).map_err(|e| cni_error(&what, e))?;
        let result = match self.cni.add(&list, &rt).await {
            Ok(r) => r,
            Err(e) => {
                undo(1).await;
                return Err(cni_error(&what, e));
            }
        };
        let ip0 = &result["ips"][0];
        let address = ip0["address"].as_str().unwrap_or_default().to_owned();
        let gateway = ip0["gateway"].as_str().unwrap_or(&net.gateway).to_owned();
        let mac = ip0["interface"]
            .as_u64()
            .and_then(|i| result["interfaces"][usize::try_from(i).unwrap_or(0)]["mac"].as_str())
            .unwrap_or_default()
            .to_owned();
        if address.is_empty() {
            undo(2).await;
            return Err(Error::internal(format!(
                "{what}: the plugins gave no address ({result})"
            )));
        }
        let mut resolv = Resolv::host().for_container();
        if !spec.dns.is_empty() {
            resolv.nameservers.clone_from(&spec.dns);
        }
        if !spec.dns_search.is_empty() {
            resolv.search.clone_from(&spec.dns_search);
        }
        if !spec.dns_options.is_empty() {
            resolv.options.clone_from(&spec.dns_options);
        }
        let rec = AttachmentRecord {
            namespace: ns.to_owned(),
            container_id: id.to_owned(),
            network: net.name.clone(),
            cni_id,
            netns: netns_path.clone(),
            address,
            gateway,
            mac,
            ports,
            hostname,
            aliases: spec.aliases.clone(),
            extra_hosts,
            dir: dir.clone(),
            attached_at: now(),
            resolv: resolv.render(),
            links: Vec::new(),
        };
        let written = self
            .write_files(&rec, &[])
            .and_then(|()| records::write(&self.attachment_file(ns, id), &rec));
        if let Err(e) = written {
            undo(2).await;
            return Err(e);
        }
        self.lock_held().insert(rec.key(), held);
        Ok(rec)
    }

    /// Writes the container's files from its record (they are not synced: after a crash they
    /// are written again from the record, which is).
    fn write_files(&self, rec: &AttachmentRecord, peers: &[HostEntry]) -> Result<()> {
        std::fs::create_dir_all(&rec.dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", rec.dir.display())))?;
        files::write(&rec.dir.join("hostname"), &format!("{}\n", rec.hostname))?;
        files::write(&rec.dir.join("hosts"), &self.hosts_of(rec, peers))?;
        files::write(&rec.dir.join("resolv.conf"), &rec.resolv)
    }

    fn hosts_of(&self, rec: &AttachmentRecord, peers: &[HostEntry]) -> String {
        let mut names = vec![rec.hostname.clone()];
        if rec.container_id != rec.hostname {
            names.push(rec.container_id.clone());
        }
        names.extend(rec.aliases.iter().cloned());
        let own = HostEntry {
            ip: rec.ip().to_owned(),
            names,
        };
        let extra: Vec<HostEntry> = rec
            .extra_hosts
            .iter()
            .map(|(n, ip)| HostEntry {
                ip: ip.clone(),
                names: vec![n.clone()],
            })
            .collect();
        files::hosts(&own, &extra, peers)
    }

    /// The other containers `rec` resolves by name: those on each user network it is on, at
    /// their address on that network (`name`, `name.network`, aliases there).
    fn peer_entries(st: &State, rec: &AttachmentRecord) -> Vec<HostEntry> {
        let mut out = Vec::new();
        for (network, _, _) in rec.memberships() {
            if !st.networks.get(network).is_some_and(|n| n.names) {
                continue;
            }
            for p in st.attachments.values().filter(|p| p.key() != rec.key()) {
                for (n, ip, aliases) in p.memberships() {
                    if n != network {
                        continue;
                    }
                    let mut names =
                        vec![p.container_id.clone(), format!("{}.{}", p.container_id, n)];
                    if p.hostname != p.container_id {
                        names.push(p.hostname.clone());
                    }
                    names.extend(aliases.iter().cloned());
                    out.push(HostEntry {
                        ip: ip.to_owned(),
                        names,
                    });
                }
            }
        }
        out
    }

    /// Rewrites the hosts file of every container on user network `network` (in place: they
    /// are bind-mounted), so each resolves the others by name and alias.
    fn rewrite_hosts(&self, st: &State, network: &str) {
        for a in st.attachments.values().filter(|a| a.is_on(network)) {
            let text = self.hosts_of(a, &Self::peer_entries(st, a));
            if let Err(e) = files::write(&a.dir.join("hosts"), &text) {
                tracing::warn!(container = %a.key(), "rewriting hosts: {e}");
            }
        }
    }

    /// Connects attached container `id` to one more network (`strata network connect`): an
    /// interface of its own (`eth1`, …) in the container's namespace, names on that network.
    pub async fn connect(
        &self,
        ns: &str,
        id: &str,
        network: &str,
        aliases: &[String],
    ) -> Result<AttachmentRecord> {
        for a in aliases {
            files::check_name("network alias", a)?;
        }
        let k = key(ns, id);
        let key_lock = self.key_lock(&k);
        let _one_at_a_time = key_lock.lock().await;
        let (mut rec, net) = {
            let st = self.state.lock().await;
            let rec = st.attachments.get(&k).cloned().ok_or_else(|| {
                Error::failed_precondition(format!(
                    "container {id:?} has no network of strata's to join another to (it runs \
                     with --net host, none or container:…, or does not exist)"
                ))
            })?;
            let net = st
                .networks
                .get(network)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("network {network:?}: not found")))?;
            (rec, net)
        };
        if rec.is_on(network) {
            return Err(Error::already_exists(format!(
                "container {id:?} is already on network {network:?}"
            )));
        }
        let ifname = (1..)
            .map(|i| format!("eth{i}"))
            .find(|n| !rec.links.iter().any(|l| &l.ifname == n))
            .unwrap_or_else(|| "eth1".to_owned());
        let rt = RuntimeConf {
            ifname: ifname.clone(),
            ..runtime_conf(&rec.cni_id, &rec.netns, &[])
        };
        let what = format!("connecting container {id:?} to network {network:?}");
        // The container's default route stays on its first network: no routes from this one.
        let mut link_net = net.clone();
        if let Some(o) = link_net.config["plugins"][0]
            .get_mut("ipam")
            .and_then(Value::as_object_mut)
        {
            o.remove("routes");
        }
        let result = self
            .cni
            .add(&list_for(&link_net, &[])?, &rt)
            .await
            .map_err(|e| cni_error(&what, e))?;
        let ip0 = &result["ips"][0];
        let link = Link {
            network: network.to_owned(),
            ifname,
            address: ip0["address"].as_str().unwrap_or_default().to_owned(),
            gateway: ip0["gateway"].as_str().unwrap_or(&net.gateway).to_owned(),
            mac: ip0["interface"]
                .as_u64()
                .and_then(|i| result["interfaces"][usize::try_from(i).unwrap_or(0)]["mac"].as_str())
                .unwrap_or_default()
                .to_owned(),
            aliases: aliases.to_vec(),
        };
        rec.links.push(link);
        if let Err(e) = records::write(&self.attachment_file(ns, id), &rec) {
            let _ = self.cni.del(network, None, &rt).await;
            return Err(e);
        }
        let mut st = self.state.lock().await;
        st.attachments.insert(k, rec.clone());
        for (n, _, _) in rec.memberships() {
            if st.networks.get(n).is_some_and(|x| x.names) {
                self.rewrite_hosts(&st, n);
            }
        }
        Ok(rec)
    }

    /// Disconnects container `id` from a network it was connected to after its first
    /// (`strata network disconnect`).
    pub async fn disconnect(&self, ns: &str, id: &str, network: &str) -> Result<()> {
        let k = key(ns, id);
        let key_lock = self.key_lock(&k);
        let _one_at_a_time = key_lock.lock().await;
        let mut rec = self.attachment(ns, id).await?;
        if rec.network == network {
            return Err(Error::failed_precondition(format!(
                "network {network:?} is container {id:?}'s first network, which it keeps until \
                 it is removed"
            )));
        }
        let Some(pos) = rec.links.iter().position(|l| l.network == network) else {
            return Err(Error::not_found(format!(
                "container {id:?} is not on network {network:?}"
            )));
        };
        let link = rec.links.remove(pos);
        let rt = RuntimeConf {
            container_id: rec.cni_id.clone(),
            netns: rec.netns.clone(),
            ifname: link.ifname.clone(),
            ..RuntimeConf::default()
        };
        self.cni
            .del(network, None, &rt)
            .await
            .map_err(|e| cni_error(&format!("disconnecting container {id:?}"), e))?;
        records::write(&self.attachment_file(ns, id), &rec)?;
        let mut st = self.state.lock().await;
        st.attachments.insert(k, rec.clone());
        let names = st.networks.get(network).is_some_and(|x| x.names);
        if names {
            self.rewrite_hosts(&st, network);
        }
        // Its own hosts file loses the peers of the network it left.
        let text = self.hosts_of(&rec, &Self::peer_entries(&st, &rec));
        drop(st);
        files::write(&rec.dir.join("hosts"), &text)
    }

    /// The attachment of container `id`.
    pub async fn attachment(&self, ns: &str, id: &str) -> Result<AttachmentRecord> {
        self.state
            .lock()
            .await
            .attachments
            .get(&key(ns, id))
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("container {id:?} is not attached to a network"))
            })
    }

    /// Every attachment, of every namespace.
    pub async fn attachments(&self) -> Vec<AttachmentRecord> {
        self.state
            .lock()
            .await
            .attachments
            .values()
            .cloned()
            .collect()
    }

    /// Detaches container `id`; nothing attached is fine. When a plugin fails to tear down,
    /// the record stays (the error is returned; a later Detach or the start-up reconciliation
    /// tries again).
    pub async fn detach(&self, ns: &str, id: &str) -> Result<()> {
        let k = key(ns, id);
        let key_lock = self.key_lock(&k);
        let _one_at_a_time = key_lock.lock().await;
        let rec = {
            let mut st = self.state.lock().await;
            let Some(rec) = st.attachments.get(&k).cloned() else {
                return Ok(());
            };
            st.busy.insert(k.clone(), rec.network.clone());
            rec
        };
        let done = self.teardown(&rec).await;
        let mut st = self.state.lock().await;
        st.busy.remove(&k);
        done?;
        st.attachments.remove(&k);
        self.lock_held().remove(&k);
        for (network, _, _) in rec.memberships() {
            if st.networks.get(network).is_some_and(|n| n.names) {
                self.rewrite_hosts(&st, network);
            }
        }
        Ok(())
    }

    async fn teardown(&self, rec: &AttachmentRecord) -> Result<()> {
        let what = format!(
            "detaching container {:?} from network {:?}",
            rec.container_id, rec.network
        );
        let rt = RuntimeConf {
            container_id: rec.cni_id.clone(),
            netns: rec.netns.clone(),
            ifname: "eth0".into(),
            ..RuntimeConf::default()
        };
        // Its further networks' interfaces first, from their cached results.
        for l in &rec.links {
            let link_rt = RuntimeConf {
                ifname: l.ifname.clone(),
                ..rt.clone()
            };
            self.cni
                .del(&l.network, None, &link_rt)
                .await
                .map_err(|e| cni_error(&what, e))?;
        }
        let net = self.state.lock().await.networks.get(&rec.network).cloned();
        let list = net.and_then(|n| NetworkConfigList::from_value(n.config).ok());
        self.cni
            .del(&rec.network, list.as_ref(), &rt)
            .await
            .map_err(|e| cni_error(&what, e))?;
        netns::remove(&rec.netns).map_err(|e| cni_error(&what, e))?;
        records::remove(&self.attachment_file(&rec.namespace, &rec.container_id))?;
        let _ = std::fs::remove_dir_all(&rec.dir);
        Ok(())
    }

    /// Attachments whose namespace is gone (the host rebooted: `/run` is empty) are set up
    /// again, at the same path with the same ports, so their containers start again; one that
    /// cannot be is logged and left for its container's removal.
    async fn restore(&self) {
        let lost: Vec<AttachmentRecord> = {
            let st = self.state.lock().await;
            st.attachments
                .values()
                .filter(|a| !netns::exists(&a.netns))
                .cloned()
                .collect()
        };
        for a in lost {
            let net = self.state.lock().await.networks.get(&a.network).cloned();
            let Some(net) = net else {
                tracing::warn!(container = %a.key(), network = %a.network, "the network of an attachment is gone");
                continue;
            };
            let rt = runtime_conf(&a.cni_id, &a.netns, &a.ports);
            let made = async {
                // What the plugins set up on the host before (veth, address files) goes first.
                let _ = self.cni.del(&a.network, None, &rt).await;
                let _ = netns::remove(&a.netns);
                netns::create(&a.netns).map_err(|e| cni_error("restoring", e))?;
                let list = list_for(&net, &a.ports)?;
                self.cni
                    .add(&list, &rt)
                    .await
                    .map_err(|e| cni_error("restoring", e))
            }
            .await;
            match made {
                Ok(result) => {
                    let mut rec = a.clone();
                    if let Some(addr) = result["ips"][0]["address"].as_str() {
                        rec.address = addr.to_owned();
                    }
                    let mut st = self.state.lock().await;
                    let peers = Self::peer_entries(&st, &rec);
                    if let Err(e) = records::write(
                        &self.attachment_file(&rec.namespace, &rec.container_id),
                        &rec,
                    )
                    .and_then(|()| self.write_files(&rec, &peers))
                    {
                        tracing::warn!(container = %rec.key(), "restoring: {e}");
                    }
                    tracing::info!(container = %rec.key(), address = %rec.address, "network set up again");
                    st.attachments.insert(rec.key(), rec);
                }
                Err(e) => tracing::warn!(container = %a.key(), "setting the network up again: {e}"),
            }
        }
    }

    /// Tears down what no attachment record names: cached plugin results (DEL from the cache),
    /// namespaces, and host-local's address files. Run at start-up; safe at any time no
    /// attachment is being made.
    pub async fn reconcile(&self) {
        let (known, names): (HashSet<String>, Vec<String>) = {
            let st = self.state.lock().await;
            if !st.busy.is_empty() {
                return;
            }
            (
                st.attachments.values().map(|a| a.cni_id.clone()).collect(),
                st.networks.keys().cloned().collect(),
            )
        };
        match self.cni.attachments() {
            Ok(cached) => {
                for c in cached.iter().filter(|c| !known.contains(&c.container_id)) {
                    let rt = RuntimeConf {
                        container_id: c.container_id.clone(),
                        netns: c.netns.clone(),
                        ifname: c.ifname.clone(),
                        ..RuntimeConf::default()
                    };
                    match self.cni.del(&c.network, None, &rt).await {
                        Ok(()) => tracing::info!(
                            network = %c.network, id = %c.container_id,
                            "tore down an attachment no record names"
                        ),
                        Err(e) => tracing::warn!("tearing down a stale attachment: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("reading the cached attachments: {e}"),
        }
        if let Ok(entries) = std::fs::read_dir(&self.s.netns_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    let _ = netns::remove(&e.path());
                }
            }
        }
        for net in names {
            let Ok(entries) = std::fs::read_dir(self.ipam_dir().join(&net)) else {
                continue;
            };
            for e in entries.flatten() {
                let is_address = e
                    .file_name()
                    .to_string_lossy()
                    .parse::<std::net::IpAddr>()
                    .is_ok();
                if !is_address {
                    continue;
                }
                let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
                let owner = owner.lines().next().unwrap_or("").trim().to_owned();
                if !known.contains(&owner) {
                    tracing::info!(network = %net, "freeing address {:?} of {owner:?}", e.file_name());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Deletes a network interface (a bridge); gone already is fine.
async fn delete_link(name: &str) {
    let status = tokio::process::Command::new("ip")
        .args(["link", "del", name])
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    if let Err(e) = status {
        tracing::warn!("deleting bridge {name:?}: {e}");
    }
}
