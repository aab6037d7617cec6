//! Which requests a browser sent on behalf of another site. Without basic auth, any page
//! open in a browser on a host that can reach the server could otherwise POST
//! `/-/reload`; browsers say where a request comes from, tools such as curl say nothing.

use hyper::header::{HOST, HeaderMap, HeaderName, ORIGIN};

/// The header browsers set to say whether a request comes from the page's own origin.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Whether a browser marked this request as coming from another site: a `Sec-Fetch-Site`
/// other than `same-origin` or `none` (typed in, a bookmark), or an `Origin` whose
/// host[:port] differs from the request's `Host` (`authority` when the request line has
/// one and `Host` is missing). A request with neither header is not cross-site.
pub fn is_cross_site(headers: &HeaderMap, authority: Option<&str>) -> bool {
    let foreign_fetch = headers.get_all(SEC_FETCH_SITE).iter().any(|site| {
        !matches!(
            site.to_str().map(str::to_ascii_lowercase).as_deref(),
            Ok("same-origin" | "none")
        )
    });
    if foreign_fetch {
        return true;
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    headers.get_all(ORIGIN).iter().any(|origin| {
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, host_port)| host_port);
        match (origin_host, host) {
            (Some(origin_host), Some(host)) => !origin_host.eq_ignore_ascii_case(host),
            // "null" (a sandboxed or file: page), or no Host to compare with.
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn requests_without_browser_headers_pass() {
        assert!(!is_cross_site(&headers(&[("host", "h:9797")]), None));
        assert!(!is_cross_site(&headers(&[]), None));
    }

    #[test]
    fn sec_fetch_site_passes_only_same_origin_and_none() {
        for site in ["same-origin", "none", "Same-Origin"] {
            assert!(
                !is_cross_site(&headers(&[("sec-fetch-site", site)]), None),
                "{site}"
            );
        }
        for site in ["cross-site", "same-site", "", "whatever"] {
            assert!(
                is_cross_site(&headers(&[("sec-fetch-site", site)]), None),
                "{site}"
            );
        }
    }

    #[test]
    fn origin_must_name_the_host_the_request_was_sent_to() {
        let same = headers(&[
            ("host", "calldrift:9797"),
            ("origin", "http://Calldrift:9797"),
        ]);
        assert!(!is_cross_site(&same, None));
        let tls = headers(&[
            ("host", "calldrift:9797"),
            ("origin", "https://calldrift:9797"),
        ]);
        assert!(!is_cross_site(&tls, None));
        for origin in [
            "http://evil.example",
            "http://calldrift:9798",
            "http://calldrift",
            "null",
        ] {
            let h = headers(&[("host", "calldrift:9797"), ("origin", origin)]);
            assert!(is_cross_site(&h, None), "{origin}");
        }
        let no_host = headers(&[("origin", "http://calldrift:9797")]);
        assert!(is_cross_site(&no_host, None));
        assert!(!is_cross_site(&no_host, Some("calldrift:9797")));
    }

    #[test]
    fn either_header_alone_refuses() {
        let h = headers(&[
            ("host", "calldrift:9797"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://evil.example"),
        ]);
        assert!(is_cross_site(&h, None));
    }
}
