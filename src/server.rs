//! The HTTP server: `/metrics`, the landing page, `/api/v1/targets`, the probes and
//! `/-/reload`. It takes a bound listener and a shutdown token, so tests drive it on
//! `127.0.0.1:0`.
//!
//! With a `web_config_file` it speaks TLS and asks for basic auth on every path but the
//! probes (see [`crate::web`]). A reload a browser marks as cross-site is refused
//! ([`cross_site`]), with or without auth.
//!
//! **Invariant:** a slow or flooding client cannot starve polling or other scrapers:
//! connections are capped per client address and in all ([`limits`]), TLS handshakes and
//! request heads are bounded in size and time, and handlers only read shared state.

pub mod cross_site;
pub mod limits;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::report::Verdict;
use crate::status::Status;
use crate::web::{self, WebConfig};
use limits::ConnectionLimits;

pub use limits::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER};

/// Time a client gets to send a request head, counted from when the server starts
/// waiting for it: on a new connection, and on a kept-alive one after each response, so
/// it is the idle timeout too. A scraper sends its head in one write.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client gets to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body read (the endpoints take none).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A reload request: the reply carries the validation errors, if any.
pub type ReloadReply = oneshot::Sender<Result<(), Vec<String>>>;

/// What the handlers read.
pub struct AppState {
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    /// Where `POST /-/reload` asks the daemon to reload; `None` disables the endpoint.
    pub reload: Option<mpsc::Sender<ReloadReply>>,
    /// TLS and basic auth from `web_config_file`; a reload swaps it whole.
    pub web: RwLock<Arc<WebConfig>>,
}

impl AppState {
    /// The web config in force now.
    pub fn web(&self) -> Arc<WebConfig> {
        // A panic while holding the lock leaves a whole Arc behind; still usable.
        self.web.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the web config: TLS applies to new connections, users to new requests.
    pub fn set_web(&self, web: Arc<WebConfig>) {
        *self.web.write().unwrap_or_else(|p| p.into_inner()) = web;
    }
}

/// Serves until `shutdown` is cancelled, then lets open requests finish for a moment.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = ConnectionLimits::for_this_process();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // A slot taken but not used: kept for the next connection.
    let mut spare = None;
    loop {
        let slot = match spare.take() {
            Some(slot) => slot,
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                slot = limits.slot() => match slot { Some(slot) => slot, None => break },
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    spare = Some(slot);
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accepting an HTTP connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let admission = match limits.admit(slot, peer.ip()) {
            Ok(admission) => admission,
            Err(slot) => {
                // Closed at once (the stream is dropped), before TLS or auth cost anything.
                tracing::debug!(
                    "closed an HTTP connection from {peer}: {MAX_CONNECTIONS_PER_PEER} from its address are open"
                );
                spare = Some(slot);
                continue;
            }
        };
        let tls = state.web().tls.clone();
        let (state, watcher, shutdown) = (state.clone(), graceful.watcher(), shutdown.clone());
        tokio::spawn(async move {
            let _admission = admission;
            match tls {
                Some(tls) => serve_tls(stream, tls, state, watcher, shutdown).await,
                None => serve(stream, state, watcher).await,
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    Ok(())
}

/// Completes the TLS handshake on one connection, then serves it.
async fn serve_tls(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    watcher: Watcher,
    shutdown: CancellationToken,
) {
    // The handshake runs in the connection's task, not in the accept loop, so a slow
    // client only holds its own connection slots.
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        done = tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT,
            tokio_rustls::TlsAcceptor::from(tls).accept(stream),
        ) => done,
    };
    match handshake {
        Ok(Ok(stream)) => serve(stream, state, watcher).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until it closes or shutdown ends it.
async fn serve<S>(stream: S, state: Arc<AppState>, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .serve_connection(TokioIo::new(stream), service);
    let _ = watcher.watch(conn).await;
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Paths open without credentials: orchestrators probe them without any.
const PROBES: [&str; 2] = ["/-/healthy", "/-/ready"];

/// The 401 answer, counted by reason, when the web config asks for credentials and
/// `headers` hold no valid ones.
async fn refuse_unauthorized(
    state: &AppState,
    headers: &hyper::HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    let web = state.web();
    if !web.requires_auth() {
        return None;
    }
    let credentials = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let failure = web.authorize(credentials).await.err()?;
    state
        .metrics
        .http_auth_failures
        .with_label_values(&[failure.as_str()])
        .inc();
    let mut response = respond(StatusCode::UNAUTHORIZED, TEXT, "unauthorized\n");
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(web::WWW_AUTHENTICATE),
    );
    Some(response)
}

async fn handle(state: &AppState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if !PROBES.contains(&path.as_str()) {
        if let Some(refusal) = refuse_unauthorized(state, req.headers()).await {
            return refusal;
        }
    }
    let read_only = method == Method::GET || method == Method::HEAD;
    match (path.as_str(), read_only) {
        ("/metrics", true) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.status.render_metrics(),
        ),
        ("/", true) => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            landing_page(&state.status),
        ),
        ("/api/v1/targets", true) => match serde_json::to_vec_pretty(&state.status.report()) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("cannot encode the report: {e}\n"),
            ),
        },
        ("/api/v1/transitions", true) => {
            match serde_json::to_vec_pretty(&state.status.transitions()) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("cannot encode transitions: {e}\n"),
                ),
            }
        }
        ("/-/healthy", true) => respond(StatusCode::OK, TEXT, "Healthy\n"),
        ("/-/ready", true) => {
            if state.status.ready() {
                respond(StatusCode::OK, TEXT, "Ready\n")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "Not ready: some targets have not been polled yet\n",
                )
            }
        }
        ("/-/reload", _) if method == Method::POST || method == Method::PUT => {
            reload_request(state, req).await
        }
        (
            "/metrics"
            | "/"
            | "/api/v1/targets"
            | "/api/v1/transitions"
            | "/-/healthy"
            | "/-/ready"
            | "/-/reload",
            _,
        ) => respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n"),
        _ => respond(StatusCode::NOT_FOUND, TEXT, "not found\n"),
    }
}

/// `POST /-/reload`, unless a browser sent it from another site.
async fn reload_request(state: &AppState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let authority = req.uri().authority().map(|a| a.as_str());
    if cross_site::is_cross_site(req.headers(), authority) {
        tracing::warn!(
            origin = ?req.headers().get(ORIGIN),
            "refused a cross-site reload request"
        );
        return respond(
            StatusCode::FORBIDDEN,
            TEXT,
            "refused: a browser marked this reload request as cross-site\n",
        );
    }
    // The body is ignored, but read (bounded in size and time) so keep-alive stays usable.
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES).collect();
    if tokio::time::timeout(HEADER_TIMEOUT, body).await.is_err() {
        return respond(StatusCode::REQUEST_TIMEOUT, TEXT, "request body too slow\n");
    }
    reload(state).await
}

async fn reload(state: &AppState) -> Response<Full<Bytes>> {
    let Some(sender) = &state.reload else {
        return respond(
            StatusCode::NOT_IMPLEMENTED,
            TEXT,
            "reload is not available\n",
        );
    };
    let (reply, answer) = oneshot::channel();
    if sender.send(reply).await.is_err() {
        return respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "shutting down\n");
    }
    match answer.await {
        Ok(Ok(())) => respond(StatusCode::OK, TEXT, "config reloaded\n"),
        Ok(Err(errors)) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            format!(
                "reload failed; the previous config stays:\n{}\n",
                errors.join("\n")
            ),
        ),
        Err(_) => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "shutting down\n"),
    }
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 3339, from Unix seconds. The clock can be set anywhere, so out-of-range times are
/// clamped, not a panic: before 1970 shows the epoch, past year 9999 (the last humantime
/// formats) its last second.
fn timestamp(unix: f64) -> String {
    const LAST: f64 = 253_402_300_799.0;
    let secs = if unix.is_nan() {
        0.0
    } else {
        unix.clamp(0.0, LAST)
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(secs)).to_string()
}

/// The landing page: plain server-rendered HTML, no JavaScript.
/// The endpoint column: `up` or `down (reason)`, and the certificate's days left.
fn endpoint_cell(endpoint: Option<&crate::report::EndpointReport>) -> String {
    let Some(e) = endpoint else {
        return String::new();
    };
    let mut cell = match &e.failure {
        None => "up".to_owned(),
        Some(reason) => format!("down ({reason})"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Some(days) = e.days_left(now) {
        cell.push_str(&format!(", {} days left", days.floor()));
    }
    cell
}

fn landing_page(status: &Status) -> String {
    let report = status.report();
    let transitions = status.transitions();
    let mut html = String::with_capacity(16 * 1024);
    let s = &report.summary;
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>calldrift</title>\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
         .ok{{color:#176f2c}}.drift{{color:#a35200;font-weight:bold}}.error{{color:#b00020;font-weight:bold}}\
         code{{font-size:90%}}</style></head><body>\
         <h1>calldrift</h1><p>{} targets: {} clean, {} drifted, {} errors. \
         <a href=\"/metrics\">metrics</a> · <a href=\"/api/v1/targets\">JSON</a> · \
         <a href=\"/-/ready\">readiness</a></p>\
         <h2>Targets</h2><table><tr><th>app</th><th>SDKAppID</th><th>region</th><th>product</th><th>status</th>\
         <th>last poll</th><th>callback URL</th><th>endpoint</th><th>commands</th><th>findings</th><th>error</th></tr>",
        s.targets, s.clean, s.drifted, s.errors
    );
    for t in &report.targets {
        let class = t.status.as_str();
        let last_poll = t.last_poll.map_or_else(|| "not yet".to_owned(), timestamp);
        let (url, commands) = match &t.observed {
            Some(o) if o.present => (o.url.clone().unwrap_or_default(), o.commands.join(", ")),
            Some(_) => ("(no callback configuration)".to_owned(), String::new()),
            None => (String::new(), String::new()),
        };
        let findings: Vec<String> = t.findings.iter().map(|f| escape(&f.to_string())).collect();
        let error = match (&t.error, t.status) {
            (Some(e), Verdict::Error) => {
                format!(
                    "{}{}",
                    escape(e),
                    t.request_id
                        .as_deref()
                        .map(|id| format!(" <code>{}</code>", escape(id)))
                        .unwrap_or_default()
                )
            }
            _ => String::new(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{class}</td>\
             <td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.app),
            t.sdkappid,
            escape(&t.region),
            t.product,
            escape(&last_poll),
            escape(&url),
            escape(&endpoint_cell(t.endpoint.as_ref())),
            escape(&commands),
            findings.join("<br>"),
            error
        );
    }
    html.push_str("</table><h2>Last transitions</h2><table><tr><th>time</th><th>target</th><th>transition</th><th>detail</th></tr>");
    if transitions.is_empty() {
        html.push_str("<tr><td colspan=\"4\">none yet</td></tr>");
    }
    for t in &transitions {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{} ({}, {}, {})</td><td>{}</td><td>{}</td></tr>",
            escape(&timestamp(t.time)),
            escape(&t.app),
            t.sdkappid,
            escape(&t.region),
            t.product,
            t.kind.as_str(),
            escape(&t.detail)
        );
    }
    html.push_str("</table></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::{escape, timestamp};

    #[test]
    fn timestamps_out_of_range_are_clamped_not_a_panic() {
        assert_eq!(timestamp(86_400.5), "1970-01-02T00:00:00Z");
        assert_eq!(timestamp(-5.0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(f64::NAN), "1970-01-01T00:00:00Z");
        for huge in [1e12, 1e300, f64::INFINITY] {
            assert_eq!(timestamp(huge), "9999-12-31T23:59:59Z");
        }
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
