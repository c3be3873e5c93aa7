//! A running `hsm-csr serve` on 127.0.0.1 with a private token, and the
//! calls the service tests make against it.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Token, python, repo};

/// A running `hsm-csr serve`, stopped with SIGTERM when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(token: &Token, key_type: &str, extra: &str) -> Server {
        Server::start_with(token, key_type, extra, "")
    }

    /// As `start`, with `top` appended to the config (e.g. a `[pool]` table).
    pub fn start_with(token: &Token, key_type: &str, extra: &str, top: &str) -> Server {
        Server::launch(token, key_type, extra, top, None)
    }

    /// As `start`, under `prlimit`: at most `nofile` open file descriptors.
    pub fn start_limited(token: &Token, key_type: &str, extra: &str, nofile: u64) -> Server {
        Server::launch(token, key_type, extra, "", Some(nofile))
    }

    fn launch(
        token: &Token,
        key_type: &str,
        extra: &str,
        top: &str,
        nofile: Option<u64>,
    ) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(token.dir().join("pin"), "1234\n").unwrap();
        // "rsa-4096" is type rsa with bits = 4096.
        let key_table = match key_type.split_once('-') {
            Some(("rsa", bits)) => format!("type = \"rsa\"\nbits = {bits}"),
            _ => format!("type = \"{key_type}\""),
        };
        let config = token.dir().join(format!("serve-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "{}\n[key]\n{key_table}\nlabel_prefix = \"{}\"\n\n[service]\nlisten = \"{addr}\"\n{extra}\n\
                 [[service.access_keys]]\nid = \"MainKey\"\nsecret_env = \"MAIN_SECRET\"\n\
                 actions = [\"cdn:CreateCdnCertificateSigningRequest\", \"dcdn:CreateDcdnCertificateSigningRequest\"]\n\
                 [[service.access_keys]]\nid = \"CdnOnly\"\nsecret_file = \"cdn-secret\"\nactions = [\"cdn:CreateCdnCertificateSigningRequest\"]\n\
                 [[service.access_keys]]\nid = \"Burst\"\nsecret_env = \"BURST_SECRET\"\nactions = [\"*\"]\n{top}\n",
                token.config_token_table("pin"),
                token.prefix
            ),
        )
        .unwrap();
        std::fs::write(token.dir().join("cdn-secret"), "cdn-s3cret\n").unwrap();
        let mut cmd = token.hsm_csr();
        if let Some(n) = nofile {
            let mut limited = Command::new("prlimit");
            limited
                .arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(cmd.get_program())
                .stdin(Stdio::null());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => limited.env(k, v),
                    None => limited.env_remove(k),
                };
            }
            cmd = limited;
        }
        let child = cmd
            .current_dir(token.dir())
            .env_remove("HSM_CSR_PIN")
            .env("MAIN_SECRET", "s3cret")
            .env("BURST_SECRET", "b-s3cret")
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        let tls = extra.contains("tls_cert");
        while if tls {
            TcpStream::connect(&server.addr).is_err()
        } else {
            server.get("/healthz").is_none()
        } {
            assert!(
                Instant::now() < deadline,
                "hsm-csr serve did not come up on {}",
                server.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident set size, in bytes (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// A bare HTTP/1.1 GET; the status line and body.
    pub fn get(&self, path: &str) -> Option<String> {
        use std::io::Write;
        let mut s = TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// A raw request; the whole response.
    pub fn raw(&self, request: &[u8]) -> String {
        use std::io::Write;
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(request);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(status.success(), "serve exited with {status}:\n{log}");
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// `call.py`: N calls through the SDK; their PubMd5 values.
pub fn call(server: &Server, n: usize) -> Vec<String> {
    let out = Command::new(python())
        .arg(repo().join("tests/tools/call.py"))
        .arg(&server.addr)
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of a metric line `name value` in /metrics.
pub fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = server.get("/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

pub fn wait_for(server: &Server, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(server, name).unwrap_or(0.0) < at_least {
        assert!(Instant::now() < deadline, "{name} never reached {at_least}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One SDK call (tests/tools/call.py), returned once it holds a session.
pub fn call_in_flight(server: &Server) -> std::process::Child {
    let client = Command::new(python())
        .arg(repo().join("tests/tools/call.py"))
        .arg(&server.addr)
        .arg("1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(server, "hsm_csr_sessions_in_use").unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached a session"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    client
}
