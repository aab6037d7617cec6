//! Property tests: generated inputs for the pure parts of calldrift (the drift engine,
//! the fingerprint, URL redaction, UserSig, the config parser and the decoding of
//! `get_callback` answers). Each property runs 256 cases; the whole file takes a few
//! seconds. The fuzz targets in `fuzz/` push the parsers much further.

use std::path::Path;

use calldrift::config;
use calldrift::drift::{self, Check, Expected, ExtraCommands, Observed, Presence};
use calldrift::product::Product;
use calldrift::redact;
use calldrift::secret::SecretKey;
use calldrift::tencent::usersig;
use calldrift::tencent::{self, PollError};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Failures are reported in the test output; no regression files in tests/.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- generators ------------------------------------------------------------------------

/// A command word: one of the documented three, a near miss, or any string.
fn command() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(Product::Call.documented_commands().to_vec()).prop_map(str::to_owned),
        1 => Just("Call.Future".to_owned()),
        1 => Just(String::new()),
        2 => any::<String>(),
    ]
}

fn commands() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(command(), 0..6)
}

/// Something a callback URL field could hold: well-formed URLs, near misses, any string.
fn url_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (
            prop::sample::select(vec!["https", "http", "HTTPS", "ftp", ""]),
            "[a-z0-9.-]{0,12}",
            "(/[a-zA-Z0-9._~%-]{0,8}){0,3}",
            prop::option::of("[a-z]{1,4}=[a-zA-Z0-9]{0,6}(&[a-z]{1,4}=[a-zA-Z0-9]{0,6}){0,2}"),
        )
            .prop_map(|(scheme, host, path, query)| {
                let mut s = format!("{scheme}://{host}{path}");
                if let Some(q) = query {
                    s.push('?');
                    s.push_str(&q);
                }
                s
            }),
        1 => Just("https://hooks.example.com/cb".to_owned()),
        2 => any::<String>(),
    ]
}

fn presence() -> impl Strategy<Value = Presence> {
    prop::sample::select(vec![Presence::Required, Presence::Forbidden, Presence::Any])
}

fn expected() -> impl Strategy<Value = Expected> {
    (
        presence(),
        prop_oneof![
            Just("https".to_owned()),
            Just("http".to_owned()),
            "[a-z+.-]{0,6}"
        ],
        prop::option::of(url_text()),
        prop::option::of(url_text()),
        commands(),
        prop::bool::ANY.prop_map(|drift| {
            if drift {
                ExtraCommands::Drift
            } else {
                ExtraCommands::Allow
            }
        }),
        commands(),
    )
        .prop_map(
            |(present, url_scheme, url, url_prefix, commands, extra_commands, ignore_commands)| {
                Expected {
                    present,
                    url_scheme,
                    url,
                    url_prefix,
                    commands,
                    extra_commands,
                    ignore_commands,
                }
            },
        )
}

fn observed() -> impl Strategy<Value = Observed> {
    prop_oneof![
        1 => Just(Observed::Absent),
        4 => (url_text(), commands()).prop_map(|(url, commands)| Observed::Present { url, commands }),
    ]
}

// ---- (a) the drift engine is total and deterministic -----------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn check_is_total_deterministic_and_ordered(e in expected(), o in observed()) {
        let first = drift::check(&e, &o);
        let second = drift::check(&e.clone(), &o.clone());
        prop_assert_eq!(&first, &second);

        // Sorted by check; command findings within a check sorted by word, no repeats.
        for pair in first.windows(2) {
            prop_assert!(pair[0].check <= pair[1].check, "out of order: {:?}", first);
            if pair[0].check == pair[1].check
                && matches!(pair[0].check, Check::CommandMissing | Check::CommandUnexpected)
            {
                prop_assert!(pair[0] < pair[1], "command findings not strictly sorted: {:?}", first);
            }
        }

        // Presence decides alone when the configuration is absent or forbidden.
        match (&o, e.present) {
            (Observed::Absent, Presence::Required) => {
                prop_assert_eq!(first.len(), 1);
                prop_assert_eq!(first[0].check, Check::ConfigMissing);
            }
            (Observed::Absent, _) => prop_assert!(first.is_empty()),
            (Observed::Present { .. }, Presence::Forbidden) => {
                prop_assert_eq!(first.len(), 1);
                prop_assert_eq!(first[0].check, Check::ConfigUnexpected);
            }
            (Observed::Present { .. }, _) => {
                prop_assert!(first.iter().all(|f| !matches!(
                    f.check,
                    Check::ConfigMissing | Check::ConfigUnexpected
                )));
            }
        }

        // Showing a finding never panics either.
        for f in &first {
            let _ = f.to_string();
        }
        let _ = calldrift::report::summary(&o);
    }

    /// The engine only depends on the set of observed commands.
    #[test]
    fn check_ignores_observed_command_order_and_duplicates(
        e in expected(),
        url in url_text(),
        cmds in commands(),
        seed in any::<u64>(),
    ) {
        let a = Observed::Present { url: url.clone(), commands: cmds.clone() };
        let b = Observed::Present { url, commands: shuffle_with_duplicates(&cmds, seed) };
        prop_assert_eq!(drift::check(&e, &a), drift::check(&e, &b));
    }
}

/// A deterministic shuffle of `items`, with some items repeated, driven by `seed`.
fn shuffle_with_duplicates(items: &[String], seed: u64) -> Vec<String> {
    let mut state = seed | 1;
    let mut next = || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out: Vec<String> = items.to_vec();
    for item in items {
        if next() % 2 == 0 {
            out.push(item.clone());
        }
    }
    for i in (1..out.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

// ---- (b) the fingerprint ---------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fingerprint_ignores_order_and_duplicates(
        url in url_text(),
        cmds in commands(),
        seed in any::<u64>(),
    ) {
        let a = Observed::Present { url: url.clone(), commands: cmds.clone() };
        let b = Observed::Present { url, commands: shuffle_with_duplicates(&cmds, seed) };
        prop_assert_eq!(a.fingerprint(), b.fingerprint());
        prop_assert!(a.fingerprint() < 1 << 48);
    }

    #[test]
    fn fingerprint_differs_for_different_urls(
        u1 in url_text(),
        u2 in url_text(),
        cmds in commands(),
    ) {
        prop_assume!(u1 != u2);
        let a = Observed::Present { url: u1, commands: cmds.clone() };
        let b = Observed::Present { url: u2, commands: cmds };
        // 48 bits: a chance collision in 256 cases is about 1 in 10^12.
        prop_assert_ne!(a.fingerprint(), b.fingerprint());
        prop_assert_ne!(a.fingerprint(), Observed::Absent.fingerprint());
        prop_assert!(a.fingerprint() < 1 << 48 && b.fingerprint() < 1 << 48);
    }
}

/// Regression test (fuzz/artifacts-found/README.md): the fingerprint once joined URL and
/// command words with NUL bytes without lengths, so a NUL inside a command word (`"\u0000"`
/// in the gateway's JSON) could make two configurations that behave differently collide.
#[test]
fn a_nul_in_a_command_word_cannot_make_fingerprints_collide() {
    let one_word = Observed::Present {
        url: "https://h/cb".to_owned(),
        commands: vec!["Call.CallbackAfterEndCall\0Call.CallbackAfterStartCall".to_owned()],
    };
    let two_words = Observed::Present {
        url: "https://h/cb".to_owned(),
        commands: vec![
            "Call.CallbackAfterStartCall".to_owned(),
            "Call.CallbackAfterEndCall".to_owned(),
        ],
    };
    // They behave differently: the default expectation is met by one and not the other.
    let e = Expected::default();
    assert_ne!(drift::check(&e, &one_word), drift::check(&e, &two_words));
    assert_ne!(one_word.fingerprint(), two_words.fingerprint());
}

// ---- (c) redaction ---------------------------------------------------------------------

/// A URL built from parts, with the secrets it holds.
#[derive(Debug, Clone)]
struct BuiltUrl {
    text: String,
    /// Query values and bare query items (each at least 6 letters/digits).
    values: Vec<String>,
    password: Option<String>,
    /// How many `REDACTED` the redacted form must hold at least.
    redactions: usize,
}

fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{6,16}"
}

fn built_url() -> impl Strategy<Value = BuiltUrl> {
    (
        prop::sample::select(vec!["https", "http", "HTTPS", "ws", "x-custom"]),
        prop::option::of(("[a-z0-9]{1,8}", prop::option::of(secret()))),
        "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,3}(:[0-9]{1,5})?",
        "(/[a-zA-Z0-9._~%!$'()*+,:-]{0,10}){0,4}/?",
        prop::collection::vec((prop::option::of("[a-zA-Z0-9_.~%-]{0,8}"), secret()), 0..3),
        prop::collection::vec((prop::option::of("[a-zA-Z0-9_.~%-]{0,8}"), secret()), 0..5),
        prop::option::of(secret()),
    )
        .prop_map(
            |(scheme, userinfo, host, path, parameters, pairs, fragment)| {
                let mut text = format!("{scheme}://");
                let mut password = None;
                if let Some((user, pass)) = userinfo {
                    text.push_str(&user);
                    if let Some(pass) = pass {
                        text.push(':');
                        text.push_str(&pass);
                        password = Some(pass);
                    }
                    text.push('@');
                }
                text.push_str(&host);
                text.push_str(&path);
                let mut values = Vec::new();
                let mut redactions = 0;
                if !parameters.is_empty() {
                    // Path parameters, e.g. `/cb;jsessionid=s3cr3t`.
                    text.push_str("/cb");
                    for (name, value) in parameters {
                        values.push(value.clone());
                        redactions += 1;
                        text.push(';');
                        match name {
                            Some(name) => text.push_str(&format!("{name}={value}")),
                            None => text.push_str(&value),
                        }
                    }
                }
                if !pairs.is_empty() {
                    let items: Vec<String> = pairs
                        .into_iter()
                        .map(|(name, value)| {
                            values.push(value.clone());
                            redactions += 1;
                            match name {
                                Some(name) => format!("{name}={value}"),
                                // A bare item, e.g. `?s3cr3ttoken`.
                                None => value,
                            }
                        })
                        .collect();
                    text.push('?');
                    text.push_str(&items.join("&"));
                }
                if let Some(fragment) = fragment {
                    text.push('#');
                    text.push_str(&fragment);
                    values.push(fragment);
                    redactions += 1;
                }
                BuiltUrl {
                    text,
                    values,
                    password,
                    redactions,
                }
            },
        )
}

/// Whether `needle` occurs in `url` only where it is a secret: neither inside `REDACTED`
/// nor inside the parts that are shown (scheme, user, host, path, query names).
fn searchable(url: &BuiltUrl, needle: &str) -> bool {
    let mut shown = url.text.clone();
    for secret in url.values.iter().chain(url.password.iter()) {
        shown = shown.replace(secret.as_str(), "\u{1}");
    }
    !"REDACTED".contains(needle) && !shown.contains(needle) && !needle.contains("REDACTED")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn redaction_leaves_no_query_value_path_parameter_fragment_or_password(url in built_url()) {
        let shown = redact::url(&url.text);
        for value in &url.values {
            prop_assume!(searchable(&url, value));
            prop_assert!(!shown.contains(value.as_str()), "{:?} leaks {:?}: {:?}", url.text, value, shown);
        }
        if let Some(password) = &url.password {
            prop_assume!(searchable(&url, password));
            prop_assert!(!shown.contains(password.as_str()), "{:?} leaks the password: {:?}", url.text, shown);
            prop_assert!(!shown.contains('@'), "{:?} keeps userinfo: {:?}", url.text, shown);
        }
        prop_assert_eq!(
            shown.matches("REDACTED").count(),
            url.redactions,
            "{:?} -> {:?}", url.text, shown
        );
        // Redaction is idempotent: showing a shown URL changes nothing.
        prop_assert_eq!(redact::url(&shown), shown.clone());
    }

    #[test]
    fn redaction_never_panics(raw in any::<String>()) {
        let shown = redact::url(&raw);
        // Nothing after a `?`, `#` or `;` survives except names and `REDACTED`.
        if !raw.contains('?') && !raw.contains('#') && !raw.contains('@') && !raw.contains(';') {
            prop_assert_eq!(shown, raw);
        }
    }
}

/// Regression test (fuzz/artifacts-found/README.md): `redact::url` once looked for userinfo
/// only after a literal `://`, but the WHATWG parser (the `url` crate, which validates
/// `expect.url` in the config) also accepts `https:/u:pw@h`, `https:u:pw@h` and
/// backslashes for special schemes, and finds the same password there.
#[test]
fn lenient_spellings_of_userinfo_are_redacted_too() {
    for raw in [
        "https:/u:s3cr3tpw@hooks.example.com/cb",
        "https:u:s3cr3tpw@hooks.example.com/cb",
        "https:\\\\u:s3cr3tpw@hooks.example.com/cb",
        "https:/\t/u:s3cr3tpw@hooks.example.com/cb",
    ] {
        let parsed = url::Url::parse(raw);
        assert_eq!(
            parsed.as_ref().ok().and_then(|u| u.password()),
            Some("s3cr3tpw"),
            "{raw}"
        );
        let shown = redact::url(raw);
        assert!(!shown.contains("s3cr3tpw"), "{raw:?} -> {shown:?}");
    }

    // End to end: the config accepts such an `expect.url`, and a url_mismatch finding
    // (logged, shown on /api/v1/targets and the landing page) carries it.
    let yaml = "apps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    expect:\n      url: \"https:/u:s3cr3tpw@hooks.example.com/cb\"\n";
    let parsed = config::parse(yaml, "repro.yaml", Path::new("/nonexistent"));
    let Ok((cfg, _)) = parsed else {
        // Validation now refuses the lenient form: the leak cannot happen through config.
        return;
    };
    let observed = Observed::Present {
        url: "https://hooks.example.com/other".to_owned(),
        commands: vec![],
    };
    let findings = drift::check(&cfg.apps[0].products[&Product::Call], &observed);
    let mismatch = findings.iter().find(|f| f.check == Check::UrlMismatch);
    assert!(mismatch.is_some(), "{findings:?}");
    assert!(
        !mismatch
            .and_then(|f| f.expected.as_deref())
            .unwrap_or("")
            .contains("s3cr3tpw")
    );
}

// ---- (d) UserSig -----------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn minted_usersigs_verify(
        key in "[ -~]{0,64}",
        sdkappid in any::<u64>(),
        identifier in any::<String>(),
        time in any::<u64>(),
        expire in any::<u64>(),
    ) {
        let key = SecretKey::new(key);
        let sig = usersig::mint(&key, sdkappid, &identifier, time, expire);
        let decoded = usersig::verify(&key, sig.expose(), sdkappid, &identifier, time)
            .map_err(|e| TestCaseError::fail(format!("own UserSig refused: {e:?}")))?;
        prop_assert_eq!(&decoded.identifier, &identifier);
        prop_assert_eq!(decoded.sdkappid, sdkappid);
        prop_assert_eq!(decoded.time, time);
        prop_assert_eq!(decoded.expire, expire);
        // Another identifier or app is refused.
        let other = format!("{identifier}x");
        prop_assert_eq!(
            usersig::verify(&key, sig.expose(), sdkappid, &other, time),
            Err(usersig::VerifyError::IdentifierMismatch)
        );
        prop_assert_eq!(
            usersig::verify(&key, sig.expose(), sdkappid.wrapping_add(1), &identifier, time),
            Err(usersig::VerifyError::SdkAppIdMismatch)
        );
    }

    #[test]
    fn usersig_decode_never_panics(raw in any::<String>()) {
        let _ = usersig::decode(&raw);
        let _ = usersig::verify(&SecretKey::new("k"), &raw, 1, "administrator", 0);
    }

    /// Strings over the UserSig alphabet get past the Base64 step and exercise zlib.
    #[test]
    fn usersig_decode_never_panics_on_its_alphabet(raw in "eJ[A-Za-z0-9*_-]{0,200}") {
        let _ = usersig::decode(&raw);
    }
}

// ---- (e) the config parser -------------------------------------------------------------

/// YAML-shaped text over the config's own keys, so generated documents get past the
/// YAML layer into validation.
fn config_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "listen",
        "log_format",
        "log_level",
        "poll",
        "interval",
        "timeout",
        "retries",
        "max_concurrency",
        "rate_limit",
        "per_second",
        "per_app_per_second",
        "regions",
        "expect",
        "present",
        "url_scheme",
        "url",
        "url_prefix",
        "commands",
        "extra_commands",
        "ignore_commands",
        "apps",
        "name",
        "sdkappid",
        "identifier",
        "secret_key",
        "secret_key_env",
        "secret_key_file",
        "usersig_ttl",
        "china",
        "typo",
    ]);
    let value = prop_oneof![
        Just(String::new()),
        Just("true".to_owned()),
        Just("any".to_owned()),
        Just("[china, tokyo]".to_owned()),
        Just("- Call.CallbackAfterStartCall".to_owned()),
        Just("https://hooks.example.com/cb".to_owned()),
        Just("0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("30s".to_owned()),
        Just("99999999999999999999y".to_owned()),
        Just("&a x".to_owned()),
        Just("*a".to_owned()),
        Just("{a: 1}".to_owned()),
        "[ -~]{0,12}",
    ];
    let line = (0usize..4, prop::bool::ANY, key, value).prop_map(|(indent, dash, key, value)| {
        format!(
            "{}{}{key}: {value}",
            "  ".repeat(indent),
            if dash { "- " } else { "" }
        )
    });
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_parse_never_panics(text in any::<String>()) {
        let _ = config::parse(&text, "prop.yaml", Path::new("/nonexistent"));
    }

    #[test]
    fn config_parse_never_panics_on_config_shaped_text(text in config_like()) {
        match config::parse(&text, "prop.yaml", Path::new("/nonexistent")) {
            Ok((cfg, warnings)) => {
                let _ = cfg.effective_interval();
                for w in warnings {
                    prop_assert!(w.to_string().starts_with("prop.yaml:"));
                }
            }
            Err(e) => {
                for line in e.diagnostics() {
                    prop_assert!(line.starts_with("prop.yaml:"), "{}", line);
                }
            }
        }
    }
}

// ---- (f) decoding `get_callback` answers -----------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decode_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = tencent::decode_get_callback(&body);
    }

    #[test]
    fn decode_never_panics_on_json_text(body in "[{}\\[\\]\",:0-9a-zA-Z ]{0,128}") {
        let _ = tencent::decode_get_callback(body.as_bytes());
    }

    #[test]
    fn any_other_error_code_is_an_error(
        code in any::<i64>(),
        request_id in prop::option::of("[A-Za-z0-9-]{1,16}"),
        with_response in prop::bool::ANY,
    ) {
        prop_assume!(code != 0 && code != tencent::CODE_NO_CONFIG);
        let mut body = serde_json::json!({ "ErrorCode": code, "ErrorInfo": "x" });
        if let Some(id) = &request_id {
            body["RequestId"] = serde_json::json!(id);
        }
        if with_response {
            body["Response"] = serde_json::json!({ "Url": "https://h/cb", "CallbackCommandList": [] });
        }
        let (result, id) = tencent::decode_get_callback(body.to_string().as_bytes());
        prop_assert_eq!(&id, &request_id);
        match result {
            Err(e) => {
                prop_assert!(!matches!(e, PollError::Decode(_)), "{:?}", e);
                prop_assert_eq!(e.error_code(), code);
            }
            Ok(o) => prop_assert!(false, "ErrorCode {} decoded as {:?}", code, o),
        }
    }

    #[test]
    fn success_keeps_url_and_commands(url in any::<String>(), cmds in commands()) {
        let body = serde_json::json!({
            "ErrorCode": 0,
            "Response": { "Url": url, "CallbackCommandList": cmds },
        });
        let (result, _) = tencent::decode_get_callback(body.to_string().as_bytes());
        prop_assert_eq!(result, Ok(Observed::Present { url, commands: cmds }));
    }
}
