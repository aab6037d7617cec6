//! The config's keys in the operator's words: what each field holds and which keys each
//! section knows, for the messages of [`super::wording`].

use super::wording::Vocabulary;

/// The calldrift config's vocabulary.
pub(super) const CONFIG: Vocabulary = Vocabulary {
    kind: "a calldrift config",
    example_keys: "listen:, poll:, apps:",
    describe,
    known_keys,
};

const TOP: &[&str] = &[
    "listen",
    "web_config_file",
    "state_file",
    "log_format",
    "log_level",
    "ca_file",
    "poll",
    "rate_limit",
    "endpoint_probe",
    "remediate",
    "regions",
    "expect",
    "apps",
];
const POLL: &[&str] = &["interval", "timeout", "retries", "max_concurrency"];
const RATE_LIMIT: &[&str] = &["per_second", "per_app_per_second"];
const REGION: &[&str] = &["url", "backup"];
const APP: &[&str] = &[
    "name",
    "sdkappid",
    "regions",
    "identifier",
    "secret_key_file",
    "secret_key_env",
    "secret_key",
    "usersig_ttl",
    "products",
    "expect",
    "remediate",
];
const REMEDIATE: &[&str] = &["mode", "after", "max_per_target", "max_total", "window"];
const EXPECT: &[&str] = &[
    "present",
    "url_scheme",
    "url",
    "url_prefix",
    "commands",
    "extra_commands",
    "ignore_commands",
    "call",
    "room",
    "live",
];

/// What each field holds, by the shape of its path (see [`shape`]).
const FIELDS: &[(&str, &str)] = &[
    (
        "apps[].sdkappid",
        "an SDKAppID, a number such as 1400000001",
    ),
    ("apps[].regions", "a list such as [singapore]"),
    ("apps[].products", "a list such as [call, room]"),
    ("apps[].usersig_ttl", "a duration such as 24h or 30d"),
    ("apps[]", "a mapping of keys (name: …, sdkappid: …)"),
    ("apps", "a list of apps, each starting with \"- name:\""),
    ("poll.interval", "a duration such as 30s or 5m"),
    ("poll.timeout", "a duration such as 5s or 1m"),
    ("poll.retries", "a number"),
    ("poll.max_concurrency", "a number"),
    ("rate_limit.per_second", "a number"),
    ("rate_limit.per_app_per_second", "a number"),
    (
        "regions",
        "a mapping of region names to URLs (name: https://…)",
    ),
    ("regions.*", "a URL, or a mapping with url: and backup:"),
    ("listen", "an address:port such as 0.0.0.0:9797"),
    ("remediate", "a mapping of keys (mode: …, after: …)"),
    ("apps[].remediate", "a mapping of keys (mode: …, after: …)"),
    ("remediate.mode", "off, dry-run or enforce"),
    ("apps[].remediate.mode", "off, dry-run or enforce"),
    ("remediate.after", "a number of polls such as 2"),
    ("apps[].remediate.after", "a number of polls such as 2"),
    ("remediate.max_per_target", "a number of writes such as 3"),
    (
        "apps[].remediate.max_per_target",
        "a number of writes such as 3",
    ),
    ("remediate.max_total", "a number of writes such as 20"),
    (
        "apps[].remediate.max_total",
        "a number of writes such as 20",
    ),
    ("remediate.window", "a duration such as 1h"),
    ("apps[].remediate.window", "a duration such as 1h"),
];

/// Words per field of an `expect` block, wherever the block is.
const EXPECT_FIELDS: &[(&str, &str)] = &[
    ("present", "true, false or any"),
    ("commands", "a list such as [Call.CallbackAfterEndCall]"),
    (
        "ignore_commands",
        "a list such as [Call.CallbackAfterEndCall]",
    ),
    ("url", "a URL such as https://example.com/callback"),
    ("url_prefix", "a URL such as https://example.com/"),
    ("url_scheme", "https or http"),
    ("extra_commands", "drift or allow"),
];

fn describe(path: &str) -> Option<&'static str> {
    let shape = shape(path);
    if let Some((_, words)) = FIELDS.iter().find(|(p, _)| *p == shape) {
        return Some(words);
    }
    let (section, field) = shape.rsplit_once('.').unwrap_or(("", &shape));
    if is_expect(section) {
        return EXPECT_FIELDS
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, w)| *w)
            .or(Some("a mapping of keys (key: value)"));
    }
    if is_expect(&shape) || ["poll", "rate_limit"].contains(&shape.as_str()) {
        return Some("a mapping of keys (key: value)");
    }
    None
}

fn known_keys(section: &str) -> &'static [&'static str] {
    let shape = shape(section);
    match shape.as_str() {
        "" => TOP,
        "poll" => POLL,
        "rate_limit" => RATE_LIMIT,
        "regions.*" => REGION,
        "apps[]" => APP,
        "remediate" | "apps[].remediate" => REMEDIATE,
        s if is_expect(s) => EXPECT,
        _ => &[],
    }
}

/// An `expect` block: global or an app's, or a product block inside one.
fn is_expect(shape: &str) -> bool {
    let inner = shape.strip_prefix("apps[].").unwrap_or(shape);
    matches!(
        inner,
        "expect" | "expect.call" | "expect.room" | "expect.live"
    )
}

/// `path` with list indices dropped and region names starred: `apps[].expect.url`,
/// `regions.*.url`.
fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    if let Some(rest) = out.strip_prefix("regions.") {
        let tail = rest
            .split_once('.')
            .map_or(String::new(), |(_, t)| format!(".{t}"));
        return format!("regions.*{tail}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_drop_indices_and_region_names() {
        assert_eq!(shape("apps[12].expect.room.url"), "apps[].expect.room.url");
        assert_eq!(shape("regions.corp.backup"), "regions.*.backup");
        assert_eq!(describe("apps[3].sdkappid"), FIELDS.first().map(|f| f.1));
        assert_eq!(known_keys("apps[0].expect.live"), EXPECT);
        assert_eq!(known_keys("regions.corp"), REGION);
    }
}
