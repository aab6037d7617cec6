//! Redaction of callback URLs for every place a URL is shown: logs, pages, JSON, state.
//!
//! Callback URLs often carry tokens in their query, path parameters or userinfo, so the
//! userinfo is removed, every query value and every path parameter value (`;name=value`,
//! as in `;jsessionid=…`) becomes `REDACTED`, and so does a fragment. A URL that parses is
//! redacted from its parsed form (so lenient spellings of userinfo are found); one that
//! does not is redacted by text rules, just as thoroughly.

const REDACTED: &str = "REDACTED";

/// The URL with userinfo removed and every query value, path parameter value and fragment
/// replaced by `REDACTED`.
pub fn url(raw: &str) -> String {
    // The WHATWG parser finds userinfo in lenient forms too (`https:/u:pw@h`, backslashes,
    // tabs), exactly where the config's validation and any HTTP client would: strip it
    // there. Text rules handle what does not parse.
    match url::Url::parse(raw) {
        Ok(parsed) if parsed.has_host() => from_parsed(parsed),
        _ => by_text(raw),
    }
}

fn from_parsed(mut parsed: url::Url) -> String {
    let query = parsed.query().map(redact_query);
    let fragment = parsed.fragment().is_some();
    // Both fail only for URLs without a host, excluded above.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    if parsed.path().contains(';') {
        let path = redact_path(parsed.path());
        parsed.set_path(&path);
    }
    let mut out = String::from(parsed);
    if let Some(query) = query {
        out.push('?');
        out.push_str(&query);
    }
    if fragment {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

fn redact_query(query: &str) -> String {
    redact_items(query, '&')
}

/// Every value, and every bare item (it may itself be a token), of a `separator`-separated
/// list becomes `REDACTED`.
fn redact_items(items: &str, separator: char) -> String {
    let items: Vec<String> = items
        .split(separator)
        .map(|item| match item.split_once('=') {
            Some((name, _)) => format!("{name}={REDACTED}"),
            None if item.is_empty() => String::new(),
            None => REDACTED.to_owned(),
        })
        .collect();
    items.join(&separator.to_string())
}

/// Each segment's parameters (`/cb;jsessionid=…;v=2`) redacted like query items; the part
/// of a segment before its first `;` is kept.
fn redact_path(path: &str) -> String {
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| match segment.split_once(';') {
            Some((head, parameters)) => format!("{head};{}", redact_items(parameters, ';')),
            None => segment.to_owned(),
        })
        .collect();
    segments.join("/")
}

fn by_text(raw: &str) -> String {
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
        out.push_str(&redact_query(query));
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
    let path = redact_path(path);
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
            (
                "https:/u:s3cr3tpw@hooks.example.com/cb",
                "https://hooks.example.com/cb",
            ),
            (
                "https:\\\\u:s3cr3tpw@hooks.example.com/cb",
                "https://hooks.example.com/cb",
            ),
            (
                "https:u:s3cr3tpw@hooks.example.com/cb?t=x",
                "https://hooks.example.com/cb?t=REDACTED",
            ),
            ("HTTPS://Hooks.Example.com", "https://hooks.example.com/"),
            (
                "https://h/cb;jsessionid=SECRET?t=x",
                "https://h/cb;jsessionid=REDACTED?t=REDACTED",
            ),
            (
                "https://h/a;k=1;bare/b;tok;v=2/c",
                "https://h/a;k=REDACTED;REDACTED/b;REDACTED;v=REDACTED/c",
            ),
            ("not a url/cb;sid=SECRET", "not a url/cb;sid=REDACTED"),
            ("https://h/%3Bsid=kept", "https://h/%3Bsid=kept"),
        ];
        for (raw, shown) in cases {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }
}
