//! Containers on networks, end to end: the whole stack with the network service, the `strata`
//! CLI, Debian's CNI plugins, real bridges, namespaces and iptables. Published ports from the
//! host, from another host (a namespace of the test's joined by veth) and from a container
//! (hairpin); outbound NAT; the files; names on a user network; refusals; no leaks after
//! crashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use strata_testkit::net::TestNet;
use strata_testkit::registry::{Entry, busybox_layer, layer};
use strata_testkit::stack::Stack;

mod common;
use common::World;

/// A stack with the network service and a busybox image serving /www on port 80.
fn world() -> World {
    let www = layer(&[
        Entry::Dir("www".into()),
        Entry::File(
            "www/index.html".into(),
            b"hello from strata\n".to_vec(),
            0o644,
        ),
    ]);
    common::world_of(
        Stack::start_with_network(),
        vec![busybox_layer(), www],
        "web:1",
    )
}

impl World {
    /// Starts a web server container; returns its ID.
    fn web(&self, extra: &[&str]) -> String {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            &self.image,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ]);
        self.ok(&args).trim().to_owned()
    }

    /// The host port container `id` publishes for 80/tcp.
    fn host_port(&self, id: &str) -> u16 {
        let out = self.ok(&["port", id, "80"]);
        out.trim().rsplit(':').next().unwrap().parse().unwrap()
    }

    fn subnet_prefix(&self) -> String {
        let net = self.stack.testnet.as_ref().unwrap();
        net.subnet.trim_end_matches("0/24").to_owned()
    }

    /// What a network service keeps for containers: namespaces, address files, rules naming
    /// container addresses of this stack's subnet.
    fn leftovers(&self) -> Vec<String> {
        let d = self.stack.path();
        let mut out = Vec::new();
        for dir in [d.join("netns"), d.join("network/cni-cache")] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                out.extend(entries.flatten().map(|e| e.path().display().to_string()));
            }
        }
        if let Ok(entries) = std::fs::read_dir(d.join("network/ipam/bridge")) {
            out.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok()),
            );
        }
        let prefix = self.subnet_prefix();
        for table in ["nat", "filter"] {
            let rules = Command::new("iptables-save")
                .args(["-t", table])
                .output()
                .unwrap();
            out.extend(
                String::from_utf8_lossy(&rules.stdout)
                    .lines()
                    .filter(|l| l.contains(&prefix) && !l.contains(&format!("{prefix}0/24")))
                    .map(str::to_owned),
            );
        }
        out
    }
}

impl World {
    /// Waits (bounded; no timing asserted) until nothing is left: a `--rm` container that
    /// published no port is detached in the background.
    fn nothing_left(&self) {
        let start = Instant::now();
        while !self.leftovers().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "left behind: {:?}\n{}",
                self.leftovers(),
                self.stack.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// GETs `/` from `addr` (bounded waits; no timing is asserted).
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Polls until the container's server answers on `addr`: it starts in the background.
fn wait_for_http(addr: SocketAddr) -> String {
    let start = Instant::now();
    loop {
        match http_get(addr) {
            Ok(body) if body.contains("hello from strata") => return body,
            other => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{addr} never answered: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A second "host": a namespace of the test's, joined to this one by a veth pair on
/// `10.253.<slot>.0/30` (the host's end .1, the other .2).
struct OtherHost {
    name: String,
    host_ip: Ipv4Addr,
    ip: Ipv4Addr,
    _slot: TestNet,
}

impl OtherHost {
    fn new(prefix: u8) -> OtherHost {
        let slot = TestNet::take();
        let name = format!("sto{prefix}-{}", slot.slot);
        let host_if = format!("sth{prefix}-{}", slot.slot);
        let (host_ip, ip) = (
            Ipv4Addr::new(10, prefix, u8::try_from(slot.slot).unwrap(), 1),
            Ipv4Addr::new(10, prefix, u8::try_from(slot.slot).unwrap(), 2),
        );
        let sh = |cmd: &str| {
            let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
            assert!(st.success(), "{cmd}");
        };
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        };
        quiet(&["netns", "del", &name]);
        quiet(&["link", "del", &host_if]);
        sh(&format!("ip netns add {name}"));
        sh(&format!(
            "ip link add {host_if} type veth peer name eth0 netns {name}"
        ));
        sh(&format!(
            "ip addr add {host_ip}/30 dev {host_if} && ip link set {host_if} up"
        ));
        sh(&format!(
            "ip -n {name} addr add {ip}/30 dev eth0 && ip -n {name} link set eth0 up && \
             ip -n {name} link set lo up && ip -n {name} route add default via {host_ip}"
        ));
        OtherHost {
            name,
            host_ip,
            ip,
            _slot: slot,
        }
    }

    /// Runs `f` from inside the other host's namespace (a thread of its own enters it).
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            use std::os::fd::AsFd as _;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn a_published_port_answers_from_the_host_another_host_and_a_container() {
    let w = world();
    let id = w.web(&["-p", "80"]);
    let port = w.host_port(&id);
    assert!(wait_for_http((Ipv4Addr::LOCALHOST, port).into()).contains("200 OK"));
    // ps and inspect show the container's network, as Docker's do.
    assert!(w.ok(&["ps"]).contains(&format!("0.0.0.0:{port}->80/tcp")));
    let inspect: serde_json::Value = serde_json::from_str(&w.ok(&["inspect", &id])).unwrap();
    let settings = &inspect[0]["NetworkSettings"];
    let ip = settings["Networks"]["bridge"]["IPAddress"]
        .as_str()
        .unwrap();
    assert!(ip.starts_with(&w.subnet_prefix()), "{inspect}");
    assert_eq!(settings["Ports"]["80/tcp"][0]["HostPort"], port.to_string());
    assert_eq!(inspect[0]["State"]["Running"], true);
    // The container's own address serves too.
    wait_for_http((ip.parse::<Ipv4Addr>().unwrap(), 80).into());

    let other = OtherHost::new(253);
    // From another host, to the host's address on the link between them.
    let to = SocketAddr::from((other.host_ip, port));
    let body = other.inside(move || wait_for_http(to));
    assert!(body.contains("hello from strata"));
    // Hairpin: a container of the same bridge reaches it through the host's address.
    let out = w.ok(&[
        "run",
        "--rm",
        &w.image,
        "/bin/busybox",
        "wget",
        "-qO-",
        &format!("http://{}:{port}/", other.host_ip),
    ]);
    assert_eq!(out, "hello from strata\n");

    // A port published on 127.0.0.1 only is not reachable from the other host.
    let local = w.web(&["-p", "127.0.0.1::80"]);
    let local_port = w.host_port(&local);
    wait_for_http((Ipv4Addr::LOCALHOST, local_port).into());
    let to = SocketAddr::from((other.host_ip, local_port));
    let reached = other.inside(move || http_get(to).is_ok());
    assert!(
        !reached,
        "a port published on 127.0.0.1 answered another host"
    );
    // Nothing listens on [::] for a published port.
    let tcp6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    assert!(
        !tcp6.contains(&format!(":{:04X} ", port)),
        "something listens on [::]:{port}"
    );

    w.ok(&["rm", "-f", &id, &local]);
    w.nothing_left();
}

#[test]
fn publish_all_publishes_every_exposed_port_on_a_free_host_port() {
    let w = world();
    // An image that exposes 80/tcp and 5353/udp, made with strata build from the test image.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nEXPOSE 80 5353/udp\n", w.image),
    )
    .unwrap();
    w.ok(&[
        "build",
        "-q",
        "-t",
        "exposed:1",
        ctx.path().to_str().unwrap(),
    ]);
    let id = w
        .ok(&[
            "run",
            "-d",
            "-P",
            "exposed:1",
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ])
        .trim()
        .to_owned();
    let ports = w.ok(&["port", &id]);
    assert!(ports.contains("80/tcp -> 0.0.0.0:"), "{ports}");
    assert!(ports.contains("5353/udp -> 0.0.0.0:"), "{ports}");
    let port = w.host_port(&id);
    assert!(wait_for_http((Ipv4Addr::LOCALHOST, port).into()).contains("hello from strata"));
    // Without -P, exposing publishes nothing.
    let quiet = w
        .ok(&["run", "-d", "exposed:1", "/bin/busybox", "sleep", "60"])
        .trim()
        .to_owned();
    assert_eq!(w.ok(&["port", &quiet]).trim(), "");
    w.ok(&["rm", "-f", &id, &quiet]);
    w.nothing_left();
}

#[test]
fn a_taken_host_port_is_refused_at_create_and_nothing_is_left() {
    let w = world();
    let id = w.web(&["-p", "80"]);
    let port = w.host_port(&id).to_string();
    let before = w.leftovers();
    let out = w.cli(&[
        "run",
        "-d",
        "--name",
        "second",
        "-p",
        &format!("{port}:80"),
        &w.image,
        "true",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port}/tcp is already allocated")),
        "{err}"
    );
    assert!(!w.ok(&["ps", "-a"]).contains("second"));
    assert_eq!(w.leftovers(), before);
    // A port another program holds is refused the same way.
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let taken = held.local_addr().unwrap().port();
    let out = w.cli(&["create", "-p", &format!("{taken}:80"), &w.image, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already allocated"));
    // Malformed: named, refused by the CLI.
    let out = w.cli(&["create", "-p", "99999:80", &w.image, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"99999:80\""));
    let out = w.cli(&["create", "--net", "nosuch", &w.image, "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("network \"nosuch\": not found"));
    w.ok(&["rm", "-f", &id]);
    let ids: Vec<String> = w
        .ok(&["ps", "-a", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    for i in &ids {
        w.ok(&["rm", "-f", i]);
    }
    w.nothing_left();
}

#[test]
fn outbound_traffic_leaves_with_the_hosts_address_and_files_are_written() {
    let w = world();
    let upstream = OtherHost::new(254);
    // A server on the other host that answers with the address it sees.
    let seen = upstream.inside(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8081)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, peer) = seen.accept().unwrap();
        let mut req = [0u8; 512];
        let _ = s.read(&mut req);
        let body = format!("{}\n", peer.ip());
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        peer.ip()
    });
    let out = w.ok(&[
        "run",
        "--rm",
        "--hostname",
        "box1",
        "--dns",
        "192.0.2.53",
        "--add-host",
        "db.example:192.0.2.9",
        &w.image,
        "/bin/busybox",
        "sh",
        "-c",
        &format!(
            "busybox wget -qO- http://{}:8081/; echo ---; cat /etc/hosts; echo ---; \
             cat /etc/hostname /etc/resolv.conf; busybox ip -4 -o addr show eth0",
            upstream.ip
        ),
    ]);
    let peer = server.join().unwrap();
    assert_eq!(peer, std::net::IpAddr::V4(upstream.host_ip), "{out}");
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts[0].trim(), upstream.host_ip.to_string());
    assert!(parts[1].starts_with("127.0.0.1\tlocalhost\n"), "{out}");
    assert!(parts[1].contains("\tbox1"), "{out}");
    assert!(parts[1].contains("192.0.2.9\tdb.example"), "{out}");
    assert!(parts[2].starts_with("box1\n"), "{out}");
    let servers: Vec<&str> = parts[2]
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(servers, ["nameserver 192.0.2.53"], "{out}");
    assert!(
        parts[2].contains(&format!("inet {}", w.subnet_prefix())),
        "{out}"
    );
    w.nothing_left();
}

#[test]
fn connect_and_disconnect_a_container_to_a_second_network() {
    let w = world();
    let (a, b) = (TestNet::take(), TestNet::take());
    w.ok(&["network", "create", "--subnet", &a.subnet, "front"]);
    w.ok(&["network", "create", "--subnet", &b.subnet, "back"]);
    let web = w.web(&["--name", "api", "--net", "back"]);
    let client = w
        .ok(&[
            "run", "-d", "--name", "cli", "--net", "front", &w.image, "sleep", "600",
        ])
        .trim()
        .to_owned();
    // (busybox's wget crashes in an exec'd process here; nc does the same job.)
    let fetch = |name: &str| {
        let out = w.cli(&[
            "exec",
            &client,
            "/bin/busybox",
            "sh",
            "-c",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {name} 80"),
        ]);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success() && body.contains("hello from strata"),
            body,
        )
    };
    // Networks are isolated, and cli knows no name on back.
    assert!(!fetch("api").0);
    w.ok(&[
        "network",
        "connect",
        "--alias",
        "gateway-api",
        "back",
        &client,
    ]);
    let inspect: serde_json::Value = serde_json::from_str(&w.ok(&["inspect", &client])).unwrap();
    let nets = &inspect[0]["NetworkSettings"]["Networks"];
    assert!(
        nets["front"]["IPAddress"].is_string() && nets["back"]["IPAddress"].is_string(),
        "{inspect}"
    );
    for name in ["api", "api.back"] {
        let start = Instant::now();
        loop {
            let (reached, body) = fetch(name);
            if reached {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} never answered: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // api sees cli by its alias on back.
    let hosts = w.ok(&["exec", &web, "cat", "/etc/hosts"]);
    assert!(hosts.contains("gateway-api"), "{hosts}");
    let out = w.cli(&["network", "connect", "back", &client]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already on network \"back\""));
    let out = w.cli(&["network", "rm", "back"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    w.ok(&["network", "disconnect", "back", &client]);
    assert!(!fetch("api").0);
    let out = w.cli(&["network", "disconnect", "front", &client]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("first network"));
    w.ok(&["rm", "-f", &client, &web]);
    w.ok(&["network", "rm", "front", "back"]);
    w.nothing_left();
}

#[test]
fn runc_and_crun_join_the_persistent_namespace_too() {
    let w = world();
    for runtime in ["runc", "crun", "builtin"] {
        let out = w.ok(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            &w.image,
            "/bin/busybox",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ]);
        assert!(
            out.contains(&format!("inet {}", w.subnet_prefix())),
            "{runtime}: {out}"
        );
    }
    w.nothing_left();
}

#[test]
fn containers_on_a_user_network_find_each_other_by_name() {
    let w = world();
    let net = TestNet::take();
    w.ok(&["network", "create", "--subnet", &net.subnet, "team"]);
    let listed = w.ok(&["network", "ls"]);
    assert!(
        listed.contains("team") && listed.contains("bridge"),
        "{listed}"
    );
    let web = w.web(&["--name", "web", "--net", "team", "--network-alias", "www"]);
    for name in ["web", "www", "web.team"] {
        let out = w.ok(&[
            "run", "--rm", "--net", "team", &w.image, "/bin/busybox", "sh", "-c",
            &format!("for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -qO- http://{name}/ && exit 0; sleep 0.5; done; exit 1"),
        ]);
        assert_eq!(out, "hello from strata\n", "{name}");
    }
    // The default network resolves no names, as Docker's.
    let out = w.cli(&[
        "run",
        "--rm",
        &w.image,
        "/bin/busybox",
        "wget",
        "-qO-",
        "http://web/",
    ]);
    assert!(!out.status.success());
    // Networks are isolated: a container of another network cannot reach web's address.
    let inspect: serde_json::Value = serde_json::from_str(&w.ok(&["inspect", &web])).unwrap();
    let web_ip = inspect[0]["NetworkSettings"]["Networks"]["team"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("http://{web_ip}/");
    let out = w.cli(&[
        "run",
        "--rm",
        &w.image,
        "/bin/busybox",
        "wget",
        "-T",
        "3",
        "-qO-",
        &url,
    ]);
    assert!(!out.status.success(), "reached another network's container");
    let inspect = w.ok(&["network", "inspect", "team"]);
    assert!(inspect.contains("default/web"), "{inspect}");
    let out = w.cli(&["network", "rm", "team"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // --net container:NAME shares web's namespace: its server answers on 127.0.0.1.
    let out = w.ok(&[
        "run", "--rm", "--net", "container:web", &w.image, "/bin/busybox", "sh", "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -qO- http://127.0.0.1/ && exit 0; sleep 0.5; done; exit 1",
    ]);
    assert_eq!(out, "hello from strata\n");
    w.ok(&["rm", "-f", &web]);
    w.ok(&["network", "rm", "team"]);
    let out = w.cli(&["network", "rm", "bridge"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("default network"));
}

#[test]
fn kill_9_and_restarts_leave_nothing_behind_and_ports_come_back() {
    let mut w = world();
    for round in 0..20 {
        let id = w.web(&["-p", "80"]);
        let port = w.host_port(&id);
        match round % 3 {
            // The network service dies and comes back: the attachment is kept and its port
            // still answers; removal tears it down.
            0 => {
                w.stack.network.as_mut().unwrap().restart();
                wait_for_http((Ipv4Addr::LOCALHOST, port).into());
                w.ok(&["rm", "-f", &id]);
            }
            // The network service is down while the container is removed: the gateway detaches
            // it once the service is back.
            1 => {
                w.stack.network.as_mut().unwrap().kill9();
                w.ok(&["rm", "-f", &id]);
                w.stack.network.as_mut().unwrap().restart();
                let start = Instant::now();
                while !w.leftovers().is_empty() {
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "round {round}: never detached: {:?}",
                        w.leftovers()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            // The tasks service dies under a running container.
            _ => {
                w.stack.tasks.restart();
                w.ok(&["rm", "-f", &id]);
            }
        }
        // The port is free again.
        drop(TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap());
        assert!(
            w.leftovers().is_empty(),
            "round {round}: {:?}",
            w.leftovers()
        );
    }
}

#[test]
fn published_ports_and_outbound_traffic_survive_a_forward_drop_policy() {
    let w = world();
    let policy = String::from_utf8_lossy(
        &Command::new("iptables")
            .args(["-S", "FORWARD"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .next()
    .unwrap_or("-P FORWARD ACCEPT")
    .to_owned();
    let restore = policy
        .split_whitespace()
        .nth(2)
        .unwrap_or("ACCEPT")
        .to_owned();
    assert!(
        Command::new("iptables")
            .args(["-P", "FORWARD", "DROP"])
            .status()
            .unwrap()
            .success()
    );
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = Command::new("iptables")
                .args(["-P", "FORWARD", &self.0])
                .status();
        }
    }
    let _restore = Restore(restore);
    let other = OtherHost::new(252);
    let id = w.web(&["-p", "80"]);
    let port = w.host_port(&id);
    let to = SocketAddr::from((other.host_ip, port));
    assert!(
        other
            .inside(move || wait_for_http(to))
            .contains("hello from strata")
    );
    w.ok(&["rm", "-f", &id]);
}
