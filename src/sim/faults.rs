//! Fault rules: their scenario/JSON form, which rule a request meets (the first in force
//! for its app, counted down and dropped when used up), and what each kind does: delay,
//! hang, reset, or a misbehaving answer (HTTP 502 page, broken JSON, error-code bursts).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::Simulator;
use super::api::{ApiRequest, Command, envelope, error_info};
use super::connection::Connection;
use super::http::{Body, ConnAbort, html, json_response};
use super::scenario::CallbackConfig;

/// Padding of an oversized answer: past the 1 MiB the client accepts.
const OVERSIZED_PADDING: usize = 2 * 1024 * 1024;
const PAD_CHUNK: usize = 64 * 1024;
static PAD: [u8; PAD_CHUNK] = [b'x'; PAD_CHUNK];

/// What a fault rule does to a request instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// This HTTP status with an nginx-like HTML body (`kind: http_status`, `status: 502`).
    HttpStatus { status: u16 },
    /// Wait, then answer normally (`kind: delay`, `delay: 4s`).
    Delay { delay: Duration },
    /// Read the request and never answer, until the simulator shuts down (`kind: hang`).
    Hang,
    /// Close the TCP connection without answering, with an RST (`kind: reset`).
    Reset,
    /// HTTP 200, `application/json`, truncated JSON (`kind: malformed_json`).
    MalformedJson,
    /// Valid JSON with the wrong types: `ErrorCode` a string, `CallbackCommandList` a
    /// number (`kind: wrong_types`).
    WrongTypes,
    /// A valid JSON body of over 2 MiB, chunked without `Content-Length` (`kind: oversized`).
    Oversized,
    /// HTTP 200 with a `text/html` error page (`kind: html_page`).
    HtmlPage,
    /// The envelope with this ErrorCode (`kind: error_code`, `code: 100001`).
    ErrorCode { code: i64 },
}

/// A fault for one app. Flat syntax, in YAML and JSON alike:
/// `{sdkappid: 1400000002, kind: error_code, code: 100001, count: 2}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFaultRule", into = "RawFaultRule")]
pub struct FaultRule {
    pub sdkappid: u64,
    pub kind: FaultKind,
    /// Apply to the next N requests, then drop the rule; `None` = forever.
    pub count: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultTag {
    HttpStatus,
    Delay,
    Hang,
    Reset,
    MalformedJson,
    WrongTypes,
    Oversized,
    HtmlPage,
    ErrorCode,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaultRule {
    sdkappid: u64,
    kind: FaultTag,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
}

impl TryFrom<RawFaultRule> for FaultRule {
    type Error = String;

    fn try_from(raw: RawFaultRule) -> Result<Self, String> {
        let tag = raw.kind;
        let name = match serde_json::to_value(tag) {
            Ok(serde_json::Value::String(s)) => s,
            _ => format!("{tag:?}"),
        };
        let unexpected = |field: &str| format!("`{field}` does not apply to kind {name}");
        if raw.status.is_some() && tag != FaultTag::HttpStatus {
            return Err(unexpected("status"));
        }
        if raw.delay.is_some() && tag != FaultTag::Delay {
            return Err(unexpected("delay"));
        }
        if raw.code.is_some() && tag != FaultTag::ErrorCode {
            return Err(unexpected("code"));
        }
        if raw.count == Some(0) {
            return Err("`count` must be at least 1 (leave it out for \"forever\")".to_owned());
        }
        let kind = match tag {
            FaultTag::HttpStatus => {
                let status = raw
                    .status
                    .ok_or_else(|| "kind http_status needs `status`".to_owned())?;
                if !(100..=599).contains(&status) || StatusCode::from_u16(status).is_err() {
                    return Err(format!("`status` {status} is not an HTTP status (100-599)"));
                }
                FaultKind::HttpStatus { status }
            }
            FaultTag::Delay => {
                let text = raw
                    .delay
                    .ok_or_else(|| "kind delay needs `delay` (e.g. 4s)".to_owned())?;
                let delay = humantime::parse_duration(&text)
                    .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
                FaultKind::Delay { delay }
            }
            FaultTag::Hang => FaultKind::Hang,
            FaultTag::Reset => FaultKind::Reset,
            FaultTag::MalformedJson => FaultKind::MalformedJson,
            FaultTag::WrongTypes => FaultKind::WrongTypes,
            FaultTag::Oversized => FaultKind::Oversized,
            FaultTag::HtmlPage => FaultKind::HtmlPage,
            FaultTag::ErrorCode => {
                let code = raw
                    .code
                    .ok_or_else(|| "kind error_code needs `code`".to_owned())?;
                if code == 0 {
                    return Err("`code` must not be 0 (that is success)".to_owned());
                }
                FaultKind::ErrorCode { code }
            }
        };
        Ok(FaultRule {
            sdkappid: raw.sdkappid,
            kind,
            count: raw.count,
        })
    }
}

impl From<FaultRule> for RawFaultRule {
    fn from(rule: FaultRule) -> Self {
        let mut raw = RawFaultRule {
            sdkappid: rule.sdkappid,
            kind: FaultTag::Hang,
            status: None,
            delay: None,
            code: None,
            count: rule.count,
        };
        raw.kind = match rule.kind {
            FaultKind::HttpStatus { status } => {
                raw.status = Some(status);
                FaultTag::HttpStatus
            }
            FaultKind::Delay { delay } => {
                raw.delay = Some(humantime::format_duration(delay).to_string());
                FaultTag::Delay
            }
            FaultKind::Hang => FaultTag::Hang,
            FaultKind::Reset => FaultTag::Reset,
            FaultKind::MalformedJson => FaultTag::MalformedJson,
            FaultKind::WrongTypes => FaultTag::WrongTypes,
            FaultKind::Oversized => FaultTag::Oversized,
            FaultKind::HtmlPage => FaultTag::HtmlPage,
            FaultKind::ErrorCode { code } => {
                raw.code = Some(code);
                FaultTag::ErrorCode
            }
        };
        raw
    }
}

/// Takes the first rule in force for `sdkappid`: counts one application, drops the rule
/// once its count is used up, and returns what it does.
pub(super) fn take_matching(rules: &mut Vec<FaultRule>, sdkappid: u64) -> Option<FaultKind> {
    let index = rules
        .iter()
        .position(|r| r.sdkappid == sdkappid && r.count != Some(0))?;
    let rule = &mut rules[index];
    let kind = rule.kind.clone();
    if let Some(n) = rule.count.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            rules.remove(index);
        }
    }
    Some(kind)
}

impl Simulator {
    /// Applies a matched fault: `None` once a delay has passed (answer normally), else
    /// the answer, or why the connection ends without one.
    pub(super) async fn apply_fault(
        &self,
        api: &ApiRequest,
        kind: FaultKind,
        conn: &Connection,
    ) -> Option<Result<Response<Body>, ConnAbort>> {
        match kind {
            FaultKind::Delay { delay } => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => None,
                    () = conn.shutdown.cancelled() => Some(Err(ConnAbort::Shutdown)),
                }
            }
            FaultKind::Hang => {
                tracing::debug!(sdkappid = api.sdkappid, "simulated fault: hang");
                conn.shutdown.cancelled().await;
                Some(Err(ConnAbort::Shutdown))
            }
            FaultKind::Reset => {
                tracing::debug!(sdkappid = api.sdkappid, "simulated fault: reset");
                conn.reset.store(true, Ordering::SeqCst);
                Some(Err(ConnAbort::Reset))
            }
            kind => Some(Ok(self.fault_response(api, kind))),
        }
    }

    fn fault_response(&self, api: &ApiRequest, kind: FaultKind) -> Response<Body> {
        let request_id = self.request_id();
        tracing::debug!(sdkappid = api.sdkappid, fault = ?kind, request_id, "simulated fault");
        match kind {
            FaultKind::HttpStatus { status } => nginx_error_page(status),
            FaultKind::HtmlPage => html(StatusCode::OK, UNAVAILABLE_PAGE.to_owned()),
            FaultKind::MalformedJson => truncated_json(&request_id),
            FaultKind::WrongTypes => wrong_types(&request_id),
            FaultKind::Oversized => {
                let (code, cfg) = match api.command {
                    Command::Get => self.execute(api),
                    _ => (0, None),
                };
                oversized(code, cfg.as_ref(), &request_id)
            }
            FaultKind::ErrorCode { code } => json_response(
                StatusCode::OK,
                envelope(code, error_info(code), &request_id, None),
            ),
            // Handled by apply_fault; answer like the gateway's 100001 if it ever gets here.
            FaultKind::Delay { .. } | FaultKind::Hang | FaultKind::Reset => json_response(
                StatusCode::OK,
                envelope(100001, error_info(100001), &request_id, None),
            ),
        }
    }
}

/// The page of a load balancer in front of the gateway (`http_status`).
fn nginx_error_page(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    html(status, page)
}

/// The `html_page` answer, served with HTTP 200.
const UNAVAILABLE_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Service temporarily unavailable</title></head>\n<body><h1>Service temporarily unavailable</h1><p>Please try again later.</p></body></html>\n";

/// A success envelope cut off inside the configuration (`malformed_json`).
fn truncated_json(request_id: &str) -> Response<Body> {
    let body = format!(
        "{{\"ActionStatus\":\"OK\",\"ErrorCode\":0,\"ErrorInfo\":\"\",\"RequestId\":\"{request_id}\",\"Response\":{{\"Url\":\"https://"
    );
    json_response(StatusCode::OK, body.into_bytes())
}

/// Valid JSON whose `ErrorCode` and `CallbackCommandList` have the wrong types.
fn wrong_types(request_id: &str) -> Response<Body> {
    let body = serde_json::json!({
        "ActionStatus": "OK",
        "ErrorCode": "0",
        "ErrorInfo": "",
        "RequestId": request_id,
        "Response": {"Url": "https://hooks.example.com/tencent/call", "CallbackCommandList": 7},
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// The normal envelope with a padding field of over 2 MiB, streamed without
/// `Content-Length`.
fn oversized(code: i64, cfg: Option<&CallbackConfig>, request_id: &str) -> Response<Body> {
    let head = format!(
        "{{\"ActionStatus\":\"{}\",\"ErrorCode\":{code},\"ErrorInfo\":\"{}\",\"RequestId\":\"{request_id}\",\"Padding\":\"",
        if code == 0 { "OK" } else { "FAIL" },
        error_info(code),
    );
    let tail = match cfg {
        Some(cfg) => format!(
            "\",\"Response\":{}}}",
            serde_json::to_string(cfg).unwrap_or_else(|_| "null".to_owned())
        ),
        None => "\"}".to_owned(),
    };
    let body = PaddedBody {
        head: Some(Bytes::from(head)),
        padding: OVERSIZED_PADDING,
        tail: Some(Bytes::from(tail)),
    };
    let mut resp = Response::new(BodyExt::boxed(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A large body produced chunk by chunk: `head`, `padding` bytes of `x`, `tail`.
struct PaddedBody {
    head: Option<Bytes>,
    padding: usize,
    tail: Option<Bytes>,
}

impl hyper::body::Body for PaddedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if this.padding > 0 {
            let n = this.padding.min(PAD_CHUNK);
            this.padding -= n;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PAD[..n])))));
        }
        Poll::Ready(this.tail.take().map(|tail| Ok(Frame::data(tail))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.padding == 0 && self.tail.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::harness::*;
    use hyper::Method;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn status_and_error_code_faults_apply_count_times_then_stop() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        server.sim.set_faults(vec![
            fault(FaultKind::HttpStatus { status: 502 }, Some(1)),
            fault(FaultKind::ErrorCode { code: 100001 }, Some(2)),
        ]);
        let resp = get(addr, CLEAN).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
        assert!(resp.content_type.starts_with("text/html"));
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        // Faults are per app: the other app is unaffected.
        assert_eq!(get_code(addr, BARE).await, 100301);
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        assert_eq!(get_code(addr, CLEAN).await, 0);
        assert!(server.sim.faults().is_empty());
        // Auth is checked before faults.
        server
            .sim
            .set_faults(vec![fault(FaultKind::ErrorCode { code: 100001 }, None)]);
        let bad_sig = uri("get_callback", CLEAN, "administrator", "garbage");
        assert_eq!(call(addr, Method::POST, &bad_sig, "{}").await.code(), 70003);
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        assert_eq!(get_code(addr, CLEAN).await, 100001);
        server.stop().await;
    }

    #[tokio::test]
    async fn body_faults_misbehave_as_described() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        server.sim.set_faults(vec![
            fault(FaultKind::MalformedJson, Some(1)),
            fault(FaultKind::WrongTypes, Some(1)),
            fault(FaultKind::Oversized, Some(1)),
            fault(FaultKind::HtmlPage, Some(1)),
        ]);
        let malformed = get(addr, CLEAN).await;
        assert_eq!(malformed.status, StatusCode::OK);
        assert_eq!(malformed.content_type, "application/json");
        assert!(serde_json::from_slice::<serde_json::Value>(&malformed.body).is_err());

        let wrong = get(addr, CLEAN).await;
        let json = wrong.json();
        assert!(json["ErrorCode"].is_string());
        assert!(json["Response"]["CallbackCommandList"].is_number());

        let big = get(addr, CLEAN).await;
        assert_eq!(big.status, StatusCode::OK);
        assert!(big.body.len() > 2 * 1024 * 1024, "{}", big.body.len());
        assert_eq!(big.content_length, None, "must be streamed");
        assert_eq!(
            big.json()["Response"]["Url"],
            "https://hooks.example.com/cb"
        );

        let html = get(addr, CLEAN).await;
        assert_eq!(html.status, StatusCode::OK);
        assert!(html.content_type.starts_with("text/html"));
        assert!(html.body.starts_with(b"<!DOCTYPE html>"));

        assert_eq!(get_code(addr, CLEAN).await, 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn delay_fault_delays_then_answers() {
        let server = Server::start(scenario()).await;
        server.sim.set_faults(vec![fault(
            FaultKind::Delay {
                delay: Duration::from_millis(200),
            },
            Some(1),
        )]);
        let started = Instant::now();
        assert_eq!(get_code(server.addr, CLEAN).await, 0);
        assert!(started.elapsed() >= Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(get_code(server.addr, CLEAN).await, 0);
        assert!(started.elapsed() < Duration::from_millis(200));
        server.stop().await;
    }

    #[tokio::test]
    async fn hang_never_answers_and_does_not_block_shutdown() {
        let server = Server::start(scenario()).await;
        server.sim.set_faults(vec![fault(FaultKind::Hang, None)]);
        let addr = server.addr;
        let hung = tokio::spawn(async move {
            Conn::open(addr)
                .await
                .send(Method::POST, &good_uri("get_callback", CLEAN), "{}")
                .await
                .map(|r| r.status)
        });
        // An idle keep-alive connection must not hold shutdown up either.
        let mut idle = Conn::open(addr).await;
        assert_eq!(
            idle.send(Method::GET, "/__sim/stats", "")
                .await
                .unwrap()
                .status,
            StatusCode::OK
        );
        let waited = tokio::time::timeout(Duration::from_millis(300), async {
            while server.sim.stats().requests_total == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "the hung request never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!hung.is_finished());
        let started = Instant::now();
        server.stop().await;
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(
            hung.await.unwrap().is_err(),
            "a hung request gets no answer"
        );
    }

    #[tokio::test]
    async fn reset_fault_closes_the_connection_with_rst() {
        let server = Server::start(scenario()).await;
        server
            .sim
            .set_faults(vec![fault(FaultKind::Reset, Some(1))]);
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
            good_uri("get_callback", CLEAN)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut buf))
            .await
            .unwrap();
        match read {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            Ok(n) => panic!(
                "expected a reset, read {n} bytes: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
        // Only that request was hit.
        assert_eq!(get_code(server.addr, CLEAN).await, 0);
        server.stop().await;
    }
}
