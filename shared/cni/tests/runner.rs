//! The runner against recording plugins (shell scripts that log their environment and stdin
//! and print canned results or errors): chaining, order, caching, errors and time limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_cni::{Cni, Error, NetworkConfigList, RuntimeConf};

/// A recording plugin: logs `COMMAND`, the CNI variables and its stdin to `log/NNN-name-CMD`,
/// then acts as `body` says (default: a result naming the plugin and how many results it saw).
const PLUGIN: &str = r#"#!/bin/sh
dir=$(dirname "$0")/log
mkdir -p "$dir"
n=$(ls "$dir" | wc -l)
input=$(cat)
name=$(basename "$0")
printf '%s\n%s\n%s\n%s\n%s\n%s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$input" \
  > "$dir/$(printf %03d "$n")-$name-$CNI_COMMAND"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0;;
esac
BODY
"#;

struct World {
    _dir: tempfile::TempDir,
    plugins: PathBuf,
    cni: Cni,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("bin");
    std::fs::create_dir_all(&plugins).unwrap();
    let add = |name: &str, body: &str| {
        let p = plugins.join(name);
        std::fs::write(&p, PLUGIN.replace("BODY", body)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let ok = r#"[ "$CNI_COMMAND" = ADD ] && echo "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"$name\"}],\"ips\":[{\"address\":\"10.1.2.3/24\"}]}"; exit 0"#;
    add("one", ok);
    add("two", ok);
    add(
        "fail",
        r#"[ "$CNI_COMMAND" = ADD ] || exit 0; echo '{"cniVersion":"1.0.0","code":11,"msg":"no addresses left","details":"range 10.1.2.0/30 is full"}'; exit 1"#,
    );
    add("slow", "exec sleep 30");
    add("garbage", "echo 'not json'; exit 0");
    add("old", r#"exit 0"#);
    // `old` only speaks 0.3.1.
    std::fs::write(
        plugins.join("old"),
        "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"0.3.1\",\"supportedVersions\":[\"0.3.1\"]}'\n",
    )
    .unwrap();
    std::fs::set_permissions(plugins.join("old"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cni = Cni::new(
        vec![dir.path().join("empty"), plugins.clone()],
        dir.path().join("cache"),
    )
    .with_timeout(Duration::from_secs(2));
    World {
        _dir: dir,
        plugins,
        cni,
    }
}

/// The calls logged, in order: (file name, command, container, netns, ifname, args, stdin).
fn calls(plugins: &Path) -> Vec<(String, Vec<String>, Value)> {
    let mut names: Vec<_> = std::fs::read_dir(plugins.join("log"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter(|n| !n.ends_with("-VERSION"))
        .map(|n| {
            let text = std::fs::read_to_string(plugins.join("log").join(&n)).unwrap();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let stdin = serde_json::from_str(&lines[5..].join("\n")).unwrap_or(Value::Null);
            (n[4..].to_owned(), lines[..5].to_vec(), stdin)
        })
        .collect()
}

fn list(plugins: &[Value]) -> NetworkConfigList {
    NetworkConfigList::from_value(json!({
        "cniVersion": "1.0.0",
        "name": "testnet",
        "plugins": plugins,
    }))
    .unwrap()
}

fn rt() -> RuntimeConf {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    RuntimeConf {
        container_id: "c1".into(),
        netns: "/run/strata/netns/c1".into(),
        ifname: "eth0".into(),
        args: vec![("IgnoreUnknown".into(), "1".into())],
        capability_args: caps,
    }
}

#[tokio::test]
async fn add_chains_results_and_del_runs_in_reverse_from_the_cache() {
    let w = world();
    let net = list(&[
        json!({"type": "one", "x": 1}),
        json!({"type": "two", "capabilities": {"portMappings": true}}),
    ]);
    let result = w.cni.add(&net, &rt()).await.unwrap();
    assert_eq!(result["interfaces"][0]["name"], "two");
    let c = calls(&w.plugins);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].0, "one-ADD");
    assert_eq!(
        c[0].1,
        [
            "ADD",
            "c1",
            "/run/strata/netns/c1",
            "eth0",
            "IgnoreUnknown=1"
        ]
    );
    // The list's name and version reach every plugin; the first has no previous result and,
    // having declared no capability, no runtimeConfig.
    assert_eq!(c[0].2["name"], "testnet");
    assert_eq!(c[0].2["cniVersion"], "1.0.0");
    assert_eq!(c[0].2["x"], 1);
    assert!(c[0].2.get("prevResult").is_none());
    assert!(c[0].2.get("runtimeConfig").is_none());
    assert_eq!(c[1].2["prevResult"]["interfaces"][0]["name"], "one");
    assert_eq!(c[1].2["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);

    let cached = w.cni.attachments().unwrap();
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].result, result);

    // DEL needs neither the list nor the capability arguments: the cache has them.
    let bare = RuntimeConf {
        capability_args: serde_json::Map::new(),
        args: Vec::new(),
        ..rt()
    };
    w.cni.del("testnet", None, &bare).await.unwrap();
    let c = calls(&w.plugins);
    assert_eq!(c[2].0, "two-DEL");
    assert_eq!(c[3].0, "one-DEL");
    assert_eq!(c[2].2["prevResult"], result);
    assert_eq!(
        c[2].2["runtimeConfig"]["portMappings"][0]["containerPort"],
        80
    );
    assert_eq!(c[3].1[4], "IgnoreUnknown=1");
    assert!(w.cni.attachments().unwrap().is_empty());
    // Idempotent: a second DEL with nothing cached and no list does nothing and succeeds.
    w.cni.del("testnet", None, &bare).await.unwrap();
    assert_eq!(calls(&w.plugins).len(), 4);
}

#[tokio::test]
async fn a_failed_add_is_torn_down_and_named() {
    let w = world();
    let net = list(&[
        json!({"type": "one"}),
        json!({"type": "fail"}),
        json!({"type": "two"}),
    ]);
    let e = w.cni.add(&net, &rt()).await.unwrap_err();
    match &e {
        Error::Plugin {
            plugin, code, msg, ..
        } => assert_eq!(
            (plugin.as_str(), *code, msg.as_str()),
            ("fail", 11, "no addresses left")
        ),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("range 10.1.2.0/30 is full"), "{e}");
    let order: Vec<String> = calls(&w.plugins).into_iter().map(|c| c.0).collect();
    assert_eq!(
        order,
        ["one-ADD", "fail-ADD", "two-DEL", "fail-DEL", "one-DEL"]
    );
    assert!(w.cni.attachments().unwrap().is_empty());
}

#[tokio::test]
async fn del_asks_every_plugin_and_keeps_the_cache_when_one_fails() {
    let w = world();
    let net = list(&[json!({"type": "one"}), json!({"type": "two"})]);
    w.cni.add(&net, &rt()).await.unwrap();
    // `two` disappears: DEL still asks `one`, reports `two`, and keeps the result for a retry.
    std::fs::remove_file(w.plugins.join("two")).unwrap();
    let e = w.cni.del("testnet", Some(&net), &rt()).await.unwrap_err();
    assert!(
        matches!(e, Error::PluginNotFound { ref plugin, .. } if plugin == "two"),
        "{e}"
    );
    assert_eq!(calls(&w.plugins).last().unwrap().0, "one-DEL");
    assert_eq!(w.cni.attachments().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_plugins_versions_and_names_are_clear_errors() {
    let w = world();
    let e = w
        .cni
        .add(&list(&[json!({"type": "slow"})]), &rt())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("\"slow\" ADD did not finish"), "{e}");
    let e = w
        .cni
        .add(&list(&[json!({"type": "garbage"})]), &rt())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bad result"), "{e}");
    let e = w
        .cni
        .add(&list(&[json!({"type": "old"})]), &rt())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("does not support version 1.0.0"),
        "{e}"
    );
    let e = w
        .cni
        .add(&list(&[json!({"type": "missing"})]), &rt())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"missing\" not found"), "{e}");
    let e = NetworkConfigList::from_value(json!({
        "cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../../bin/sh"}]
    }))
    .unwrap_err();
    assert!(e.to_string().contains("plain file name"), "{e}");
    let e =
        NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}))
            .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let bad = RuntimeConf {
        container_id: "../x".into(),
        ..rt()
    };
    let e = w
        .cni
        .add(&list(&[json!({"type": "one"})]), &bad)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("container ID \"../x\""), "{e}");
}

#[tokio::test]
async fn check_uses_the_cached_result() {
    let w = world();
    let net = list(&[json!({"type": "one"})]);
    let e = w.cni.check(&net, &rt()).await.unwrap_err();
    assert!(matches!(e, Error::NotAttached { .. }), "{e}");
    let result = w.cni.add(&net, &rt()).await.unwrap();
    w.cni.check(&net, &rt()).await.unwrap();
    let c = calls(&w.plugins);
    assert_eq!(c.last().unwrap().0, "one-CHECK");
    assert_eq!(c.last().unwrap().2["prevResult"], result);
}
