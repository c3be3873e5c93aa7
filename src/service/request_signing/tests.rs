use proptest::prelude::*;

use super::*;

#[test]
fn percent_encoding_is_rfc3986() {
    assert_eq!(
        percent_encode("a.example,b*c d~e/f+g"),
        "a.example%2Cb%2Ac%20d~e%2Ff%2Bg"
    );
    assert_eq!(percent_encode("杭"), "%E6%9D%AD");
    let all: String = (0u8..0x80).map(char::from).collect();
    let encoded = percent_encode(&all);
    assert_eq!(
        encoded.replace(|c: char| c != '%' && !c.is_ascii_alphanumeric(), ""),
        encoded.replace(['-', '.', '_', '~'], ""),
        "only - . _ ~ stay as they are besides letters and digits"
    );
    assert_eq!(encoded.matches('%').count(), 128 - 62 - 4);
}

/// The README's RPC worked example; the expected signature was computed
/// by alibabacloud-tea-openapi's own `get_rpcsignature`.
#[test]
fn rpc_worked_example() {
    let params: Vec<(String, String)> = [
        ("AccessKeyId", "testid"),
        ("Action", "CreateCdnCertificateSigningRequest"),
        ("CommonName", "www.example.com"),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2026-11-22T12:00:00Z"),
        ("Version", "2018-05-10"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sts = rpc_string_to_sign("GET", &params);
    assert_eq!(
        sts,
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DCreateCdnCertificateSigningRequest%26CommonName%3Dwww.example.com\
         %26Format%3DJSON%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
         %26SignatureVersion%3D1.0%26Timestamp%3D2026-11-22T12%253A00%253A00Z%26Version%3D2018-05-10"
    );
    assert_eq!(
        rpc_signature("testsecret", &sts),
        include_str!("../../../tests/fixtures/rpc-example.sig").trim()
    );
}

/// The README's ACS3 worked example; the expected Authorization header
/// was computed by alibabacloud-tea-openapi's own `get_authorization`.
#[test]
fn acs3_worked_example() {
    let query = vec![
        ("CommonName".to_owned(), "www.example.com".to_owned()),
        ("SANs".to_owned(), "www.example.com,example.com".to_owned()),
    ];
    let empty_body = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let headers = [
        ("x-acs-version", "2018-05-10"),
        ("host", "127.0.0.1:8080"),
        ("x-acs-action", "CreateCdnCertificateSigningRequest"),
        ("x-acs-date", "2026-11-22T12:00:00Z"),
        ("x-acs-signature-nonce", "3ee8c1b883d344afa94f4e0ad82fd6cf"),
        ("x-acs-content-sha256", empty_body),
    ];
    let expected =
        parse_acs3(include_str!("../../../tests/fixtures/acs3-example.authorization").trim())
            .unwrap();
    let canonical = acs3_canonical_request("POST", "/", &query, &headers, empty_body);
    assert_eq!(
        canonical,
        "POST\n/\nCommonName=www.example.com&SANs=www.example.com%2Cexample.com\n\
         host:127.0.0.1:8080\nx-acs-action:CreateCdnCertificateSigningRequest\n\
         x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-acs-date:2026-11-22T12:00:00Z\nx-acs-signature-nonce:3ee8c1b883d344afa94f4e0ad82fd6cf\n\
         x-acs-version:2018-05-10\n\n\
         host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(acs3_signature("testsecret", &canonical), expected.signature);
}

#[test]
fn acs3_header_parsing() {
    let a =
        parse_acs3("ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host;X-Acs-Date,Signature=ab12")
            .unwrap();
    assert_eq!(a.access_key_id, "AK");
    assert_eq!(a.signed_headers, ["host", "x-acs-date"]);
    assert_eq!(a.signature, "ab12");
    assert!(parse_acs3("ACS3-HMAC-SHA256 Credential=AK,Signature=ab12").is_none());
    assert!(parse_acs3("HMAC Credential=AK,SignedHeaders=host,Signature=x").is_none());
    assert!(parse_acs3("ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=ab12").is_none());
    assert!(parse_acs3("ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature=").is_none());
    assert!(parse_acs3("ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature").is_none());
    let other =
        parse_acs3("ACS3-HMAC-SHA256 Credential=AK, Future=1,SignedHeaders=host,Signature=ab");
    assert_eq!(
        other.unwrap().signed_headers,
        ["host"],
        "unknown fields are ignored"
    );
    for twice in [
        "ACS3-HMAC-SHA256 Credential=AK,Credential=BK,SignedHeaders=host,Signature=ab",
        "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,SignedHeaders=date,Signature=ab",
        "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature=ab,Signature=cd",
    ] {
        assert_eq!(parse_acs3(twice), None, "a field given twice: {twice}");
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Requests with awkward names and values, signed by the SDKs' own
/// functions (tests/fixtures/sdk-signatures.py): the same StringToSign and
/// signature here.
#[test]
fn the_sdks_own_signatures() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../../../tests/fixtures/sdk-signatures.json")).unwrap();
    assert_eq!(cases.len(), 7);
    for case in &cases {
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        let params: Vec<(String, String)> = case["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (text(&p[0]), text(&p[1])))
            .collect();
        let method = case["method"].as_str().unwrap();
        if case["scheme"] == "rpc" {
            let sts = rpc_string_to_sign(method, &params);
            assert_eq!(sts, case["string_to_sign"].as_str().unwrap());
            assert_eq!(rpc_signature("SECRET", &sts), case["signature"]);
            continue;
        }
        let headers: Vec<(String, String)> = case["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (text(&h[0]), text(&h[1])))
            .collect();
        let auth = parse_acs3(&headers.last().unwrap().1).unwrap();
        let signed: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(n, _)| auth.signed_headers.contains(n))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let body = case["body"].as_str().unwrap();
        let payload = sha256_hex(body.as_bytes());
        let canonical = acs3_canonical_request(method, "/", &params, &signed, &payload);
        assert_eq!(
            acs3_signature("SECRET", &canonical),
            auth.signature,
            "{canonical}"
        );
    }
}

/// With names left unencoded, `Country%3DDE%26SANs=x`
/// (one parameter named `Country=DE&SANs`) signed like `Country=DE&SANs=x`.
#[test]
fn names_are_encoded_so_a_name_cannot_carry_other_parameters() {
    let signed = pairs(&[("CommonName", "k"), ("Country", "DE"), ("SANs", "x")]);
    let smuggled = pairs(&[("CommonName", "k"), ("Country=DE&SANs", "x")]);
    let acs3 = |q: &[(String, String)]| acs3_canonical_request("POST", "/", q, &[], "e3");
    assert_ne!(acs3(&signed), acs3(&smuggled));
    assert!(acs3(&smuggled).contains("\nCommonName=k&Country%3DDE%26SANs=x\n"));
    assert_ne!(
        rpc_string_to_sign("GET", &signed),
        rpc_string_to_sign("GET", &smuggled)
    );
}

/// The SDKs sort names as given, before encoding: `a b`, `a.b`, `a/b`
/// (space < `.` < `/`), where the encoded names would sort `a%20b`, `a%2Fb`,
/// `a.b`.
#[test]
fn names_sort_as_decoded() {
    let params = pairs(&[("a/b", "3"), ("a.b", "2"), ("a b", "1"), ("Signature", "x")]);
    assert_eq!(
        rpc_string_to_sign("GET", &params),
        "GET&%2F&a%2520b%3D1%26a.b%3D2%26a%252Fb%3D3"
    );
    let canonical = acs3_canonical_request("GET", "", &params, &[("b", " 2 "), ("a", "1")], "h");
    assert_eq!(
        canonical,
        "GET\n/\nSignature=x&a%20b=1&a.b=2&a%2Fb=3\na:1\nb:2\n\na;b\nh"
    );
}

#[test]
fn signatures_match_only_when_equal() {
    assert!(matches("ab12", "ab12"));
    assert!(matches("", ""));
    assert!(!matches("ab12", "ab13"));
    // Differences that cancel out under XOR instead of OR.
    assert!(!matches("ab", "ba"));
    assert!(!matches("abc", "ab"), "a prefix is not a match");
    assert!(!matches("ab", "abc"));
}

#[test]
fn timestamps() {
    assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_timestamp("2026-11-22T23:17:35Z"), Some(1_795_389_455));
    assert_eq!(parse_timestamp("1969-12-31T23:59:59Z"), Some(-1));
    assert_eq!(parse_timestamp("2026-02-28T12:00:00Z"), Some(1_772_280_000));
    assert_eq!(parse_timestamp("2026-03-01T00:00:00Z"), Some(1_772_323_200));
    assert_eq!(parse_timestamp("2026-01-31T00:00:00Z"), Some(1_769_817_600));
    assert_eq!(parse_timestamp("2026-12-31T23:59:60Z"), Some(1_798_761_600));
    assert_eq!(
        parse_timestamp("0000-01-01T00:00:00Z"),
        Some(-62_167_219_200)
    );
    assert_eq!(
        parse_timestamp("9999-12-31T23:59:59Z"),
        Some(253_402_300_799)
    );
    for leap in ["2024-02-29", "2000-02-29", "1600-02-29", "0000-02-29"] {
        let t = parse_timestamp(&format!("{leap}T00:00:00Z"));
        assert!(t.is_some(), "{leap}");
        let next = parse_timestamp(&format!("{}-03-01T00:00:00Z", &leap[..4]));
        assert_eq!(next.unwrap() - t.unwrap(), 86_400, "{leap}");
    }
    for bad in [
        "2026-11-22 23:17:35",
        "2026-11-22T23:17:35",
        "2026-11-22T23:17:35Zx",
        "2026-11-22T23:17:5Z",
        "",
        "2",
        "2026-13-22T23:17:35Z",
        "2026-00-22T23:17:35Z",
        "2026-11-00T23:17:35Z",
        "2026-11-31T23:17:35Z",
        "2026-12-32T23:17:35Z",
        "2026-04-31T00:00:00Z",
        "2026-06-31T00:00:00Z",
        "2026-09-31T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T23:60:00Z",
        "2026-11-22T23:59:61Z",
        "2026-+1-22T23:17:35Z",
        "-026-11-22T23:17:35Z",
        "2026-11-22T23:17:3ZZ",
        "2026/11/22T23:17:35Z",
        "2026-11/22T23:17:35Z",
        "2026-11-22t23:17:35Z",
        "2026-11-22T23-17:35Z",
        "2026-11-22T23:17-35Z",
        "2026-11-22T23:17:35z",
        "２026-11-22T23:17:35Z",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
    for good in [
        "2026-04-30",
        "2026-06-30",
        "2026-09-30",
        "2026-11-30",
        "2026-12-31",
        "2026-01-31",
    ] {
        assert!(
            parse_timestamp(&format!("{good}T23:59:59Z")).is_some(),
            "{good}"
        );
    }
}

/// `time` reads a sign before the year; this format has none.
#[test]
fn signed_years_are_refused() {
    for bad in [
        "+2026-11-22T23:17:35Z",
        "-2026-11-22T23:17:35Z",
        "+026-11-22T23:17:35Z",
        "+02026-11-22T23:17:35Z",
        " 2026-11-22T23:17:35Z",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad:?}");
    }
}

/// Howard Hinnant's `civil_from_days`, the inverse of the algorithm under
/// test, written out separately as the reference.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

proptest! {
    #[test]
    fn timestamps_never_panic(s in "\\PC{0,24}", b in proptest::collection::vec(proptest::sample::select(b"0123456789-:TZ+ ".to_vec()), 20)) {
        let _ = parse_timestamp(&s);
        let _ = parse_timestamp(std::str::from_utf8(&b).unwrap());
    }

    /// Every day from 0000-01-01 to 9999-12-31, at any second.
    #[test]
    fn timestamps_round_trip(day in -719_528i64..=2_932_896, second in 0i64..86_400) {
        let (y, m, d) = civil_from_days(day);
        let s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", second / 3600, second / 60 % 60, second % 60);
        prop_assert_eq!(parse_timestamp(&s), Some(day * 86_400 + second), "{}", s);
        prop_assert_eq!(format_timestamp(day * 86_400 + second), Some(s));
    }

    /// A date is accepted only if the calendar has it.
    #[test]
    fn only_real_dates(y in 0i64..=9999, m in 0i64..=13, d in 0i64..=32) {
        let s = format!("{y:04}-{m:02}-{d:02}T00:00:00Z");
        if let Some(t) = parse_timestamp(&s) {
            prop_assert_eq!(civil_from_days(t.div_euclid(86_400)), (y, m, d));
        }
    }

    /// Different parameter sets never canonicalise alike, whatever the
    /// names and values hold.
    #[test]
    fn one_canonical_query_per_parameter_set(
        a in proptest::collection::btree_map("[a-zA-Z0-9=&%+ ._~/\\-]{0,6}|\\PC{0,3}", "[a-zA-Z0-9=&%+ ._~/\\-]{0,6}|\\PC{0,3}", 0..5),
        b in proptest::collection::btree_map("[a-zA-Z0-9=&%+ ._~/\\-]{0,6}|\\PC{0,3}", "[a-zA-Z0-9=&%+ ._~/\\-]{0,6}|\\PC{0,3}", 0..5),
    ) {
        prop_assume!(a != b);
        let (a, b): (Vec<_>, Vec<_>) = (a.into_iter().collect(), b.into_iter().collect());
        let rpc = |p: &[(String, String)]| rpc_string_to_sign("GET", p);
        let acs3 = |p: &[(String, String)]| acs3_canonical_request("GET", "/", p, &[], "");
        prop_assert_ne!(acs3(&a), acs3(&b));
        let without = |p: &[(String, String)]| p.iter().filter(|(k, _)| k != "Signature").count();
        if without(&a) == a.len() && without(&b) == b.len() {
            prop_assert_ne!(rpc(&a), rpc(&b));
        }
    }
}
