//! Redaction of callback URLs for every place a URL is shown: logs, pages, JSON, state.
//!
//! Callback URLs often carry tokens in their query or userinfo, so the userinfo is removed,
//! every query value becomes `REDACTED`, and so does a fragment. The redaction works on
//! the text, not on a parsed URL, so an unparsable URL is redacted just as well.

const REDACTED: &str = "REDACTED";

/// The URL with userinfo removed and every query value and fragment replaced by `REDACTED`.
pub fn url(raw: &str) -> String {
    let (before_fragment, fragment) = match raw.split_once('#') {
        Some((head, _)) => (head, Some(REDACTED)),
        None => (raw, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (before_fragment, None),
    };
    let mut out = strip_userinfo(before_query);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={REDACTED}"),
                // A bare item may itself be a token.
                None if pair.is_empty() => String::new(),
                None => REDACTED.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn strip_userinfo(head: &str) -> String {
    let (scheme, rest) = match head.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, head),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn redacts_userinfo_query_values_and_fragments() {
        let cases = [
            (
                "https://hooks.example.com/cb",
                "https://hooks.example.com/cb",
            ),
            (
                "https://u:p@hooks.example.com/cb?token=abc&x=1",
                "https://hooks.example.com/cb?token=REDACTED&x=REDACTED",
            ),
            (
                "https://hooks.example.com/cb?sekrit",
                "https://hooks.example.com/cb?REDACTED",
            ),
            (
                "https://hooks.example.com/cb?a=1#frag",
                "https://hooks.example.com/cb?a=REDACTED#REDACTED",
            ),
            (
                "http://[::1]:8080/x?k=v=w",
                "http://[::1]:8080/x?k=REDACTED",
            ),
            ("not a url?key=value", "not a url?key=REDACTED"),
            ("user@host/path", "host/path"),
            ("", ""),
        ];
        for (raw, shown) in cases {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }
}
