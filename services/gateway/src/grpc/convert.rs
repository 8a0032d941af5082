//! `strata.gateway.v1` messages to the core's types and back, for the `Gateway` service.

use crate::push;
use crate::run;
use crate::tasks::{OutputEvent, Stream};
use strata_api::strata::gateway::v1 as pb;
use strata_api::strata::tasks::v1 as iopb;

/// A count as the wire has it (the largest `i64` for more).
pub fn wire(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Blobs (layers, configs) as a `Resolved` event lists them.
pub fn layer_infos(blobs: Vec<strata_core::descriptor::Descriptor>) -> Vec<pb::LayerInfo> {
    blobs
        .into_iter()
        .map(|l| pb::LayerInfo {
            digest: l.digest.to_string(),
            size: wire(l.size),
            media_type: l.media_type,
        })
        .collect()
}

/// `CreateContainer`'s request as the core takes it.
pub fn run_options(r: pb::CreateContainerRequest) -> run::RunOptions {
    run::RunOptions {
        image: r.image,
        name: r.name,
        args: r.args,
        entrypoint: r.entrypoint,
        env: r.env,
        tty: r.tty,
        stdin: r.stdin,
        user: r.user,
        workdir: r.workdir,
        hostname: r.hostname,
        memory: r.memory,
        cpus: r.cpus,
        pids_limit: r.pids_limit,
        volumes: r
            .volumes
            .into_iter()
            .map(|v| run::Volume {
                source: v.source,
                destination: v.destination,
                read_only: v.read_only,
            })
            .collect(),
        network: r.network,
        read_only: r.read_only,
        runtime: r.runtime,
        auto_remove: r.auto_remove,
        labels: r.labels,
        snapshotter: r.snapshotter,
        cap_add: r.cap_add,
        cap_drop: r.cap_drop,
        privileged: r.privileged,
        devices: r
            .devices
            .into_iter()
            .map(|d| run::Device {
                host_path: d.host_path,
                container_path: d.container_path,
                permissions: d.permissions,
            })
            .collect(),
        sysctls: r.sysctls,
        group_add: r.group_add,
        tmpfs: r
            .tmpfs
            .into_iter()
            .map(|t| run::Tmpfs {
                destination: t.destination,
                options: t.options,
            })
            .collect(),
        ulimits: r
            .ulimits
            .into_iter()
            .map(|u| run::Ulimit {
                name: u.name,
                soft: u.soft,
                hard: u.hard,
            })
            .collect(),
        security_opt: r.security_opt,
        ports: r
            .ports
            .into_iter()
            .map(|p| run::PortMapping {
                host_ip: p.host_ip,
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol,
            })
            .collect(),
        publish_all: r.publish_all,
        dns: r.dns,
        dns_search: r.dns_search,
        dns_options: r.dns_options,
        extra_hosts: r.extra_hosts,
        network_aliases: r.network_aliases,
    }
}

/// `Exec`'s request as the core takes it.
pub fn exec_options(r: pb::ExecRequest) -> run::ExecOptions {
    run::ExecOptions {
        container_id: r.container_id,
        args: r.args,
        env: r.env,
        tty: r.tty,
        stdin: r.stdin,
        user: r.user,
        workdir: r.workdir,
        exec_id: r.exec_id,
        detach: r.detach,
    }
}

/// `Commit`'s request as the core takes it.
pub fn commit_options(r: pb::CommitRequest) -> crate::commit::Options {
    crate::commit::Options {
        container: r.container,
        reference: r.reference,
        changes: r.changes,
        message: r.message,
        no_pause: r.no_pause,
        author: r.author,
    }
}

/// `Push`'s request as the core takes it.
pub fn push_options(r: pb::PushRequest) -> push::Options {
    push::Options {
        reference: r.reference,
        plain_http: r.plain_http,
    }
}

/// A push's event as the wire has it.
pub fn push_progress(e: push::Event) -> pb::PushProgress {
    use pb::push_progress::Event as E;
    let event = match e {
        push::Event::Resolved {
            name,
            digest,
            blobs,
        } => E::Resolved(pb::Resolved {
            name,
            digest: digest.to_string(),
            layers: layer_infos(blobs),
        }),
        push::Event::Blob {
            digest,
            state,
            current,
            total,
            from,
        } => E::Blob(pb::BlobPushProgress {
            digest: digest.to_string(),
            state: blob_state(state).into(),
            current: wire(current),
            total: wire(total),
            from,
        }),
        push::Event::Done(d) => E::Done(pb::PushDone {
            name: d.name,
            digest: d.digest.to_string(),
            uploaded_bytes: wire(d.uploaded_bytes),
            blobs_uploaded: wire(d.blobs_uploaded),
            blobs_existing: wire(d.blobs_existing),
            blobs_mounted: wire(d.blobs_mounted),
            manifests: wire(d.manifests),
            note: d.note,
        }),
    };
    pb::PushProgress { event: Some(event) }
}

fn blob_state(s: push::State) -> pb::blob_push_progress::State {
    use pb::blob_push_progress::State;
    match s {
        push::State::Waiting => State::Waiting,
        push::State::Exists => State::Exists,
        push::State::Mounted => State::Mounted,
        push::State::Uploading => State::Uploading,
        push::State::Done => State::Done,
    }
}

/// A process's output or exit as the wire has it (`strata.tasks.v1.LogsEvent`, what `Attach`
/// streams).
pub fn logs_event(e: OutputEvent) -> iopb::LogsEvent {
    use iopb::logs_event::Event;
    let event = match e {
        OutputEvent::Output { stream, data } => Event::Output(iopb::Output {
            stream: match stream {
                Stream::Stdout => iopb::output::Stream::Stdout,
                Stream::Stderr => iopb::output::Stream::Stderr,
            }
            .into(),
            data,
        }),
        OutputEvent::Exit { status, at } => Event::Exit(iopb::ProcessExit {
            exit_status: status,
            exited_at: at.map(prost_types::Timestamp::from),
        }),
    };
    iopb::LogsEvent { event: Some(event) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::{Duration, SystemTime};

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "a line per field of the request, twice"
    )]
    fn every_create_field_reaches_the_core() {
        let r = pb::CreateContainerRequest {
            image: "img".into(),
            name: "c".into(),
            args: vec!["a".into()],
            entrypoint: vec!["e".into()],
            env: vec!["K=V".into()],
            tty: true,
            stdin: true,
            user: "u".into(),
            workdir: "/w".into(),
            hostname: "h".into(),
            memory: 7 << 20,
            cpus: 0.5,
            pids_limit: 9,
            volumes: vec![pb::Volume {
                source: "/s".into(),
                destination: "/d".into(),
                read_only: true,
            }],
            network: "n".into(),
            read_only: true,
            runtime: "crun".into(),
            auto_remove: true,
            labels: [("l".to_owned(), "v".to_owned())].into(),
            snapshotter: "overlayfs".into(),
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            privileged: true,
            devices: vec![pb::Device {
                host_path: "/dev/null".into(),
                container_path: "/dev/n".into(),
                permissions: "r".into(),
            }],
            sysctls: [("net.ipv4.ip_forward".to_owned(), "1".to_owned())].into(),
            group_add: vec!["audio".into()],
            tmpfs: vec![pb::Tmpfs {
                destination: "/t".into(),
                options: "size=1m".into(),
            }],
            ulimits: vec![pb::Ulimit {
                name: "nofile".into(),
                soft: 1,
                hard: 2,
            }],
            security_opt: vec!["no-new-privileges".into()],
            ports: vec![strata_api::strata::network::v1::PortMapping {
                host_ip: "127.0.0.1".into(),
                host_port: 8080,
                container_port: 80,
                protocol: "udp".into(),
            }],
            publish_all: true,
            dns: vec!["1.1.1.1".into()],
            dns_search: vec!["example".into()],
            dns_options: vec!["ndots:1".into()],
            extra_hosts: vec!["h:1.2.3.4".into()],
            network_aliases: vec!["alias".into()],
        };
        let o = run_options(r);
        let want = run::RunOptions {
            image: "img".into(),
            name: "c".into(),
            args: vec!["a".into()],
            entrypoint: vec!["e".into()],
            env: vec!["K=V".into()],
            tty: true,
            stdin: true,
            user: "u".into(),
            workdir: "/w".into(),
            hostname: "h".into(),
            memory: 7 << 20,
            cpus: 0.5,
            pids_limit: 9,
            volumes: vec![run::Volume {
                source: "/s".into(),
                destination: "/d".into(),
                read_only: true,
            }],
            network: "n".into(),
            read_only: true,
            runtime: "crun".into(),
            auto_remove: true,
            labels: [("l".to_owned(), "v".to_owned())].into(),
            snapshotter: "overlayfs".into(),
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            privileged: true,
            devices: vec![run::Device {
                host_path: "/dev/null".into(),
                container_path: "/dev/n".into(),
                permissions: "r".into(),
            }],
            sysctls: [("net.ipv4.ip_forward".to_owned(), "1".to_owned())].into(),
            group_add: vec!["audio".into()],
            tmpfs: vec![run::Tmpfs {
                destination: "/t".into(),
                options: "size=1m".into(),
            }],
            ulimits: vec![run::Ulimit {
                name: "nofile".into(),
                soft: 1,
                hard: 2,
            }],
            security_opt: vec!["no-new-privileges".into()],
            ports: vec![run::PortMapping {
                host_ip: "127.0.0.1".into(),
                host_port: 8080,
                container_port: 80,
                protocol: "udp".into(),
            }],
            publish_all: true,
            dns: vec!["1.1.1.1".into()],
            dns_search: vec!["example".into()],
            dns_options: vec!["ndots:1".into()],
            extra_hosts: vec!["h:1.2.3.4".into()],
            network_aliases: vec!["alias".into()],
        };
        assert_eq!(o, want);
    }

    #[test]
    fn output_and_exit_keep_their_stream_and_time() {
        use iopb::logs_event::Event;
        let e = logs_event(OutputEvent::Output {
            stream: Stream::Stderr,
            data: Bytes::from_static(b"oops"),
        });
        let Some(Event::Output(o)) = e.event else {
            panic!("{e:?}")
        };
        assert_eq!(o.stream, iopb::output::Stream::Stderr as i32);
        assert_eq!(&o.data[..], b"oops");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = logs_event(OutputEvent::Exit {
            status: 137,
            at: Some(at),
        });
        let Some(Event::Exit(x)) = e.event else {
            panic!("{e:?}")
        };
        assert_eq!(x.exit_status, 137);
        assert_eq!(x.exited_at.unwrap().seconds, 1_700_000_000);
    }

    #[test]
    fn push_counts_and_states_reach_the_wire() {
        use pb::push_progress::Event as E;
        let digest = strata_core::Digest::of(b"x");
        let p = push_progress(push::Event::Blob {
            digest: digest.clone(),
            state: push::State::Mounted,
            current: 3,
            total: u64::MAX,
            from: "other/repo".into(),
        });
        let Some(E::Blob(b)) = p.event else {
            panic!("{p:?}")
        };
        assert_eq!(b.state, pb::blob_push_progress::State::Mounted as i32);
        assert_eq!((b.current, b.total), (3, i64::MAX));
        assert_eq!(b.from, "other/repo");
        assert_eq!(b.digest, digest.to_string());
    }
}
