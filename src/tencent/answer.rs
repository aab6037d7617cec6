//! The gateway's answers: what an ErrorCode means, what a failed poll was, and the
//! lenient decoding of a `get_callback` body. No IO: the client hands bodies in.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::drift::Observed;

/// ErrorCode meaning "no callback configuration exists", for every product: documented for
/// call's and live's `get_callback`. Room's `get_callback` documents no such code; room's
/// `update_callback` uses 100301 for it, so it is taken to mean the same, and any other
/// code is a failed poll (never `config_missing`).
pub const CODE_NO_CONFIG: i64 = 100_301;

const RATE_LIMITED: [i64; 5] = [60007, 60011, 60018, 60019, 70050];
pub(super) const USERSIG_EXPIRED: [i64; 2] = [70001, 70052];
const AUTH: [i64; 10] = [
    70002, 70003, 70005, 70009, 70013, 70014, 70016, 60010, 70403, 60021,
];
const TRANSIENT: [i64; 7] = [60008, 60013, 60014, 70169, 70202, 70500, 100_001];
const CLIENT_BUG: [i64; 6] = [60002, 60003, 60009, 60012, 60015, 100_002];

/// What the gateway said besides success, kept for logs and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiAnswer {
    pub code: i64,
    pub info: String,
    pub request_id: Option<String>,
}

impl std::fmt::Display for ApiAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ErrorCode {}", self.code)?;
        if !self.info.is_empty() {
            write!(f, " ({})", self.info)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " RequestId {id}")?;
        }
        Ok(())
    }
}

/// Why a poll got no authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("rate limited by the gateway: {0}")]
    RateLimited(ApiAnswer),
    #[error("authentication failed: {0}")]
    Auth(ApiAnswer),
    #[error("transient gateway error persisted after retries: {0}")]
    Transient(ApiAnswer),
    #[error("the gateway rejected the request as malformed (a calldrift bug, please report): {0}")]
    ClientBug(ApiAnswer),
    #[error("API error: {0}")]
    Api(ApiAnswer),
    #[error("HTTP status {status}")]
    HttpStatus { status: u16 },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("undecodable response: {0}")]
    Decode(String),
}

impl PollError {
    /// The bounded `reason` label of `calldrift_api_request_failures_total` (coarser than
    /// [`PollError::kind`]: the gateway's own refusals share `api_error`).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            PollError::RateLimited(_) => "rate_limited",
            PollError::Auth(_) => "auth",
            PollError::Transient(_) | PollError::ClientBug(_) | PollError::Api(_) => "api_error",
            PollError::HttpStatus { .. } => "http_status",
            PollError::Timeout(_) => "timeout",
            PollError::Transport(_) => "transport",
            PollError::Decode(_) => "decode",
        }
    }

    /// The kind of failure, as reports name it (`error_class`).
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::RateLimited(_) => "rate_limited",
            PollError::Auth(_) => "auth",
            PollError::Transient(_) => "transient",
            PollError::ClientBug(_) => "client_bug",
            PollError::Api(_) => "api_error",
            PollError::HttpStatus { .. } => "http_status",
            PollError::Timeout(_) => "timeout",
            PollError::Transport(_) => "transport",
            PollError::Decode(_) => "decode",
        }
    }

    /// The gateway's answer, when there was a decodable one.
    pub fn answer(&self) -> Option<&ApiAnswer> {
        match self {
            PollError::RateLimited(a)
            | PollError::Auth(a)
            | PollError::Transient(a)
            | PollError::ClientBug(a)
            | PollError::Api(a) => Some(a),
            _ => None,
        }
    }

    /// The ErrorCode for `calldrift_api_error_code`: the gateway's, or -1 without one.
    pub fn error_code(&self) -> i64 {
        self.answer().map_or(-1, |a| a.code)
    }

    pub(super) fn is_retryable(&self) -> bool {
        match self {
            PollError::Transient(_) | PollError::Timeout(_) | PollError::Transport(_) => true,
            PollError::HttpStatus { status } => *status >= 500,
            _ => false,
        }
    }
}

/// The result of polling one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// Shared: an unchanged answer is the observation taken before (see [`LastResponse`]).
    pub result: Result<Arc<Observed>, PollError>,
    /// RequestId of the last answer, if the gateway gave one.
    pub request_id: Option<String>,
    /// HTTP requests sent, retries included.
    pub attempts: u32,
}

impl PollOutcome {
    /// ErrorCode of the last answer: 0 present, 100301 absent, the code of a failure, -1 for none.
    pub fn error_code(&self) -> i64 {
        match self.result.as_deref() {
            Ok(Observed::Present { .. }) => 0,
            Ok(Observed::Absent) => CODE_NO_CONFIG,
            Err(e) => e.error_code(),
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "ErrorCode")]
    error_code: Option<i64>,
    #[serde(rename = "ErrorInfo", default)]
    error_info: Option<String>,
    #[serde(rename = "RequestId", default)]
    request_id: Option<String>,
    /// Kept as written, to be compared with the last one before it is decoded.
    #[serde(rename = "Response", default, borrow)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallbackBody {
    #[serde(rename = "Url", default)]
    url: Option<String>,
    #[serde(rename = "CallbackCommandList", default)]
    commands: Option<Vec<String>>,
}

/// One target's last `Response` as written, and the observation it decoded to. An
/// answer is nearly always the same as the last one; it is then taken from here rather
/// than decoded into new strings.
#[derive(Debug, Default)]
pub struct LastResponse(Mutex<Option<(Box<str>, Arc<Observed>)>>);

impl LastResponse {
    /// The observation of `response`: the last one if the text is the same, else decoded
    /// and kept. `None` for a `Response` without `Url`.
    fn observation(&self, response: &RawValue) -> Result<Option<Arc<Observed>>, serde_json::Error> {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((text, observed)) = &*last {
            if **text == *response.get() {
                return Ok(Some(observed.clone()));
            }
        }
        let CallbackBody { url, commands } = serde_json::from_str(response.get())?;
        let Some(url) = url else {
            return Ok(None);
        };
        let observed = Arc::new(Observed::Present {
            url,
            commands: commands.unwrap_or_default(),
        });
        *last = Some((response.get().into(), observed.clone()));
        Ok(Some(observed))
    }
}

/// What every 100301 answer observes, made once.
static ABSENT: LazyLock<Arc<Observed>> = LazyLock::new(|| Arc::new(Observed::Absent));

/// Decodes a `get_callback` answer. Lenient: unknown fields are ignored and `Response`
/// is optional, except that success must say what the config is.
pub fn decode_get_callback(body: &[u8]) -> (Result<Observed, PollError>, Option<String>) {
    let (result, request_id) = decode_get_callback_after(body, &LastResponse::default());
    (result.map(Arc::unwrap_or_clone), request_id)
}

/// [`decode_get_callback`], taking the observation from `last` when the `Response` is the
/// same as last time.
pub fn decode_get_callback_after(
    body: &[u8],
    last: &LastResponse,
) -> (Result<Arc<Observed>, PollError>, Option<String>) {
    let undecodable = |e: serde_json::Error| {
        let looks_html = body
            .iter()
            .take(512)
            .copied()
            .collect::<Vec<u8>>()
            .to_ascii_lowercase()
            .windows(5)
            .any(|w| w == b"<html");
        let what = if looks_html {
            "an HTML page, not JSON".to_owned()
        } else {
            format!("not the expected JSON ({e})")
        };
        Err(PollError::Decode(format!("{what}, {} bytes", body.len())))
    };
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => return (undecodable(e), None),
    };
    let observation = match envelope.response.map(|r| last.observation(r)) {
        Some(Err(e)) => return (undecodable(e), None),
        Some(Ok(observation)) => observation,
        None => None,
    };
    let request_id = envelope.request_id;
    let Some(code) = envelope.error_code else {
        return (
            Err(PollError::Decode("no ErrorCode in the answer".to_owned())),
            request_id,
        );
    };
    let result = match code {
        0 => observation
            .ok_or_else(|| PollError::Decode("ErrorCode 0 without Response.Url".to_owned())),
        CODE_NO_CONFIG => Ok(ABSENT.clone()),
        _ => Err(refusal(ApiAnswer {
            code,
            info: envelope.error_info.unwrap_or_default(),
            request_id: request_id.clone(),
        })),
    };
    (result, request_id)
}

/// A non-zero ErrorCode as the failure it is.
fn refusal(answer: ApiAnswer) -> PollError {
    match answer.code {
        c if RATE_LIMITED.contains(&c) => PollError::RateLimited(answer),
        c if AUTH.contains(&c) || USERSIG_EXPIRED.contains(&c) => PollError::Auth(answer),
        c if TRANSIENT.contains(&c) => PollError::Transient(answer),
        c if CLIENT_BUG.contains(&c) => PollError::ClientBug(answer),
        _ => PollError::Api(answer),
    }
}

/// Decodes the answer of a `set_callback`, `update_callback` or `delete_callback`: `Ok`
/// for ErrorCode 0; any other code, 100300 and 100301 included, is the gateway's refusal.
pub fn decode_write(body: &[u8]) -> (Result<(), PollError>, Option<String>) {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            let what = format!("not the expected JSON ({e}), {} bytes", body.len());
            return (Err(PollError::Decode(what)), None);
        }
    };
    let request_id = envelope.request_id;
    let result = match envelope.error_code {
        None => Err(PollError::Decode("no ErrorCode in the answer".to_owned())),
        Some(0) => Ok(()),
        Some(code) => Err(refusal(ApiAnswer {
            code,
            info: envelope.error_info.unwrap_or_default(),
            request_id: request_id.clone(),
        })),
    };
    (result, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<Observed, String> {
        decode_get_callback(body.as_bytes())
            .0
            .map_err(|e| format!("{}:{}", e.kind(), e.error_code()))
    }

    #[test]
    fn decoding_table() {
        let present = Observed::Present {
            url: "https://h/cb".into(),
            commands: vec!["Call.CallbackAfterEndCall".into()],
        };
        let cases: Vec<(&str, Result<Observed, String>)> = vec![
            (
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RequestId":"r","Response":{"Url":"https://h/cb","CallbackCommandList":["Call.CallbackAfterEndCall"],"New":1},"Extra":true}"#,
                Ok(present),
            ),
            (
                r#"{"ErrorCode":0,"Response":{"Url":"https://h/cb"}}"#,
                Ok(Observed::Present {
                    url: "https://h/cb".into(),
                    commands: vec![],
                }),
            ),
            (
                r#"{"ActionStatus":"FAIL","ErrorCode":100301,"ErrorInfo":"no config"}"#,
                Ok(Observed::Absent),
            ),
            (
                r#"{"ErrorCode":100301,"Response":{}}"#,
                Ok(Observed::Absent),
            ),
            (r#"{"ErrorCode":0}"#, Err("decode:-1".into())),
            (r#"{"ErrorCode":0,"Response":{}}"#, Err("decode:-1".into())),
            (r#"{"ErrorCode":"0"}"#, Err("decode:-1".into())),
            (
                r#"{"ErrorCode":0,"Response":{"Url":"x","CallbackCommandList":5}}"#,
                Err("decode:-1".into()),
            ),
            (r#"{"ActionStatus":"OK"}"#, Err("decode:-1".into())),
            (
                "<html><body>502 Bad Gateway</body></html>",
                Err("decode:-1".into()),
            ),
            ("", Err("decode:-1".into())),
            (r#"{"ErrorCode":60011}"#, Err("rate_limited:60011".into())),
            (r#"{"ErrorCode":70050}"#, Err("rate_limited:70050".into())),
            (r#"{"ErrorCode":70001}"#, Err("auth:70001".into())),
            (r#"{"ErrorCode":70009}"#, Err("auth:70009".into())),
            (r#"{"ErrorCode":60010}"#, Err("auth:60010".into())),
            (r#"{"ErrorCode":60021}"#, Err("auth:60021".into())),
            (r#"{"ErrorCode":100001}"#, Err("transient:100001".into())),
            (r#"{"ErrorCode":100002}"#, Err("client_bug:100002".into())),
            (r#"{"ErrorCode":70020}"#, Err("api_error:70020".into())),
            (r#"{"ErrorCode":12345}"#, Err("api_error:12345".into())),
        ];
        // The same again through one target's last response, twice: an answer taken from
        // it decodes as it would afresh.
        let last = LastResponse::default();
        for (body, want) in cases.iter().chain(&cases) {
            assert_eq!(&decode(body), want, "{body}");
            let (reused, _) = decode_get_callback_after(body.as_bytes(), &last);
            let reused = reused
                .map(Arc::unwrap_or_clone)
                .map_err(|e| format!("{}:{}", e.kind(), e.error_code()));
            assert_eq!(&reused, want, "{body} after the last response");
        }
    }

    #[test]
    fn an_unchanged_response_is_the_last_observation_and_a_changed_one_is_decoded() {
        let body = |url: &str, id: &str| {
            format!(
                r#"{{"ErrorCode":0,"RequestId":"{id}","Response":{{"Url":"{url}","CallbackCommandList":["Call.CallbackAfterEndCall"]}}}}"#
            )
        };
        let last = LastResponse::default();
        let poll = |body: String| {
            let (result, id) = decode_get_callback_after(body.as_bytes(), &last);
            (result.expect("present"), id.expect("request id"))
        };
        let (first, id) = poll(body("https://h/cb", "r1"));
        let (again, again_id) = poll(body("https://h/cb", "r2"));
        assert!(Arc::ptr_eq(&first, &again), "taken from the last response");
        assert_eq!((id.as_str(), again_id.as_str()), ("r1", "r2"));

        let (changed, _) = poll(body("https://h/new", "r3"));
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.url(), Some("https://h/new"));
        // A failed answer leaves the last response as it was.
        let (failed, _) = decode_get_callback_after(br#"{"ErrorCode":70001}"#, &last);
        assert!(failed.is_err());
        let (same, _) = poll(body("https://h/new", "r4"));
        assert!(Arc::ptr_eq(&changed, &same));
        // And going back is a change like any other.
        let (back, _) = poll(body("https://h/cb", "r5"));
        assert_eq!(*back, *first);
        assert!(!Arc::ptr_eq(&back, &changed));
    }

    #[test]
    fn request_id_and_info_are_kept() {
        let (result, id) =
            decode_get_callback(br#"{"ErrorCode":70009,"ErrorInfo":"bad sig","RequestId":"Id-1"}"#);
        assert_eq!(id.as_deref(), Some("Id-1"));
        let e = result.expect_err("auth");
        assert_eq!(
            e.to_string(),
            "authentication failed: ErrorCode 70009 (bad sig) RequestId Id-1"
        );
        assert_eq!(e.metric_reason(), "auth");
    }

    #[test]
    fn write_answers_keep_every_code_as_a_refusal() {
        let (ok, id) = decode_write(
            br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RequestId":"w-1"}"#,
        );
        assert_eq!((ok, id.as_deref()), (Ok(()), Some("w-1")));
        for (body, kind, code) in [
            (
                r#"{"ErrorCode":100300,"RequestId":"w-2"}"#,
                "api_error",
                100_300,
            ),
            (r#"{"ErrorCode":100301}"#, "api_error", 100_301),
            (r#"{"ErrorCode":60011}"#, "rate_limited", 60011),
            (r#"{"ErrorCode":70001}"#, "auth", 70001),
            (r#"{"ErrorCode":100002}"#, "client_bug", 100_002),
            (r#"{"ActionStatus":"OK"}"#, "decode", -1),
            ("<html>", "decode", -1),
        ] {
            let e = decode_write(body.as_bytes()).0.expect_err(body);
            assert_eq!((e.kind(), e.error_code()), (kind, code), "{body}");
        }
    }

    #[test]
    fn html_pages_are_named() {
        let (result, _) = decode_get_callback(b"<!DOCTYPE html><HTML><h1>Bad gateway</h1></HTML>");
        assert!(
            result
                .expect_err("html")
                .to_string()
                .contains("an HTML page")
        );
    }
}
