use super::super::Config;
use proptest::prelude::*;

/// The numeric settings, with their documented ranges.
const NUMERIC: [(&str, &str, u64, u64); 15] = [
    ("service", "rate_limit", 1, 100_000),
    ("service", "max_body_bytes", 1024, 16 << 20),
    ("service", "max_header_bytes", 1024, 1 << 20),
    ("service", "request_timeout_ms", 1, 3_600_000),
    ("service", "timestamp_window_s", 1, 86_400),
    ("service", "shutdown_timeout_ms", 0, 3_600_000),
    ("service", "workers", 0, 1024),
    ("service", "header_timeout_ms", 100, 300_000),
    ("service", "body_timeout_ms", 100, 300_000),
    ("service", "idle_timeout_ms", 100, 3_600_000),
    ("service", "max_connections", 1, 1_000_000),
    ("pool", "size", 0, 100_000),
    ("service", "max_certificates_per_key", 1, 64),
    ("token", "max_objects", 8, 10_000_000),
    ("retention", "every_s", 60, 604_800),
];

#[test]
fn the_overflowing_window_of_the_issue_is_refused() {
    let e = Config::parse("[service]\ntimestamp_window_s = 18446744073709551615\n").unwrap_err();
    assert_eq!(
        e,
        "[service] timestamp_window_s must be between 1 and 86400 (s)."
    );
}

#[test]
fn every_bound_is_inclusive() {
    for (table, key, min, max) in NUMERIC {
        let parse = |v: u64| Config::parse(&format!("[{table}]\n{key} = {v}\n"));
        parse(min).unwrap_or_else(|e| panic!("{key} = {min}: {e}"));
        parse(max).unwrap_or_else(|e| panic!("{key} = {max}: {e}"));
        if min > 0 {
            assert!(parse(min - 1).unwrap_err().contains(key), "{key}");
        }
        assert!(parse(max + 1).unwrap_err().contains(key), "{key}");
    }
}

proptest! {
    /// Any number, for any numeric setting: accepted exactly when in
    /// range, otherwise refused naming the setting; never a panic.
    #[test]
    fn numbers_in_range_or_refused(i in 0..NUMERIC.len(), v in any::<u64>()) {
        let (table, key, min, max) = NUMERIC[i];
        // TOML integers are i64.
        let v = v % (i64::MAX as u64);
        match Config::parse(&format!("[{table}]\n{key} = {v}\n")) {
            Ok(_) => prop_assert!((min..=max).contains(&v)),
            Err(e) => prop_assert!(
                !(min..=max).contains(&v) && e.contains(key),
                "{key} = {v}: {e}"
            ),
        }
    }
}

#[test]
fn subject_defaults_are_checked_like_requests() {
    let e = Config::parse("[subject.defaults]\ncountry = \"CHN\"\n").unwrap_err();
    assert!(e.starts_with("[subject.defaults]: Country"), "{e}");
    let e = Config::parse("[subject.defaults]\ncity = \"a\\u0007b\"\n").unwrap_err();
    assert!(e.contains("City"), "{e}");
}

#[allow(
    clippy::too_many_lines,
    reason = "one table of configurations and their verdicts"
)]
#[test]
fn service_names_and_grants() {
    let key = |body: &str| {
        Config::parse(&format!(
            "[[service.access_keys]]\n{body}\n[[service.access_keys]]\nid = \"B\"\nsecret_env = \"S\"\nactions = [\"*\"]\n"
        ))
    };
    assert!(key("id = \"A\"\nsecret_env = \"S\"\nactions = [\"*\"]").is_ok());
    let e = key("id = \"B\"\nsecret_env = \"S\"\nactions = []").unwrap_err();
    assert!(e.contains("given twice"), "{e}");
    let e = key("id = \"A B\"\nsecret_env = \"S\"\nactions = []").unwrap_err();
    assert!(e.contains("characters from A-Z"), "{e}");
    // Numbered from 1, as an operator counts the tables.
    assert!(e.contains("number 1:"), "{e}");
    let long = "a".repeat(65);
    let e = key(&format!(
        "id = \"{long}\"\nsecret_env = \"S\"\nactions = []"
    ))
    .unwrap_err();
    assert!(e.contains("1 to 64"), "{e}");
    assert!(
        key(&format!(
            "id = \"{}\"\nsecret_env = \"S\"\nactions = []",
            &long[1..]
        ))
        .is_ok()
    );
    let e = key("id = \"local\"\nsecret_env = \"S\"\nactions = []").unwrap_err();
    assert!(e.contains("reserved"), "{e}");
    let all = "id = \"A\"\nsecret_env = \"S\"\nactions = [\"*\", \"hsm-csr:AllKeys\"]";
    assert!(key(all).is_ok());
    for (setting, ok) in [
        ("max_keys = 0", false),
        ("max_keys = 1", true),
        ("max_keys = 1000000", true),
        ("max_keys = 1000001", false),
        ("weight = 0", false),
        ("weight = 1", true),
        ("weight = 100", true),
        ("weight = 101", false),
    ] {
        let got = key(&format!(
            "id = \"A\"\nsecret_env = \"S\"\nactions = []\n{setting}"
        ));
        assert_eq!(got.is_ok(), ok, "{setting}: {got:?}");
    }
    let e = key("id = \"A\"\nactions = []").unwrap_err();
    assert!(e.contains("exactly one of"), "{e}");
    let e = key("id = \"A\"\nsecret_env = \"S\"\nsecret_file = \"f\"\nactions = []").unwrap_err();
    assert!(e.contains("exactly one of"), "{e}");
    let e = key("id = \"A\"\nsecret_env = \"S\"\nactions = [\"cdn:DeleteCdnDomain\"]").unwrap_err();
    assert!(e.contains("unknown action"), "{e}");
    for (body, says) in [
        (
            "redis_url = \"redis://:hunter2@127.0.0.1/\"",
            "must not carry a password",
        ),
        (
            "redis_url = \"redis://u:hunter2@127.0.0.1/\"",
            "must not carry a password",
        ),
        (
            "redis_url = \"http://127.0.0.1/\"",
            "must start with redis://",
        ),
        ("redis_url = \"redis:///0\"", "must name a host"),
        ("redis_password_env = \"P\"", "need redis_url"),
        ("redis_key_prefix = \"a b\"", "redis_key_prefix"),
        ("redis_key_prefix = \"\"", "redis_key_prefix"),
        (
            "redis_url = \"rediss://h\"\nredis_password_env = \"P\"\nredis_password_file = \"p\"",
            "at most one",
        ),
    ] {
        let e = Config::parse(&format!("[service]\n{body}\n")).unwrap_err();
        assert!(e.to_string().contains(says), "{body}: {e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
    let prefix = |p: &str| Config::parse(&format!("[service]\nredis_key_prefix = \"{p}\"\n"));
    prefix(&"p".repeat(64)).unwrap();
    for bad in ["p".repeat(65), "p".repeat(100)] {
        assert!(prefix(&bad).unwrap_err().contains("redis_key_prefix"));
    }
    Config::parse(
        "[service]\nredis_url = \"redis://user@10.0.0.1:6380/2\"\nredis_password_env = \"P\"\n",
    )
    .unwrap();
    let e = Config::parse("[service]\nlisten = \"localhost:80\"\n").unwrap_err();
    assert!(e.contains("listen"), "{e}");
    Config::parse("[service]\nadmin_listen = \"127.0.0.1:9090\"\n").unwrap();
    let e = Config::parse("[service]\nadmin_listen = \"x\"\n").unwrap_err();
    assert!(e.contains("admin_listen"), "{e}");
    let same = "[service]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n";
    assert!(Config::parse(same).unwrap_err().contains("differ"));
    Config::parse("[token]\nname = \"hsm-a_1.x\"\n").unwrap();
    for bad in ["", "a b", "a\\nb", "label\\\"x"] {
        let e = Config::parse(&format!("[token]\nname = \"{bad}\"\n")).unwrap_err();
        assert!(e.contains("name"), "{bad:?}: {e}");
    }
    let host_id = |id: &str| Config::parse(&format!("[service]\nhost_id = \"{id}\"\n"));
    host_id(&"h".repeat(255)).unwrap();
    for bad in [
        String::new(),
        "h".repeat(256),
        "h".repeat(300),
        "a\\nb".into(),
    ] {
        let e = host_id(&bad).unwrap_err();
        assert!(e.contains("host_id"), "{bad:?}: {e}");
    }
    let e = Config::parse("[service]\ntls_cert = \"c.pem\"\n").unwrap_err();
    assert!(e.contains("go together"), "{e}");
    let e = Config::parse("[pool]\nsize = 1\nkey_type = \"ec-p256\"\n").unwrap_err();
    assert!(e.contains("differs"), "{e}");
    // No pool: its key type is never used, whatever it is.
    Config::parse("[pool]\nsize = 0\nkey_type = \"ec-p256\"\n").unwrap();
    let e = Config::parse("[key]\nlabel_prefix = \"a\\nb\"\n").unwrap_err();
    assert!(e.contains("label_prefix"), "{e}");
}
