//! `[[tokens]]`: several tokens for one `hsm-csr serve`, each a table with
//! the keys of `[token]`. The service spreads its workers and calls over
//! them and keeps serving on the others when one goes away.
//!
//! A file gives either `[token]` or `[[tokens]]`, never both. Each table
//! must name its module and its token by label or serial (no command-line
//! flag fills them in for several tokens), and no two tables may name the
//! same token: two key pools on one token would adopt each other's keys.
//! The label (or serial) becomes a label of the per-token metrics and
//! `/healthz` entries, so it is held to what a PKCS#11 token can carry:
//! CK_TOKEN_INFO's 32-byte label and 16-character serial number, no
//! control characters.

use super::{Config, TokenConfig};

/// More tokens than this in one process is a configuration mistake (and
/// would multiply the metrics series and threads without bound).
pub(crate) const MAX_TOKENS: usize = 16;

impl TokenConfig {
    /// The token as `/healthz` and `/metrics` name it: its configured label,
    /// or `serial:` and its serial number when it has no label.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match (&self.label, &self.serial) {
            (Some(label), _) => label.clone(),
            (None, Some(serial)) => format!("serial:{serial}"),
            (None, None) => String::new(),
        }
    }
}

/// Checks `[[tokens]]`; the message names the table by its number.
pub(super) fn check(config: &Config) -> Result<(), String> {
    if config.tokens.is_empty() {
        return Ok(());
    }
    if config.token != TokenConfig::default() {
        return Err(
            "give either [token] (one token) or [[tokens]] (several), not both: move the [token] keys into a [[tokens]] table."
                .into(),
        );
    }
    if config.tokens.len() > MAX_TOKENS {
        return Err(format!(
            "[[tokens]] names {} tokens; at most {MAX_TOKENS} are allowed in one service.",
            config.tokens.len()
        ));
    }
    for (i, t) in config.tokens.iter().enumerate() {
        let n = i + 1;
        if t.module.is_none() {
            return Err(format!(
                "[[tokens]] number {n}: module is required (the PKCS#11 module of this token)."
            ));
        }
        if t.label.is_none() && t.serial.is_none() {
            return Err(format!(
                "[[tokens]] number {n}: name the token by label or serial (a slot id alone is not stable)."
            ));
        }
        if let Some(label) = &t.label {
            if label.is_empty() || label.len() > 32 || label.chars().any(char::is_control) {
                return Err(format!(
                    "[[tokens]] number {n}: label must be 1 to 32 bytes without control characters, as a PKCS#11 token label is."
                ));
            }
        }
        if let Some(serial) = &t.serial {
            if serial.is_empty()
                || serial.len() > 16
                || !serial.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "[[tokens]] number {n}: serial must be 1 to 16 visible ASCII characters, as a PKCS#11 serial number is."
                ));
            }
        }
        if let Some(m) = config
            .tokens
            .iter()
            .take(i)
            .position(|earlier| earlier == t || same_token(earlier, t))
        {
            return Err(format!(
                "[[tokens]] number {n} names the same token as number {}: each token may be listed once.",
                m + 1
            ));
        }
    }
    Ok(())
}

/// Whether two tables certainly name one token: same module, and the same
/// label or the same serial where both give one (the pin file may differ).
fn same_token(a: &TokenConfig, b: &TokenConfig) -> bool {
    let both = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => Some(x == y),
        _ => None,
    };
    let slots_differ = matches!((a.slot_id, b.slot_id), (Some(x), Some(y)) if x != y);
    a.module == b.module
        && !slots_differ
        && match (both(&a.label, &b.label), both(&a.serial, &b.serial)) {
            (Some(false), _) | (_, Some(false)) => false,
            (Some(true), _) | (_, Some(true)) => true,
            (None, None) => false,
        }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    const TWO: &str = "[[tokens]]\nmodule = \"/m.so\"\nlabel = \"a\"\npin_file = \"pa\"\n\
                       [[tokens]]\nmodule = \"/m.so\"\nlabel = \"b\"\npin_file = \"pb\"\n";

    #[test]
    fn several_tokens_parse_in_order() {
        let c = Config::parse(TWO).unwrap();
        let labels: Vec<_> = c.tokens.iter().map(|t| t.display_name()).collect();
        assert_eq!(labels, ["a", "b"]);
        let c = Config::parse("[[tokens]]\nmodule = \"/m.so\"\nserial = \"0123\"\n").unwrap();
        assert_eq!(c.tokens[0].display_name(), "serial:0123");
    }

    #[test]
    fn token_and_tokens_exclude_each_other() {
        let e = Config::parse(&format!("[token]\nlabel = \"x\"\n{TWO}")).unwrap_err();
        assert!(
            e.contains("either [token]") && e.contains("not both"),
            "{e}"
        );
    }

    #[test]
    fn each_table_names_its_module_and_token() {
        let e = Config::parse("[[tokens]]\nlabel = \"a\"\n").unwrap_err();
        assert!(e.contains("number 1: module is required"), "{e}");
        let e = Config::parse(&format!(
            "{TWO}[[tokens]]\nmodule = \"/m.so\"\nslot_id = 3\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("number 3: name the token by label or serial"),
            "{e}"
        );
        let e = Config::parse("[[tokens]]\nmodule = \"/m.so\"\nlabl = \"a\"\n").unwrap_err();
        assert!(e.contains("unknown field `labl`"), "{e}");
        let e = Config::parse("[[tokens]]\nmodule = \"/m.so\"\nlabel = \"a\"\npin = \"5678\"\n")
            .unwrap_err();
        assert!(
            e.contains("unknown field `pin`") && !e.contains("5678"),
            "{e}"
        );
    }

    #[test]
    fn the_same_token_twice_is_refused() {
        for second in [
            "module = \"/m.so\"\nlabel = \"a\"\npin_file = \"other\"",
            "module = \"/m.so\"\nlabel = \"a\"\nserial = \"9\"",
            "module = \"/m.so\"\nserial = \"9\"",
        ] {
            let text = format!(
                "[[tokens]]\nmodule = \"/m.so\"\nlabel = \"a\"\nserial = \"9\"\n[[tokens]]\n{second}\n"
            );
            let e = Config::parse(&text).unwrap_err();
            assert!(
                e.contains("number 2 names the same token as number 1"),
                "{second}: {e}"
            );
        }
        // Same label on another module, or another serial: other tokens.
        for second in [
            "module = \"/other.so\"\nlabel = \"a\"",
            "module = \"/m.so\"\nlabel = \"a\"\nserial = \"8\"",
        ] {
            let text = format!(
                "[[tokens]]\nmodule = \"/m.so\"\nlabel = \"a\"\nserial = \"9\"\n[[tokens]]\n{second}\n"
            );
            Config::parse(&text).unwrap_or_else(|e| panic!("{second}: {e}"));
        }
    }

    /// The label becomes a metrics label and a /healthz value: it cannot
    /// carry a line break, grow past a token label, or be empty.
    #[test]
    fn labels_and_serials_are_held_to_what_a_token_carries() {
        for label in [
            "\"\"",
            "\"a\\nhsm_csr_forged 1\"",
            "\"a\\u0000b\"",
            "\"123456789012345678901234567890123\"",
        ] {
            let e = Config::parse(&format!(
                "[[tokens]]\nmodule = \"/m.so\"\nlabel = {label}\n"
            ))
            .unwrap_err();
            assert!(e.contains("label must be 1 to 32 bytes"), "{label}: {e}");
        }
        Config::parse(
            "[[tokens]]\nmodule = \"/m.so\"\nlabel = \"12345678901234567890123456789012\"\n",
        )
        .unwrap();
        for serial in ["\"\"", "\"a b\"", "\"12345678901234567\""] {
            let e = Config::parse(&format!(
                "[[tokens]]\nmodule = \"/m.so\"\nserial = {serial}\n"
            ))
            .unwrap_err();
            assert!(e.contains("serial must be 1 to 16"), "{serial}: {e}");
        }
    }

    #[test]
    fn at_most_sixteen_tokens() {
        let table = |i: usize| format!("[[tokens]]\nmodule = \"/m.so\"\nlabel = \"t{i}\"\n");
        let sixteen: String = (0..16).map(table).collect();
        assert_eq!(Config::parse(&sixteen).unwrap().tokens.len(), 16);
        let e = Config::parse(&format!("{sixteen}{}", table(16))).unwrap_err();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn relative_pin_files_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, TWO).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(
            c.tokens[0].pin_file.as_deref(),
            Some(dir.path().join("pa").as_path())
        );
        assert_eq!(
            c.tokens[1].pin_file.as_deref(),
            Some(dir.path().join("pb").as_path())
        );
    }
}
