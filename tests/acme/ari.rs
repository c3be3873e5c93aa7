//! `acme renew` with ACME Renewal Information (RFC 9773), against
//! acme2certifier: renewed inside the CA's window and not before, the
//! window asked for again only after its Retry-After, the new order naming
//! the certificate it replaces, and the certificate identifier the same as
//! an independent client computes.

use super::{account, acme, http_01_anywhere, objects, unix};
use crate::common::Token;
use crate::common::a2c::{A2cOptions, Acme2Certifier, python};

/// The RFC 9773 identifier of the PEM certificate `pem`, as Python's `acme`
/// package computes it, and its notBefore.
fn independent_id(pem: &str) -> (String, u64) {
    let out = std::process::Command::new(python())
        .args([
            "-c",
            "import sys\n\
             from cryptography import x509\n\
             from acme.client import _renewal_info_path_component as cert_id\n\
             c = x509.load_pem_x509_certificate(sys.stdin.buffer.read())\n\
             print(cert_id(c), int(c.not_valid_before_utc.timestamp()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(pem.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (id, not_before) = text.trim().split_once(' ').expect("id and notBefore");
    (id.to_owned(), not_before.parse().unwrap())
}

#[test]
fn renewal_follows_the_cas_window_and_its_retry_after() {
    let Some(token) = Token::private_softhsm("counts the token's objects") else {
        return;
    };
    // Six-hour certificates; the window is 30 minutes from 20% of the life
    // (72 minutes) on: far from the third-of-life rule (3 to 4 hours).
    let ca = Acme2Certifier::start(&A2cOptions {
        lifetime: "6h",
        window_start_percent: 20,
        window_length: Some("30m"),
        retry_after_secs: 600,
        profiles: &[],
    });
    let responder = http_01_anywhere();
    let chain = token.dir().join("first.pem");
    let first = acme(
        &token,
        &ca,
        "issue",
        &[
            "--common-name",
            "ari.example.test",
            "--http-01",
            &responder,
            "--chain-out",
            chain.to_str().unwrap(),
        ],
    )
    .ok()
    .json();
    let pem = std::fs::read_to_string(&chain).unwrap();
    let (id, not_before) = independent_id(&pem);
    let (start, end) = (not_before + 72 * 60, not_before + 102 * 60);

    let asked = |ca: &Acme2Certifier| {
        ca.requests()
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("renewal-info"))
            })
            .map(|r| r["path"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let renew = |now: Option<u64>| {
        let mut args = vec!["--http-01".to_owned(), responder.clone()];
        if let Some(now) = now {
            args.extend(["--now".to_owned(), now.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        acme(&token, &ca, "renew", &args)
    };

    // Not due: the time drawn is inside the CA's window.
    let run = renew(None);
    assert_eq!(run.code, 10, "{}", run.stderr);
    let at = unix(run.json()["NextRenewal"].as_str().unwrap());
    assert!(
        (start..=end).contains(&at),
        "{at} outside the CA's window {start}..={end}"
    );
    // The certificate named as Python's acme package names it.
    assert_eq!(asked(&ca), [format!("/acme/renewal-info/{id}")]);

    // Within Retry-After (600 s): not asked again, to the second.
    let run = renew(None);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(asked(&ca).len(), 1, "asked again before Retry-After");
    let state = format!("{}.ari.json", account(&token, &ca).display());
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let ask_after = kept[&id]["AskAfter"].as_u64().unwrap();
    let (w_start, w_end) = (
        kept[&id]["Window"][0].as_u64().unwrap(),
        kept[&id]["Window"][1].as_u64().unwrap(),
    );
    assert!(
        w_start.abs_diff(start) <= 60 && w_end.abs_diff(end) <= 60,
        "{kept}"
    );
    // The time drawn is the certificate's own share of the window: the MD5
    // of its DER (as openssl computes it), its first 53 bits a fraction.
    let der = crate::common::openssl(&["x509", "-outform", "DER"], pem.as_bytes());
    let md5 = crate::common::openssl(&["md5", "-r"], &der);
    let hex = String::from_utf8(md5).unwrap();
    let top = u64::from_str_radix(&hex[..16], 16).unwrap() >> 11;
    let share = top as f64 / (1u64 << 53) as f64;
    let expected = w_start + ((w_end - w_start) as f64 * share).floor() as u64;
    assert_eq!(at, expected, "share {share} of {w_start}..{w_end}");
    // Retry-After (600 s) from the first run, a few seconds after issuance.
    assert!(
        (not_before + 540..not_before + 720).contains(&ask_after),
        "{kept}"
    );
    let run = renew(Some(ask_after - 1));
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(asked(&ca).len(), 1, "asked again before Retry-After");
    let mode = std::fs::metadata(&state).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // One second before the time drawn (past the Retry-After, so asked
    // again): not due. The share the time is drawn at is the certificate's
    // own: the MD5 of its DER, as a fraction.
    let run = renew(Some(at - 1));
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert_eq!(asked(&ca).len(), 2, "asked again once Retry-After passed");
    assert_eq!(objects(&token), (1, 1));

    // At the time drawn: renewed, the order naming what it replaces.
    let run = renew(Some(at));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["Renewed"][0]["Replaces"]["KeyUri"], first["KeyUri"]);
    let orders: Vec<_> = ca
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/acme/neworders")
        .collect();
    assert_eq!(orders[0]["payload"].get("replaces"), None, "{orders:?}");
    assert_eq!(orders[1]["payload"]["replaces"], id.as_str(), "{orders:?}");
    // acme2certifier 0.46 does not echo `replaces` in the order (it ignores
    // it), which instant-acme refuses: ordered again without it.
    assert_eq!(orders.len(), 3, "{orders:?}");
    assert_eq!(orders[2]["payload"].get("replaces"), None, "{orders:?}");
    assert!(
        run.stderr.contains("did not take the order as replacing"),
        "{}",
        run.stderr
    );
    assert_eq!(objects(&token), (2, 2));
}
