//! HTTP/1.1 to the gateway: hyper's client connections in a keep-alive pool per base URL,
//! rustls (hyper-rustls), the system's or an injected resolver, and the standard proxy
//! variables: `HTTPS_PROXY` through a CONNECT tunnel, `HTTP_PROXY` with absolute-form
//! requests, `NO_PROXY`, `ALL_PROXY`, read as curl reads them.
//!
//! Why not reqwest, which is built on these same crates: per request it parses the URL
//! twice more (its redirect layer runs even with redirects off) and passes layers we do
//! not use. Measured again over HTTPS with answers 50 ms ± 20 ms away (`cargo bench
//! --bench daemon --features reqwest-transport`, BENCHMARKS.md): 44 % more CPU per poll;
//! and it cannot say when a request went out on a new connection (see `post`), nor does
//! it resend a request that met a balancer's close.

use std::collections::{HashMap, VecDeque};
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue, PROXY_AUTHORIZATION};
use hyper::http::uri::Scheme;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tower_service::Service;

#[cfg(feature = "reqwest-transport")]
pub mod reqwest_http;

pub type BoxError = Box<dyn StdError + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Resolves host names to addresses; the port of the URL replaces theirs.
pub trait Resolve: Send + Sync {
    fn resolve(&self, host: &str) -> Resolving;
}

/// What [`Resolve::resolve`] returns.
pub type Resolving = Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send>>;

/// The connector's resolver: the system's (`getaddrinfo` on a blocking thread) or one
/// given by the embedder.
#[derive(Clone)]
enum Dns {
    System(GaiResolver),
    Custom(Arc<dyn Resolve>),
}

impl Service<Name> for Dns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self {
            Dns::System(gai) => {
                let lookup = gai.call(name);
                Box::pin(async move {
                    let addrs = lookup.await?;
                    Ok(addrs.collect::<Vec<_>>().into_iter())
                })
            }
            Dns::Custom(resolver) => {
                let lookup = resolver.resolve(name.as_str());
                Box::pin(async move { Ok(lookup.await?.into_iter()) })
            }
        }
    }
}

/// A connection, direct, tunnelled or to an HTTP proxy.
type Conn = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Opens connections: direct, tunnelled through an HTTPS proxy's CONNECT, or to an HTTP
/// proxy for `http://` destinations.
#[derive(Clone)]
struct Connector {
    tcp: HttpConnector<Dns>,
    tls: Arc<rustls::ClientConfig>,
    direct: HttpsConnector<HttpConnector<Dns>>,
    proxies: Option<Arc<Matcher>>,
}

fn over_tls<C>(tls: &rustls::ClientConfig, inner: C) -> HttpsConnector<C> {
    HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(inner)
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = BoxFuture<Conn>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let proxy = self
            .proxies
            .as_ref()
            .and_then(|proxies| proxies.intercept(&destination));
        let this = self.clone();
        Box::pin(async move {
            let Some(proxy) = proxy else {
                return this.direct.clone().call(destination).await;
            };
            if destination.scheme() == Some(&Scheme::HTTPS) {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), this.tcp.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                over_tls(&this.tls, tunnel).call(destination).await
            } else {
                this.direct.clone().call(proxy.uri().clone()).await
            }
        })
    }
}

/// Whether any proxy variable is set; without one, no destination needs the matcher.
fn proxy_variables_set() -> bool {
    [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// Keep-alive connections unused this long are closed rather than reused: under the 60 s
/// that load balancers and servers commonly allow an idle connection, so calldrift drops
/// it before the other side does (a request racing the server's close would fail).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// At most this many idle connections are kept per base; after a burst (a slow gateway
/// recovering with a thousand requests in flight) the oldest are closed, so idle sockets
/// stay bounded.
const MAX_IDLE_PER_BASE: usize = 256;

/// What a request to one base URL needs, worked out once per base, and its pool.
struct Destination {
    /// The base as a URI: what the connector connects to.
    uri: Uri,
    host: HeaderValue,
    /// Through an HTTP proxy: requests in absolute form, with these credentials.
    forward: Option<Option<HeaderValue>>,
    /// Oldest first; checkout takes the newest, so a few connections stay warm.
    idle: Mutex<VecDeque<Idle>>,
}

/// An idle keep-alive connection.
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A transport failure, never with the request URL (its query holds the UserSig).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad URL: {0}")]
    Url(String),
    #[error("connect")]
    Connect(#[source] BoxError),
    #[error("request")]
    Request(#[source] hyper::Error),
    #[error("body")]
    Body(#[source] hyper::Error),
    /// reqwest's failure, with `--features reqwest-transport`.
    #[cfg(feature = "reqwest-transport")]
    #[error("request")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// A connect that timed out, whatever layer noticed it.
    pub fn is_timeout(&self) -> bool {
        #[cfg(feature = "reqwest-transport")]
        if matches!(self, Error::Client(e) if e.is_timeout()) {
            return true;
        }
        let mut source = StdError::source(self);
        while let Some(cause) = source {
            if cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            {
                return true;
            }
            source = cause.source();
        }
        false
    }

    /// The error with its causes, one line.
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut source = StdError::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// When a request that met a closed keep-alive connection goes once more on a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// When it came back unsent, or went out and met the connection's end before any of
    /// its answer (a read: sending it again changes nothing).
    Unanswered,
    /// Only when it came back unsent: a write that went out may have been carried out,
    /// so it is never sent twice.
    Unsent,
}

/// What is POSTed: the body, and when it may go again on a new connection.
#[derive(Debug, Clone)]
pub struct Payload {
    pub body: Bytes,
    pub resend: Resend,
}

/// A response: status and body, or `None` for a body over the limit.
pub struct Answer {
    pub status: StatusCode,
    pub body: Option<Bytes>,
}

/// HTTP/1.1 client with a keep-alive pool per base URL.
///
/// Why not hyper-util's pooled client: it is generic over any destination, and its
/// checkout, host header and origin-form handling cost a sixth of a poll's instructions;
/// calldrift talks to a few fixed bases, so the pool is a list per base.
pub struct Http {
    connector: Connector,
    destinations: Mutex<HashMap<String, Arc<Destination>>>,
    idle_timeout: Duration,
}

impl Http {
    pub fn new(
        tls: rustls::ClientConfig,
        resolver: Option<Arc<dyn Resolve>>,
        connect_timeout: Duration,
    ) -> Self {
        let dns = match resolver {
            Some(resolver) => Dns::Custom(resolver),
            None => Dns::System(GaiResolver::new()),
        };
        let mut tcp = HttpConnector::new_with_resolver(dns);
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let connector = Connector {
            direct: over_tls(&tls, tcp.clone()),
            tls: Arc::new(tls),
            tcp,
            proxies: proxy_variables_set().then(|| Arc::new(Matcher::from_env())),
        };
        Self {
            connector,
            destinations: Mutex::new(HashMap::new()),
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    fn destination(&self, base: &str) -> Result<Arc<Destination>, Error> {
        let mut destinations = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(destination) = destinations.get(base) {
            return Ok(destination.clone());
        }
        let uri: Uri = base.parse().map_err(|e| Error::Url(format!("{e}")))?;
        let authority = uri
            .authority()
            .ok_or_else(|| Error::Url("no host".to_owned()))?;
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|e| Error::Url(format!("{e}")))?;
        let forward = match &self.connector.proxies {
            Some(proxies) if uri.scheme() == Some(&Scheme::HTTP) => proxies
                .intercept(&uri)
                .map(|proxy| proxy.basic_auth().cloned()),
            _ => None,
        };
        let destination = Arc::new(Destination {
            uri,
            host,
            forward,
            idle: Mutex::default(),
        });
        destinations.insert(base.to_owned(), destination.clone());
        Ok(destination)
    }

    /// An idle connection to `destination` that is still open (and `true`: it was used
    /// before), or a new one.
    async fn checkout(
        &self,
        destination: &Destination,
    ) -> Result<(SendRequest<Full<Bytes>>, bool), Error> {
        loop {
            let idle = {
                let mut idle = destination.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.pop_back()
            };
            let Some(idle) = idle else { break };
            let Idle { mut sender, since } = idle;
            if since.elapsed() < self.idle_timeout && sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect(destination).await?, false))
    }

    /// A new connection to `destination`.
    async fn connect(&self, destination: &Destination) -> Result<SendRequest<Full<Bytes>>, Error> {
        let conn = self
            .connector
            .clone()
            .call(destination.uri.clone())
            .await
            .map_err(Error::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(conn)
            .await
            .map_err(Error::Request)?;
        tokio::spawn(async move {
            // Ends when the server closes or the last sender is dropped.
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn checkin(&self, destination: &Destination, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = destination.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Oldest first: drop those that expired or were closed by the server, then any
        // beyond the bound. Dropping a sender ends its connection.
        while idle.front().is_some_and(|i| {
            i.sender.is_closed() || now.duration_since(i.since) >= self.idle_timeout
        }) || idle.len() >= MAX_IDLE_PER_BASE
        {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }

    /// POSTs `payload`'s body to `base` + `path_and_query` and reads the answer, at most `limit`
    /// body bytes. `path_and_query` is taken whole: the request's URI keeps it without a copy. A connection whose answer was read whole goes back to the pool.
    /// `connected` is called right before the request goes out on a connection opened
    /// for it: the time since the caller decided to send went to connecting.
    ///
    /// A keep-alive connection the server closed is replaced by a new one, once, when the
    /// close met the request before any of the answer: the request came back unsent, or
    /// went out and found the connection at its end (EOF; over TLS, EOF without
    /// close_notify). A balancer closing an idle or spent connection does that, and far
    /// away its close and our request cross; the server handled nothing, so sending the
    /// request again is not a second call. A reset is not retried: a server that read the
    /// request and dropped it (the simulator's `reset` fault) may have counted it. With
    /// [`Resend::Unsent`] (writes) only a request that came back unsent goes again.
    pub async fn post(
        &self,
        base: &str,
        path_and_query: String,
        headers: &[(HeaderName, HeaderValue)],
        payload: Payload,
        limit: usize,
        connected: &(dyn Fn() + Sync),
    ) -> Result<Answer, Error> {
        let Payload { body, resend } = payload;
        let destination = self.destination(base)?;
        let uri = match destination.forward {
            // An HTTP proxy takes the whole URL.
            Some(_) => Uri::try_from(format!("{base}{path_and_query}")),
            None => Uri::try_from(path_and_query),
        }
        .map_err(|e| Error::Url(format!("{e}")))?;
        let request = || build_request(&destination, uri.clone(), headers, body.clone());

        let (mut sender, reused) = self.checkout(&destination).await?;
        if !reused {
            connected();
        }
        let response = match sender.try_send_request(request()?).await {
            Ok(response) => response,
            Err(mut failed) => {
                let unsent = failed.take_message();
                let resend_sent = resend == Resend::Unanswered && reused;
                if unsent.is_none() && !(resend_sent && ended_before_answer(failed.error())) {
                    return Err(Error::Request(failed.into_error()));
                }
                tracing::debug!(error = %failed.error(), "gateway connection closed under a request; sending it on a new one");
                sender = self.connect(&destination).await?;
                connected();
                let request = match unsent {
                    Some(request) => request,
                    None => request()?,
                };
                sender.send_request(request).await.map_err(Error::Request)?
            }
        };
        let status = response.status();
        let body = read_capped(response, limit).await.map_err(Error::Body)?;
        if body.is_some() {
            self.checkin(&destination, sender);
        }
        Ok(Answer { status, body })
    }
}

/// The request to `destination`, with its host, `headers` and proxy credentials.
fn build_request(
    destination: &Destination,
    uri: Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Error> {
    let length = body.len();
    let mut request = Request::post(uri)
        .body(Full::new(body))
        .map_err(|e| Error::Url(format!("{e}")))?;
    let request_headers = request.headers_mut();
    request_headers.insert(HOST, destination.host.clone());
    request_headers.insert(CONTENT_LENGTH, content_length(length));
    for (name, value) in headers {
        request_headers.insert(name.clone(), value.clone());
    }
    if let Some(Some(auth)) = &destination.forward {
        request_headers.insert(PROXY_AUTHORIZATION, auth.clone());
    }
    Ok(request)
}

/// The `Content-Length` of a body of `length` bytes. Set here, since hyper formats one
/// into a new buffer per request; a read's `{}` takes a static value.
fn content_length(length: usize) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(length) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(length),
    }
}

/// Whether a request failed because its connection ended where the answer should have
/// begun: hyper's incomplete message, or an unexpected EOF (TLS without close_notify).
fn ended_before_answer(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = StdError::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Body bytes of `response`, at most `limit` of them: `None` when there are more. An
/// answer that comes in one frame, as a small one does, is kept as it came, without a copy.
async fn read_capped(
    response: Response<Incoming>,
    limit: usize,
) -> Result<Option<Bytes>, hyper::Error> {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Ok(None);
    }
    let mut body = response.into_body();
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        length += data.len();
        if length > limit {
            return Ok(None);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            before => {
                joined.extend_from_slice(&before.unwrap_or_default());
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(Some(first.unwrap_or_else(|| joined.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the test server does with each connection.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// Answers every request.
        KeepAlive,
        /// Drops the connection after each answer without saying so, as a server whose
        /// keep-alive timer ran out would.
        CloseAfterAnswer,
        /// After this many answers, reads the next request and closes (FIN) without
        /// answering: the close and the request crossed.
        CloseOnRequestAfter(usize),
        /// Like `CloseOnRequestAfter`, with an RST.
        ResetOnRequestAfter(usize),
    }

    /// A server answering `{"n":K}` to each request as `mode` says. Returns its base URL
    /// and a count of connections accepted.
    async fn server(mode: Mode) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let answered = Arc::new(AtomicUsize::new(0));
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let answered = answered.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    for on_this_connection in 0.. {
                        // Requests carry a 2-byte body after the head.
                        while buffer
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .is_none_or(|end| buffer.len() < end + 6)
                        {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buffer.clear();
                        match mode {
                            Mode::CloseOnRequestAfter(k) if on_this_connection == k => return,
                            Mode::ResetOnRequestAfter(k) if on_this_connection == k => {
                                let _ = socket.set_zero_linger();
                                return;
                            }
                            _ => {}
                        }
                        let n = answered.fetch_add(1, Ordering::SeqCst);
                        let body = format!("{{\"n\":{n}}}");
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err()
                            || mode == Mode::CloseAfterAnswer
                        {
                            return;
                        }
                    }
                });
            }
        });
        (base, accepted)
    }

    fn http() -> Http {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Http::new(tls, None, Duration::from_secs(2))
    }

    /// `{}`, as a read sends it.
    fn unanswered() -> Payload {
        Payload {
            body: Bytes::from_static(b"{}"),
            resend: Resend::Unanswered,
        }
    }

    async fn post(http: &Http, base: &str) -> String {
        let answer = http
            .post(base, "/x?y=1".to_owned(), &[], unanswered(), 1024, &|| {})
            .await
            .expect("answer");
        assert_eq!(answer.status, StatusCode::OK);
        String::from_utf8(answer.body.expect("body within the limit").to_vec()).expect("utf8")
    }

    fn idle_count(http: &Http, base: &str) -> usize {
        let destination = http.destination(base).expect("destination");
        let idle = destination.idle.lock().expect("pool");
        idle.len()
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_per_base_after_a_burst() {
        let (base, _) = server(Mode::KeepAlive).await;
        let http = Arc::new(http());
        let burst = MAX_IDLE_PER_BASE + 40;
        // Each request in flight at once needs a connection of its own.
        let gate = Arc::new(tokio::sync::Barrier::new(burst));
        let mut tasks = Vec::new();
        for _ in 0..burst {
            let (http, base, gate) = (http.clone(), base.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let destination = http.destination(&base).expect("destination");
                let sender = http.checkout(&destination).await.expect("connect").0;
                gate.wait().await;
                http.checkin(&destination, sender);
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(idle_count(&http, &base), MAX_IDLE_PER_BASE);
        // What is kept still serves.
        post(&http, &base).await;
        assert_eq!(idle_count(&http, &base), MAX_IDLE_PER_BASE);
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_not_reused() {
        let (base, accepted) = server(Mode::KeepAlive).await;
        let mut http = http();
        http.idle_timeout = Duration::from_millis(200);
        post(&http, &base).await;
        post(&http, &base).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused while fresh");
        tokio::time::sleep(Duration::from_millis(300)).await;
        post(&http, &base).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a new one after the timeout"
        );
        assert_eq!(idle_count(&http, &base), 1, "the expired one was dropped");
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused() {
        let (base, accepted) = server(Mode::KeepAlive).await;
        let http = http();
        for n in 0..3 {
            assert_eq!(post(&http, &base).await, format!("{{\"n\":{n}}}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_without_an_error() {
        let (base, accepted) = server(Mode::CloseAfterAnswer).await;
        let http = http();
        for n in 0..3 {
            assert_eq!(post(&http, &base).await, format!("{{\"n\":{n}}}"));
            // Sometimes the close is seen before the next request, sometimes only when
            // sending it; both must end in an answer.
            if n == 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_and_their_connection_dropped() {
        let (base, accepted) = server(Mode::KeepAlive).await;
        let http = http();
        let answer = http
            .post(&base, "/x".to_owned(), &[], unanswered(), 3, &|| {})
            .await
            .expect("answer");
        assert!(answer.body.is_none());
        assert_eq!(post(&http, &base).await, "{\"n\":1}");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the unread connection is not reused"
        );
    }

    #[tokio::test]
    async fn a_request_that_meets_the_close_of_a_reused_connection_is_sent_again() {
        let (base, accepted) = server(Mode::CloseOnRequestAfter(2)).await;
        let http = http();
        for n in 0..6 {
            assert_eq!(post(&http, &base).await, format!("{{\"n\":{n}}}"));
        }
        // Two answers per connection; each third request was met with a close and sent
        // again on a new connection.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_write_that_met_the_close_after_it_went_out_is_not_sent_again() {
        let (base, accepted) = server(Mode::CloseOnRequestAfter(2)).await;
        let http = http();
        for n in 0..2 {
            assert_eq!(post(&http, &base).await, format!("{{\"n\":{n}}}"));
        }
        // The third request goes out on the reused connection, whose server reads it and
        // closes: a read would go again, a write must not.
        let lost = http
            .post(
                &base,
                "/x".to_owned(),
                &[],
                Payload {
                    body: Bytes::from_static(b"{}"),
                    resend: Resend::Unsent,
                },
                1024,
                &|| {},
            )
            .await;
        assert!(matches!(lost, Err(Error::Request(_))));
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not sent again");
    }

    #[tokio::test]
    async fn the_caller_hears_of_each_request_that_waited_for_a_new_connection() {
        let (base, _) = server(Mode::CloseOnRequestAfter(2)).await;
        let http = http();
        let connected = AtomicUsize::new(0);
        let count = || {
            connected.fetch_add(1, Ordering::SeqCst);
        };
        let mut heard = Vec::new();
        for _ in 0..6 {
            http.post(&base, "/x".to_owned(), &[], unanswered(), 1024, &count)
                .await
                .expect("answer");
            heard.push(connected.load(Ordering::SeqCst));
        }
        // New, reused, met the close and sent on a new one, reused, the same again.
        assert_eq!(heard, [1, 1, 2, 2, 3, 3]);
    }

    #[tokio::test]
    async fn a_reset_or_a_close_on_a_new_connection_is_an_error() {
        let (base, accepted) = server(Mode::ResetOnRequestAfter(1)).await;
        let http = http();
        assert_eq!(post(&http, &base).await, "{\"n\":0}");
        let reset = http
            .post(&base, "/x".to_owned(), &[], unanswered(), 1024, &|| {})
            .await;
        assert!(matches!(reset, Err(Error::Request(_))));
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not sent again");

        let (base, accepted) = server(Mode::CloseOnRequestAfter(0)).await;
        let closed = http
            .post(&base, "/x".to_owned(), &[], unanswered(), 1024, &|| {})
            .await;
        assert!(matches!(closed, Err(Error::Request(e)) if e.is_incomplete_message()));
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not sent again");
    }
}
