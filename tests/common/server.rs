//! A running `hsm-csr serve` on 127.0.0.1 with a private token, and the
//! calls the service tests make against it.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::serve_config::ServeConfig;
use super::{Token, python, repo};

/// A running `hsm-csr serve`, stopped with SIGTERM when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    log: ServeLog,
}

/// What `hsm-csr serve` writes to stderr, read as it comes (so that the
/// pipe never fills up and stalls the server).
pub struct ServeLog {
    text: Arc<Mutex<(String, bool)>>,
    reader: Option<JoinHandle<()>>,
}

impl ServeLog {
    pub fn follow(stderr: ChildStderr) -> ServeLog {
        let text = Arc::new(Mutex::new((String::new(), false)));
        let shared = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut line = String::new();
            while matches!(stderr.read_line(&mut line), Ok(n) if n > 0) {
                shared.lock().unwrap().0.push_str(&line);
                line.clear();
            }
            shared.lock().unwrap().1 = true;
        });
        ServeLog {
            text,
            reader: Some(reader),
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().0.clone()
    }

    /// The first line holding `needle`, once it is logged; None when the
    /// server closes stderr (exits) or `within` passes first.
    pub fn wait_for(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            {
                let (text, ended) = &*self.text.lock().unwrap();
                if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                    return Some(line.to_owned());
                }
                if *ended || Instant::now() >= deadline {
                    return None;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address `serve` bound (it logs `listening on http://ADDR ...`),
    /// so that tests can listen on port 0 and never race for a port.
    pub fn listening_addr(&self) -> String {
        let line = self
            // Two minutes: on a shared token late in a suite, serve's first
            // pass reads every earlier test's keys, and a pool of RSA keys
            // is made before it listens (openCryptoki took over 30 s).
            .wait_for("listening on ", Duration::from_secs(120))
            .unwrap_or_else(|| {
                panic!(
                    "hsm-csr serve never said where it listens:\n{}",
                    self.text()
                )
            });
        let url = line.split("listening on ").nth(1).unwrap_or_default();
        let url = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        url.and_then(|u| u.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected listening line: {line}"))
            .to_owned()
    }

    /// The whole log, once the server has exited.
    pub fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.text()
    }
}

/// How [`Server::launch_on`] runs `hsm-csr serve` (what it runs on is
/// the [`ServeConfig`]).
#[derive(Clone, Copy, Default)]
pub struct Launch<'a> {
    /// `prlimit --nofile`.
    pub nofile: Option<u64>,
    /// More environment.
    pub env: &'a [(&'a str, &'a str)],
    /// A command that runs `hsm-csr serve` (its arguments, then hsm-csr's),
    /// e.g. strace; `pid()` is then the wrapper's.
    pub wrapper: &'a [String],
}

impl Server {
    /// A server on `token` making `key_type` keys, with `extra` lines in
    /// `[service]` and the access keys of
    /// [`ServeConfig::server_access_keys`].
    pub fn start(token: &Token, key_type: &str, extra: &str) -> Server {
        Server::start_with(token, key_type, extra, "")
    }

    /// As `start`, with `top` appended to the config (e.g. a `[pool]` table).
    pub fn start_with(token: &Token, key_type: &str, extra: &str, top: &str) -> Server {
        Server::launch_on(
            token,
            &Server::config(token, key_type, extra).extra(top),
            &Launch::default(),
        )
    }

    /// As `start`, under `prlimit`: at most `nofile` open file descriptors.
    pub fn start_limited(token: &Token, key_type: &str, extra: &str, nofile: u64) -> Server {
        Server::launch_on(
            token,
            &Server::config(token, key_type, extra),
            &Launch {
                nofile: Some(nofile),
                ..Launch::default()
            },
        )
    }

    /// The config `start` runs on, to change further before
    /// [`Server::launch_on`].
    pub fn config(token: &Token, key_type: &str, extra: &str) -> ServeConfig {
        ServeConfig::for_token(token)
            .key_type(key_type)
            .service(extra)
            .server_access_keys()
    }

    /// A server on `config`, run as `how` says, in the token's directory,
    /// once it answers: the PIN in the file `pin`, `MAIN_SECRET`,
    /// `BURST_SECRET` and the file `cdn-secret` set for
    /// [`ServeConfig::server_access_keys`].
    pub fn launch_on(token: &Token, config: &ServeConfig, how: &Launch<'_>) -> Server {
        let Launch {
            nofile,
            env,
            wrapper,
        } = *how;
        std::fs::write(token.dir().join("pin"), "1234\n").unwrap();
        let tls = config.has_tls();
        let config = config.write(token.dir());
        std::fs::write(token.dir().join("cdn-secret"), "cdn-s3cret\n").unwrap();
        let limit = nofile.map(|n| {
            [
                "prlimit".to_owned(),
                format!("--nofile={n}:{n}"),
                "--".to_owned(),
            ]
        });
        let wrapper = limit.as_ref().map_or(wrapper, |l| l.as_slice());
        let mut cmd = super::wrapped(token.hsm_csr(), wrapper);
        let mut child = cmd
            .current_dir(token.dir())
            .stdin(Stdio::null())
            .env_remove("HSM_CSR_PIN")
            .env("MAIN_SECRET", "s3cret")
            .env("BURST_SECRET", "b-s3cret")
            .envs(env.iter().copied())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = ServeLog::follow(child.stderr.take().unwrap());
        let mut server = Server {
            child,
            addr: String::new(),
            log,
        };
        server.addr = server.log.listening_addr();
        let deadline = Instant::now() + Duration::from_secs(20);
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

    /// Waits (up to 60 s) for a log line holding `needle`; the line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.log
            .wait_for(needle, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("serve never logged {needle:?}:\n{}", self.log.text()))
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        self.log.text()
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
        get_at(&self.addr, path)
    }

    /// The address of `[service] admin_listen` (serve logs it).
    pub fn admin_addr(&self) -> String {
        let line = self.wait_for_log("health and metrics on http://");
        line.split("health and metrics on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned()
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

    /// Waits for the server to exit (after a signal); its log.
    pub fn wait(mut self) -> String {
        self.exit().1
    }

    /// Waits for the server to exit: its status and whole log.
    fn exit(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let log = std::mem::replace(
            &mut self.log,
            ServeLog {
                text: Arc::default(),
                reader: None,
            },
        )
        .finish();
        (status, log)
    }

    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let (status, log) = self.exit();
        assert!(status.success(), "serve exited with {status}:\n{log}");
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test shows what serve said (and whether it had died):
        // an empty answer alone cannot tell a crash from a hang.
        if std::thread::panicking() {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!("serve had exited: {status}");
            }
            eprintln!("serve's log:\n{}", self.log.text());
        }
        // A wrapper (strace) killed alone would leave serve running.
        super::kill_children(&mut self.child);
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

/// A self-signed P-256 certificate for 127.0.0.1 and its key, made by
/// openssl in the token's directory, for `tls_cert` / `tls_key`.
pub fn self_signed(token: &Token) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (token.dir().join("tls.pem"), token.dir().join("tls.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext"])
        .args(["subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// A bare HTTP/1.1 GET to `addr`; the status line and body.
pub fn get_at(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
