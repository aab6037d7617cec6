//! HTTP pieces every handler shares: the answer body type, why a connection ends without
//! an answer, reading a body with a size limit, and typed answers.

use std::convert::Infallible;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// The body of every answer the simulator sends.
pub(super) type Body = BoxBody<Bytes, Infallible>;

/// Why a connection is dropped without an answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnAbort {
    #[error("connection reset by fault injection")]
    Reset,
    #[error("simulator shutting down")]
    Shutdown,
    #[error("connection closed after its last answer")]
    Closed,
    #[error("reading the request body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// The whole body, `None` if it is larger than `limit`.
pub(super) async fn read_body(body: Incoming, limit: usize) -> Result<Option<Bytes>, ConnAbort> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Ok(None),
        Err(e) => Err(ConnAbort::Body(e)),
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    BodyExt::boxed(Full::new(bytes.into()))
}

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `application/json` with a body already serialised.
pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    with_type(status, "application/json", full(body))
}

/// `application/json` serialised from `value`.
pub(super) fn json_value<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(status, body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

/// `text/html` with `page`.
pub(super) fn html(status: StatusCode, page: String) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", full(page))
}

/// `text/plain` with `message`.
pub(super) fn text(status: StatusCode, message: &str) -> Response<Body> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        full(message.to_owned()),
    )
}

/// 405 naming the methods allowed.
pub(super) fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}
