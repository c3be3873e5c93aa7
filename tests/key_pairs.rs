//! What is left on the token: the key pair's attributes, and nothing at all
//! after a failure.

use std::process::Stdio;

use crate::common::{Run, Token};

#[test]
fn private_key_is_sensitive_and_never_extractable() {
    let token = Token::new();
    let v = token.create(&["--common-name", "sec.example"]).ok().json();
    let keys = token.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let private = keys.iter().find(|k| k["class"] == "private").unwrap();
    let public = keys.iter().find(|k| k["class"] == "public").unwrap();
    for attr in [
        "sensitive",
        "always_sensitive",
        "never_extractable",
        "token",
        "private",
        "sign",
    ] {
        assert_eq!(private[attr], true, "{attr}: {private}");
    }
    assert_eq!(private["extractable"], false, "{private}");
    // Refused: SENSITIVE where the token holds the value (SoftHSM), or
    // TYPE_INVALID where it never has it in the clear (a TPM's wrapped key).
    let refusal = private["private_exponent"].as_str().unwrap();
    if token.is_private_softhsm() {
        assert_eq!(refusal, "CKR_ATTRIBUTE_SENSITIVE", "{private}");
        // What the crash tests tell a torn object by.
        assert_eq!(private["complete"], true, "{private}");
    } else {
        assert!(
            ["CKR_ATTRIBUTE_SENSITIVE", "CKR_ATTRIBUTE_TYPE_INVALID"].contains(&refusal),
            "{private}"
        );
    }

    // One pair: same 16-byte CKA_ID and label on both halves, as in the URI.
    let id = private["id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(public["id"], id);
    let label = format!("{}sec.example", token.prefix);
    assert_eq!(private["label"], label.as_str());
    assert_eq!(public["label"], label.as_str());
    let uri = v["KeyUri"].as_str().unwrap();
    let uri_id: String = uri
        .split(';')
        .find_map(|p| p.strip_prefix("id="))
        .unwrap()
        .replace('%', "");
    assert_eq!(uri_id, id);
    assert!(
        uri.starts_with(&format!("pkcs11:token={};", token.label)),
        "{uri}"
    );
    assert!(uri.ends_with(";type=private"), "{uri}");

    // OpenSC's view of the same key.
    let listing = token.pkcs11_tool(&["--list-objects", "--type", "privkey", "--id", id]);
    assert!(listing.contains("sensitive"), "{listing}");
    assert!(listing.contains("never extractable"), "{listing}");
}

#[test]
fn each_request_makes_its_own_key_pair() {
    let token = Token::new();
    let a = token.create(&["--common-name", "same.example"]).ok().json();
    let b = token.create(&["--common-name", "same.example"]).ok().json();
    assert_ne!(a["PubMd5"], b["PubMd5"]);
    assert_ne!(a["KeyUri"], b["KeyUri"]);
    assert_eq!(token.keys().len(), 4);
}

#[test]
fn failure_after_key_generation_leaves_no_key_behind() {
    let token = Token::new();
    token.create(&["--common-name", "kept.example"]).ok();
    let before = token.keys();
    assert_eq!(before.len(), 2);
    // The response cannot be delivered: stdout's reader is gone before the
    // key pair exists (keygen takes far longer than this drop), so the
    // write fails after C_GenerateKeyPair.
    let mut child = token
        .hsm_csr()
        .arg("create")
        .args(token.token_flags())
        .args(["--label-prefix", &token.prefix])
        .args(["--common-name", "lost.example", "--format", "pem"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Internal.Error: could not write the response"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("removed from the token"),
        "{}",
        run.stderr
    );
    assert_eq!(token.keys(), before, "the token's keys changed");
}

#[test]
fn unwritable_out_file_is_refused_before_keygen() {
    let token = Token::new();
    let run = token.create(&[
        "--common-name",
        "x.example",
        "--out",
        "/nonexistent-dir/req.pem",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("Config.Invalid: cannot write --out /nonexistent-dir/req.pem"),
        "{}",
        run.stderr
    );
    assert!(token.keys().is_empty());
}

#[test]
fn concurrent_create_processes_on_one_token_all_succeed() {
    // SoftHSM rewrites its token files on every key; other processes can
    // catch them half-written. hsm-csr looks again instead of failing.
    let Some(token) = Token::private_softhsm("three processes at once on one token") else {
        return;
    };
    for round in 0..6 {
        let children: Vec<_> = (0..3)
            .map(|i| {
                token
                    .hsm_csr()
                    .arg("create")
                    .args(token.token_flags())
                    .args(["--label-prefix", &token.prefix, "--format", "pem"])
                    .args(["--common-name", &format!("c{round}-{i}.example")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(token.keys().len(), 2 * 18);
}

#[test]
fn a_key_being_made_is_one_undelivered_pair_that_no_prune_removes() {
    let Some(token) =
        Token::private_softhsm("holds create between keygen and delivery with strace")
    else {
        return;
    };
    // The audit log's opens take 4 s: the key stays made and undelivered
    // that long (its private key marked, its public key under its final
    // CKA_ID).
    let audit = token.dir().join("audit.jsonl");
    let config = token.dir().join("slow-audit.toml");
    std::fs::write(
        &config,
        format!(
            "[key]\nlabel_prefix = \"{}\"\ntype = \"ec-p256\"\n[audit]\npath = \"{}\"\n",
            token.prefix,
            audit.display()
        ),
    )
    .unwrap();
    let mut cmd = token.hsm_csr();
    cmd.arg("create")
        .args(token.token_flags())
        .arg("--config")
        .arg(&config)
        .args(["--common-name", "slow.example"]);
    let child = crate::common::wrapped(
        cmd,
        &crate::common::delaying("openat", 4_000_000, Some(&audit)),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let in_flight = loop {
        let listed = token.listed();
        if let Some(k) = listed.iter().find(|k| k.get("UndeliveredBy").is_some()) {
            break k.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no undelivered key showed: {listed:?}"
        );
        // Each look is a process logging in to the token: not too often,
        // beside the rest of the suite.
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_eq!(in_flight["HasPrivateKey"], true, "{in_flight}");
    assert_eq!(
        in_flight["HasPublicKey"], true,
        "one pair, not two lone halves: {in_flight}"
    );
    assert_eq!(token.listed().len(), 1, "{:?}", token.listed());
    // Its process runs: neither kind of prune touches it.
    token
        .run(
            &["keys", "prune"],
            &["--orphans", "--yes", "--config", config.to_str().unwrap()],
        )
        .ok();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = token.listed();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].get("UndeliveredBy").is_none(), "{listed:?}");
    assert_eq!(token.keys().len(), 2);
}
