//! Serving: the accept loop, each connection (HTTP/1.1 over its own socket), routing by
//! path prefix, and shutdown with a grace period.

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
use super::http::{Body, ConnAbort, text};

/// How long in-flight requests may take to finish once shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The connection a request arrived on, as its handler may affect it.
#[derive(Clone)]
pub(super) struct Connection {
    /// Cancelled when the simulator shuts down; hangs and delays end with it.
    pub(super) shutdown: CancellationToken,
    /// Set to close the socket with an RST instead of a FIN.
    pub(super) reset: Arc<AtomicBool>,
}

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
                    let _ = stream.set_nodelay(true);
                    let sim = self.clone();
                    let token = shutdown.clone();
                    connections.spawn(async move { sim.serve_connection(stream, token).await });
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

    async fn serve_connection(self, stream: TcpStream, shutdown: CancellationToken) {
        let conn = Connection {
            shutdown: shutdown.clone(),
            reset: Arc::new(AtomicBool::new(false)),
        };
        let io = TokioIo::new(SimIo {
            stream,
            reset: conn.reset.clone(),
        });
        let sim = self.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let sim = sim.clone();
            let conn = conn.clone();
            async move { sim.route(req, &conn).await }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new());
        let http = builder.serve_connection(io, service);
        tokio::pin!(http);
        let result = tokio::select! {
            result = http.as_mut() => result,
            () = shutdown.cancelled() => {
                http.as_mut().graceful_shutdown();
                match tokio::time::timeout(SHUTDOWN_GRACE, http.as_mut()).await {
                    Ok(result) => result,
                    Err(_) => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "simulator connection ended");
        }
    }

    /// The one place a request is routed: the API under `/v4/`, control under `/__sim/`.
    async fn route(
        self,
        req: Request<Incoming>,
        conn: &Connection,
    ) -> Result<Response<Body>, ConnAbort> {
        let path = req.uri().path();
        if path.starts_with("/v4/") {
            self.handle_api(req, conn).await
        } else if let Some(rest) = path.strip_prefix("/__sim/") {
            let rest = rest.to_owned();
            self.handle_control(req, &rest).await
        } else {
            Ok(text(StatusCode::NOT_FOUND, "not found\n"))
        }
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
