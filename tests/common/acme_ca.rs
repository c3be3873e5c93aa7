//! A private ACME CA on 127.0.0.1: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS (A records all 127.0.0.1, TXT records
//! set through its management API), both stopped when dropped. Pebble
//! validates every challenge for real (no always-valid mode, no
//! authorization reuse); http-01 is fetched from 127.0.0.1:`http_port`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A name pebble's blocklist refuses (`rejectedIdentifier`).
pub const BLOCKED: &str = "blocked.example.test";

pub struct AcmeCa {
    dir: tempfile::TempDir,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    /// `https://127.0.0.1:PORT/dir`.
    pub directory: String,
    /// The root of pebble's HTTPS certificate: `--ca-root`.
    pub tls_root: PathBuf,
    /// Where pebble fetches http-01 responses.
    pub http_port: u16,
    pebble_mgmt: u16,
    dns_mgmt: u16,
}

impl AcmeCa {
    /// Pebble's default certificate lifetime (about five years).
    pub fn start() -> AcmeCa {
        AcmeCa::start_with(None)
    }

    /// Certificates valid for `validity` seconds when given.
    pub fn start_with(validity: Option<u64>) -> AcmeCa {
        let dir = tempfile::Builder::new()
            .prefix("hsm-csr-acme-")
            .tempdir()
            .unwrap();
        let tls_root = tls_certificates(dir.path());
        for _ in 0..10 {
            let mut ca = AcmeCa {
                directory: String::new(),
                tls_root: tls_root.clone(),
                http_port: free_port(),
                pebble_mgmt: free_port(),
                dns_mgmt: free_port(),
                pebble: None,
                challtestsrv: None,
                dir: tempfile::tempdir_in(dir.path()).unwrap(),
            };
            if ca.launch(dir.path(), validity) {
                // The outer directory holds the TLS files; keep it with the CA.
                ca.dir = dir;
                return ca;
            }
        }
        panic!("pebble did not start; are pebble and pebble-challtestsrv installed?");
    }

    fn launch(&mut self, base: &Path, validity: Option<u64>) -> bool {
        let (listen, dns, tls_port) = (free_port(), free_port(), free_port());
        let log = |name: &str| std::fs::File::create(base.join(name)).unwrap();
        let Ok(dns_srv) = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", self.dns_mgmt)])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.challtestsrv = Some(dns_srv);
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{}", self.pebble_mgmt),
            "certificate": base.join("tls.pem"),
            "privateKey": base.join("tls.key"),
            "httpPort": self.http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": [BLOCKED],
        }});
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_path = base.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let Ok(pebble) = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.pebble = Some(pebble);
        self.directory = format!("https://127.0.0.1:{listen}/dir");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let exited = [&mut self.pebble, &mut self.challtestsrv]
                .into_iter()
                .any(|c| c.as_mut().unwrap().try_wait().ok().flatten().is_some());
            if exited {
                self.stop();
                return false;
            }
            let up = [listen, self.pebble_mgmt, self.dns_mgmt]
                .into_iter()
                .all(|p| TcpStream::connect(("127.0.0.1", p)).is_ok());
            if up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    /// Pebble's log, to tell how a challenge was validated.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// pebble-challtestsrv's log: the DNS queries pebble made.
    pub fn dns_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("challtestsrv.log")).unwrap_or_default()
    }

    /// The issuing root (PEM), from pebble's management API.
    pub fn issuer_root(&self) -> String {
        self.management("roots/0")
    }

    /// The intermediate (PEM).
    pub fn intermediate(&self) -> String {
        self.management("intermediates/0")
    }

    fn management(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "10", "--cacert"])
            .arg(&self.tls_root)
            .arg(format!("https://127.0.0.1:{}/{path}", self.pebble_mgmt))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A `--dns-01-hook` that publishes the TXT record in challtestsrv
    /// (value `value` instead of the right one when given).
    pub fn dns_hook(&self, value: Option<&str>) -> String {
        let value = value.unwrap_or("$HSM_CSR_ACME_VALIDATION");
        format!(
            "curl -sSf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$HSM_CSR_ACME_DOMAIN.\\\",\\\"value\\\":\\\"{value}\\\"}}\" http://127.0.0.1:{}/set-txt",
            self.dns_mgmt
        )
    }

    /// A `--dns-01-cleanup` that removes it.
    pub fn dns_cleanup(&self) -> String {
        format!(
            "curl -sSf --max-time 10 -X POST -d \"{{\\\"host\\\":\\\"_acme-challenge.$HSM_CSR_ACME_DOMAIN.\\\"}}\" http://127.0.0.1:{}/clear-txt",
            self.dns_mgmt
        )
    }

    /// Pebble's process id (to stop it from a hook).
    pub fn pebble_pid(&self) -> u32 {
        self.pebble.as_ref().unwrap().id()
    }

    fn stop(&mut self) {
        for child in [self.pebble.take(), self.challtestsrv.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AcmeCa {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A root and a 127.0.0.1 server certificate for pebble's HTTPS listener
/// (rustls refuses a self-signed CA as the server's own certificate).
fn tls_certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "2",
            "-subj",
            "/CN=hsm-csr test root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("tls.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-out",
        "tls.pem",
        "-days",
        "2",
        "-extfile",
        "tls.ext",
    ]);
    dir.join("root.pem")
}

/// A port nobody listens on now (another process may still take it first:
/// [`AcmeCa::start_with`] tries again).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
