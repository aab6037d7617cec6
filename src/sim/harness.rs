//! The unit tests' harness: two apps, a simulator on loopback, a raw HTTP/1.1 client,
//! and signed API URIs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{CallbackConfig, FaultKind, FaultRule, Scenario, SimApp, Simulator};
use crate::clock::FixedClock;
use crate::product::Product;
use crate::secret::SecretKey;
use crate::tencent::usersig;

pub(super) const NOW: u64 = 1_700_000_000;
pub(super) const CLEAN: u64 = 1_400_000_001;
pub(super) const BARE: u64 = 1_400_000_003;
pub(super) const KEY1: &str = "a7adbb3a2f5e5584f62cc3cdbd7ba96304a1504b6fd493aac2349f0ec2e4e886";
pub(super) const KEY3: &str = "3c150ec55627bcf7045f39158afa37ddf7e26f896f079087fd340d1a19cfb22b";
pub(super) const START: &str = "Call.CallbackAfterStartCall";
pub(super) const END: &str = "Call.CallbackAfterEndCall";

pub(super) fn clean_config() -> CallbackConfig {
    CallbackConfig::new("https://hooks.example.com/cb", &[START, END])
}

pub(super) fn app(sdkappid: u64, key: &str, callback: Option<CallbackConfig>) -> SimApp {
    SimApp {
        sdkappid,
        key: key.to_owned(),
        admins: vec!["administrator".to_owned(), "ops".to_owned()],
        users: vec!["alice".to_owned()],
        callback,
        rotate: None,
        latency: None,
        room_callback: None,
        live_callback: None,
    }
}

pub(super) fn scenario() -> Scenario {
    Scenario {
        apps: vec![
            app(CLEAN, KEY1, Some(clean_config())),
            app(BARE, KEY3, None),
        ],
        ..Scenario::default()
    }
}

pub(super) struct Server {
    pub(super) sim: Simulator,
    pub(super) addr: SocketAddr,
    pub(super) token: CancellationToken,
    pub(super) task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(super) async fn start(scenario: Scenario) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = Simulator::new(scenario, Arc::new(FixedClock::at_unix(NOW))).unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn({
            let sim = sim.clone();
            let token = token.clone();
            async move { sim.run(listener, token).await }
        });
        Server {
            sim,
            addr,
            token,
            task,
        }
    }

    pub(super) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .expect("run() must return promptly after cancel")
            .unwrap()
            .unwrap();
    }
}

pub(super) struct Resp {
    pub(super) status: StatusCode,
    pub(super) content_type: String,
    pub(super) content_length: Option<String>,
    /// The `Connection` header, if any.
    pub(super) connection: Option<String>,
    pub(super) body: Bytes,
}

impl Resp {
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub(super) fn code(&self) -> i64 {
        assert_eq!(self.status, StatusCode::OK);
        assert_eq!(self.content_type, "application/json");
        self.json()["ErrorCode"].as_i64().unwrap()
    }
}

pub(super) struct Conn(pub(super) hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Conn {
    pub(super) async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn(sender)
    }

    pub(super) async fn send(
        &mut self,
        method: Method,
        uri: &str,
        body: &str,
    ) -> hyper::Result<Resp> {
        let mut req = Request::new(Full::new(Bytes::from(body.to_owned())));
        *req.method_mut() = method;
        *req.uri_mut() = uri.parse().unwrap();
        req.headers_mut()
            .insert(hyper::header::HOST, HeaderValue::from_static("127.0.0.1"));
        let resp = self.0.send_request(req).await?;
        let status = resp.status();
        let header = |name| {
            resp.headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        let content_length = header(hyper::header::CONTENT_LENGTH);
        let connection = header(hyper::header::CONNECTION);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Resp {
            status,
            content_type,
            content_length,
            connection,
            body,
        })
    }
}

pub(super) async fn call(addr: SocketAddr, method: Method, uri: &str, body: &str) -> Resp {
    Conn::open(addr)
        .await
        .send(method, uri, body)
        .await
        .unwrap()
}

pub(super) fn sig(key: &str, sdkappid: u64, identifier: &str, time: u64, expire: u64) -> String {
    usersig::mint(&SecretKey::new(key), sdkappid, identifier, time, expire)
        .expose()
        .to_owned()
}

pub(super) fn uri(command: &str, sdkappid: u64, identifier: &str, usersig: &str) -> String {
    family_uri("call_config", command, sdkappid, identifier, usersig)
}

fn family_uri(
    family: &str,
    command: &str,
    sdkappid: u64,
    identifier: &str,
    usersig: &str,
) -> String {
    format!(
        "/v4/{family}/{command}?sdkappid={sdkappid}&identifier={identifier}&usersig={usersig}&random=4294967295&contenttype=json"
    )
}

pub(super) fn good_uri(command: &str, sdkappid: u64) -> String {
    product_uri(Product::Call, command, sdkappid)
}

/// A well-signed URI of `command` in `product`'s API family.
pub(super) fn product_uri(product: Product, command: &str, sdkappid: u64) -> String {
    let key = if sdkappid == BARE { KEY3 } else { KEY1 };
    family_uri(
        product.api_family(),
        command,
        sdkappid,
        "administrator",
        &sig(key, sdkappid, "administrator", NOW - 60, 86_400),
    )
}

pub(super) async fn get(addr: SocketAddr, sdkappid: u64) -> Resp {
    call(
        addr,
        Method::POST,
        &good_uri("get_callback", sdkappid),
        "{}",
    )
    .await
}

pub(super) async fn get_code(addr: SocketAddr, sdkappid: u64) -> i64 {
    get(addr, sdkappid).await.code()
}

pub(super) fn fault(kind: FaultKind, count: Option<u32>) -> FaultRule {
    FaultRule {
        sdkappid: CLEAN,
        kind,
        count,
    }
}
