//! `GET /explorer`: the API explorer, served when `[service] explorer =
//! true`. One page and its script and style, embedded in the binary (no
//! external scripts, fonts or styles): it lists the four actions with their
//! parameters, fills in the subject defaults this service applies, signs a
//! call in the browser with ACS3-HMAC-SHA256 (WebCrypto), sends it to `/`,
//! decodes the answer's CSR and writes the SDK code for exactly that call.
//!
//! The page holds nothing about the tokens or keys and needs no credential
//! to load; its calls are ordinary signed calls to `/`. Every answer here
//! carries a Content-Security-Policy that lets the page load only its own
//! script and style and talk only to its own origin, with `form-action
//! 'none'` so that the form can never be submitted by the browser itself
//! (which would put the AccessKeySecret field in a request); and no CORS
//! header, so no other origin can read anything from the service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::get;

use crate::request::SubjectDefaults;

/// The page, with `{{Organization}}`-style places for the defaults.
const PAGE: &str = include_str!("explorer/index.html");
/// Its script.
const SCRIPT: &str = include_str!("explorer/explorer.js");
/// Its style.
const STYLE: &str = include_str!("explorer/explorer.css");
/// Its icon (without one, every browser asks for `/favicon.ico`).
const ICON: &str = include_str!("explorer/favicon.svg");

/// The policy every explorer answer carries.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The routes: `/explorer` and its script, style and icon beside it.
pub(super) fn routes<T: Clone + Send + Sync + 'static>(defaults: &SubjectDefaults) -> Router<T> {
    let page: Arc<str> = render(defaults).into();
    Router::new()
        .route(
            "/explorer",
            get(move || {
                let page = Arc::clone(&page);
                async move { answer("text/html; charset=utf-8", Body::from(page.to_string())) }
            }),
        )
        .route(
            "/explorer/explorer.js",
            get(|| async { answer("text/javascript; charset=utf-8", Body::from(SCRIPT)) }),
        )
        .route(
            "/explorer/explorer.css",
            get(|| async { answer("text/css; charset=utf-8", Body::from(STYLE)) }),
        )
        .route(
            "/explorer/favicon.svg",
            get(|| async { answer("image/svg+xml", Body::from(ICON)) }),
        )
}

/// Logs where the explorer is, as an address a browser can open (a
/// wildcard listen address is shown as the loopback one); warns when it is
/// served over plain HTTP off the loopback interface, where browsers refuse
/// it WebCrypto and anyone on the path could change the page to read the
/// secret typed into it.
pub(super) fn announce(addr: SocketAddr, tls: bool) {
    let scheme = if tls { "https" } else { "http" };
    let mut shown = addr;
    if addr.ip().is_unspecified() {
        shown.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    log::info!("API explorer on {scheme}://{shown}/explorer");
    if !tls && !addr.ip().is_loopback() {
        log::warn!(
            "the API explorer is served over plain HTTP on {addr}: browsers on other hosts \
             give the page no WebCrypto, so it cannot sign there, and anyone on the network \
             path could change the page to read the secret typed into it; set [service] \
             tls_cert and tls_key, or open it through an SSH tunnel on 127.0.0.1"
        );
    }
}

/// The page with this service's subject defaults filled in.
fn render(defaults: &SubjectDefaults) -> String {
    [
        ("Organization", defaults.organization.as_str()),
        ("OrganizationUnit", defaults.organization_unit.as_str()),
        ("Country", defaults.country.as_str()),
        ("State", defaults.state.as_str()),
        ("City", defaults.city.as_str()),
        ("Email", defaults.email.as_deref().unwrap_or("")),
    ]
    .iter()
    .fold(PAGE.to_owned(), |page, (name, value)| {
        page.replace(&format!("{{{{{name}}}}}"), &html_escape(value))
    })
}

/// Text as HTML character data or a quoted attribute value.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // So that no value can spell another value's `{{Name}}`.
            '{' => out.push_str("&#123;"),
            '}' => out.push_str("&#125;"),
            c => out.push(c),
        }
    }
    out
}

fn answer(content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::api::ACTIONS;

    #[test]
    fn defaults_are_filled_in_and_escaped() {
        let defaults = SubjectDefaults {
            organization: "A \"quoted\" <b>&</b> Org".into(),
            email: Some("ops@example.com".into()),
            ..SubjectDefaults::default()
        };
        let page = render(&defaults);
        assert!(!page.contains("{{"), "a place left unfilled");
        assert!(page.contains(r#"value="A &quot;quoted&quot; &lt;b&gt;&amp;&lt;/b&gt; Org""#));
        assert!(page.contains(r#"value="ops@example.com""#));
        assert!(page.contains(r#"name="Country" type="text" value="CN""#));
        assert!(!page.contains("<b>"));
    }

    /// A default that spells another's place is shown as written, not
    /// filled in by a later replacement.
    #[test]
    fn a_default_cannot_fill_in_another() {
        let defaults = SubjectDefaults {
            organization: "{{City}} Org".into(),
            ..SubjectDefaults::default()
        };
        let page = render(&defaults);
        assert!(page.contains(r#"value="&#123;&#123;City&#125;&#125; Org""#));
        assert!(!page.contains("Hangzhou Org"));
    }

    /// The page offers exactly the actions the service answers, each with
    /// its API version and product.
    #[test]
    fn the_page_lists_the_services_actions() {
        let options: Vec<&str> = PAGE.lines().filter(|l| l.starts_with("<option ")).collect();
        assert_eq!(options.len(), ACTIONS.len());
        for (action, version, product) in ACTIONS {
            assert!(
                options.iter().any(|o| o.contains(&format!(
                    r#"value="{action}" data-version="{version}" data-product="{product}""#
                ))),
                "{action} is missing or has the wrong version"
            );
        }
    }

    /// Every field the contract names is a labelled form field.
    #[test]
    fn every_parameter_is_a_labelled_field() {
        for name in [
            "Action",
            "CommonName",
            "SANs",
            "Organization",
            "OrganizationUnit",
            "Country",
            "State",
            "City",
            "Email",
            "DomainName",
            "ServerCertificate",
            "AccessKeyId",
            "AccessKeySecret",
        ] {
            assert!(
                PAGE.contains(&format!(r#"id="{name}" name="{name}""#)),
                "{name}"
            );
            assert!(PAGE.contains(&format!(r#"<label for="{name}">"#)), "{name}");
        }
        assert!(PAGE.contains(r#"<button type="submit" id="send" disabled>"#));
        for id in ["response", "sdk-python", "sdk-python-legacy", "sdk-java"] {
            assert!(PAGE.contains(&format!(r#"id="{id}""#)), "{id}");
        }
    }

    /// Nothing is fetched from elsewhere, and nothing runs inline (the
    /// policy would refuse it).
    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [PAGE, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("@import") && !text.contains("url("));
        }
        assert!(!PAGE.contains("<script>"));
        let handlers = PAGE.split(" on").skip(1).filter(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert_eq!(handlers.count(), 0, "an inline event handler");
        assert!(!PAGE.contains("style="));
        assert!(CONTENT_SECURITY_POLICY.contains("form-action 'none'"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    /// The script keeps the secret to signing: no storage, no cookie, and
    /// the secret field is read in one place only.
    #[test]
    fn the_script_stores_nothing() {
        for word in [
            "localStorage",
            "sessionStorage",
            "indexedDB",
            "document.cookie",
            "console.",
        ] {
            assert!(!SCRIPT.contains(word), "{word}");
        }
        assert_eq!(SCRIPT.matches("$('AccessKeySecret')").count(), 1);
    }
}
