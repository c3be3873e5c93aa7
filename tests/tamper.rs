//! Requests altered in flight are refused, never reinterpreted.
//!
//! Each request is signed by the official SDKs' own functions, then sent to
//! a real `hsm-csr serve` as it was signed, or changed the way an attacker
//! (or a careless client) would; only the untouched one may make a key.

use std::process::Command;

use crate::common::server::Server;
use crate::common::{Token, python};

/// Signs each case with the SDKs' functions (alibabacloud-tea-openapi's
/// `get_authorization` for ACS3, aliyun-python-sdk-core's StringToSign for
/// RPC), sends it with http.client, and prints `name: status code` lines.
const CLIENT: &str = r#"
import datetime, hashlib, http.client, json, sys, types, urllib.parse, uuid
from alibabacloud_tea_openapi.utils import Utils
from alibabacloud_tea_openapi import models as om
from alibabacloud_cdn20180510.client import Client
from alibabacloud_cdn20180510 import models
from aliyunsdkcore.auth.algorithm import sha_hmac1
from aliyunsdkcore.auth.composer import rpc_signature_composer

ADDR = sys.argv[1]
AK, SECRET = "MainKey", "s3cret"
ACTION, VERSION = "CreateCdnCertificateSigningRequest", "2018-05-10"
FORM = "application/x-www-form-urlencoded"


class Pairs(list):
    """A mapping the SDK reads with .items() that may hold a name twice."""
    def items(self):
        return iter(self)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def acs3(query, body=b"", signed=(), unsigned=()):
    """ACS3 headers over `query` and `body`: the SDK's usual headers and
    `signed` are signed, `unsigned` added after signing."""
    h = Pairs([("host", ADDR), ("x-acs-action", ACTION), ("x-acs-version", VERSION),
               ("x-acs-date", now()), ("x-acs-signature-nonce", uuid.uuid4().hex),
               ("x-acs-content-sha256", hashlib.sha256(body).hexdigest()), *signed])
    req = types.SimpleNamespace(method="POST", pathname="/", query=query, headers=h)
    auth = Utils.get_authorization(req, "ACS3-HMAC-SHA256", hashlib.sha256(body).hexdigest(), AK, SECRET)
    return Pairs([*h, *unsigned, ("authorization", auth)])


def rpc(params):
    """An RPC query string over `params` (a name may repeat)."""
    common = [("AccessKeyId", AK), ("Action", ACTION), ("Version", VERSION), ("Format", "JSON"),
              ("SignatureMethod", "HMAC-SHA1"), ("SignatureVersion", "1.0"),
              ("SignatureNonce", uuid.uuid4().hex), ("Timestamp", now())]
    pairs = Pairs([*common, *params])
    sts = getattr(rpc_signature_composer, "__compose_string_to_sign")("POST", pairs)
    return urllib.parse.urlencode([*pairs, ("Signature", sha_hmac1.get_sign_string(sts, SECRET + "&"))])


def case(name, query, headers, body=b""):
    c = http.client.HTTPConnection(ADDR, timeout=60)
    c.putrequest("POST", "/?" + query, skip_host=True, skip_accept_encoding=True)
    for k, v in headers:
        c.putheader(k, v)
    c.putheader("content-length", str(len(body)))
    c.endheaders(body)
    r = c.getresponse()
    answer = json.loads(r.read())
    print(json.dumps([name, r.status, answer.get("Code", "OK"), answer.get("Message", "")]))


def sdk(name, **config):
    cfg = om.Config(access_key_id=AK, access_key_secret=SECRET, endpoint=ADDR, protocol="http", **config)
    try:
        Client(cfg).create_cdn_certificate_signing_request(
            models.CreateCdnCertificateSigningRequestRequest(common_name="sts.example.com"))
        print(json.dumps([name, 200, "OK", ""]))
    except Exception as e:
        print(json.dumps([name, e.status_code, e.code, e.message]))


q = {"CommonName": "ok.example.com"}
case("acs3 as the SDK signs it", urllib.parse.urlencode(q), acs3(q))

signed = {"CommonName": "k.example.com", "Country": "DE", "SANs": "only.example.com"}
case("acs3 name smuggling other parameters", "CommonName=k.example.com&Country%3DDE%26SANs=only.example.com",
     acs3(signed))

q = {"CommonName": "a.example.com"}
qs = urllib.parse.urlencode(q)
body = b"CommonName=b.example.com"
case("acs3 parameter in query and form", qs, acs3(q, body, [("content-type", FORM)]), body)
body = b"CommonName=a.example.com&CommonName=b.example.com"
case("acs3 parameter twice in form", "", acs3({}, body, [("content-type", FORM)]), body)

body = b"SANs=form.example.com"
case("acs3 form, content-type unsigned", qs, acs3(q, body, (), [("content-type", FORM)]), body)
case("acs3 form, content-type unsigned and dropped", qs, acs3(q, body), body)
h = acs3(q, body, [("content-type", FORM), ("content-type", "text/plain")])
swapped = Pairs([x for x in h if x[0] != "content-type"] + [("content-type", "text/plain"), ("content-type", FORM)])
case("acs3 signed header twice, order swapped", qs, swapped, body)

body = b"Organization=%FFcorp"
case("acs3 form value not UTF-8", qs, acs3(q, body, [("content-type", FORM)]), body)
h = acs3(q, b"", [("user-agent", "\ufffd")])
case("acs3 signed header not UTF-8", qs, Pairs([(k, b"\xff" if k == "user-agent" else v) for k, v in h]))
case("acs3 x-acs-security-token", qs, acs3(q, b"", [("x-acs-security-token", "STS.t")]))

base = [("CommonName", "rpc.example.com")]
host = [("host", ADDR)]
case("rpc parameter twice in query", rpc(Pairs([*base, ("Organization", "A"), ("Organization", "B")])), host)
case("rpc value not UTF-8", rpc(Pairs([*base, ("Organization", "\ufffdcorp")])).replace("%EF%BF%BDcorp", "%FEcorp"), host)
case("rpc SecurityToken", rpc(Pairs([*base, ("SecurityToken", "STS.t")])), host)
sdk("sdk acs3 with security_token", security_token="STS.t")
sdk("sdk rpc with security_token", security_token="STS.t", signature_algorithm="v2")
"#;

#[test]
fn tampered_requests_are_refused_and_make_no_key() {
    let Some(token) = Token::private_softhsm("the service suite runs on a private token") else {
        return;
    };
    let server = Server::start(&token, "ec-p256", "");
    let out = Command::new(python())
        .args(["-c", CLIENT, &server.addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let answers: Vec<(String, u16, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<String> = answers
        .iter()
        .map(|(name, status, code, _)| format!("{name}: {status} {code}"))
        .collect();
    let expected = [
        "acs3 as the SDK signs it: 200 OK",
        "acs3 name smuggling other parameters: 400 SignatureDoesNotMatch",
        "acs3 parameter in query and form: 400 InvalidParameter",
        "acs3 parameter twice in form: 400 InvalidParameter",
        "acs3 form, content-type unsigned: 400 IncompleteSignature",
        "acs3 form, content-type unsigned and dropped: 400 IncompleteSignature",
        "acs3 signed header twice, order swapped: 400 InvalidParameter",
        "acs3 form value not UTF-8: 400 InvalidValue.Malformed",
        "acs3 signed header not UTF-8: 400 InvalidValue.Malformed",
        "acs3 x-acs-security-token: 400 InvalidSecurityToken.MismatchWithAccessKey",
        "rpc parameter twice in query: 400 InvalidParameter",
        "rpc value not UTF-8: 400 InvalidValue.Malformed",
        "rpc SecurityToken: 400 InvalidSecurityToken.MismatchWithAccessKey",
        "sdk acs3 with security_token: 400 InvalidSecurityToken.MismatchWithAccessKey",
        "sdk rpc with security_token: 400 InvalidSecurityToken.MismatchWithAccessKey",
    ];
    assert_eq!(got, expected, "{stderr}");
    // Each refusal names what to fix.
    let message = |name: &str| &answers.iter().find(|a| a.0 == name).unwrap().3;
    for (case, names) in [
        ("acs3 parameter in query and form", "\"CommonName\""),
        (
            "acs3 signed header twice, order swapped",
            "\"content-type\"",
        ),
        ("acs3 form value not UTF-8", "\"Organization\""),
        ("acs3 signed header not UTF-8", "\"user-agent\""),
        ("rpc parameter twice in query", "\"Organization\""),
    ] {
        assert!(message(case).contains(names), "{case}: {}", message(case));
    }
    let log = server.stop();
    assert_eq!(
        token.keys().len(),
        2,
        "only the untouched request made a key:\n{log}"
    );
}
