//! The same client as [`super::Http`], made of reqwest, for the benchmark's comparison
//! only (`--features reqwest-transport`): rustls with our roots and `ca_file`, the
//! injected resolver, the environment's proxies (reqwest reads them itself), keep-alive
//! bounds and connect timeout as ours, no redirects, HTTP/1.1.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

use super::{Answer, Error, IDLE_TIMEOUT, MAX_IDLE_PER_BASE, Payload, Resolve};

/// Our resolver as reqwest's.
struct Resolver(Arc<dyn Resolve>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.0.resolve(name.as_str());
        Box::pin(async move {
            let addrs: reqwest::dns::Addrs = Box::new(lookup.await?.into_iter());
            Ok(addrs)
        })
    }
}

/// HTTP/1.1 client over reqwest's pool.
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new(
        mut tls: rustls::ClientConfig,
        resolver: Option<Arc<dyn Resolve>>,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        // What hyper-rustls offers on our own connections.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_BASE);
        if let Some(resolver) = resolver {
            builder = builder.dns_resolver(Arc::new(Resolver(resolver)));
        }
        Ok(Self {
            client: builder.build()?,
        })
    }

    /// As [`super::Http::post`]; a closed keep-alive connection is reqwest's to replace.
    /// reqwest says nothing of the connection a request went out on, so `connected` is
    /// never called: a request that waited for a new one counts from when it was decided.
    pub async fn post(
        &self,
        base: &str,
        path_and_query: String,
        headers: &[(HeaderName, HeaderValue)],
        // reqwest's pool sends again only requests that never went out, so `resend` is
        // met either way.
        payload: Payload,
        limit: usize,
        _connected: &(dyn Fn() + Sync),
    ) -> Result<Answer, Error> {
        let body = payload.body;
        let mut request = self.client.post(format!("{base}{path_and_query}"));
        for (name, value) in headers {
            request = request.header(name.clone(), value.clone());
        }
        let mut response = request.body(body).send().await.map_err(Error::Client)?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Ok(Answer { status, body: None });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Error::Client)? {
            if bytes.len() + chunk.len() > limit {
                return Ok(Answer { status, body: None });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            body: Some(bytes.into()),
        })
    }
}
