//! The deployment files in `deploy/`, checked as far as this machine can
//! (no container engine or cluster runs here): the ConfigMap's config.json
//! passes `bbproxy check`, the probes and ports agree with it, the
//! ConfigMap is mounted as a directory (never `subPath`), the Service does
//! not expose the admin port, the systemd unit names the binary's real
//! flags and subcommands, the Dockerfile is a multi-stage, non-root,
//! binary-only image of the production build, and that build's script
//! refuses what it cannot use before building anything.

use std::path::PathBuf;
use std::process::Command;

/// `path` in the repository (relative to its root).
fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn deploy(path: &str) -> String {
    let file = repo("deploy").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The block scalar `key: |` of a YAML file, dedented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines();
    lines
        .by_ref()
        .position(|l| l.trim() == format!("{key}: |"))
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    body.iter()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `key: value` (first occurrence), without quotes.
fn value<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    yaml.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().trim_matches('"'))
        })
        .collect()
}

fn configmap_config() -> (tempfile::TempDir, PathBuf, serde_json::Value) {
    let json = block(&deploy("kubernetes/configmap.yaml"), "config.json");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, &json).unwrap();
    let doc = serde_json::from_str(&json).unwrap();
    (dir, path, doc)
}

#[test]
fn the_configmap_config_passes_bbproxy_check() {
    let (_dir, path, doc) = configmap_config();
    let env = doc["storage"]["redis"]["password_env"].as_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bbproxy"))
        .args(["check", "--config"])
        .arg(&path)
        .env(env, "from-the-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Deployment gives the pod that variable from the Secret.
    let deployment = deploy("kubernetes/deployment.yaml");
    assert!(value(&deployment, "name").contains(&env), "{env} not set");
    let secret = deploy("kubernetes/secret.yaml");
    assert!(deployment.contains("secretKeyRef: {name: bbproxy-redis, key: password}"));
    assert!(value(&secret, "password").len() == 1);
}

#[test]
fn probes_ports_and_mounts_match_the_config() {
    let (_dir, _path, doc) = configmap_config();
    let deployment = deploy("kubernetes/deployment.yaml");
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_owned();
    let admin = port(doc["admin"]["address"].as_str().unwrap());
    let http = port(doc["listen"]["http"].as_str().unwrap());
    let https = port(doc["listen"]["https"].as_str().unwrap());
    for (name, p) in [("admin", &admin), ("http", &http), ("https", &https)] {
        let line = format!("{{name: {name}, containerPort: {p}}}");
        assert!(deployment.contains(&line), "no `{line}` in deployment.yaml");
    }
    assert!(
        deployment.contains("readinessProbe:\n            httpGet: {path: /readyz, port: admin}")
    );
    assert!(
        deployment.contains("livenessProbe:\n            httpGet: {path: /healthz, port: admin}")
    );
    // The ConfigMap is a directory mount where --config points.
    assert!(
        !deployment.contains("subPath"),
        "subPath mounts are never updated"
    );
    assert!(deployment.contains("{name: config, mountPath: /etc/bbproxy, readOnly: true}"));
    assert!(deployment.contains(r#"args: ["--config", "/etc/bbproxy/config.json""#));
    assert!(deployment.contains("replicas: 3"));
    // The Service exposes 80 and 443 only, onto the proxy's listeners.
    let service = deploy("kubernetes/service.yaml");
    assert!(service.contains("{name: http, port: 80, targetPort: http}"));
    assert!(service.contains("{name: https, port: 443, targetPort: https}"));
    assert!(!service.contains("targetPort: admin") && !service.contains(&admin));
    let pdb = deploy("kubernetes/pdb.yaml");
    assert!(pdb.contains("kind: PodDisruptionBudget") && pdb.contains("minAvailable: 2"));
}

#[test]
fn the_systemd_unit_names_real_flags() {
    let unit = deploy("systemd/bbproxy.service");
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bbproxy"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for key in ["ExecStart", "ExecStartPre"] {
        let line: Vec<&str> = unit
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .collect();
        assert_eq!(line.len(), 1, "{key}");
        let words: Vec<&str> = line[0].split_whitespace().collect();
        assert_eq!(words[0], "/usr/local/bin/bbproxy");
        for word in &words[1..] {
            if let Some(flag) = word.strip_prefix("--") {
                assert!(
                    top.contains(&format!("--{flag}")),
                    "bbproxy has no --{flag}"
                );
            } else if !word.starts_with('/') {
                // A subcommand.
                assert!(
                    top.contains(&format!("  {word}")),
                    "bbproxy has no `{word}`"
                );
            }
        }
    }
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "User=bbproxy",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}`");
    }
    let nofile = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .unwrap();
    assert!(nofile.parse::<u64>().unwrap() >= 65536);
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_binary_only() {
    let dockerfile = deploy("Dockerfile");
    let from: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "{from:?}");
    let toolchain = std::fs::read_to_string(repo("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    let minor = channel.rsplit_once('.').map_or(channel, |(m, _)| m);
    assert!(
        from[0].contains(&format!("rust:{minor}")),
        "{} vs {channel}",
        from[0]
    );
    let runtime: Vec<&str> = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with(from[1]))
        .collect();
    let copies: Vec<&&str> = runtime.iter().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    // The production build (deploy/build.sh: dist, profile-guided), and
    // the binary that script says it wrote.
    let run: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("RUN "))
        .collect();
    assert!(
        run.iter().any(|l| l.starts_with("deploy/build.sh ")),
        "{run:?}"
    );
    let script = deploy("build.sh");
    assert!(script.contains("out=\"$root/target/pgo\""), "{script}");
    assert!(
        copies[0].ends_with(" /src/target/pgo/bbproxy /usr/local/bin/bbproxy"),
        "{copies:?}"
    );
    // `COPY . .` takes the build context: local build output stays out
    // of it (target/ is tens of GB after a few builds).
    let ignored = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "target/"), "{ignored}");
    let user = runtime.iter().find(|l| l.starts_with("USER ")).unwrap();
    assert!(
        !user.contains(" root") && !user.contains(" 0") && user.contains("nonroot"),
        "{user}"
    );
}

/// deploy/build.sh run with `args` from `dir`, as a user would: its exit
/// code and standard error.
fn build_script_in(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("bash")
        .arg(repo("deploy/build.sh"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// deploy/build.sh run with `args` from the repository root.
fn build_script(args: &[&str]) -> (Option<i32>, String) {
    build_script_in(&repo(""), args)
}

/// Bad arguments and a missing profile end the script with a message
/// before any build starts (each case returns at once; a build would take
/// minutes and print cargo's output).
#[test]
fn the_build_script_refuses_what_it_cannot_use_before_building() {
    let (code, err) = build_script(&["--fast"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown argument: --fast"), "{err}");
    assert!(err.contains("[--no-pgo] [--profdata FILE]"), "{err}");
    let (code, err) = build_script(&["--profdata"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--profdata needs a file"), "{err}");
    let missing = std::env::temp_dir().join("bbproxy-no-such.profdata.xz");
    let (code, err) = build_script(&["--profdata", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no profile at"), "{err}");
    assert!(err.contains("--no-pgo"), "{err}");
    // A relative --profdata is the caller's, not the repository root's
    // (where the script works).
    let caller = tempfile::tempdir().unwrap();
    let (code, err) = build_script_in(caller.path(), &["--profdata", "mine.profdata"]);
    assert_eq!(code, Some(1), "{err}");
    let expected = caller.path().join("mine.profdata");
    assert!(
        err.contains(&format!("no profile at {}", expected.display())),
        "{err}"
    );
}

/// The committed profile the production build reads is an xz-compressed,
/// merged (indexed) LLVM profile, as `bench/pgo.sh --save` writes it: a raw
/// `.profraw` or another file would fail the Docker build after its long
/// compile of the dependencies.
#[test]
fn the_committed_profile_is_a_merged_llvm_profile() {
    let path = repo("deploy/bbproxy.profdata.xz");
    let out = Command::new("xz")
        .arg("-dc")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("xz (Debian package xz-utils): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // llvm/ProfileData/InstrProf.h: the indexed format's magic (a raw
    // `.profraw` starts with another), then its version, little-endian,
    // variant flags in the high bits; rustc 1.95's LLVM writes version 13.
    let data = out.stdout;
    assert!(data.len() > 1 << 20, "{} bytes", data.len());
    assert_eq!(&data[..8], b"\xfflprofi\x81", "not a merged profile");
    let version = u32::from_le_bytes(data[8..12].try_into().unwrap());
    assert!((10..=15).contains(&version), "version {version}");
}
