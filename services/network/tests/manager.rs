//! The network service's core with Debian's real CNI plugins, bridges, namespaces and iptables
//! (root): attach, publish, files, names on user networks, refusals that leave nothing set up,
//! crash recovery, and many containers at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use strata_core::Kind;
use strata_network::ports::Port;
use strata_network::{AttachSpec, Manager, Settings};
use strata_testkit::net::TestNet;

struct World {
    dir: tempfile::TempDir,
    net: TestNet,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            net: TestNet::take(),
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            root: self.dir.path().join("root"),
            netns_dir: self.dir.path().join("netns"),
            plugin_dirs: strata_cni::DEFAULT_PLUGIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            default_bridge: self.net.bridge.clone(),
            default_subnet: Some(self.net.subnet.clone()),
            conf_dir: Some(self.dir.path().join("net.d")),
        }
    }

    async fn open(&self) -> Manager {
        Manager::open(self.settings()).await.unwrap()
    }

    /// Everything the service keeps besides its records: namespaces, cached results, address
    /// files, published-port rules naming this world's subnet.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in ["netns", "root/cni-cache", "root/containers/default"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.path().join(d)) {
                out.extend(entries.flatten().map(|e| e.path().display().to_string()));
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("root/ipam/bridge")) {
            out.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok()),
            );
        }
        let prefix = self.net.subnet.trim_end_matches(".0/24");
        for table in ["nat", "filter"] {
            let rules = Command::new("iptables-save")
                .args(["-t", table])
                .output()
                .unwrap();
            out.extend(
                String::from_utf8_lossy(&rules.stdout)
                    .lines()
                    .filter(|l| {
                        l.contains(&format!("{prefix}.")) && !l.contains(&format!("{prefix}.0/24"))
                    })
                    .map(str::to_owned),
            );
        }
        out
    }
}

fn serve_in(
    ns: &Path,
    port: u16,
    reply: &'static [u8],
    times: usize,
) -> std::thread::JoinHandle<()> {
    let ns = std::fs::File::open(ns).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        tx.send(()).unwrap();
        for _ in 0..times {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(reply).unwrap();
        }
    });
    rx.recv().unwrap();
    h
}

fn fetch(ip: Ipv4Addr, port: u16) -> String {
    let mut s = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connecting to {ip}:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn port(host: u32, container: u32) -> Port {
    Port::checked("", host, container, "tcp").unwrap()
}

#[tokio::test]
async fn attach_publishes_writes_files_and_detach_leaves_nothing() {
    let w = World::new();
    let m = w.open().await;
    let spec = AttachSpec {
        ports: vec![port(0, 8000)],
        hostname: "web1".into(),
        dns: vec!["192.0.2.53".into()],
        dns_search: vec!["example.test".into()],
        extra_hosts: vec!["db.example:192.0.2.9".into()],
        ..AttachSpec::default()
    };
    let a = m.attach("default", "c1", &spec).await.unwrap();
    assert_eq!(a.network, "bridge");
    let ip: Ipv4Addr = a.ip().parse().unwrap();
    assert!(
        a.address.starts_with(w.net.subnet.trim_end_matches("0/24")),
        "{a:?}"
    );
    let host_port = a.ports[0].host_port;
    assert_ne!(host_port, 0);

    let hosts = std::fs::read_to_string(a.dir.join("hosts")).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains(&format!("{ip}\tweb1 c1\n")), "{hosts}");
    assert!(hosts.contains("192.0.2.9\tdb.example\n"), "{hosts}");
    assert_eq!(
        std::fs::read_to_string(a.dir.join("hostname")).unwrap(),
        "web1\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.dir.join("resolv.conf")).unwrap(),
        "search example.test\nnameserver 192.0.2.53\n"
    );

    // The port answers on 127.0.0.1 and on the container's address.
    let server = serve_in(&a.netns, 8000, b"from c1", 2);
    assert_eq!(fetch(Ipv4Addr::LOCALHOST, host_port), "from c1");
    assert_eq!(fetch(ip, 8000), "from c1");
    server.join().unwrap();

    // The same host port again: refused by name, and the refusal leaves nothing set up.
    let before = w.leftovers();
    let e = m
        .attach(
            "default",
            "c2",
            &AttachSpec {
                ports: vec![port(u32::from(host_port), 80)],
                ..AttachSpec::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists);
    assert_eq!(
        e.to_string(),
        format!("port {host_port}/tcp is already allocated")
    );
    assert_eq!(w.leftovers(), before);
    // So is a port another program holds.
    let other = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let taken = other.local_addr().unwrap().port();
    let e = m
        .attach(
            "default",
            "c2",
            &AttachSpec {
                ports: vec![port(u32::from(taken), 80)],
                ..AttachSpec::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is already allocated"), "{e}");

    let e = m
        .attach("default", "c1", &AttachSpec::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists);
    let e = m
        .attach(
            "default",
            "c3",
            &AttachSpec {
                network: "nosuch".into(),
                ..AttachSpec::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound);
    assert!(e.to_string().contains("\"nosuch\""), "{e}");

    m.detach("default", "c1").await.unwrap();
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    // The port is free again, and detaching twice is fine.
    drop(TcpListener::bind((Ipv4Addr::UNSPECIFIED, host_port)).unwrap());
    m.detach("default", "c1").await.unwrap();
}

#[tokio::test]
async fn user_networks_resolve_names_and_refuse_removal_while_used() {
    let w = World::new();
    let m = w.open().await;
    let user = TestNet::take();
    let n = m
        .create_network("team", &user.subnet, Default::default())
        .await
        .unwrap();
    assert!(n.names);
    let e = m
        .create_network("team2", &user.subnet, Default::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("overlaps network \"team\""), "{e}");
    let e = m
        .create_network("team", "", Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::AlreadyExists);
    for bad in ["host", "../x", ""] {
        assert!(
            m.create_network(bad, "", Default::default()).await.is_err(),
            "{bad}"
        );
    }
    let on = |alias: &str| AttachSpec {
        network: "team".into(),
        aliases: vec![alias.into()],
        ..AttachSpec::default()
    };
    let web = m.attach("default", "web", &on("www")).await.unwrap();
    let client = m.attach("default", "client", &on("cli")).await.unwrap();
    let hosts = std::fs::read_to_string(client.dir.join("hosts")).unwrap();
    assert!(
        hosts.contains(&format!("{}\tweb web.team www\n", web.ip())),
        "{hosts}"
    );
    let e = m.remove_network("team").await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(e.to_string().contains("default/web"), "{e}");
    // A container on a user network reaches another by address through the bridge.
    let server = serve_in(&web.netns, 9000, b"web here", 1);
    let client_ns = std::fs::File::open(&client.netns).unwrap();
    let web_ip: Ipv4Addr = web.ip().parse().unwrap();
    let got = std::thread::spawn(move || {
        nix::sched::setns(client_ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        fetch(web_ip, 9000)
    })
    .join()
    .unwrap();
    assert_eq!(got, "web here");
    server.join().unwrap();

    m.detach("default", "web").await.unwrap();
    let hosts = std::fs::read_to_string(client.dir.join("hosts")).unwrap();
    assert!(!hosts.contains("web"), "{hosts}");
    m.detach("default", "client").await.unwrap();
    m.remove_network("team").await.unwrap();
    let e = m.remove_network("bridge").await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[tokio::test]
async fn a_restart_tears_down_what_a_crash_left_and_keeps_what_is_recorded() {
    let w = World::new();
    let m = w.open().await;
    let kept = m
        .attach(
            "default",
            "kept",
            &AttachSpec {
                ports: vec![port(0, 80)],
                ..AttachSpec::default()
            },
        )
        .await
        .unwrap();
    let lost = m
        .attach("default", "lost", &AttachSpec::default())
        .await
        .unwrap();
    drop(m);
    // The files are not synced: one a crash left empty is written again from the record.
    std::fs::write(kept.dir.join("hosts"), "").unwrap();
    // A crash between the plugins' ADD and the record: only the record is missing.
    std::fs::remove_file(w.dir.path().join("root/attachments/default/lost.json")).unwrap();
    let m = w.open().await;
    assert!(
        !lost.netns.exists(),
        "the lost attachment's namespace stayed"
    );
    let names: Vec<String> = m
        .attachments()
        .await
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    assert_eq!(names, ["kept"]);
    assert!(kept.netns.exists());
    let hosts = std::fs::read_to_string(kept.dir.join("hosts")).unwrap();
    assert!(hosts.contains(&format!("{}\tkept", kept.ip())), "{hosts}");
    // The kept one's port is reserved again by the new process.
    let e = TcpListener::bind((Ipv4Addr::UNSPECIFIED, kept.ports[0].host_port)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    m.detach("default", "kept").await.unwrap();
    let _ = std::fs::remove_dir_all(&lost.dir);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[tokio::test]
async fn thirty_containers_at_once_get_distinct_addresses() {
    let w = World::new();
    let m = std::sync::Arc::new(w.open().await);
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let m = std::sync::Arc::clone(&m);
            tokio::spawn(async move {
                m.attach("default", &format!("many{i}"), &AttachSpec::default())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ips = std::collections::HashSet::new();
    for t in tasks {
        assert!(ips.insert(t.await.unwrap().address));
    }
    assert_eq!(ips.len(), 30);
    for i in 0..30 {
        m.detach("default", &format!("many{i}")).await.unwrap();
    }
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[tokio::test]
async fn an_installed_configuration_list_is_a_network_containers_can_join() {
    let w = World::new();
    let other = TestNet::take();
    let conf = w.dir.path().join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-ops.conflist"),
        serde_json::to_vec(&serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "ops",
            "plugins": [{
                "type": "bridge", "bridge": other.bridge, "isGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": other.subnet}]],
                         "dataDir": w.dir.path().join("ops-ipam")},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(conf.join("20-broken.conflist"), "{").unwrap();
    let m = w.open().await;
    let names: Vec<String> = m
        .networks()
        .await
        .into_iter()
        .map(|(n, _)| n.name)
        .collect();
    assert_eq!(names, ["bridge", "ops"]);
    let n = m.network("ops").await.unwrap();
    assert_eq!(
        (n.driver.as_str(), n.subnet.as_str()),
        ("cni", other.subnet.as_str())
    );
    let a = m
        .attach(
            "default",
            "op1",
            &AttachSpec {
                network: "ops".into(),
                ..AttachSpec::default()
            },
        )
        .await
        .unwrap();
    assert!(
        a.address.starts_with(other.subnet.trim_end_matches("0/24")),
        "{a:?}"
    );
    let e = m.remove_network("ops").await.unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition);
    assert!(e.to_string().contains("10-ops.conflist"), "{e}");
    m.detach("default", "op1").await.unwrap();
    assert!(!a.netns.exists());
}

#[tokio::test]
async fn after_a_reboot_an_attachment_is_set_up_again_at_the_same_path() {
    let w = World::new();
    let m = w.open().await;
    let a = m
        .attach(
            "default",
            "boot",
            &AttachSpec {
                ports: vec![port(0, 80)],
                ..AttachSpec::default()
            },
        )
        .await
        .unwrap();
    drop(m);
    // A reboot empties /run: the namespace is gone, the record stays.
    strata_cni::netns::remove(&a.netns).unwrap();
    assert!(!strata_cni::netns::exists(&a.netns));
    let m = w.open().await;
    assert!(
        strata_cni::netns::exists(&a.netns),
        "the namespace was not made again"
    );
    let again = m.attachment("default", "boot").await.unwrap();
    let server = serve_in(&again.netns, 80, b"after reboot", 1);
    assert_eq!(
        fetch(Ipv4Addr::LOCALHOST, again.ports[0].host_port),
        "after reboot"
    );
    server.join().unwrap();
    m.detach("default", "boot").await.unwrap();
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[tokio::test]
async fn connect_reaches_a_second_network() {
    let w = World::new();
    let m = w.open().await;
    let (a, b) = (TestNet::take(), TestNet::take());
    m.create_network("fa", &a.subnet, Default::default())
        .await
        .unwrap();
    m.create_network("fb", &b.subnet, Default::default())
        .await
        .unwrap();
    let on = |n: &str| AttachSpec {
        network: n.into(),
        ..AttachSpec::default()
    };
    let api = m.attach("default", "api", &on("fb")).await.unwrap();
    m.attach("default", "cli", &on("fa")).await.unwrap();
    let cli = m.connect("default", "cli", "fb", &[]).await.unwrap();
    let server = serve_in(&api.netns, 9100, b"api", 1);
    let ns = std::fs::File::open(&cli.netns).unwrap();
    let ip: Ipv4Addr = api.ip().parse().unwrap();
    let got = std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let routes = Command::new("ip").args(["-4", "route"]).output().unwrap();
        (
            fetch(ip, 9100),
            String::from_utf8_lossy(&routes.stdout).into_owned(),
        )
    })
    .join()
    .unwrap();
    assert_eq!(got.0, "api");
    // The default route stays on the first network.
    let defaults: Vec<&str> = got.1.lines().filter(|l| l.starts_with("default")).collect();
    assert_eq!(defaults.len(), 1, "{}", got.1);
    assert!(defaults[0].contains("eth0"), "{}", got.1);
    server.join().unwrap();
    m.disconnect("default", "cli", "fb").await.unwrap();
    m.detach("default", "cli").await.unwrap();
    m.detach("default", "api").await.unwrap();
    m.remove_network("fa").await.unwrap();
    m.remove_network("fb").await.unwrap();
}
