//! Serving: the accept loop, each connection (TLS when asked, then HTTP/1.1 over its own
//! socket, closed when idle too long), routing by path prefix with each `/v4/` answer's
//! latency and connection count, and shutdown with a grace period.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Simulator;
use super::api::{MAX_API_BODY, lenient_sdkappid};
use super::connection::Connection;
use super::http::{Body, ConnAbort, read_body, text};

/// How long in-flight requests may take to finish once shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Time a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl Simulator {
    /// Serves until `shutdown` is cancelled, then ends every connection (in-flight hangs
    /// and delays included) within a short grace period.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        tracing::info!(listen = %local, "simulated Chat API listening");
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "simulator connection");
                    self.record_connection();
                    let _ = stream.set_nodelay(true);
                    let sim = self.clone();
                    let token = shutdown.clone();
                    connections.spawn(async move { sim.accept_connection(stream, token).await });
                }
                Err(e) => {
                    // Per-connection failures and descriptor exhaustion pass; keep serving.
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::debug!("simulator aborting connections after the grace period");
        }
        connections.shutdown().await;
        tracing::info!(listen = %local, "simulated Chat API stopped");
        Ok(())
    }

    /// Completes the TLS handshake when the simulator serves TLS, then serves HTTP.
    async fn accept_connection(self, stream: TcpStream, shutdown: CancellationToken) {
        let reset = Arc::new(AtomicBool::new(false));
        let io = SimIo {
            stream,
            reset: reset.clone(),
        };
        let Some(tls) = &self.inner.tls else {
            return self.serve_connection(io, reset, shutdown).await;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let handshake = tokio::select! {
            () = shutdown.cancelled() => return,
            done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)) => done,
        };
        match handshake {
            Ok(Ok(stream)) => {
                self.record_tls_handshake();
                self.serve_connection(stream, reset, shutdown).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "simulator TLS handshake failed"),
            Err(_) => tracing::debug!("simulator TLS handshake timed out"),
        }
    }

    /// Serves HTTP/1.1 until the client closes, the connection idles past its timeout,
    /// or shutdown (after a grace period for requests in progress).
    async fn serve_connection<I>(self, io: I, reset: Arc<AtomicBool>, shutdown: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Idle from here: a TLS handshake is no idleness.
        let conn = Connection::new(shutdown.clone(), reset, self.inner.connections);
        let idle = conn.clone();
        let sim = self.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let sim = sim.clone();
            let conn = conn.clone();
            async move { sim.route(req, &conn).await }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new());
        let http = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(http);
        let mut result = tokio::select! {
            result = http.as_mut() => Some(result),
            () = shutdown.cancelled() => None,
            () = idle.idle_expired() => {
                tracing::trace!("simulator closing an idle connection");
                // Idle: hyper closes at once (a request just arriving is cut off, as by
                // a balancer's idle timer).
                http.as_mut().graceful_shutdown();
                tokio::select! {
                    result = http.as_mut() => Some(result),
                    () = shutdown.cancelled() => None,
                }
            }
        };
        if result.is_none() {
            http.as_mut().graceful_shutdown();
            result = tokio::time::timeout(SHUTDOWN_GRACE, http.as_mut())
                .await
                .ok();
        }
        if let Some(Err(e)) = result {
            tracing::debug!(error = %e, "simulator connection ended");
        }
    }

    /// The one place a request is routed: the API under `/v4/`, control under `/__sim/`.
    async fn route(
        self,
        req: Request<Incoming>,
        conn: &Connection,
    ) -> Result<Response<Body>, ConnAbort> {
        let _busy = conn.busy();
        let path = req.uri().path();
        if path.starts_with("/v4/") {
            self.route_api(req, conn).await
        } else if let Some(rest) = path.strip_prefix("/__sim/") {
            let rest = rest.to_owned();
            self.handle_control(req, &rest).await
        } else {
            Ok(text(StatusCode::NOT_FOUND, "not found\n"))
        }
    }
}

impl Simulator {
    /// A `/v4/` request as a gateway far away behind a balancer answers it: not at all
    /// on a connection that gave its last answer silently, else after its latency.
    async fn route_api(
        &self,
        req: Request<Incoming>,
        conn: &Connection,
    ) -> Result<Response<Body>, ConnAbort> {
        if conn.silently_spent() {
            // Read it whole first, so the close is a FIN (unread data would make it an RST).
            let _ = read_body(req.into_body(), MAX_API_BODY).await;
            tracing::debug!("simulator closing a spent connection instead of answering");
            return Err(ConnAbort::Closed);
        }
        let sdkappid = req.uri().query().and_then(lenient_sdkappid);
        let mut answer = self.handle_api(req, conn).await?;
        let latency = self.answer_latency(sdkappid);
        if !latency.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(latency) => {}
                () = conn.shutdown.cancelled() => return Err(ConnAbort::Shutdown),
            }
        }
        conn.count_answer(&mut answer);
        Ok(answer)
    }
}

/// The connection's socket; sends an RST instead of a FIN on close after a reset fault.
struct SimIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for SimIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            // SO_LINGER 0: close() discards unsent data and answers with RST.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for SimIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
