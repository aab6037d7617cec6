//! The control endpoints under `/__sim/`: statistics, fault rules, and each app's
//! configuration. They change the simulator's state and are not counted as API requests.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::Simulator;
use super::api::parse_digits;
use super::faults::FaultRule;
use super::http::{Body, ConnAbort, json_value, not_allowed, read_body, text};
use super::scenario::CallbackConfig;

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

    /// `GET|PUT /__sim/apps/{id}`: a PUT of `null` deletes the configuration.
    async fn control_app(
        &self,
        method: &Method,
        id: &str,
        body: Incoming,
    ) -> Result<Response<Body>, ConnAbort> {
        let Some(sdkappid) = parse_digits::<u64>(id).filter(|id| self.has_app(*id)) else {
            return Ok(text(StatusCode::NOT_FOUND, "no such app\n"));
        };
        match *method {
            Method::GET => Ok(json_value(StatusCode::OK, &self.callback(sdkappid))),
            Method::PUT => {
                let Some(body) = read_body(body, MAX_CONTROL_BODY).await? else {
                    return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
                };
                let cfg: Option<CallbackConfig> = match serde_json::from_slice(&body) {
                    Ok(c) => c,
                    Err(e) => {
                        return Ok(text(StatusCode::BAD_REQUEST, &format!("{e}\n")));
                    }
                };
                self.set_callback(sdkappid, cfg);
                Ok(json_value(StatusCode::OK, &self.callback(sdkappid)))
            }
            _ => Ok(not_allowed("GET, PUT")),
        }
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
