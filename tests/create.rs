//! `hsm-csr create`: the response and the CSR it carries.

use crate::common::{Run, Token, openssl, openssl_pub_md5, verified_text};

#[test]
fn json_response_has_the_api_fields_and_a_valid_csr() {
    let token = Token::new();
    let run = token
        .create(&[
            "--common-name",
            "www.example.com",
            "--sans",
            "www.example.com, example.com,10.0.0.1,2001:db8::1,ops@example.com,example.com",
            "--email",
            "ops@example.com",
        ])
        .ok();
    let v = run.json();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["CommonName", "Csr", "KeyUri", "PubMd5", "RequestId"]);

    let request_id = v["RequestId"].as_str().unwrap();
    assert_eq!(request_id.len(), 36);
    assert_eq!(request_id, request_id.to_uppercase());
    assert_eq!(v["CommonName"], "www.example.com");

    let csr = v["Csr"].as_str().unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    assert!(csr.ends_with("-----END CERTIFICATE REQUEST-----\n"));
    assert!(!csr.contains('\r'));

    let text = verified_text(csr);
    assert!(
        text.contains(
            "Subject: C=CN, ST=Zhejiang, L=Hangzhou, O=Alibaba Inc, OU=Aliyun CDN, CN=www.example.com/emailAddress=ops@example.com"
        ),
        "{text}"
    );
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("Exponent: 65537"), "{text}");
    assert!(
        text.contains("Signature Algorithm: sha256WithRSAEncryption"),
        "{text}"
    );
    assert!(
        text.contains(
            "DNS:www.example.com, DNS:example.com, IP Address:10.0.0.1, IP Address:2001:DB8:0:0:0:0:0:1, email:ops@example.com"
        ),
        "{text}"
    );

    let pub_md5 = v["PubMd5"].as_str().unwrap();
    assert_eq!(pub_md5, openssl_pub_md5(csr));
    assert!(
        pub_md5
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

#[test]
fn subject_string_types_as_openssl_parses_them() {
    let token = Token::new();
    let v = token
        .create(&["--common-name", "*.example.com", "--city", "杭州"])
        .ok()
        .json();
    let parsed = String::from_utf8(openssl(
        &["asn1parse"],
        v["Csr"].as_str().unwrap().as_bytes(),
    ))
    .unwrap();
    // `   22:d=5  hl=2 l=   2 prim: PRINTABLESTRING   :CN` -> ("PRINTABLESTRING", "CN")
    let prims: Vec<(&str, &str)> = parsed
        .lines()
        .filter_map(|l| l.split_once("prim:"))
        .filter_map(|(_, rest)| rest.split_once(':'))
        .map(|(kind, value)| (kind.trim(), value.trim()))
        .collect();
    let subject: Vec<(&str, &str)> = prims
        .windows(2)
        .filter(|w| w[0].0 == "OBJECT" && w[1].0.ends_with("STRING"))
        .map(|w| (w[0].1, w[1].0))
        .take(6)
        .collect();
    // C, ST, L, O, OU, CN in that order; '*' and non-ASCII force UTF8String.
    assert_eq!(
        subject,
        [
            ("countryName", "PRINTABLESTRING"),
            ("stateOrProvinceName", "PRINTABLESTRING"),
            ("localityName", "UTF8STRING"),
            ("organizationName", "PRINTABLESTRING"),
            ("organizationalUnitName", "PRINTABLESTRING"),
            ("commonName", "UTF8STRING"),
        ],
        "{parsed}"
    );
    let text = verified_text(v["Csr"].as_str().unwrap());
    assert!(
        text.contains("DNS:*.example.com"),
        "the wildcard CN becomes the SAN: {text}"
    );
}

#[test]
fn common_name_that_is_not_a_dns_name_gets_no_san() {
    let token = Token::new();
    let v = token
        .create(&["--common-name", "Internal Service"])
        .ok()
        .json();
    let text = verified_text(v["Csr"].as_str().unwrap());
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert!(text.contains("CN=Internal Service"), "{text}");
}

#[test]
fn pem_format_and_out_file() {
    let token = Token::new();
    let out = token.dir().join("req.pem");
    let run = token
        .create(&[
            "--common-name",
            "a.example.org",
            "--format",
            "pem",
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
    assert!(
        run.stdout
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), run.stdout);
    verified_text(&run.stdout);
    let leftovers: Vec<_> = std::fs::read_dir(token.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn larger_keys() {
    let token = Token::new();
    for bits in ["3072", "4096"] {
        let case = format!("rsa-{bits}");
        let Some(run) =
            token.create_case(&case, &["--common-name", "big.example", "--key-size", bits])
        else {
            continue;
        };
        let text = verified_text(run.json()["Csr"].as_str().unwrap());
        assert!(
            text.contains(&format!("Public-Key: ({bits} bit)")),
            "{text}"
        );
    }
}

#[test]
fn config_file_supplies_token_pin_file_defaults_and_flags_override() {
    let token = Token::new();
    std::fs::write(token.dir().join("pin"), "1234\n").unwrap();
    let config = token.dir().join("hsm-csr.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[key]\nbits = 3072\nlabel_prefix = \"{}cfg:\"\n\n\
             [subject.defaults]\norganization = \"Example Ltd\"\ncountry = \"DE\"\ncity = \"Berlin\"\n",
            token.config_token_table("pin"),
            token.prefix
        ),
    )
    .unwrap();
    let mut cmd = token.hsm_csr();
    cmd.env_remove("HSM_CSR_PIN")
        .env("HSM_CSR_CONFIG", &config)
        .args([
            "create",
            "--common-name",
            "cfg.example",
            "--city",
            "Hamburg",
        ]);
    let v = Run::of(&mut cmd).ok().json();
    let text = verified_text(v["Csr"].as_str().unwrap());
    assert!(
        text.contains("C=DE, ST=Zhejiang, L=Hamburg, O=Example Ltd"),
        "{text}"
    );
    assert!(text.contains("Public-Key: (3072 bit)"), "{text}");
    assert!(
        v["KeyUri"].as_str().unwrap().contains("cfg%3acfg.example"),
        "{v}"
    );
}

#[test]
fn timings_flag_reports_each_phase() {
    let token = Token::new();
    let run = token
        .create(&["--common-name", "t.example", "--timings"])
        .ok();
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("timings:"))
        .expect("timings line");
    for phase in [
        "init_ms=",
        "login_ms=",
        "keygen_ms=",
        "sign_ms=",
        "encode_ms=",
        "total_ms=",
    ] {
        assert!(line.contains(phase), "{line}");
    }
}
