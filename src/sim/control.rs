//! The control endpoints under `/__sim/`: statistics, fault rules, and each app's
//! configuration per product. They change the simulator's state and are not counted as API requests.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::Simulator;
use super::api::parse_digits;
use super::faults::FaultRule;
use super::http::{Body, ConnAbort, json_value, not_allowed, read_body, text};
use super::scenario::CallbackConfig;
use crate::product::Product;

const MAX_CONTROL_BODY: usize = 1024 * 1024;

impl Simulator {
    /// Answers `/__sim/{rest}`.
    pub(super) async fn handle_control(
        &self,
        req: Request<Incoming>,
        rest: &str,
    ) -> Result<Response<Body>, ConnAbort> {
        let (parts, body) = req.into_parts();
        let method = parts.method;
        match rest {
            "stats" => Ok(self.control_stats(&method)),
            "faults" => self.control_faults(&method, body).await,
            _ => {
                let Some(id) = rest.strip_prefix("apps/") else {
                    return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
                };
                self.control_app(&method, id, body).await
            }
        }
    }

    /// `GET /__sim/stats`.
    fn control_stats(&self, method: &Method) -> Response<Body> {
        match *method {
            Method::GET => json_value(StatusCode::OK, &self.stats()),
            _ => not_allowed("GET"),
        }
    }

    /// `GET|PUT /__sim/faults`: a PUT replaces every rule, all naming known apps.
    async fn control_faults(
        &self,
        method: &Method,
        body: Incoming,
    ) -> Result<Response<Body>, ConnAbort> {
        match *method {
            Method::GET => Ok(json_value(StatusCode::OK, &self.faults())),
            Method::PUT => {
                let Some(body) = read_body(body, MAX_CONTROL_BODY).await? else {
                    return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
                };
                let faults: Vec<FaultRule> = match serde_json::from_slice(&body) {
                    Ok(f) => f,
                    Err(e) => {
                        return Ok(text(StatusCode::BAD_REQUEST, &format!("{e}\n")));
                    }
                };
                if let Some(rule) = faults.iter().find(|r| !self.has_app(r.sdkappid)) {
                    let msg = format!("sdkappid {} is not one of the apps\n", rule.sdkappid);
                    return Ok(text(StatusCode::BAD_REQUEST, &msg));
                }
                self.set_faults(faults);
                Ok(json_value(StatusCode::OK, &self.faults()))
            }
            _ => Ok(not_allowed("GET, PUT")),
        }
    }

    /// `GET|PUT /__sim/apps/{id}` (TUICallKit's configuration, or with a PUT body of
    /// products every named product's) and `GET|PUT /__sim/apps/{id}/{product}`; a
    /// configuration of `null` deletes it.
    async fn control_app(
        &self,
        method: &Method,
        id: &str,
        body: Incoming,
    ) -> Result<Response<Body>, ConnAbort> {
        let (id, product) = match id.split_once('/') {
            Some((id, name)) => match Product::from_name(name) {
                Some(product) => (id, Some(product)),
                None => return Ok(text(StatusCode::NOT_FOUND, "no such product\n")),
            },
            None => (id, None),
        };
        let Some(sdkappid) = parse_digits::<u64>(id).filter(|id| self.has_app(*id)) else {
            return Ok(text(StatusCode::NOT_FOUND, "no such app\n"));
        };
        let one = product.unwrap_or(Product::Call);
        match *method {
            Method::GET => Ok(json_value(
                StatusCode::OK,
                &self.product_callback(sdkappid, one),
            )),
            Method::PUT => {
                let Some(body) = read_body(body, MAX_CONTROL_BODY).await? else {
                    return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
                };
                let update = match app_update(&body, product.is_none()) {
                    Ok(update) => update,
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, &format!("{e}\n"))),
                };
                Ok(match update {
                    AppUpdate::One(cfg) => {
                        self.set_product_callback(sdkappid, one, cfg);
                        json_value(StatusCode::OK, &self.product_callback(sdkappid, one))
                    }
                    AppUpdate::Products(products) => {
                        let mut shown = serde_json::Map::new();
                        for (product, cfg) in products.written() {
                            self.set_product_callback(sdkappid, product, cfg);
                        }
                        for product in Product::ALL {
                            let now = self.product_callback(sdkappid, product).flatten();
                            shown.insert(product.as_str().to_owned(), serde_json::json!(now));
                        }
                        json_value(StatusCode::OK, &shown)
                    }
                })
            }
            _ => Ok(not_allowed("GET, PUT")),
        }
    }
}

/// What a PUT of `/__sim/apps/{id}` asks for.
enum AppUpdate {
    /// One configuration in wire form, or `null`: for the product of the path (TUICallKit
    /// on the bare path, as before products existed).
    One(Option<CallbackConfig>),
    /// `{"call": …, "room": …, "live": …}`: each product named gets its configuration.
    Products(ProductConfigs),
}

/// The products form of a PUT body; a product not named keeps its configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductConfigs {
    #[serde(default, deserialize_with = "written")]
    call: Option<Option<CallbackConfig>>,
    #[serde(default, deserialize_with = "written")]
    room: Option<Option<CallbackConfig>>,
    #[serde(default, deserialize_with = "written")]
    live: Option<Option<CallbackConfig>>,
}

impl ProductConfigs {
    /// Each product the body names, with its configuration (`None` deletes).
    fn written(self) -> Vec<(Product, Option<CallbackConfig>)> {
        [
            (Product::Call, self.call),
            (Product::Room, self.room),
            (Product::Live, self.live),
        ]
        .into_iter()
        .filter_map(|(product, cfg)| cfg.map(|cfg| (product, cfg)))
        .collect()
    }
}

/// Tells a product written as `null` (`Some(None)`) from one not written (`None`).
fn written<'de, D>(deserializer: D) -> Result<Option<Option<CallbackConfig>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<CallbackConfig>::deserialize(deserializer).map(Some)
}

/// Parses a PUT body: the products form (on the bare path only) when every key of an
/// object names a product, else one configuration.
fn app_update(body: &[u8], products_allowed: bool) -> Result<AppUpdate, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let names_products = value.as_object().is_some_and(|object| {
        !object.is_empty() && object.keys().all(|k| Product::from_name(k).is_some())
    });
    if products_allowed && names_products {
        serde_json::from_value(value).map(AppUpdate::Products)
    } else {
        serde_json::from_value(value).map(AppUpdate::One)
    }
}

#[cfg(test)]
mod tests {
    use crate::sim::SimStats;
    use crate::sim::harness::*;
    use hyper::{Method, StatusCode};

    #[tokio::test]
    async fn control_endpoints() {
        let server = Server::start(scenario()).await;
        let addr = server.addr;
        let path = format!("/__sim/apps/{CLEAN}");
        let resp = call(
            addr,
            Method::PUT,
            &path,
            r#"{"Url":"http://x.example.com/","CallbackCommandList":["a","b"]}"#,
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK);
        let json = get(addr, CLEAN).await.json();
        assert_eq!(json["Response"]["Url"], "http://x.example.com/");
        assert_eq!(
            json["Response"]["CallbackCommandList"],
            serde_json::json!(["a", "b"])
        );
        let resp = call(addr, Method::GET, &path, "").await;
        assert_eq!(resp.json()["Url"], "http://x.example.com/");

        assert_eq!(
            call(addr, Method::PUT, &path, "null").await.status,
            StatusCode::OK
        );
        assert_eq!(get_code(addr, CLEAN).await, 100301);
        assert_eq!(server.sim.callback(CLEAN), Some(None));

        // Any product, by path or with a body naming products; the bare path is call's.
        let room = r#"{"Url":"https://r.example.com/","CallbackCommandList":["Room.CallbackAfterCreateRoom"]}"#;
        let resp = call(addr, Method::PUT, &format!("{path}/room"), room).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.json()["Url"], "https://r.example.com/");
        let body = format!(r#"{{"live": {room}, "room": null}}"#);
        let resp = call(addr, Method::PUT, &path, &body).await;
        assert_eq!(resp.status, StatusCode::OK);
        let json = resp.json();
        assert_eq!(json["call"], serde_json::Value::Null);
        assert_eq!(json["room"], serde_json::Value::Null);
        assert_eq!(json["live"]["Url"], "https://r.example.com/");
        let resp = call(addr, Method::GET, &format!("{path}/live"), "").await;
        assert_eq!(resp.json()["Url"], "https://r.example.com/");
        assert_eq!(server.sim.callback(CLEAN), Some(None), "call untouched");
        let nope = call(addr, Method::GET, &format!("{path}/video"), "").await;
        assert_eq!(nope.status, StatusCode::NOT_FOUND);
        let mixed = call(
            addr,
            Method::PUT,
            &path,
            r#"{"room": null, "Url": "https://x/"}"#,
        )
        .await;
        assert_eq!(mixed.status, StatusCode::BAD_REQUEST);
        let nested = call(
            addr,
            Method::PUT,
            &format!("{path}/room"),
            r#"{"room": null}"#,
        )
        .await;
        assert_eq!(nested.status, StatusCode::BAD_REQUEST);

        let unknown = call(addr, Method::PUT, "/__sim/apps/999", "null").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        let bad = call(addr, Method::PUT, &path, r#"{"Url":"x","Commands":[]}"#).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);

        let faults =
            format!(r#"[{{"sdkappid":{CLEAN},"kind":"http_status","status":503,"count":1}}]"#);
        assert_eq!(
            call(addr, Method::PUT, "/__sim/faults", &faults)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            get(addr, CLEAN).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(server.sim.faults().is_empty());
        let unknown_app = r#"[{"sdkappid":5,"kind":"hang"}]"#;
        assert_eq!(
            call(addr, Method::PUT, "/__sim/faults", unknown_app)
                .await
                .status,
            StatusCode::BAD_REQUEST
        );
        let bad_kind = format!(r#"[{{"sdkappid":{CLEAN},"kind":"hang","status":502}}]"#);
        assert_eq!(
            call(addr, Method::PUT, "/__sim/faults", &bad_kind)
                .await
                .status,
            StatusCode::BAD_REQUEST
        );

        let resp = call(addr, Method::GET, "/__sim/stats", "").await;
        assert_eq!(resp.status, StatusCode::OK);
        let stats: SimStats = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(stats, server.sim.stats());
        assert_eq!(stats.requests_total, 3);
        assert_eq!(
            call(addr, Method::GET, "/nope", "").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(addr, Method::GET, "/__sim/nope", "").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(addr, Method::POST, "/__sim/stats", "").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Control requests are not API requests.
        assert_eq!(server.sim.stats().requests_total, 3);
        server.stop().await;
    }
}
