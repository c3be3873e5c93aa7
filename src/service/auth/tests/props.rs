//! Property tests: requests signed as the SDKs sign them verify, and no
//! change to what was signed verifies as a request that means something
//! else.

use proptest::prelude::*;

use crate::service::request_signing::percent_encode;

use super::*;

/// Parameter names as the SDKs send them (their ACS3 signer leaves names
/// unencoded, the same string only for unreserved characters), never one
/// of the common parameters; values anything printable, `=&%+` included.
/// The flag sends a parameter in the form body instead of the query.
fn params() -> impl Strategy<Value = Vec<(String, String, bool)>> {
    proptest::collection::btree_map("X[a-zA-Z0-9._~-]{0,6}", ("\\PC{0,8}", any::<bool>()), 0..6)
        .prop_map(|m| m.into_iter().map(|(k, (v, f))| (k, v, f)).collect())
}

/// A request signed over `params`, and the parameters it means (sorted).
fn signed(params: &[(String, String, bool)], acs3: bool) -> (Req, Vec<(String, String)>) {
    let pick = |form: bool| -> Vec<(String, String)> {
        params
            .iter()
            .filter(|p| p.2 == form)
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect()
    };
    let (query, form) = (pick(false), pick(true));
    let req = if acs3 {
        let body = urlencode(&form).into_bytes();
        acs3_with(&query, &body, &[("content-type", FORM)], &[])
    } else {
        rpc(&query, &form)
    };
    let mut meaning = req.authenticate().expect("signed as the SDKs sign").params;
    meaning.sort();
    (req, meaning)
}

/// `changed` is refused, or means just what `original` means.
fn same_or_refused(
    changed: &Req,
    original: &Req,
    meaning: &[(String, String)],
) -> Result<(), TestCaseError> {
    if let Ok(v) = changed.authenticate() {
        let before = original.authenticate().unwrap();
        let mut params = v.params.clone();
        params.sort();
        prop_assert_eq!(
            &params[..],
            meaning,
            "{:?} verified as other parameters",
            changed
        );
        prop_assert_eq!(
            (&v.action, &v.version, &v.nonce, v.timestamp, &v.format),
            (
                &before.action,
                &before.version,
                &before.nonce,
                before.timestamp,
                &before.format
            )
        );
    }
    Ok(())
}

/// Inserts (0), deletes (1) or replaces (2) the byte at `i`.
fn edit(target: &mut Vec<u8>, i: usize, kind: usize, byte: u8) {
    match kind {
        0 => target.insert(i.min(target.len()), byte),
        _ if i >= target.len() => target.push(byte),
        1 => {
            target.remove(i);
        }
        _ => target[i] = byte,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn what_the_sdks_sign_verifies(params in params(), acs3 in any::<bool>()) {
        let (_, meaning) = signed(&params, acs3);
        let mut expected: Vec<(String, String)> =
            params.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
        expected.sort();
        prop_assert!(expected.iter().all(|p| meaning.contains(p)));
        let common = if acs3 { 0 } else { 7 };
        prop_assert_eq!(meaning.len(), expected.len() + common);
    }

    /// One byte inserted, deleted or replaced anywhere in the query, the
    /// body or a header value.
    #[test]
    fn no_edit_changes_the_meaning(
        params in params(),
        acs3 in any::<bool>(),
        place in 0usize..3,
        at in any::<prop::sample::Index>(),
        kind in 0usize..3,
        byte in prop::sample::select(b"=&%+ A0a~.\xff".to_vec()),
    ) {
        let (original, meaning) = signed(&params, acs3);
        let mut changed = original.clone();
        match place {
            0 => {
                let mut query = changed.query.into_bytes();
                let i = at.index(query.len() + 1);
                edit(&mut query, i, kind, byte);
                let Ok(query) = String::from_utf8(query) else { return Ok(()) };
                changed.query = query;
            }
            1 => edit(&mut changed.body, at.index(original.body.len() + 1), kind, byte),
            _ => {
                let header = &mut changed.headers[at.index(original.headers.len())].1;
                let i = at.index(header.len() + 1);
                edit(header, i, kind, byte);
            }
        }
        same_or_refused(&changed, &original, &meaning)?;
    }

    /// A signed parameter repeated, with any value, in the query or the
    /// form body, is refused.
    #[test]
    fn a_repeated_parameter_never_verifies(
        params in params(),
        acs3 in any::<bool>(),
        which in any::<prop::sample::Index>(),
        value in "\\PC{0,8}",
        in_form in any::<bool>(),
    ) {
        prop_assume!(!params.is_empty());
        let (mut req, _) = signed(&params, acs3);
        let name = &params[which.index(params.len())].0;
        let again = urlencode(&[(name.clone(), value)]);
        if in_form && req.headers.iter().any(|(n, _)| n == "content-type") {
            req.body.extend(format!("&{again}").bytes());
        } else {
            req.query.push_str(&format!("&{again}"));
        }
        prop_assert_eq!(req.authenticate(), Err(ApiError::DuplicateParameter(shown(name.as_bytes()))));
    }

    /// Two signed query parameters joined into one name (`a=1&b`, value
    /// `2`, its `=` and `&` encoded) never verify.
    #[test]
    fn a_name_never_carries_another_parameter(
        params in params(),
        first in any::<prop::sample::Index>(),
        acs3 in any::<bool>(),
    ) {
        let query: Vec<(String, String, bool)> =
            params.into_iter().map(|(k, v, _)| (k, v, false)).collect();
        prop_assume!(query.len() >= 2);
        let (mut req, _) = signed(&query, acs3);
        let i = first.index(query.len() - 1);
        let (a, b) = (&query[i], &query[i + 1]);
        let joined = format!("{}={}&{}", a.0, a.1, b.0);
        let rest: Vec<(String, String)> = decode(req.query.as_bytes())
            .unwrap()
            .into_iter()
            .filter(|(k, _)| *k != a.0 && *k != b.0)
            .collect();
        req.query = format!("{}={}&{}", percent_encode(&joined), percent_encode(&b.1), urlencode(&rest));
        prop_assert!(req.authenticate().is_err(), "{:?}", req);
    }
}
