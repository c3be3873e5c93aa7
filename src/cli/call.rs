//! `hsm-csr call`: a signed call to `hsm-csr serve` (or any endpoint of the
//! cloud's RPC API), as the cloud's own command-line tool makes it, for
//! operators and scripts. The access key id comes from a flag or
//! `ALIBABA_CLOUD_ACCESS_KEY_ID`, the secret from a file or
//! `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, never from the command line. The
//! answer's JSON goes to stdout; an error answer's code and message also go
//! to stderr, and the exit status says who has to act (as for every
//! command: 2 the request, 1 the service).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::service::api::ACTIONS;
use crate::service::request_signing::timestamp_now;
use crate::service::signer::{self, Call, Scheme};
use crate::{Error, ErrorClass, Result};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use secrecy::{ExposeSecret, SecretString};

/// Most bytes of an answer that are read (a CSR answer is a few KiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// `hsm-csr call`.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// The service: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, env = "HSM_CSR_ENDPOINT", value_name = "URL")]
    pub endpoint: String,
    /// The access key id (or ALIBABA_CLOUD_ACCESS_KEY_ID).
    #[arg(long, env = "ALIBABA_CLOUD_ACCESS_KEY_ID", value_name = "ID")]
    pub access_key_id: String,
    /// A file holding the secret (its first line); without it, the secret
    /// is read from ALIBABA_CLOUD_ACCESS_KEY_SECRET. Never on the command
    /// line.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// The signature: acs3 (ACS3-HMAC-SHA256, the new SDKs) or rpc
    /// (HMAC-SHA1 in the query, the older SDKs).
    #[arg(long, value_enum, default_value = "acs3")]
    pub signature: SignatureArg,
    /// The API version; by default the action's own (2018-05-10 for Cdn
    /// actions, 2018-01-15 for Dcdn ones).
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
    /// PEM file of the CA that issued an https endpoint's certificate (the
    /// built-in web roots otherwise).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
    /// The action: CreateCdnCertificateSigningRequest,
    /// CreateDcdnCertificateSigningRequest, SetCdnDomainCSRCertificate or
    /// SetDcdnDomainCSRCertificate.
    pub action: String,
    /// The action's parameters, as Name=Value (CommonName=www.example.com
    /// SANs=a.example.com,b.example.com ...); Name=@FILE reads the value
    /// from FILE (a certificate's PEM).
    #[arg(value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// `--signature`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SignatureArg {
    /// ACS3-HMAC-SHA256.
    Acs3,
    /// RPC, HMAC-SHA1.
    Rpc,
}

/// An answer: its HTTP status and body.
pub(crate) struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, as sent.
    pub body: String,
}

/// Where the call goes.
struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
}

fn endpoint(url: &str) -> Result<Endpoint> {
    let bad = |why: &str| {
        Error::Config(format!(
            "--endpoint {url:?}: {why}. Give http://HOST:PORT or https://HOST:PORT."
        ))
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("no http:// or https://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("only a host and port may follow the scheme"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.contains(':') || h.starts_with('[')) => {
            (h, p.parse().map_err(|_| bad("the port is not a number"))?)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Endpoint {
        tls,
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
    })
}

/// `Name=Value` pairs; `Name=@FILE` reads FILE.
fn params(given: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for p in given {
        let (name, value) = p.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "{p:?} is not Name=Value (CommonName=www.example.com)."
            ))
        })?;
        if name.is_empty() {
            return Err(Error::Config(format!("{p:?} has no name before '='.")));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(Error::Config(format!(
                "{name} is given twice; the service refuses a parameter sent twice."
            )));
        }
        let value = match value.strip_prefix('@') {
            Some(file) => {
                let bytes =
                    crate::files::read_regular(file.as_ref(), 1 << 20, &format!("{name}=@"))?;
                String::from_utf8(bytes)
                    .map_err(|_| Error::Config(format!("{name}=@{file} is not UTF-8 text.")))?
            }
            None => value.to_owned(),
        };
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

/// Makes the call; an answer with any status is Ok.
///
/// # Errors
/// `Config.Invalid` for bad arguments or an unreadable secret,
/// `SDK.ServerUnreachable` when no answer came.
pub(crate) fn call(args: &CallArgs) -> Result<Answer> {
    let target = endpoint(&args.endpoint)?;
    let version = match &args.api_version {
        Some(v) => v.clone(),
        None => ACTIONS
            .iter()
            .find(|(a, _, _)| *a == args.action)
            .map(|(_, v, _)| (*v).to_owned())
            .ok_or_else(|| {
                let known: Vec<&str> = ACTIONS.iter().map(|(a, _, _)| *a).collect();
                Error::Config(format!(
                    "unknown action {:?}: the service answers {}; give --api-version to call another.",
                    args.action,
                    known.join(", ")
                ))
            })?,
    };
    let secret = SecretString::from(
        crate::service::config::read_secret(
            args.secret_file
                .is_none()
                .then_some("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
            args.secret_file.as_deref(),
            "the access key secret (--secret-file or ALIBABA_CLOUD_ACCESS_KEY_SECRET)",
        )?
        .as_str(),
    );
    if args.access_key_id.is_empty()
        || !args
            .access_key_id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
    {
        return Err(Error::Config(
            "the access key id (--access-key-id or ALIBABA_CLOUD_ACCESS_KEY_ID) must be printable \
             ASCII without spaces, ',' or '='."
                .into(),
        ));
    }
    let params = params(&args.params)?;
    let scheme = match args.signature {
        SignatureArg::Acs3 => Scheme::Acs3,
        SignatureArg::Rpc => Scheme::Rpc,
    };
    let signed = signer::sign(
        scheme,
        &Call {
            action: &args.action,
            version: &version,
            params: &params,
            host: &target.authority,
            access_key_id: &args.access_key_id,
            secret: secret.expose_secret(),
        },
        &uuid::Uuid::new_v4().to_string(),
        &timestamp_now(),
    );
    let tls = match (target.tls, &args.ca_file) {
        (true, ca) => Some(tls_connector(ca.as_deref())?),
        (false, Some(_)) => {
            return Err(Error::Config(
                "--ca-file is for https:// endpoints only.".into(),
            ));
        }
        (false, None) => None,
    };
    let unreachable = |reason: String| Error::Unreachable {
        endpoint: args.endpoint.clone(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?;
    let timeout = Duration::from_secs(args.timeout);
    runtime
        .block_on(async {
            tokio::time::timeout(timeout, send(&target, tls, signed))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within {}s (--timeout); is the service busy or the address wrong?",
                        args.timeout
                    ))
                })
        })
        .map_err(unreachable)
}

fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
                .map_err(|e| Error::Config(format!("--ca-file {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Config(format!(
                    "--ca-file {}: no CA certificate in it (PEM CERTIFICATE blocks).",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One HTTP/1.1 exchange; the error is what to tell the operator.
async fn send(
    target: &Endpoint,
    tls: Option<tokio_rustls::TlsConnector>,
    signed: signer::Signed,
) -> std::result::Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect: {e}; is `hsm-csr serve` listening there?"))?;
    let mut request = hyper::Request::builder()
        .method(signed.method)
        .uri(&signed.path_and_query);
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let request = request
        .header("accept", "application/json")
        .header("user-agent", concat!("hsm-csr/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    match tls {
        Some(connector) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("{:?} is not a host name: {e}", target.host))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| tls_reason(&e))?;
            exchange(TokioIo::new(stream), request).await
        }
        None => exchange(TokioIo::new(tcp), request).await,
    }
}

async fn exchange<S>(
    io: TokioIo<S>,
    request: hyper::Request<Empty<Bytes>>,
) -> std::result::Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}; is this an hsm-csr serve endpoint (http vs https)?"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    driver.abort();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A TLS failure in plain words: most are the endpoint's certificate.
fn tls_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let hint = crate::error::tls::certificate_hint(&text, "--ca-file")
        .unwrap_or_else(|| "check that the endpoint speaks https".to_owned());
    format!("TLS handshake failed ({text}): {hint}.")
}

/// Runs `call` and prints the answer: the JSON on stdout, and for an error
/// answer `Code: Message` on stderr. The class is who has to act on an
/// error answer (None for 2xx).
///
/// # Errors
/// As [`call`].
pub(crate) fn run(args: &CallArgs) -> Result<Option<ErrorClass>> {
    let answer = call(args)?;
    let json: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
    match &json {
        Some(v) => println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| answer.body.clone())
        ),
        None => println!("{}", answer.body),
    }
    if (200..300).contains(&answer.status) {
        return Ok(None);
    }
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let code = field("Code").unwrap_or_else(|| format!("HTTP {}", answer.status));
    let message = field("Message").unwrap_or_default();
    let request_id = field("RequestId")
        .map(|id| format!(" (RequestId {id})"))
        .unwrap_or_default();
    let hint = match code.as_str() {
        "SignatureDoesNotMatch" => {
            " Check the secret (--secret-file or ALIBABA_CLOUD_ACCESS_KEY_SECRET) against the service's access key."
        }
        "InvalidAccessKeyId.NotFound" | "InvalidAccessKeyId" => {
            " Check --access-key-id (or ALIBABA_CLOUD_ACCESS_KEY_ID) against the service's [[service.access_keys]]."
        }
        "InvalidTimeStamp.Expired" => " Check this host's clock against the service's.",
        _ => "",
    };
    eprintln!("{code}: {message}{request_id}{hint}");
    Ok(Some(if answer.status < 500 {
        ErrorClass::Request
    } else {
        ErrorClass::Internal
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_a_scheme_a_host_and_a_port() {
        let e = endpoint("http://127.0.0.1:8080").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 8080));
        assert_eq!(e.authority, "127.0.0.1:8080");
        let e = endpoint("https://hsm.example.com/").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "hsm.example.com", 443)
        );
        let e = endpoint("http://[::1]:9").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http://a:b",
            "http://h/path",
            "http://u@h",
            "http://h?q",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_are_name_value_once_each() {
        let p = params(&["CommonName=a=b".into(), "SANs=".into()]).unwrap();
        assert_eq!(
            p,
            [
                ("CommonName".into(), "a=b".into()),
                ("SANs".into(), String::new())
            ]
        );
        assert!(params(&["CommonName".into()]).is_err());
        assert!(params(&["=x".into()]).is_err());
        assert!(params(&["A=1".into(), "A=2".into()]).is_err());
    }
}
