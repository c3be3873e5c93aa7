//! `acme renew` and `acme status` across every configured token
//! ([[tokens]]), with `--jobs` renewals at once on a token, each on a
//! session of its own, sharing one http-01 address.

use super::{acme, acme_flags, http_01_anywhere, unix};
use crate::common::a2c::{A2cOptions, Acme2Certifier};
use crate::common::{PIN, Token};

/// The deploy hook's `start`/`end` lines as intervals; how many overlap at
/// most.
fn most_at_once(log: &str) -> usize {
    let mut events: Vec<(f64, i32)> = log
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(what, t)| {
            (
                t.trim().parse::<f64>().unwrap(),
                if what == "start" { 1 } else { -1 },
            )
        })
        .collect();
    events.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut most) = (0, 0);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

#[test]
fn renew_covers_every_configured_token_with_jobs_at_once() {
    let Some(token) = Token::private_softhsm("adds a second token to its store") else {
        return;
    };
    // A second token in the same SoftHSM2 store.
    let made = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "token-b"])
        .args(["--pin", PIN, "--so-pin", "12345678"])
        .env("SOFTHSM2_CONF", token.conf())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let config = token.dir().join("two.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\npath = \"{audit}\"\n\n[[tokens]]\nmodule = \"{m}\"\nlabel = \"{a}\"\n\n[[tokens]]\nmodule = \"{m}\"\nlabel = \"token-b\"\n",
            audit = token.dir().join("audit.jsonl").display(),
            m = token.module,
            a = token.label
        ),
    )
    .unwrap();
    let ca = Acme2Certifier::start(&A2cOptions::default());
    let responder = http_01_anywhere();
    let mut ends = Vec::new();
    for i in 0..4 {
        let issued = acme(
            &token,
            &ca,
            "issue",
            &[
                "--common-name",
                &format!("a{i}.example.test"),
                "--key-type",
                "ec-p256",
                "--http-01",
                &responder,
            ],
        )
        .ok()
        .json();
        ends.push(unix(issued["NotAfter"].as_str().unwrap()));
    }
    let on_b = |sub: &str, args: &[&str]| {
        let mut cmd = token.hsm_csr();
        cmd.args(["acme", sub])
            .args(["--config", config.to_str().unwrap(), "--token", "token-b"])
            .args(acme_flags(&token, &ca))
            .args(args);
        crate::common::Run::of(&mut cmd)
    };
    for i in 0..2 {
        on_b(
            "issue",
            &[
                "--common-name",
                &format!("b{i}.example.test"),
                "--key-type",
                "ec-p256",
                "--http-01",
                &responder,
            ],
        )
        .ok();
    }

    // One run over both tokens, three renewals at once on each; a deploy
    // hook that takes a second shows they overlapped.
    let hooks = token.dir().join("hooks.log");
    let hook = format!(
        "echo start $(date +%s.%N) >> {h}; sleep 1; echo end $(date +%s.%N) >> {h}",
        h = hooks.display()
    );
    let late = (ends.iter().max().unwrap() - 60).to_string();
    let mut cmd = token.hsm_csr();
    let chains = tempfile::tempdir().unwrap();
    cmd.args(["acme", "renew", "--config", config.to_str().unwrap()])
        .args(acme_flags(&token, &ca))
        .args(["--http-01", &responder, "--now", &late, "--jobs", "3"])
        .args(["--chain-dir", chains.path().to_str().unwrap()])
        .args(["--deploy-hook", &hook]);
    let run = crate::common::Run::of(&mut cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    let renewed: Vec<&str> = report["Renewed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["KeyUri"].as_str().unwrap())
        .collect();
    assert_eq!(renewed.len(), 6, "{report}");
    assert_eq!(
        renewed
            .iter()
            .filter(|u| u.contains(&format!("token={};", token.label)))
            .count(),
        4
    );
    assert_eq!(
        renewed
            .iter()
            .filter(|u| u.contains("token=token-b;"))
            .count(),
        2
    );
    assert_eq!(report["Failed"], serde_json::json!([]));
    assert!(
        !run.stderr.contains("could not be marked"),
        "{}",
        run.stderr
    );
    // Every replaced pair is marked so, whichever session renewed it, on
    // either token, for keys prune --replaced-after.
    for on_token in [None, Some("token-b")] {
        let mut cmd = token.hsm_csr();
        cmd.args(["keys", "list", "--format", "json"]);
        match on_token {
            None => cmd.args(token.token_flags()),
            Some(label) => cmd.args(["--module", &token.module, "--token", label]),
        };
        let keys = crate::common::Run::of(&mut cmd).ok().json();
        let replaced = keys
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k.get("Replaced").is_some())
            .count();
        assert_eq!(replaced, if on_token.is_none() { 4 } else { 2 }, "{keys}");
    }
    // The trail says which pair replaced which.
    let trail = std::fs::read_to_string(token.dir().join("audit.jsonl")).unwrap();
    let replaced: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "replaced")
        .collect();
    assert_eq!(replaced.len(), 6, "{trail}");
    for e in &replaced {
        assert!(renewed.contains(&e["replaced_by"].as_str().unwrap()), "{e}");
        assert!(!renewed.contains(&e["key_uri"].as_str().unwrap()), "{e}");
    }
    let log = std::fs::read_to_string(&hooks).unwrap();
    assert_eq!(log.lines().count(), 12, "{log}");
    assert!(most_at_once(&log) >= 2, "no two renewals at once:\n{log}");

    // Each token's chains in a directory of its own.
    for (dir, name) in [(token.label.as_str(), "a3"), ("token-b", "b1")] {
        let chain = chains
            .path()
            .join(dir)
            .join(format!("{name}.example.test.pem"));
        assert!(chain.exists(), "{}", chain.display());
    }

    // Status lists both tokens' certificates, each with its token.
    let mut cmd = token.hsm_csr();
    cmd.args(["acme", "status", "--config", config.to_str().unwrap()])
        .args(["--account", super::account(&token, &ca).to_str().unwrap()])
        .args(["--label-prefix", &token.prefix, "--format", "json"]);
    let status = crate::common::Run::of(&mut cmd).ok().json();
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 6, "{status}");
    assert_eq!(rows.iter().filter(|r| r["Token"] == "token-b").count(), 2);
    assert!(rows.iter().all(|r| r["Due"] == false), "{status}");

    // A configured token that is not there is reported; the others are
    // looked at all the same.
    let three = token.dir().join("three.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &three,
        format!(
            "{text}\n[[tokens]]\nmodule = \"{}\"\nlabel = \"missing\"\n",
            token.module
        ),
    )
    .unwrap();
    let mut cmd = token.hsm_csr();
    cmd.args(["acme", "renew", "--config", three.to_str().unwrap()])
        .args(acme_flags(&token, &ca))
        .args(["--http-01", &responder]);
    let run = crate::common::Run::of(&mut cmd);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("token missing: Token.NotFound"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["NotDue"], 6, "{}", run.stdout);
}
