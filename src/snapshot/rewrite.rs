//! The fallback when the text cannot be edited in place: the YAML is parsed into a
//! `yaml_serde::Value`, whose mappings keep key order, each app's `expect` is replaced, and
//! the document is serialized again. Comments, anchors and the original quoting are lost.

use std::collections::BTreeMap;

use yaml_serde::Value;

use super::{AppBaseline, Baseline};
use crate::product::Product;

/// The fallback: parse into a `yaml_serde::Value`, replace each app's `expect`, serialize.
pub(super) fn rewrite(text: &str, apps: &BTreeMap<String, AppBaseline>) -> Result<String, String> {
    let mut doc: Value = yaml_serde::from_str(text).map_err(|e| format!("YAML: {e}"))?;
    if let Some(list) = doc.get_mut("apps").and_then(Value::as_sequence_mut) {
        for app in list {
            let map = app.as_mapping_mut().ok_or("an app is not a mapping")?;
            let name = map
                .get("name")
                .and_then(Value::as_str)
                .ok_or("an app without a name")?
                .to_owned();
            let baseline = apps
                .get(&name)
                .ok_or_else(|| format!("app {name} was not observed"))?;
            // Insert keeps the position of an existing key, so `expect` stays where it was.
            map.insert(Value::String("expect".to_owned()), baseline.value());
        }
    }
    yaml_serde::to_string(&doc).map_err(|e| format!("YAML: {e}"))
}

impl AppBaseline {
    /// The app's baselines as a YAML mapping, with the same entries the splice writes:
    /// TUICallKit's at the top, a sub-block per other product.
    fn value(&self) -> Value {
        let mut map = yaml_serde::Mapping::new();
        for (product, watched) in &self.products {
            let Value::Mapping(fields) = watched.baseline.value() else {
                continue;
            };
            match product {
                Product::Call => map.extend(fields),
                other => {
                    map.insert(
                        Value::String(other.as_str().to_owned()),
                        Value::Mapping(fields),
                    );
                }
            }
        }
        Value::Mapping(map)
    }
}

impl Baseline {
    /// One product's baseline as a YAML mapping.
    fn value(&self) -> Value {
        let mut map = yaml_serde::Mapping::new();
        let key = |k: &str| Value::String(k.to_owned());
        match self {
            Baseline::Absent => {
                map.insert(key("present"), Value::Bool(false));
            }
            Baseline::Present {
                url,
                url_scheme,
                commands,
            } => {
                map.insert(key("present"), Value::Bool(true));
                map.insert(key("url"), Value::String(url.clone()));
                map.insert(key("url_scheme"), Value::String(url_scheme.clone()));
                map.insert(key("url_prefix"), Value::Null);
                map.insert(
                    key("commands"),
                    Value::Sequence(commands.iter().cloned().map(Value::String).collect()),
                );
                map.insert(key("extra_commands"), Value::String("drift".to_owned()));
                map.insert(key("ignore_commands"), Value::Sequence(Vec::new()));
            }
        }
        Value::Mapping(map)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::drift::{Observed, Presence};
    use crate::product::Product;
    use crate::snapshot::fixtures::{
        START, baselines_by_product, baselines_for, is_call_baseline, parse, present,
    };
    use crate::snapshot::render;

    #[test]
    fn the_fallback_rewrites_and_says_comments_are_gone() {
        // An alias as an app's expect: cannot be spliced without breaking other users of it.
        let text = "expect: &shared\n  present: true\napps:\n  - name: a  # note\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    expect: *shared\n";
        let config = parse(text);
        let apps = baselines_for(&config, &[present("https://h.example.com/", &[START])]);
        let out =
            render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n").expect("rewritten");
        assert!(!out.comments_kept);
        assert!(
            out.text.contains("could not be edited in place"),
            "{}",
            out.text
        );
        assert!(!out.text.contains("# note"));
        assert!(is_call_baseline(&apps["a"], &parse(&out.text).apps[0]));
    }

    #[test]
    fn the_fallback_writes_other_products_into_their_sub_blocks() {
        let text = "expect: &shared\n  present: true\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    products: [call, live]\n    expect: *shared\n";
        let config = parse(text);
        let live = present(
            "https://h.example.com/live",
            &["Live.CallbackAfterCreateRoom"],
        );
        let apps = baselines_by_product(&config, &[vec![Observed::Absent, live]]);
        let out =
            render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n").expect("rewritten");
        assert!(!out.comments_kept);
        let again = parse(&out.text);
        let app = &again.apps[0];
        assert_eq!(
            app.expect(Product::Call).map(|e| e.present),
            Some(Presence::Forbidden)
        );
        let live = app.expect(Product::Live).expect("live watched");
        assert_eq!(live.url.as_deref(), Some("https://h.example.com/live"));
        assert!(out.text.contains("  live:\n"), "{}", out.text);
    }
}
