//! acme2certifier (PyPI, in `.venv-acme`, made by scripts/test.sh) on a
//! free loopback port, over HTTPS: an ACME server with ACME Renewal
//! Information (RFC 9773), which Debian's pebble 2.4 lacks.
//!
//! Its own openssl CA handler issues from a CA made here, through
//! `tests/tools/a2c_ca_handler.py` for lifetimes under a day. Challenges
//! are not validated (`challenge_validation_disable`, which acme2certifier
//! honours only with `ACME2CERTIFIER_I_KNOW_THE_RISK=1`): its http-01 check
//! connects to port 80 and resolves names through DNS, neither of which a
//! test may take. `tests/tools/a2c_serve.py` serves it and writes each
//! request (method, path, decoded JWS payload) to [`Acme2Certifier::requests`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pebble::make_tls_cert;
use super::ports::free_port;
use super::repo;

/// How acme2certifier issues and what renewal window it suggests.
#[derive(Clone, Debug)]
pub struct A2cOptions {
    /// `[CAhandler] cert_validity`: "6h", "30m", ...
    pub lifetime: &'static str,
    /// `[Renewalinfo] renewalthreshold_pctg`: the window starts this share
    /// of the lifetime after issuance.
    pub window_start_percent: u8,
    /// `[Renewalinfo] renewal_window_duration` ("30m"); default: to notAfter.
    pub window_length: Option<&'static str>,
    /// `[Renewalinfo] retry_after_timeout`, seconds.
    pub retry_after_secs: u64,
    /// Profiles offered in the directory (`[Order] profiles`, checked),
    /// each with the lifetime its certificates get; none: no profiles.
    pub profiles: &'static [(&'static str, &'static str)],
}

impl Default for A2cOptions {
    /// Six-hour certificates, a window from half their life to its end,
    /// Retry-After 600 s, no profiles.
    fn default() -> Self {
        A2cOptions {
            lifetime: "6h",
            window_start_percent: 50,
            window_length: None,
            retry_after_secs: 600,
            profiles: &[],
        }
    }
}

pub struct Acme2Certifier {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

/// The Python with acme2certifier (and Python's `acme` package).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HSM_CSR_TEST_ACME_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv-acme/bin/python");
    assert!(
        venv.exists(),
        "no Python with acme2certifier: run scripts/test.sh (it makes .venv-acme)"
    );
    venv
}

impl Acme2Certifier {
    pub fn start(options: &A2cOptions) -> Acme2Certifier {
        let dir = tempfile::Builder::new()
            .prefix("hsm-csr-a2c-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        make_tls_cert(d);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=acme2certifier test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]);
        std::fs::create_dir(d.join("certs")).unwrap();
        let tools = repo().join("tests/tools");
        let window = options
            .window_length
            .map(|w| format!("renewal_window_duration: {w}\n"))
            .unwrap_or_default();
        let profiles = if options.profiles.is_empty() {
            String::new()
        } else {
            let offered: serde_json::Map<String, serde_json::Value> = options
                .profiles
                .iter()
                .map(|(name, life)| ((*name).to_owned(), format!("{life} certificates").into()))
                .collect();
            let lifetimes: serde_json::Map<String, serde_json::Value> = options
                .profiles
                .iter()
                .map(|(name, life)| ((*name).to_owned(), (*life).into()))
                .collect();
            format!(
                "profiles: {}\nprofiles_check_disable: False\n[Profiles]\nvalidity: {}\n",
                serde_json::Value::Object(offered),
                serde_json::Value::Object(lifetimes)
            )
        };
        let config = format!(
            "[DEFAULT]\ndebug: False\n\
             [Nonce]\nnonce_check_disable: False\n\
             [CAhandler]\nhandler_module: {handler}\ncert_validity: {lifetime}\n\
             issuing_ca_key: {d}/ca.key\nissuing_ca_cert: {d}/ca.pem\n\
             issuing_ca_crl: {d}/ca.crl\ncert_save_path: {d}/certs\n\
             cert_validity_days: 1\ncert_validity_adjust: False\n\
             [DBhandler]\nhandler: wsgi\ndbfile: {d}/acme_srv.db\n\
             [Account]\ncontact_check_disable: True\n\
             [Challenge]\nchallenge_validation_disable: True\n\
             [Order]\nvalidity: 3600\n{profiles}\
             [Authorization]\nvalidity: 3600\n\
             [Renewalinfo]\nrenewalthreshold_pctg: {pct}\nretry_after_timeout: {retry}\n{window}",
            handler = tools.join("a2c_ca_handler.py").display(),
            lifetime = options.lifetime,
            d = d.display(),
            pct = options.window_start_percent,
            retry = options.retry_after_secs,
        );
        std::fs::write(d.join("acme_srv.cfg"), config).unwrap();
        let mut a2c = Acme2Certifier {
            dir,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            a2c.stop();
            a2c.port = free_port();
            if a2c.launch() {
                return a2c;
            }
        }
        panic!("acme2certifier did not start:\n{}", a2c.log());
    }

    fn launch(&mut self) -> bool {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("a2c.log")).unwrap();
        let child = Command::new(python())
            .arg(repo().join("tests/tools/a2c_serve.py"))
            .arg(self.port.to_string())
            .arg(d.join("tls-cert.pem"))
            .arg(d.join("tls-key.pem"))
            .arg(d.join("requests.jsonl"))
            .env("ACME_SRV_CONFIGFILE", d.join("acme_srv.cfg"))
            .env("ACME2CERTIFIER_I_KNOW_THE_RISK", "1")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("acme2certifier's Python");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            let up = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--max-time", "5", "--cacert"])
                .arg(self.tls_ca())
                .arg(self.directory_url())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/directory", self.port)
    }

    /// The root of the listener's certificate.
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.path().join("tls-root.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The requests so far: method, path and decoded JWS payload each.
    /// Answers the next `count` new orders 429 with `Retry-After:
    /// retry_after` (tests/tools/a2c_serve.py).
    pub fn rate_limit(&self, count: u32, retry_after: &str) {
        let limit = serde_json::json!({"count": count, "retry_after": retry_after});
        std::fs::write(self.dir.path().join("rate_limit.json"), limit.to_string()).unwrap();
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("a2c.log")).unwrap_or_default()
    }

    /// Stops the server (a CA that does not answer).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Acme2Certifier {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- acme2certifier ---\n{}", self.log());
        }
        self.stop();
    }
}
