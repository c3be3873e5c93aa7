use super::*;

mod props;
mod sdk;

use sdk::*;

/// Requests the official SDKs sent (captured on 127.0.0.1, secret
/// "SECRET"): each must verify, and fail once any byte is changed.
#[test]
fn official_sdk_requests_verify() {
    let vectors: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../../../tests/fixtures/sdk-requests.json")).unwrap();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        let path = v["path"].as_str().unwrap();
        let (_, q) = path.split_once('?').unwrap();
        let req = Req {
            method: v["method"].as_str().unwrap().into(),
            query: q.into(),
            headers: v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, val)| (k.clone(), val.as_str().unwrap().as_bytes().to_vec()))
                .collect(),
            body: v["body"].as_str().unwrap().as_bytes().to_vec(),
        };
        let sdk = v["sdk"].as_str().unwrap();
        let ok = req
            .authenticate()
            .unwrap_or_else(|e| panic!("{sdk}: {e:?}"));
        assert_eq!(ok.action, "CreateCdnCertificateSigningRequest", "{sdk}");
        assert_eq!(ok.version, "2018-05-10", "{sdk}");
        assert_eq!(ok.access_key_id, "AKID", "{sdk}");
        assert_eq!(ok.format, "JSON", "{sdk}");
        assert_eq!(ok.timestamp, 1_795_389_462, "{sdk}");
        assert!(ok.nonce.len() >= 32, "{sdk}");
        assert_eq!(
            get(&ok.params, "SANs"),
            Some("a.example,b.example"),
            "{sdk}"
        );
        assert_eq!(get(&ok.params, "Signature"), None, "{sdk}");
        let wrong = authenticate(&req.raw(), |id| (id == "AKID").then_some("WRONG"));
        assert!(
            matches!(wrong, Err(ApiError::SignatureDoesNotMatch(_))),
            "{sdk}"
        );
        let unknown = authenticate(&req.raw(), |_| None);
        assert_eq!(unknown, Err(ApiError::InvalidAccessKeyId), "{sdk}");
        let tampered = Req {
            query: q.replace("a.example", "evil.example"),
            ..req.clone()
        };
        assert!(
            matches!(
                tampered.authenticate(),
                Err(ApiError::SignatureDoesNotMatch(_))
            ),
            "{sdk}"
        );
    }
}

/// Requests with awkward names and values, signed by the SDKs' own
/// functions (tests/fixtures/sdk-signatures.py), verify, and mean exactly
/// the parameters signed.
#[test]
fn sdk_signed_awkward_requests_verify() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../../../tests/fixtures/sdk-signatures.json")).unwrap();
    for case in &cases {
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        let req = Req {
            method: text(&case["method"]),
            query: text(&case["query"]),
            headers: case["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (text(&h[0]), text(&h[1]).into_bytes()))
                .collect(),
            body: text(&case["body"]).into_bytes(),
        };
        let mut expected: Vec<(String, String)> = case["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (text(&p[0]), text(&p[1])))
            .collect();
        expected.extend(decode(&req.body).unwrap());
        let mut got = req
            .authenticate()
            .unwrap_or_else(|e| panic!("{case}: {e:?}"))
            .params;
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
    }
}

/// `Country%3DDE%26SANs=x` is one parameter named
/// `Country=DE&SANs`; it must not pass for a signature over Country and
/// SANs.
#[test]
fn a_name_cannot_smuggle_other_parameters() {
    let signed = owned(&[("CommonName", "k"), ("Country", "DE"), ("SANs", "x")]);
    let mut req = acs3(&signed);
    assert_eq!(req.authenticate().unwrap().params, signed);
    req.query = "CommonName=k&Country%3DDE%26SANs=x".into();
    assert_eq!(
        req.authenticate(),
        Err(ApiError::SignatureDoesNotMatch(None))
    );
}

#[test]
fn a_parameter_given_twice_is_refused() {
    let dup = || ApiError::DuplicateParameter("CommonName".into());
    let (a, b) = (cn("a.example"), cn("b.example"));
    let twice: Vec<_> = a.iter().chain(&b).cloned().collect();
    let form_twice = urlencode(&twice).into_bytes();
    let cases = [
        ("rpc, query", rpc(&twice, &[])),
        ("rpc, form", rpc(&[], &twice)),
        ("rpc, query and form", rpc(&a, &b)),
        ("acs3, query", acs3(&twice)),
        (
            "acs3, form",
            acs3_with(&[], &form_twice, &[("content-type", FORM)], &[]),
        ),
        (
            "acs3, query and form",
            acs3_with(
                &a,
                &urlencode(&b).into_bytes(),
                &[("content-type", FORM)],
                &[],
            ),
        ),
    ];
    for (what, req) in cases {
        assert_eq!(req.authenticate(), Err(dup()), "{what}");
    }
    let spelled_twice = Req {
        query: rpc(&a, &[])
            .query
            .replace("CommonName=", "Common%4Eame=a&CommonName="),
        ..rpc(&a, &[])
    };
    assert_eq!(
        spelled_twice.authenticate(),
        Err(dup()),
        "the same name, encoded apart"
    );
    let message = dup().parts();
    assert_eq!((message.0, message.1), (400, "InvalidParameter"));
    assert!(message.2.contains("\"CommonName\""), "{}", message.2);
}

/// A form body counts only when the signature says it is one.
#[test]
fn an_acs3_body_needs_a_signed_content_type() {
    let body = b"SANs=form.example";
    let signed = acs3_with(&cn("a.example"), body, &[("content-type", FORM)], &[]);
    let ok = signed.authenticate().unwrap();
    assert_eq!(get(&ok.params, "SANs"), Some("form.example"));
    assert_eq!(get(&ok.params, "CommonName"), Some("a.example"));
    let unsigned = acs3_with(&cn("a.example"), body, &[], &[("content-type", FORM)]);
    assert_eq!(unsigned.authenticate(), Err(ApiError::UnsignedContentType));
    let stripped = unsigned.without("content-type");
    assert_eq!(stripped.authenticate(), Err(ApiError::UnsignedContentType));
    let empty = acs3_with(&cn("a.example"), b"", &[], &[("content-type", FORM)]);
    assert_eq!(empty.authenticate().unwrap().params, cn("a.example"));
    let text = acs3_with(
        &cn("a.example"),
        body,
        &[("content-type", "text/plain")],
        &[],
    );
    assert_eq!(
        text.authenticate().unwrap().params,
        cn("a.example"),
        "not a form"
    );
    let mut changed = signed
        .without("content-type")
        .with("content-type", b"text/plain");
    assert!(matches!(
        changed.authenticate(),
        Err(ApiError::SignatureDoesNotMatch(_))
    ));
    changed.body = b"SANs=other.example".to_vec();
    assert!(matches!(
        changed.authenticate(),
        Err(ApiError::SignatureDoesNotMatch(_))
    ));
}

#[test]
fn content_types_that_are_forms() {
    for (content_type, form) in [
        (FORM, true),
        ("application/x-www-form-urlencoded; charset=UTF-8", true),
        (" Application/X-WWW-Form-URLEncoded ;charset=utf-8", true),
        ("application/x-www-form-urlencodedx", false),
        ("text/plain", false),
        ("", false),
    ] {
        assert_eq!(is_form(content_type), form, "{content_type:?}");
    }
    // The form is read from POST bodies only.
    let mut get = rpc(&cn("a.example"), &[]).with("content-type", FORM.as_bytes());
    get.body = b"SANs=x.example".to_vec();
    assert_eq!(get.authenticate().map(|v| v.params.len()), Ok(8));
    let post = rpc(&cn("a.example"), &owned(&[("SANs", "x.example")]));
    assert_eq!(get_of(&post, "SANs"), Some("x.example".into()));
}

fn get_of(req: &Req, name: &str) -> Option<String> {
    get(&req.authenticate().unwrap().params, name).map(str::to_owned)
}

/// A header that is read or signed counts once; two could be read either
/// way (the ACS3 canonical form sorts and joins a header's values).
#[test]
fn a_header_given_twice_is_refused() {
    let body = b"SANs=form.example";
    let types = [("content-type", FORM), ("content-type", "text/plain")];
    let req = acs3_with(&cn("a.example"), body, &types, &[]);
    let dup = |h: &str| Err(ApiError::DuplicateHeader(h.into()));
    assert_eq!(req.authenticate(), dup("content-type"));
    let two_actions = acs3_with(&cn("a"), b"", &[("x-acs-action", "Other")], &[]);
    assert_eq!(two_actions.authenticate(), dup("x-acs-action"));
    let two_auth = acs3(&cn("a")).with("authorization", b"ACS3-HMAC-SHA256 x");
    assert_eq!(two_auth.authenticate(), dup("authorization"));
    let rpc_types = rpc(&[], &cn("a")).with("content-type", b"text/plain");
    assert_eq!(rpc_types.authenticate(), dup("content-type"));
    let unread = acs3(&cn("a")).with("accept", b"*/*").with("accept", b"x/y");
    assert!(unread.authenticate().is_ok(), "neither signed nor read");
}

/// Were `%FE` and `%FF` both decoded to U+FFFD, a request signed with one
/// would verify with the other.
#[test]
fn bytes_that_are_not_utf8_are_refused() {
    let malformed = |name: &str| Err(ApiError::NotUtf8(name.into()));
    let mut req = rpc(&owned(&[("Organization", "\u{FFFD}")]), &[]);
    assert!(req.authenticate().is_ok());
    req.query = req.query.replace("%EF%BF%BD", "%FE");
    assert_eq!(req.authenticate(), malformed("Organization"));
    req.query = req.query.replace("Organization=%FE", "Organization%FF=x");
    assert_eq!(req.authenticate(), malformed("Organization%FF"));
    let form = acs3_with(&[], b"Organization=%FFcorp", &[("content-type", FORM)], &[]);
    assert_eq!(form.authenticate(), malformed("Organization"));
    let header = acs3_with(&[], b"", &[("user-agent", "\u{FFFD}")], &[]);
    assert!(header.authenticate().is_ok());
    let mut header = header.without("user-agent").with("user-agent", b"\xff");
    assert_eq!(header.authenticate(), malformed("user-agent"));
    header.headers.retain(|(n, _)| n != "authorization");
    assert_eq!(
        header.with("authorization", b"\xff").authenticate(),
        malformed("authorization")
    );
    let unread = acs3(&cn("a")).with("user-agent", b"\xff");
    assert!(unread.authenticate().is_ok(), "neither signed nor read");
    let parts = ApiError::NotUtf8("Organization".into()).parts();
    assert_eq!((parts.0, parts.1), (400, "InvalidValue.Malformed"));
    assert!(parts.2.contains("\"Organization\""), "{}", parts.2);
}

/// A security token hsm-csr cannot check is refused, not ignored.
#[test]
fn security_tokens_are_refused() {
    let token = owned(&[("SecurityToken", "STS.x")]);
    let cases = [
        acs3_with(&[], b"", &[("x-acs-security-token", "STS.x")], &[]),
        acs3(&cn("a")).with("x-acs-security-token", b""),
        rpc(&cn("a"), &[]).with("X-Acs-Security-Token", b"STS.x"),
        rpc(&token, &[]),
        rpc(&[], &token),
        acs3(&token),
    ];
    for req in cases {
        assert_eq!(
            req.authenticate(),
            Err(ApiError::SecurityTokenUnsupported),
            "{req:?}"
        );
    }
    let parts = ApiError::SecurityTokenUnsupported.parts();
    assert_eq!(
        (parts.0, parts.1),
        (400, "InvalidSecurityToken.MismatchWithAccessKey")
    );
}

#[test]
fn rpc_signature_method_and_version() {
    let with = |name: &str, value: Option<&str>| {
        let mut params = rpc_common();
        params.retain(|(k, _)| k != name);
        params.extend(value.map(|v| (name.to_owned(), v.to_owned())));
        sign_rpc(params, &[]).authenticate()
    };
    assert!(with("SignatureMethod", Some("HMAC-SHA1")).is_ok());
    assert!(with("SignatureVersion", Some("1.0")).is_ok());
    for (name, value) in [
        ("SignatureMethod", Some("HMAC-SHA256")),
        ("SignatureMethod", None),
        ("SignatureVersion", Some("2.0")),
        ("SignatureVersion", None),
    ] {
        let what = format!("{name}={value:?}");
        assert_eq!(
            with(name, value),
            Err(ApiError::IncompleteSignature),
            "{what}"
        );
    }
}

#[test]
fn rpc_common_parameters() {
    let without = |name: &str| {
        let mut params = rpc_common();
        params.retain(|(k, _)| k != name);
        sign_rpc(params, &[]).authenticate()
    };
    for name in ["AccessKeyId", "Timestamp", "Action", "Version"] {
        assert_eq!(
            without(name),
            Err(ApiError::MissingParameter(name)),
            "{name}"
        );
    }
    assert_eq!(
        without("SignatureNonce"),
        Err(ApiError::IncompleteSignature)
    );
    let mut unsigned = rpc(&[], &[]);
    unsigned.query = unsigned.query.split("&Signature=").next().unwrap().into();
    assert_eq!(unsigned.authenticate(), Err(ApiError::IncompleteSignature));
    let mut params = rpc_common();
    params.push(("Format".into(), "xml".into()));
    assert_eq!(
        sign_rpc(params.clone(), &[]).authenticate().unwrap().format,
        "XML"
    );
    params.retain(|(k, _)| k != "Timestamp");
    params.push(("Timestamp".into(), "2026-11-22 12:00:00".into()));
    let bad_time = sign_rpc(params, &[]).authenticate();
    assert_eq!(bad_time, Err(ApiError::InvalidTimeStampFormat));
}

/// A request signed without one of [`MUST_SIGN`] (the header still sent)
/// is refused, though its signature is good.
#[test]
fn acs3_must_sign_the_headers_that_carry_meaning() {
    for name in MUST_SIGN {
        let req = acs3_signing(&cn("a"), b"", &[], &[], Some(name));
        let auth = req.headers.last().unwrap();
        assert!(!String::from_utf8_lossy(&auth.1).contains(name), "{name}");
        assert!(req.headers.iter().any(|(n, _)| n == name), "{name}");
        assert_eq!(
            req.authenticate(),
            Err(ApiError::IncompleteSignature),
            "{name}"
        );
    }
}

#[test]
fn acs3_payload_and_date() {
    let mut req = acs3_with(&[], b"CommonName=a", &[("content-type", FORM)], &[]);
    req.body = b"CommonName=b".to_vec();
    assert_eq!(
        req.authenticate(),
        Err(ApiError::SignatureDoesNotMatch(None))
    );
    let late = acs3_with(&[], b"", &[], &[]);
    let late = Req {
        headers: late
            .headers
            .into_iter()
            .map(|(n, v)| match n.as_str() {
                "x-acs-date" => (n, b"2026-11-22T12:00:00".to_vec()),
                _ => (n, v),
            })
            .collect(),
        ..late
    };
    assert_eq!(late.authenticate(), Err(ApiError::InvalidTimeStampFormat));
    let bad = acs3(&cn("a"))
        .without("authorization")
        .with("authorization", b"ACS3-HMAC-SHA256 x=y");
    assert_eq!(bad.authenticate(), Err(ApiError::IncompleteSignature));
    let ok = acs3(&owned(&[("Format", "xml")])).authenticate().unwrap();
    assert_eq!((ok.format.as_str(), ok.nonce.as_str()), ("XML", "nonce-1"));
    assert_eq!(ok.timestamp, 1_795_348_800);
}

#[test]
fn decoding() {
    let d = |s: &str| decode(s.as_bytes()).unwrap();
    assert_eq!(d(""), []);
    assert_eq!(d("a=1&&b=2&"), owned(&[("a", "1"), ("b", "2")]));
    assert_eq!(
        d("a&=v&c=d=e"),
        owned(&[("a", ""), ("", "v"), ("c", "d=e")])
    );
    assert_eq!(
        d("a+b=%20+%2B&%41=%zz"),
        owned(&[("a b", "  +"), ("A", "%zz")])
    );
    assert_eq!(d("k=%E6%9D%AD"), owned(&[("k", "杭")]));
    assert_eq!(decode(b"k=%C3"), Err(ApiError::NotUtf8("k".into())));
    assert_eq!(decode(b"k\xff=1"), Err(ApiError::NotUtf8("k%FF".into())));
}

#[test]
fn names_in_messages() {
    assert_eq!(shown(b"CommonName"), "CommonName");
    assert_eq!(shown(b"a b~"), "a b~");
    assert_eq!(shown(b"a\"b\\c%d\n\x7f\xff"), "a%22b%5Cc%25d%0A%7F%FF");
    assert_eq!(shown("é".as_bytes()), "%C3%A9");
    assert_eq!(shown(&[b'x'; 64]), "x".repeat(64));
    assert_eq!(shown(&[b'x'; 65]), format!("{}...", "x".repeat(64)));
}

/// The log line of a refused call names the access key id it
/// claimed, escaped as error messages show names.
#[test]
fn the_claimed_access_key_id_is_shown_escaped() {
    assert_eq!(
        claimed_access_key_id(&rpc(&cn("a.example"), &[]).raw()),
        "AKID"
    );
    assert_eq!(claimed_access_key_id(&acs3(&cn("a.example")).raw()), "AKID");
    let mut req = rpc(&cn("a.example"), &[]);
    req.query = "Action=x&AccessKeyId=a%0Ab%22c+d%E2%80%A8".into();
    assert_eq!(claimed_access_key_id(&req.raw()), "a%0Ab%22c d%E2%80%A8");
    req.query = format!("AccessKeyId={}", "k".repeat(100));
    assert_eq!(
        claimed_access_key_id(&req.raw()),
        format!("{}...", "k".repeat(64))
    );
    req.query = "Action=x".into();
    assert_eq!(claimed_access_key_id(&req.raw()), "");

    // A form body is read only as a POST with the form content type.
    let form = Req {
        method: "POST".into(),
        query: "Action=x".into(),
        headers: vec![("content-type".into(), FORM.as_bytes().to_vec())],
        body: b"CommonName=a&AccessKeyId=in+body".to_vec(),
    };
    assert_eq!(claimed_access_key_id(&form.raw()), "in body");
    let get = Req {
        method: "GET".into(),
        ..form.clone()
    };
    assert_eq!(claimed_access_key_id(&get.raw()), "");
    let json = Req {
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        ..form.clone()
    };
    assert_eq!(claimed_access_key_id(&json.raw()), "");
    // An Authorization header that is not ACS3 names no key, whatever the
    // query says.
    let bad = Req {
        headers: vec![("authorization".into(), b"Basic QUtJRDpz".to_vec())],
        query: "AccessKeyId=q".into(),
        ..form
    };
    assert_eq!(claimed_access_key_id(&bad.raw()), "");
}
