//! The gateway's API under `/v4/`: which path is which command, request parsing in the
//! documented order, UserSig and account checks, the per-app rate limit, executing the
//! command, and the envelope every answer wears with its documented ErrorCode.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::Simulator;
use super::connection::Connection;
use super::faults::{self, FaultKind};
use super::http::{Body, ConnAbort, json_response, read_body};
use super::scenario::CallbackConfig;
use super::state::ConfigState;
use crate::product::Product;
use crate::tencent::usersig;

/// Requests per app in any 1-second window above which the gateway answers 60011.
pub const PER_APP_LIMIT: u64 = 200;

pub(super) const MAX_API_BODY: usize = 64 * 1024;

/// How a path's JSON body becomes its command.
type ParseCommand = fn(&JsonObject) -> Result<Command, Reject>;

/// Every API path, the product whose configuration it reads or writes, and how its body
/// becomes a command: the one place a path selects a command. TUICallKit's family has no
/// `update_callback`. Any other path under `/v4/` answers 60009.
const ENDPOINTS: [(&str, Product, ParseCommand); 11] = [
    ("/v4/call_config/get_callback", Product::Call, parse_get),
    ("/v4/call_config/set_callback", Product::Call, parse_set),
    (
        "/v4/call_config/delete_callback",
        Product::Call,
        parse_delete,
    ),
    ("/v4/room_config/get_callback", Product::Room, parse_get),
    ("/v4/room_config/set_callback", Product::Room, parse_set),
    (
        "/v4/room_config/update_callback",
        Product::Room,
        parse_update,
    ),
    (
        "/v4/room_config/delete_callback",
        Product::Room,
        parse_delete,
    ),
    ("/v4/live_config/get_callback", Product::Live, parse_get),
    ("/v4/live_config/set_callback", Product::Live, parse_set),
    (
        "/v4/live_config/update_callback",
        Product::Live,
        parse_update,
    ),
    (
        "/v4/live_config/delete_callback",
        Product::Live,
        parse_delete,
    ),
];

fn endpoint(path: &str) -> Option<(Product, ParseCommand)> {
    ENDPOINTS
        .iter()
        .find(|(known, ..)| *known == path)
        .map(|(_, product, parse)| (*product, *parse))
}

/// A well-formed command with its body.
#[derive(Debug)]
pub(super) enum Command {
    Get,
    Set(CallbackConfig),
    Update(CallbackConfig),
    Delete,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Get => "get_callback",
            Command::Set(_) => "set_callback",
            Command::Update(_) => "update_callback",
            Command::Delete => "delete_callback",
        }
    }
}

/// A well-formed API request, not yet authenticated.
#[derive(Debug)]
pub(super) struct ApiRequest {
    pub(super) product: Product,
    pub(super) command: Command,
    pub(super) sdkappid: u64,
    identifier: String,
    usersig: String,
}

/// Why a request is not well formed: the ErrorCode and ErrorInfo it is answered with.
#[derive(Debug)]
struct Reject {
    code: i64,
    info: String,
}

impl Reject {
    fn new(code: i64, info: impl Into<String>) -> Self {
        Self {
            code,
            info: info.into(),
        }
    }
}

/// The query parameters the command needs, once they passed the checks.
struct Query {
    sdkappid: u64,
    identifier: String,
    usersig: String,
}

/// Digits only (no sign, no spaces), within the type's range.
pub(super) fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The first `sdkappid` parameter as a number, for statistics before the strict checks.
pub(super) fn lenient_sdkappid(query: &str) -> Option<u64> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "sdkappid")
        .and_then(|(_, v)| parse_digits(&v))
}

/// The well-formedness checks, in the documented order: path, method, query, body.
fn parse_api(method: &Method, path: &str, query: &str, body: &[u8]) -> Result<ApiRequest, Reject> {
    let (product, parse_command) = endpoint(path)
        .ok_or_else(|| Reject::new(60009, "request resource error: unknown service or command"))?;
    if method != Method::POST {
        return Err(Reject::new(
            60002,
            "HTTP parse error: the method must be POST",
        ));
    }
    let query = parse_query(query)?;
    let object = parse_body_object(body)?;
    let command = parse_command(&object)?;
    Ok(ApiRequest {
        product,
        command,
        sdkappid: query.sdkappid,
        identifier: query.identifier,
        usersig: query.usersig,
    })
}

/// The query parameters by name; a repeated one is refused.
fn unique_params(query: &str) -> Result<BTreeMap<String, String>, Reject> {
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(Reject::new(
                60002,
                format!("HTTP parse error: query parameter {k} repeated"),
            ));
        }
    }
    Ok(params)
}

fn parse_query(query: &str) -> Result<Query, Reject> {
    let mut params = unique_params(query)?;
    let sdkappid = match params.get("sdkappid") {
        None => {
            return Err(Reject::new(
                60012,
                "the REST API request requires an SDKAppID",
            ));
        }
        Some(v) => parse_digits::<u64>(v)
            .ok_or_else(|| Reject::new(60002, "HTTP parse error: sdkappid is not a number"))?,
    };
    let mut required = |name: &str| -> Result<String, Reject> {
        match params.remove(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Reject::new(
                60002,
                format!("HTTP parse error: query parameter {name} missing or empty"),
            )),
        }
    };
    let identifier = required("identifier")?;
    let usersig = required("usersig")?;
    let random = required("random")?;
    let contenttype = required("contenttype")?;
    if parse_digits::<u32>(&random).is_none() {
        return Err(Reject::new(
            60002,
            "HTTP parse error: random must be an unsigned 32-bit integer",
        ));
    }
    if contenttype != "json" {
        return Err(Reject::new(
            60002,
            "HTTP parse error: contenttype must be json",
        ));
    }
    Ok(Query {
        sdkappid,
        identifier,
        usersig,
    })
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

fn parse_body_object(body: &[u8]) -> Result<JsonObject, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reject::new(
            60003,
            "request body is empty; send {} at least",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| Reject::new(60003, "HTTP request JSON parse error"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(Reject::new(60003, "request body is not a JSON object"));
    };
    Ok(object)
}

fn parse_get(object: &JsonObject) -> Result<Command, Reject> {
    expect_empty(object).map(|()| Command::Get)
}

fn parse_set(object: &JsonObject) -> Result<Command, Reject> {
    parse_callback_config(object).map(Command::Set)
}

fn parse_update(object: &JsonObject) -> Result<Command, Reject> {
    parse_callback_config(object).map(Command::Update)
}

fn parse_delete(object: &JsonObject) -> Result<Command, Reject> {
    expect_empty(object).map(|()| Command::Delete)
}

/// A get or delete body must be `{}`.
fn expect_empty(object: &JsonObject) -> Result<(), Reject> {
    if object.is_empty() {
        Ok(())
    } else {
        Err(Reject::new(
            100002,
            "invalid parameter: the body must be {}",
        ))
    }
}

/// A set or update body: `Url` and `CallbackCommandList`; other fields are ignored, as
/// gateways do.
fn parse_callback_config(object: &JsonObject) -> Result<CallbackConfig, Reject> {
    let url = match object.get("Url") {
        Some(serde_json::Value::String(u))
            if u.starts_with("http://") || u.starts_with("https://") =>
        {
            u.clone()
        }
        _ => {
            return Err(Reject::new(
                100002,
                "invalid parameter: Url must be a string starting with http:// or https://",
            ));
        }
    };
    let commands = match object.get("CallbackCommandList") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>(),
        _ => None,
    };
    let commands = commands.ok_or_else(|| {
        Reject::new(
            100002,
            "invalid parameter: CallbackCommandList must be an array of strings",
        )
    })?;
    Ok(CallbackConfig { url, commands })
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "ActionStatus")]
    action_status: &'static str,
    #[serde(rename = "ErrorCode")]
    error_code: i64,
    #[serde(rename = "ErrorInfo")]
    error_info: &'a str,
    #[serde(rename = "RequestId")]
    request_id: &'a str,
    #[serde(rename = "Response", skip_serializing_if = "Option::is_none")]
    response: Option<&'a CallbackConfig>,
}

/// The JSON body of an API answer.
pub(super) fn envelope(
    code: i64,
    info: &str,
    request_id: &str,
    response: Option<&CallbackConfig>,
) -> Vec<u8> {
    let envelope = Envelope {
        action_status: if code == 0 { "OK" } else { "FAIL" },
        error_code: code,
        error_info: info,
        request_id,
        response,
    };
    // A struct of strings and integers always serialises.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The ErrorInfo of each documented ErrorCode.
pub(super) fn error_info(code: i64) -> &'static str {
    match code {
        0 => "",
        60002 => "HTTP parse error, check the URL format",
        60003 => "HTTP request JSON parse error, check the JSON format",
        60006 => "SDKAppID is invalid",
        60009 => "request resource error, check the request URL",
        60010 => "the request requires App admin permissions",
        60011 => "SDKAppID request rate exceeds the limit, reduce the request rate",
        60012 => "the REST API request requires an SDKAppID",
        70001 => "UserSig has expired, generate a new one",
        70003 => "UserSig is invalid",
        70009 => "UserSig verification failed, check that it was generated with the right key",
        70013 => "the identifier in the request does not match the UserSig",
        70014 => "the SDKAppID in the request does not match the UserSig",
        70020 => "SDKAppID not found",
        100001 => "internal server error, please retry",
        100002 => "invalid parameter",
        100300 => "callback configuration already exists, use update_callback to change it",
        100301 => "callback configuration does not exist",
        _ => "error injected by the simulator",
    }
}

impl Simulator {
    /// Answers a request under `/v4/`: counts it, then the checks of the module doc in
    /// order; the first failure answers.
    pub(super) async fn handle_api(
        &self,
        req: Request<Incoming>,
        conn: &Connection,
    ) -> Result<Response<Body>, ConnAbort> {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().unwrap_or("");
        let app_count = self.record_arrival(lenient_sdkappid(query));
        let body = match read_body(body, MAX_API_BODY).await? {
            Some(body) => body,
            None => {
                let reject = Reject::new(60003, "request body larger than 64 KiB");
                return Ok(self.malformed(reject));
            }
        };
        let api = match parse_api(&parts.method, parts.uri.path(), query, &body) {
            Ok(api) => api,
            Err(reject) => return Ok(self.malformed(reject)),
        };
        if !matches!(api.command, Command::Get) {
            let name = format!("{}/{}", api.product.api_family(), api.command.name());
            self.record_write(api.sdkappid, name);
        }
        let fault = match self.admit(&api, app_count) {
            Ok(fault) => fault,
            Err(code) => return Ok(self.answer(&api, code, None)),
        };
        if let Some(kind) = fault {
            if let Some(outcome) = self.apply_fault(&api, kind, conn).await {
                return outcome;
            }
        }
        let (code, response) = self.execute(&api);
        Ok(self.answer(&api, code, response.as_ref()))
    }

    fn malformed(&self, reject: Reject) -> Response<Body> {
        self.record_malformed();
        let request_id = self.request_id();
        tracing::debug!(
            error_code = reject.code,
            error_info = %reject.info,
            request_id,
            "simulator refused a malformed request"
        );
        json_response(
            StatusCode::OK,
            envelope(reject.code, &reject.info, &request_id, None),
        )
    }

    fn answer(
        &self,
        api: &ApiRequest,
        code: i64,
        response: Option<&CallbackConfig>,
    ) -> Response<Body> {
        let request_id = self.request_id();
        tracing::debug!(
            sdkappid = api.sdkappid,
            product = api.product.as_str(),
            command = api.command.name(),
            error_code = code,
            request_id,
            "simulated answer"
        );
        json_response(
            StatusCode::OK,
            envelope(code, error_info(code), &request_id, response),
        )
    }

    /// App lookup, UserSig, admin and rate checks; then takes the first matching fault.
    fn admit(&self, api: &ApiRequest, app_count: Option<u64>) -> Result<Option<FaultKind>, i64> {
        let now = self.inner.clock.unix_secs();
        let mut st = self.lock();
        let app = st.apps.get_mut(&api.sdkappid).ok_or(70020_i64)?;
        usersig::verify(&app.key, &api.usersig, api.sdkappid, &api.identifier, now)
            .map_err(|e| e.error_code())?;
        if app.users.contains(&api.identifier) || !app.admins.contains(&api.identifier) {
            return Err(60010);
        }
        if app_count.unwrap_or(0) > PER_APP_LIMIT {
            app.counts.record_rate_limited();
            return Err(60011);
        }
        Ok(faults::take_matching(&mut st.faults, api.sdkappid))
    }

    /// Runs an admitted command on the product's configuration: its ErrorCode and, for a
    /// get, the configuration. A set of a product whose set only creates answers 100300
    /// when a configuration exists; an update answers 100301 when none does.
    pub(super) fn execute(&self, api: &ApiRequest) -> (i64, Option<CallbackConfig>) {
        let started = self.inner.started;
        let mut st = self.lock();
        let Some(app) = st.apps.get_mut(&api.sdkappid) else {
            return (70020, None);
        };
        let config = app.configs.get_mut(api.product);
        let exists = config.effective(started).is_some();
        match &api.command {
            Command::Get => match config.effective(started) {
                Some(cfg) => (0, Some(cfg)),
                None => (100301, None),
            },
            Command::Set(_) if exists && api.product.set_creates_only() => (100300, None),
            Command::Update(_) if !exists => (100301, None),
            Command::Set(cfg) | Command::Update(cfg) => {
                *config = ConfigState::Fixed(Some(cfg.clone()));
                (0, None)
            }
            Command::Delete => {
                *config = ConfigState::Fixed(None);
                (0, None)
            }
        }
    }

    /// A fresh `RequestId`: `Id-<32 hex>-O-Seq-<n>`, unique.
    pub(super) fn request_id(&self) -> String {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        format!("Id-{:032x}-O-Seq-{seq}", rand::random::<u128>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::harness::*;

    #[tokio::test]
    async fn good_get_returns_the_config_in_the_envelope() {
        let server = Server::start(scenario()).await;
        let resp = get(server.addr, CLEAN).await;
        assert_eq!(resp.code(), 0);
        let json = resp.json();
        assert_eq!(json["ActionStatus"], "OK");
        assert_eq!(json["ErrorInfo"], "");
        assert_eq!(json["Response"]["Url"], "https://hooks.example.com/cb");
        assert_eq!(
            json["Response"]["CallbackCommandList"],
            serde_json::json!([START, END])
        );
        let id = json["RequestId"].as_str().unwrap().to_owned();
        assert!(id.starts_with("Id-") && id.contains("-O-Seq-"), "{id}");
        let again = get(server.addr, CLEAN).await.json();
        assert_ne!(again["RequestId"].as_str().unwrap(), id);

        let missing = get(server.addr, BARE).await;
        assert_eq!(missing.code(), 100301);
        let json = missing.json();
        assert_eq!(json["ActionStatus"], "FAIL");
        assert!(json.get("Response").is_none());

        let stats = server.sim.stats();
        assert_eq!(stats.requests_total, 3);
        assert_eq!(stats.malformed_requests, 0);
        assert_eq!(stats.apps[&CLEAN.to_string()].requests, 2);
        assert_eq!(stats.apps[&BARE.to_string()].requests, 1);
        server.stop().await;
    }

    #[tokio::test]
    async fn each_auth_failure_has_its_code() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let cases = [
            (
                uri(
                    "get_callback",
                    999,
                    "administrator",
                    &sig(KEY1, 999, "administrator", NOW, 3600),
                ),
                70020,
            ),
            (
                uri("get_callback", CLEAN, "administrator", "garbage"),
                70003,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY3, CLEAN, "administrator", NOW, 3600),
                ),
                70009,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY1, CLEAN, "ops", NOW, 3600),
                ),
                70013,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY1, BARE, "administrator", NOW, 3600),
                ),
                70014,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "administrator",
                    &sig(KEY1, CLEAN, "administrator", NOW - 7200, 3600),
                ),
                70001,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "alice",
                    &sig(KEY1, CLEAN, "alice", NOW, 3600),
                ),
                60010,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "bob",
                    &sig(KEY1, CLEAN, "bob", NOW, 3600),
                ),
                60010,
            ),
            (
                uri(
                    "get_callback",
                    CLEAN,
                    "ops",
                    &sig(KEY1, CLEAN, "ops", NOW, 3600),
                ),
                0,
            ),
        ];
        for (uri, expected) in cases {
            let resp = call(addr, Method::POST, &uri, "{}").await;
            assert_eq!(resp.code(), expected, "{uri}");
            let json = resp.json();
            assert_eq!(
                json["ActionStatus"],
                if expected == 0 { "OK" } else { "FAIL" }
            );
            assert!(!json["ErrorInfo"].as_str().unwrap().is_empty() || expected == 0);
        }
        assert_eq!(server.sim.stats().malformed_requests, 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn malformed_requests_are_counted_exactly() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let s = sig(KEY1, CLEAN, "administrator", NOW, 3600);
        let base = format!("sdkappid={CLEAN}&identifier=administrator&usersig={s}");
        let get = "/v4/call_config/get_callback";
        let set = "/v4/call_config/set_callback";
        let cases: Vec<(Method, String, &str, i64)> = vec![
            (
                Method::POST,
                format!("{get}?{base}&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=abc&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=4294967296&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=%2B1&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=xml"),
                "{}",
                60002,
            ),
            (Method::POST, format!("{get}?{base}&random=1"), "{}", 60002),
            (
                Method::POST,
                format!("{get}?{base}&random=1&random=2&contenttype=json"),
                "{}",
                60002,
            ),
            (
                Method::GET,
                format!("{get}?{base}&random=1&contenttype=json"),
                "",
                60002,
            ),
            (
                Method::POST,
                format!("{get}?identifier=administrator&usersig={s}&random=1&contenttype=json"),
                "{}",
                60012,
            ),
            (
                Method::POST,
                format!("/v4/call_config/nope?{base}&random=1&contenttype=json"),
                "{}",
                60009,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                "not json",
                60003,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                "",
                60003,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                "[]",
                60003,
            ),
            (
                Method::POST,
                format!("{get}?{base}&random=1&contenttype=json"),
                r#"{"x":1}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"Url":"ftp://x","CallbackCommandList":[]}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"Url":"https://x","CallbackCommandList":5}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"CallbackCommandList":["a"]}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"Url":"https://x"}"#,
                100002,
            ),
            (
                Method::POST,
                format!("{set}?{base}&random=1&contenttype=json"),
                r#"{"Url":"https://x","CallbackCommandList":["a",1]}"#,
                100002,
            ),
            (
                Method::POST,
                format!("/v4/call_config/delete_callback?{base}&random=1&contenttype=json"),
                r#"{"Url":"https://x"}"#,
                100002,
            ),
        ];
        let n = cases.len() as u64;
        for (method, uri, body, expected) in cases {
            let resp = call(addr, method, &uri, body).await;
            assert_eq!(resp.code(), expected, "{uri} {body}");
            assert_eq!(resp.json()["ActionStatus"], "FAIL");
        }
        // Well-formed requests do not count, whatever their answer.
        assert_eq!(get_code(addr, CLEAN).await, 0);
        let bad_sig = uri("get_callback", CLEAN, "administrator", "garbage");
        assert_eq!(call(addr, Method::POST, &bad_sig, "{}").await.code(), 70003);
        let stats = server.sim.stats();
        assert_eq!(stats.malformed_requests, n);
        assert_eq!(stats.requests_total, n + 2);
        // The request without sdkappid does not count for the app.
        assert_eq!(stats.apps[&CLEAN.to_string()].requests, n + 1);
        // A malformed write is no write.
        assert_eq!(stats.writes_total, 0);
        server.stop().await;
    }

    #[tokio::test]
    async fn each_product_has_its_own_config_with_its_own_set_and_update() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let send = |product: Product, command: &'static str, body: &'static str| async move {
            call(
                addr,
                Method::POST,
                &product_uri(product, command, CLEAN),
                body,
            )
            .await
            .code()
        };
        let room = r#"{"Url":"https://h.example.com/room","CallbackCommandList":["Room.CallbackAfterCreateRoom"]}"#;
        let other = r#"{"Url":"https://h.example.com/other","CallbackCommandList":["Mic.CallbackAfterSeatInfoChanged"]}"#;
        // CLEAN has a call config only: room and live answer 100301.
        assert_eq!(send(Product::Call, "get_callback", "{}").await, 0);
        for product in [Product::Room, Product::Live] {
            assert_eq!(
                send(product, "get_callback", "{}").await,
                100301,
                "{product}"
            );
            assert_eq!(
                send(product, "update_callback", room).await,
                100301,
                "{product}"
            );
            assert_eq!(send(product, "set_callback", room).await, 0, "{product}");
            assert_eq!(
                send(product, "set_callback", other).await,
                100300,
                "{product}"
            );
            assert_eq!(
                server.sim.product_callback(CLEAN, product),
                Some(Some(CallbackConfig::new(
                    "https://h.example.com/room",
                    &["Room.CallbackAfterCreateRoom"]
                ))),
                "a refused set changes nothing"
            );
            assert_eq!(
                send(product, "update_callback", other).await,
                0,
                "{product}"
            );
            let got = call(
                addr,
                Method::POST,
                &product_uri(product, "get_callback", CLEAN),
                "{}",
            )
            .await
            .json();
            assert_eq!(got["Response"]["Url"], "https://h.example.com/other");
            assert_eq!(send(product, "delete_callback", "{}").await, 0, "{product}");
            assert_eq!(
                send(product, "get_callback", "{}").await,
                100301,
                "{product}"
            );
        }
        // Call's set overwrites, and call has no update_callback.
        assert_eq!(send(Product::Call, "set_callback", other).await, 0);
        assert_eq!(
            server.sim.callback(CLEAN).flatten().map(|c| c.url),
            Some("https://h.example.com/other".to_owned())
        );
        assert_eq!(send(Product::Call, "update_callback", room).await, 60009);
        assert_eq!(send(Product::Room, "update_callback", "{}").await, 100002);
        let stats = server.sim.stats();
        assert_eq!(
            stats.malformed_requests, 2,
            "the unknown path and the empty update"
        );
        // One app's requests, whatever the product.
        assert_eq!(
            stats.apps[&CLEAN.to_string()].requests,
            stats.requests_total
        );
        // Well-formed writes by API, refused ones included; malformed ones are not.
        let writes: Vec<(&str, u64)> = stats.apps[&CLEAN.to_string()]
            .writes
            .iter()
            .map(|(api, n)| (api.as_str(), *n))
            .collect();
        assert_eq!(
            writes,
            [
                ("call_config/set_callback", 1),
                ("live_config/delete_callback", 1),
                ("live_config/set_callback", 2),
                ("live_config/update_callback", 2),
                ("room_config/delete_callback", 1),
                ("room_config/set_callback", 2),
                ("room_config/update_callback", 2),
            ]
        );
        assert_eq!(stats.writes_total, 11);
        assert!(stats.apps[&BARE.to_string()].writes.is_empty());
        server.stop().await;
    }

    #[tokio::test]
    async fn set_then_get_round_trips_and_delete_removes() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let body = r#"{"Url":"http://new.example.com/x","CallbackCommandList":["Call.CallbackAfterMemberChanged"]}"#;
        let resp = call(addr, Method::POST, &good_uri("set_callback", BARE), body).await;
        assert_eq!(resp.code(), 0);
        assert!(resp.json().get("Response").is_none());
        let json = get(addr, BARE).await.json();
        assert_eq!(json["Response"]["Url"], "http://new.example.com/x");
        assert_eq!(
            json["Response"]["CallbackCommandList"],
            serde_json::json!(["Call.CallbackAfterMemberChanged"])
        );
        let resp = call(addr, Method::POST, &good_uri("delete_callback", BARE), "{}").await;
        assert_eq!(resp.code(), 0);
        assert_eq!(get_code(addr, BARE).await, 100301);
        // Deleting nothing is not an error.
        let resp = call(addr, Method::POST, &good_uri("delete_callback", BARE), "{}").await;
        assert_eq!(resp.code(), 0);
        assert_eq!(server.sim.stats().malformed_requests, 0);
        server.stop().await;
    }
}
