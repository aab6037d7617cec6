//! Writes: `set_callback`, `update_callback` and `delete_callback` of the target's product
//! family, each through the one rate limiter like a read.
//!
//! **Invariant:** a write goes out at most once. One whose answer is lost (timeout, a
//! connection closed after it went out, an answer that does not decode) is never sent
//! again: it may have been carried out, and the next read tells. The only second request
//! is TUIRoomKit's and TUILiveKit's switch, after an answer that says nothing was written:
//! a set answered 100300 (a configuration exists) becomes an update, an update answered
//! 100301 (none exists) becomes a set, once.

use bytes::Bytes;

use super::answer::{USERSIG_EXPIRED, decode_write};
use super::{ApiAnswer, CODE_NO_CONFIG, Client, PollError, RATE_LIMIT_PAUSE, Request, Target};
use crate::product::Product;
use crate::remedy::{Desired, Write};

/// ErrorCode of TUIRoomKit's and TUILiveKit's `set_callback` when a configuration exists.
pub const CODE_CONFIG_EXISTS: i64 = 100_300;

/// The write APIs of a product family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteApi {
    Set,
    Update,
    Delete,
}

impl WriteApi {
    /// The API's name under `v4/{family}/`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteApi::Set => "set_callback",
            WriteApi::Update => "update_callback",
            WriteApi::Delete => "delete_callback",
        }
    }

    /// The API that carries `write` out first: TUICallKit's family has no update, and its
    /// set overwrites.
    pub fn for_write(product: Product, write: &Write) -> WriteApi {
        match write {
            Write::Update(_) if product.set_creates_only() => WriteApi::Update,
            Write::Set(_) | Write::Update(_) => WriteApi::Set,
            Write::Delete => WriteApi::Delete,
        }
    }
}

/// What a write achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// ErrorCode 0.
    Applied,
    /// A delete answered 100301: there was nothing to delete.
    AlreadyAbsent,
}

/// Why a write did not (certainly) happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The gateway answered with an ErrorCode: nothing was written.
    #[error("refused by the gateway: {0}")]
    Refused(ApiAnswer),
    /// No answer that says what happened; not sent again.
    #[error("no answer ({0}); not sent again: the next read tells whether it was written")]
    Lost(String),
}

/// The result of one [`Client::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The API of the last request (after the 100300/100301 switch).
    pub api: WriteApi,
    pub result: Result<Written, WriteError>,
    /// RequestId of the last answer, if the gateway gave one.
    pub request_id: Option<String>,
    /// HTTP requests sent: 1, or 2 after the switch.
    pub requests: u32,
}

impl WriteOutcome {
    /// The configuration is now what was asked for, as far as the gateway said.
    pub fn is_written(&self) -> bool {
        self.result.is_ok()
    }
}

/// The body of a set or update: `{"Url": ..., "CallbackCommandList": [...]}`.
fn config_body(desired: &Desired) -> Bytes {
    let body = serde_json::json!({
        "Url": desired.url,
        "CallbackCommandList": desired.commands,
    });
    Bytes::from(body.to_string())
}

impl Client {
    /// Carries `write` out on `target` through the rate limiter; see the module's
    /// invariant for what is sent more than once (only the set/update switch).
    pub async fn write(&self, target: &Target, write: &Write) -> WriteOutcome {
        let first = WriteApi::for_write(target.key.product, write);
        let body = match write.desired() {
            Some(desired) => config_body(desired),
            None => Bytes::from_static(b"{}"),
        };
        let mut outcome = self.write_once(target, first, body.clone()).await;
        let switch = match (&outcome.result, first) {
            (Err(WriteError::Refused(a)), WriteApi::Set) if a.code == CODE_CONFIG_EXISTS => {
                Some(WriteApi::Update)
            }
            (Err(WriteError::Refused(a)), WriteApi::Update) if a.code == CODE_NO_CONFIG => {
                Some(WriteApi::Set)
            }
            _ => None,
        };
        if let Some(api) = switch.filter(|_| target.key.product.set_creates_only()) {
            tracing::debug!(app = %target.key.app, product = %target.key.product, from = first.as_str(), to = api.as_str(), "the configuration changed since it was read; switching once");
            let second = self.write_once(target, api, body).await;
            outcome = WriteOutcome {
                requests: outcome.requests + second.requests,
                ..second
            };
        }
        outcome
    }

    /// One request of `api`, never repeated.
    async fn write_once(&self, target: &Target, api: WriteApi, body: Bytes) -> WriteOutcome {
        let passed = self.limits.acquire(target.key.sdkappid).await;
        self.observer.rate_limit_wait(passed.waited);
        let request = Request {
            api: api.as_str(),
            body,
            resend: super::transport::Resend::Unsent,
            decode: &decode_write,
        };
        let attempt = self.exchange(target, passed.at, request).await;
        let result = match attempt.result {
            Ok(()) => Ok(Written::Applied),
            Err(e) => self.write_failure(target, api, e),
        };
        WriteOutcome {
            api,
            result,
            request_id: attempt.request_id,
            requests: 1,
        }
    }

    /// What a failed write request means, with the limiter and UserSig told as a read
    /// would tell them (but the write is not retried).
    fn write_failure(
        &self,
        target: &Target,
        api: WriteApi,
        error: PollError,
    ) -> Result<Written, WriteError> {
        if matches!(error, PollError::RateLimited(_)) {
            self.limits.slow_down(target.key.sdkappid, RATE_LIMIT_PAUSE);
        }
        let Some(answer) = error.answer() else {
            return Err(WriteError::Lost(error.to_string()));
        };
        if USERSIG_EXPIRED.contains(&answer.code) {
            target.usersig.invalidate();
        }
        if api == WriteApi::Delete && answer.code == CODE_NO_CONFIG {
            return Ok(Written::AlreadyAbsent);
        }
        Err(WriteError::Refused(answer.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_write_starts_with_its_family_api() {
        let desired = Desired {
            url: "https://h/cb".to_owned(),
            commands: vec!["Room.CallbackAfterCreateRoom".to_owned()],
        };
        let set = Write::Set(desired.clone());
        let update = Write::Update(desired.clone());
        let table = [
            (Product::Call, &set, WriteApi::Set),
            (Product::Call, &update, WriteApi::Set),
            (Product::Call, &Write::Delete, WriteApi::Delete),
            (Product::Room, &set, WriteApi::Set),
            (Product::Room, &update, WriteApi::Update),
            (Product::Live, &update, WriteApi::Update),
            (Product::Live, &Write::Delete, WriteApi::Delete),
        ];
        for (product, write, want) in table {
            assert_eq!(
                WriteApi::for_write(product, write),
                want,
                "{product} {write:?}"
            );
        }
        let body: serde_json::Value = serde_json::from_slice(&config_body(&desired)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"Url": "https://h/cb", "CallbackCommandList": ["Room.CallbackAfterCreateRoom"]})
        );
    }
}
