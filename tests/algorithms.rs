//! Key types, hashes and PSS, and the mechanism fallbacks, each checked by
//! openssl.

use crate::common::{Token, openssl_pub_md5, verified_text};

#[test]
fn every_key_type_and_signature_verifies() {
    let token = Token::new();
    let cases: [(&str, &[&str], &[&str]); 7] = [
        (
            "rsa-sha384",
            &["--hash", "sha384"],
            &["sha384WithRSAEncryption"],
        ),
        (
            "rsa-sha512",
            &["--hash", "sha512"],
            &["sha512WithRSAEncryption"],
        ),
        (
            "rsa-pss",
            &["--pss"],
            &[
                "rsassaPss",
                "Hash Algorithm: sha256",
                "Mask Algorithm: mgf1 with sha256",
                "Salt Length: 0x20",
            ],
        ),
        (
            "rsa-pss-sha384",
            &["--pss", "--hash", "sha384"],
            &["rsassaPss", "Hash Algorithm: sha384", "Salt Length: 0x30"],
        ),
        (
            "ec-p256",
            &["--key-type", "ec-p256"],
            &["ecdsa-with-SHA256", "id-ecPublicKey", "NIST CURVE: P-256"],
        ),
        (
            "ec-p384",
            &["--key-type", "ec-p384"],
            &["ecdsa-with-SHA384", "NIST CURVE: P-384"],
        ),
        (
            "ed25519",
            &["--key-type", "ed25519"],
            &[
                "Signature Algorithm: ED25519",
                "Public Key Algorithm: ED25519",
            ],
        ),
    ];
    for (case, flags, expect) in cases {
        let mut args = vec!["--common-name", "alg.example"];
        args.extend_from_slice(flags);
        let Some(run) = token.create_case(case, &args) else {
            continue;
        };
        let v = run.json();
        let csr = v["Csr"].as_str().unwrap();
        let text = verified_text(csr);
        for e in expect {
            assert!(
                text.contains(e),
                "{case} on {}: no {e:?} in\n{text}",
                token.name
            );
        }
        assert_eq!(
            v["PubMd5"].as_str().unwrap(),
            openssl_pub_md5(csr),
            "{case}"
        );
    }
}

/// A token without hash-and-sign mechanisms (openCryptoki, HSMs behind
/// some RPC layers): the host hashes, and the DigestInfo must be DER, not
/// the bare digest (pkcs11-provider issue 592).
#[test]
fn host_hash_fallbacks_make_valid_signatures() {
    let Some(token) = Token::private_softhsm("disables mechanisms in softhsm2.conf") else {
        return;
    };
    // SoftHSM skips the first entry of a deny list, hence the CKM_MD5 decoy.
    token.softhsm_conf_line(
        "slots.mechanisms = -CKM_MD5,CKM_SHA256_RSA_PKCS,CKM_SHA384_RSA_PKCS,CKM_SHA512_RSA_PKCS,\
         CKM_SHA256_RSA_PKCS_PSS,CKM_SHA384_RSA_PKCS_PSS,CKM_SHA512_RSA_PKCS_PSS",
    );
    for (flags, mechanism) in [
        (&["--hash", "sha256"][..], "CKM_RSA_PKCS"),
        (&["--hash", "sha512"][..], "CKM_RSA_PKCS"),
        (&["--pss"][..], "CKM_RSA_PKCS_PSS"),
        (&["--key-type", "ec-p384"][..], "CKM_ECDSA"),
    ] {
        let mut cmd = token.hsm_csr();
        cmd.env("HSM_CSR_LOG", "debug")
            .arg("create")
            .args(token.token_flags())
            .args(["--common-name", "fallback.example"])
            .args(flags);
        let run = crate::common::Run::of(&mut cmd).ok();
        assert!(
            run.stderr.contains(&format!("signing with {mechanism}\n")),
            "{flags:?}: {}",
            run.stderr
        );
        verified_text(run.json()["Csr"].as_str().unwrap());
    }
}

#[test]
fn pss_without_token_support_is_refused_before_keygen() {
    let Some(token) = Token::private_softhsm("disables mechanisms in softhsm2.conf") else {
        return;
    };
    token.softhsm_conf_line(
        "slots.mechanisms = -CKM_MD5,CKM_RSA_PKCS_PSS,CKM_SHA256_RSA_PKCS_PSS,CKM_SHA384_RSA_PKCS_PSS,CKM_SHA512_RSA_PKCS_PSS",
    );
    let run = token.create(&["--common-name", "pss.example", "--pss"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("Token.MechanismUnsupported: token \"test-token\" does not support RSASSA-PSS with sha256"),
        "{}",
        run.stderr
    );
    assert!(token.keys().is_empty(), "no key may be made");
    // PKCS#1 v1.5 still works on that token.
    token.create(&["--common-name", "pss.example"]).ok();
}

#[test]
fn combinations_that_make_no_sense_are_refused() {
    let token = Token::new();
    for (args, message) in [
        (
            &["--key-type", "ec-p256", "--pss"][..],
            "--pss applies to RSA keys",
        ),
        (
            &["--key-type", "ed25519", "--hash", "sha256"][..],
            "ed25519 has its hash built in",
        ),
        (
            &["--key-type", "ec-p256", "--hash", "sha512"][..],
            "signs with sha256 or sha384",
        ),
    ] {
        let mut all = vec!["--common-name", "x.example"];
        all.extend_from_slice(args);
        let run = token.create(&all);
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    assert!(token.keys().is_empty());
}
