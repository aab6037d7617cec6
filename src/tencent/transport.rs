//! HTTP/1.1 to the gateway: hyper-util's pooled client over rustls (hyper-rustls), the
//! system's or an injected resolver, and the standard proxy variables: `HTTPS_PROXY`
//! through a CONNECT tunnel, `HTTP_PROXY` with absolute-form requests, `NO_PROXY`,
//! `ALL_PROXY`, read as curl reads them.
//!
//! Why not reqwest, which is built on these same crates: per request it parses the URL
//! twice more (its redirect layer runs even with redirects off) and passes layers we do
//! not use, a third of a poll's CPU at 200 polls/s.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::uri::Scheme;
use hyper::{Request, Response, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service;

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

/// A connection, direct or through a proxy; `forwarded` when it goes to an HTTP proxy
/// that takes absolute-form requests.
pub struct Conn {
    stream: MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>,
    forwarded: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.stream.connected().proxy(self.forwarded)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}

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
                let stream = this.direct.clone().call(destination).await?;
                return Ok(Conn {
                    stream,
                    forwarded: false,
                });
            };
            if destination.scheme() == Some(&Scheme::HTTPS) {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), this.tcp.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let stream = over_tls(&this.tls, tunnel).call(destination).await?;
                Ok(Conn {
                    stream,
                    forwarded: false,
                })
            } else {
                let stream = this.direct.clone().call(proxy.uri().clone()).await?;
                Ok(Conn {
                    stream,
                    forwarded: true,
                })
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

/// The pooled HTTP client.
#[derive(Clone)]
pub struct Http {
    client: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    proxies: Option<Arc<Matcher>>,
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
        let proxies = proxy_variables_set().then(|| Arc::new(Matcher::from_env()));
        let connector = Connector {
            direct: over_tls(&tls, tcp.clone()),
            tls: Arc::new(tls),
            tcp,
            proxies: proxies.clone(),
        };
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { client, proxies }
    }

    /// Sends `request`; an `http://` request through an HTTP proxy gets its
    /// `Proxy-Authorization` here, since the proxy, not the connection, asks for it.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if request.uri().scheme() == Some(&Scheme::HTTP)
            && let Some(auth) = self
                .proxies
                .as_ref()
                .and_then(|proxies| proxies.intercept(request.uri()))
                .and_then(|proxy| proxy.basic_auth().cloned())
        {
            request
                .headers_mut()
                .insert(hyper::header::PROXY_AUTHORIZATION, auth);
        }
        self.client.request(request).await
    }
}

/// Body bytes of `response`, at most `limit` of them: `None` when there are more.
pub async fn read_capped(
    response: Response<Incoming>,
    limit: usize,
) -> Result<Option<Vec<u8>>, hyper::Error> {
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Ok(None);
    }
    let mut body = response.into_body();
    let mut bytes = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if bytes.len() + data.len() > limit {
                return Ok(None);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Some(bytes))
}

/// A transport error with its causes. The URL is never part of it: its query holds the
/// UserSig.
pub fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = String::from(if error.is_connect() {
        "connect"
    } else {
        "request"
    });
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
