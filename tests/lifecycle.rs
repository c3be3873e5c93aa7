//! After the CSR: listing and deleting keys, storing the certificate a CA
//! issued next to its key, and using the key from OpenSSL by its URI.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{Token, openssl};

#[test]
fn keys_list_show_and_delete() {
    let token = Token::new();
    let a = token.create(&["--common-name", "a.example"]).ok().json();
    let b = token
        .create(&["--common-name", "b.example", "--key-size", "3072"])
        .ok()
        .json();
    let keys = token.listed();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (resp, kt) in [(&a, "rsa-2048"), (&b, "rsa-3072")] {
        let k = keys
            .iter()
            .find(|k| k["PubMd5"] == resp["PubMd5"])
            .expect("listed by PubMd5");
        assert_eq!(k["KeyUri"], resp["KeyUri"]);
        assert_eq!(k["KeyType"], kt);
        assert_eq!(k["HasPrivateKey"], true);
        assert_eq!(k["Certificate"], false);
    }

    // KEY may be a PubMd5, an id, a label or a URI; each finds the same key.
    let id = keys.iter().find(|k| k["PubMd5"] == a["PubMd5"]).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let label = format!("{}a.example", token.prefix);
    for key in [
        a["PubMd5"].as_str().unwrap(),
        &id,
        &label,
        a["KeyUri"].as_str().unwrap(),
    ] {
        let run = token
            .run(&["keys", "show", key], &["--format", "json"])
            .ok();
        let shown: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0]["PubMd5"], a["PubMd5"], "{key}");
    }
    let table = token.run(&["keys", "list"], &[]).ok().stdout;
    assert!(table.starts_with("LABEL"), "{table}");
    assert!(table.contains(a["PubMd5"].as_str().unwrap()), "{table}");

    let run = token.run(&["keys", "show", "no-such-key"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("Key.NotFound"), "{}", run.stderr);

    let run = token.run(&["keys", "delete", &id], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(token.keys().len(), 4);

    let gone = token.run(&["keys", "delete", &id], &["--yes"]).ok();
    assert_eq!(
        gone.stdout.trim(),
        format!(
            "deleted {}a.example (CKA_ID {id}, rsa-2048, PubMd5 {}): private and public key",
            token.prefix,
            a["PubMd5"].as_str().unwrap()
        ),
        "keys delete says what it deleted"
    );
    let left = token.listed();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["PubMd5"], b["PubMd5"]);
    assert_eq!(token.keys().len(), 2, "both objects of the pair are gone");
}

#[test]
fn same_label_twice_is_ambiguous() {
    let token = Token::new();
    token.create(&["--common-name", "twin.example"]).ok();
    token.create(&["--common-name", "twin.example"]).ok();
    let run = token.run(
        &["keys", "show", &format!("{}twin.example", token.prefix)],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("Key.Ambiguous"), "{}", run.stderr);
}

/// A throw-away CA in `dir`; returns the certificate it issues for `csr`.
fn issue(dir: &Path, csr: &str) -> Vec<u8> {
    issue_for_days(dir, csr, 1)
}

/// [`issue`], for `days` days.
fn issue_for_days(dir: &Path, csr: &str, days: u32) -> Vec<u8> {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=hsm-csr test CA",
                "-days",
                "2",
            ])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let csr_file = dir.join("req.pem");
    std::fs::write(&csr_file, csr).unwrap();
    let days = days.to_string();
    let args = [
        "x509",
        "-req",
        "-days",
        &days,
        "-copy_extensions",
        "copy",
        "-set_serial",
        "0x2a",
        "-in",
        csr_file.to_str().unwrap(),
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
    ];
    openssl(&args, b"")
}

#[test]
fn attach_cert_stores_the_cas_certificate_beside_its_key() {
    let token = Token::new();
    let v = token
        .create(&["--common-name", "www.attach.example"])
        .ok()
        .json();
    let cert = issue(token.dir(), v["Csr"].as_str().unwrap());
    let cert_file = token.dir().join("cert.pem");
    std::fs::write(&cert_file, &cert).unwrap();
    let cert_arg = ["--cert", cert_file.to_str().unwrap()];

    let run = token
        .run(
            &["attach-cert"],
            &[
                &cert_arg[..],
                &["--domain", "www.attach.example", "--format", "json"],
            ]
            .concat(),
        )
        .ok();
    let attached: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(attached["Stored"], true);
    assert_eq!(attached["PubMd5"], v["PubMd5"]);
    assert_eq!(attached["KeyUri"], v["KeyUri"]);

    // OpenSC sees the certificate under the key's CKA_ID.
    let id = token.listed()[0]["Id"].as_str().unwrap().to_owned();
    let ours = certificates_with_id(&token, &id);
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].contains("www.attach.example"), "{ours:?}");
    assert_eq!(token.listed()[0]["Certificate"], true);

    // Idempotent, in PEM or DER.
    let der = token.dir().join("cert.der");
    openssl(
        &["x509", "-outform", "DER", "-out", der.to_str().unwrap()],
        &cert,
    );
    let again = token
        .run(
            &["attach-cert"],
            &["--cert", der.to_str().unwrap(), "--format", "json"],
        )
        .ok();
    assert_eq!(
        serde_json::from_str::<Value>(&again.stdout).unwrap()["Stored"],
        false
    );
    assert_eq!(certificates_with_id(&token, &id).len(), 1);

    // The API's errors.
    let run = token.run(
        &["attach-cert"],
        &[&cert_arg[..], &["--domain", "other.example"]].concat(),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("Certificate.MissMatch"),
        "{}",
        run.stderr
    );
    // The CA's own certificate is not worth storing, whoever's key it is.
    let ca = token.dir().join("ca.pem");
    let run = token.run(&["attach-cert"], &["--cert", ca.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("Certificate.IsCA"), "{}", run.stderr);
    let csr = token.dir().join("req.pem");
    let run = token.run(&["attach-cert"], &["--cert", csr.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("Certificate.FormatError"),
        "{}",
        run.stderr
    );

    // Deleting the key takes its certificate with it.
    token.run(&["keys", "delete", &id], &["--yes"]).ok();
    assert_eq!(certificates_with_id(&token, &id).len(), 0);
}

#[test]
fn openssl_signs_with_the_printed_key_uri() {
    let token = Token::new();
    let v = token
        .create(&["--common-name", "engine.example"])
        .ok()
        .json();
    let dir = token.dir();
    let engine = ["/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libengine-pkcs11-openssl (scripts/test.sh installs it)");
    let conf = dir.join("openssl.cnf");
    std::fs::write(
        &conf,
        format!(
            "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = pkcs11\n\
             [pkcs11]\nengine_id = pkcs11\ndynamic_path = {engine}\nMODULE_PATH = {}\ninit = 0\n",
            token.module
        ),
    )
    .unwrap();
    let data = dir.join("data");
    std::fs::write(&data, b"signed through OpenSSL's pkcs11 engine").unwrap();
    let sig = dir.join("sig");
    let key = format!("{}?pin-value=1234", v["KeyUri"].as_str().unwrap());
    if token.name == "tpm2" {
        // `-engine` makes the pkcs11 engine OpenSSL's default RSA for the
        // whole process, and tpm2-tss inside the module then fails its own
        // session-salt encryption through it ("Could not create rsa key").
        crate::common::skip_part(
            &token,
            "OpenSSL's pkcs11 engine and tpm2-tss clash in one process; signed with pkcs11-tool by CKA_ID instead",
        );
        let uri = v["KeyUri"].as_str().unwrap();
        let id = uri
            .split(';')
            .find_map(|p| p.strip_prefix("id="))
            .unwrap()
            .replace('%', "");
        token.pkcs11_tool(&[
            "--sign",
            "--id",
            &id,
            "-m",
            "SHA256-RSA-PKCS",
            "-i",
            data.to_str().unwrap(),
            "-o",
            sig.to_str().unwrap(),
        ]);
    } else {
        let out = token
            .openssl()
            .env("OPENSSL_CONF", &conf)
            .args([
                "dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine", "-sign", &key, "-out",
            ])
            .arg(&sig)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl dgst -sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pubkey = dir.join("pub.pem");
    std::fs::write(
        &pubkey,
        openssl(
            &["req", "-pubkey", "-noout"],
            v["Csr"].as_str().unwrap().as_bytes(),
        ),
    )
    .unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(&sig)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The certificate objects `pkcs11-tool` lists with CKA_ID `id` (hex). It
/// lists every certificate whatever `--id` says, and a shared token holds
/// other tests' certificates too.
fn certificates_with_id(token: &Token, id: &str) -> Vec<String> {
    token
        .pkcs11_tool(&["--list-objects", "--type", "cert"])
        .split("Certificate Object")
        .filter(|c| {
            c.lines()
                .any(|l| l.trim().strip_prefix("ID:").map(str::trim) == Some(id))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn serve_metrics_count_certificates_by_days_left_without_a_series_per_name() {
    let Some(token) = Token::private_softhsm("counts every certificate on the token") else {
        return;
    };
    let mut ends = Vec::new();
    for (name, days) in [("soon.expiry.example", 3), ("later.expiry.example", 40)] {
        let v = token
            .create(&["--common-name", name, "--key-type", "ec-p256"])
            .ok()
            .json();
        let cert = issue_for_days(token.dir(), v["Csr"].as_str().unwrap(), days);
        let file = token.dir().join(format!("{name}.pem"));
        std::fs::write(&file, &cert).unwrap();
        token
            .run(&["attach-cert"], &["--cert", file.to_str().unwrap()])
            .ok();
        let end = openssl(&["x509", "-noout", "-enddate"], &cert);
        let end = String::from_utf8(end).unwrap();
        let out = Command::new("date")
            .args([
                "-u",
                "+%s",
                "-d",
                end.trim().trim_start_matches("notAfter="),
            ])
            .output()
            .unwrap();
        ends.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    // A key without a certificate counts nowhere.
    token
        .create(&[
            "--common-name",
            "none.expiry.example",
            "--key-type",
            "ec-p256",
        ])
        .ok();
    let server = crate::common::server::Server::start(&token, "ec-p256", "");
    // The first pass over every key runs as serve starts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let metrics = loop {
        let m = server.get("/metrics").unwrap();
        if m.contains("hsm_csr_certificate_earliest_expiry_seconds") {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for (range, n) in [
        ("expired", 0),
        ("0-1", 0),
        ("1-7", 1),
        ("7-30", 0),
        ("30-90", 1),
        ("90+", 0),
    ] {
        let line = format!("hsm_csr_certificates{{days_left=\"{range}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    let earliest = format!("hsm_csr_certificate_earliest_expiry_seconds {}\n", ends[0]);
    assert!(metrics.contains(&earliest), "{earliest}\n{metrics}");
    // No name of a certificate in the exposition.
    assert!(!metrics.contains("expiry.example"), "{metrics}");
    server.stop();
}
