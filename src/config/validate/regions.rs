//! `regions:`: the built-in gateways plus the user's, which may override them.

use std::collections::BTreeMap;

use crate::config::raw::RawRegion;
use crate::config::{BUILTIN_REGIONS, Diagnostics, Region};

/// The built-in regions, then every valid user region over them.
pub(super) fn regions(
    raw: BTreeMap<String, RawRegion>,
    diagnostics: &mut Diagnostics,
) -> BTreeMap<String, Region> {
    let mut regions: BTreeMap<String, Region> = BUILTIN_REGIONS
        .iter()
        .map(|(name, base, backup)| {
            (
                (*name).to_owned(),
                Region {
                    name: (*name).to_owned(),
                    base: (*base).to_owned(),
                    backup: Some((*backup).to_owned()),
                },
            )
        })
        .collect();
    for (name, raw_region) in raw {
        if let Some(region) = user_region(name, raw_region, diagnostics) {
            regions.insert(region.name.clone(), region);
        }
    }
    regions
}

/// One user region; `None` when a URL is not usable.
fn user_region(name: String, raw: RawRegion, diagnostics: &mut Diagnostics) -> Option<Region> {
    let path = format!("regions.{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        diagnostics.error_at_key(
            &path,
            format!("region name {name:?}: use letters, digits, '-' and '_'"),
        );
    }
    let (base, backup, base_path) = match raw {
        RawRegion::Url(url) => (url, None, path.clone()),
        RawRegion::WithBackup { url, backup } => (url, backup, format!("{path}.url")),
    };
    let base = check_region_url(&base)
        .map_err(|message| diagnostics.error(&base_path, format!("region {name}: {message}")));
    let backup = match backup {
        Some(b) => check_region_url(&b).map(Some).map_err(|message| {
            diagnostics.error(
                &format!("{path}.backup"),
                format!("region {name} backup: {message}"),
            )
        }),
        None => Ok(None),
    };
    match (base, backup) {
        (Ok(base), Ok(backup)) => Some(Region { name, base, backup }),
        _ => None,
    }
}

/// A gateway base URL: `https://`, or `http://` to loopback; no query, fragment or
/// userinfo; returned without a trailing slash.
fn check_region_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    let host = url.host_str().unwrap_or_default();
    // RFC 6761: localhost and every name under it are loopback.
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{raw:?}: http:// is only allowed for loopback addresses; use https://"
            ));
        }
        other => return Err(format!("{raw:?}: scheme {other:?} is not https")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{raw:?}: a base URL has no query, fragment or userinfo"
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse_text;

    #[test]
    fn loopback_http_region_is_allowed() {
        let text = "regions:\n  local: \"http://127.0.0.1:18080/\"\n  v6: \"http://[::1]:1\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [local, v6]\n    secret_key_env: K\n";
        let (config, _) = parse_text(text).expect("valid");
        assert_eq!(config.regions["local"].base, "http://127.0.0.1:18080");
        assert_eq!(config.regions["local"].backup, None);
    }
}
