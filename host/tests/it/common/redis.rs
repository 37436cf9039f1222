//! A real `redis-server` per test (Debian package `redis-server`; .ci/run
//! installs it), on 127.0.0.1 and a free port, persistence off, stopped by
//! its own PID. It can be stopped and started again on the same port to
//! play an outage, and can require a password or speak TLS.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ReservedPort;
use super::tls::TestCa;

#[derive(Default, Clone)]
pub struct RedisOptions {
    /// `requirepass`.
    pub password: Option<String>,
    /// Serve TLS only (`rediss://`), with a certificate for 127.0.0.1 from
    /// this run's CA (its PEM is [`RedisServer::ca`]).
    pub tls: bool,
}

pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The CA that signed a TLS server's certificate (PEM file).
    pub ca: Option<PathBuf>,
    options: RedisOptions,
    child: Option<Child>,
    /// `port`, kept from other tests' servers while this one is stopped
    /// (an outage) as well as while it runs.
    _reserved: ReservedPort,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let ca = options.tls.then(|| {
            let ca = TestCa::new();
            let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
            std::fs::write(dir.path().join("redis.pem"), cert).unwrap();
            std::fs::write(dir.path().join("redis.key"), key).unwrap();
            let path = dir.path().join("redis-ca.pem");
            std::fs::write(&path, ca.pem()).unwrap();
            path
        });
        let reserved = ReservedPort::new(false);
        let mut server = RedisServer {
            port: reserved.port,
            _reserved: reserved,
            dir,
            ca,
            options,
            child: None,
        };
        server.resume();
        server
    }

    /// `redis://` (or `rediss://`) URL of this server, with the password.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        let auth = self
            .options
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port; waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .unwrap();
        let mut command = Command::new("redis-server");
        command
            .current_dir(self.dir.path())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()]);
        if self.options.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args([
                    "--tls-cert-file",
                    "redis.pem",
                    "--tls-key-file",
                    "redis.key",
                ])
                .args([
                    "--tls-ca-cert-file",
                    "redis-ca.pem",
                    "--tls-auth-clients",
                    "no",
                ]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        if let Some(p) = &self.options.password {
            command.args(["--requirepass", p]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server is installed (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(20);
        while !self.log().contains("Ready to accept connections") {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < end,
                "redis-server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server (its data is gone: persistence is off, so a
    /// restart is an empty Redis, like a failover to an empty replica).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client to look at and change the stored data directly.
    pub fn client(&self) -> redis::Client {
        let url = self.url();
        match &self.ca {
            Some(ca) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).unwrap()),
                },
            )
            .unwrap(),
            None => redis::Client::open(url).unwrap(),
        }
    }

    /// Runs one command and returns its reply.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
