//! A TLS handshake that failed on the peer's certificate, in plain words:
//! the words rustls and webpki use (`UnknownIssuer`, `CaUsedAsEndEntity`,
//! ...) name the check, not what to do.

/// What to do about a certificate error whose text is `text`, naming the
/// flag that gives a root to trust (`--ca-root`, `--ca-file`); None when
/// the text is not a certificate error.
#[cfg_attr(
    not(all(feature = "cli", feature = "service", feature = "acme")),
    allow(
        dead_code,
        reason = "only the command line's acme and call make TLS connections it explains"
    )
)]
pub(crate) fn certificate_hint(text: &str, trust_flag: &str) -> Option<String> {
    let hint = if text.contains("CaUsedAsEndEntity") {
        "the server presents a CA certificate as its own TLS certificate; it needs a \
         certificate issued by a CA for its host name (scripts/acme-demo.sh makes one for \
         pebble)"
            .to_owned()
    } else if text.contains("UnknownIssuer") {
        format!(
            "the server's TLS certificate is not issued by a root this run trusts; give that \
             root's PEM with {trust_flag}"
        )
    } else if text.contains("NotValidForName") {
        "the server's TLS certificate is not for the host name in the URL; use a name (or IP \
         address) its certificate lists"
            .to_owned()
    } else if text.contains("Expired") || text.contains("NotValidYet") {
        "the server's TLS certificate is outside its validity dates (or this host's clock is \
         wrong)"
            .to_owned()
    } else if text.contains("invalid peer certificate") {
        format!(
            "the server's TLS certificate was refused; check it, and the root given with \
             {trust_flag}"
        )
    } else {
        return None;
    };
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::certificate_hint;

    #[test]
    fn each_certificate_error_says_what_to_do() {
        let hint = |t| certificate_hint(t, "--ca-root").unwrap();
        assert!(
            hint("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))")
                .contains("issued by a CA")
        );
        assert!(hint("invalid peer certificate: UnknownIssuer").contains("with --ca-root"));
        assert!(hint("invalid peer certificate: NotValidForName").contains("host name"));
        assert!(hint("invalid peer certificate: Expired").contains("validity"));
        assert!(hint("invalid peer certificate: BadSignature").contains("--ca-root"));
        assert_eq!(
            certificate_hint("Connection refused (os error 111)", "--ca-root"),
            None
        );
    }
}
