//! A real server on loopback for integration tests, with a few test models.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use async_trait::async_trait;
use ferroserve_runtime::protocol::v2::InferResponse;
use ferroserve_runtime::{
    Controller, Deployment, Identity, Model, ModelError, Payload, Prediction, RequestContext,
    RuntimeMetrics,
};
use ferroserve_server::{AppState, HttpMetrics, ServerConfig};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

/// A server running on `127.0.0.1:<random port>`, stopped when dropped.
pub struct TestServer {
    pub base: String,
    /// `http://127.0.0.1:<grpc port>`.
    pub grpc: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(specs: Vec<Deployment>) -> TestServer {
        Self::start_with(specs, ServerConfig::default()).await
    }

    pub async fn start_with(specs: Vec<Deployment>, config: ServerConfig) -> TestServer {
        let mut registry = Registry::default();
        let runtime_metrics = RuntimeMetrics::new(&mut registry);
        let metrics = HttpMetrics::new(&mut registry);
        let (controller, handle) = Controller::start(specs, runtime_metrics).unwrap();
        let state = AppState::new(handle, config, metrics, registry, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = format!("http://{}", grpc_listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
        tokio::spawn(ferroserve_server::grpc::serve(
            grpc_listener,
            state.clone(),
            async {
                let _ = grpc_stopped.await;
            },
        ));
        tokio::spawn(async move {
            ferroserve_server::serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
            let _ = grpc_stop.send(());
            controller.shutdown().await;
        });
        TestServer {
            base,
            grpc,
            client: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POSTs a body with no Content-Type header, as tritonclient does.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post(path, body.to_string()).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// Waits until `/v2/models/{name}/ready` answers `status`.
    pub async fn wait_model(&self, name: &str, status: u16) {
        for _ in 0..200 {
            if self.get(&format!("/v2/models/{name}/ready")).await.0 == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("model {name} never answered {status}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Identity under the name `identity`.
pub fn identity() -> Deployment {
    Deployment::new("identity", || Identity)
}

/// A model whose `load` takes `delay` and then succeeds.
pub struct SlowLoad(pub Duration);

#[async_trait]
impl Model for SlowLoad {
    async fn load(&mut self) -> Result<(), ModelError> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
    async fn predict(&self, p: Payload, ctx: &RequestContext) -> Result<Prediction, ModelError> {
        Identity.predict(p, ctx).await
    }
}

/// A model whose `load` fails.
pub struct FailingLoad;

#[async_trait]
impl Model for FailingLoad {
    async fn load(&mut self) -> Result<(), ModelError> {
        Err(ModelError::internal("weights file is corrupt"))
    }
    async fn predict(&self, _: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        Err(ModelError::internal("unreachable"))
    }
}

/// A model that fails in the way its request's `mode` parameter says.
pub struct Failing;

#[async_trait]
impl Model for Failing {
    async fn predict(&self, p: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        let mode = match &p {
            Payload::V2(r) => r
                .parameters
                .get("mode")
                .and_then(|m| m.as_str())
                .map(str::to_owned),
            Payload::V1(v) => v.get("mode").and_then(|m| m.as_str()).map(str::to_owned),
        };
        match mode.as_deref() {
            Some("invalid") => Err(ModelError::invalid_input("bad input!")),
            Some("unavailable") => Err(ModelError::Unavailable("busy".into())),
            _ => Err(ModelError::internal("ValueError : kaput")),
        }
    }
}

/// A V2 model that answers with the request's parameters and each input's parameters, and
/// the headers it saw, to show what reaches a model.
pub struct Echo;

#[async_trait]
impl Model for Echo {
    async fn predict(&self, p: Payload, ctx: &RequestContext) -> Result<Prediction, ModelError> {
        let Payload::V2(req) = p else {
            return Err(ModelError::invalid_input("V2 only"));
        };
        let mut parameters = req.parameters.clone();
        for t in &req.inputs {
            for (k, v) in &t.parameters {
                parameters.insert(format!("{}.{k}", t.name), v.clone());
            }
        }
        if let Some(v) = ctx.header("x-test") {
            parameters.insert("header.x-test".into(), v.into());
        }
        Ok(Prediction::V2(InferResponse {
            parameters,
            outputs: req.inputs,
            ..InferResponse::default()
        }))
    }
}

/// A binary request body: JSON header, then blobs; returns the body and the header length.
pub fn binary_body(header: &serde_json::Value, blobs: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut body = header.to_string().into_bytes();
    let len = body.len();
    for b in blobs {
        body.extend_from_slice(b);
    }
    (body, len)
}

/// Identity after sleeping `0` in `predict`.
pub struct SlowPredict(pub Duration);

#[async_trait]
impl Model for SlowPredict {
    async fn predict(&self, p: Payload, ctx: &RequestContext) -> Result<Prediction, ModelError> {
        tokio::time::sleep(self.0).await;
        Identity.predict(p, ctx).await
    }
}

impl TestServer {
    /// Asks the server to stop accepting and finish in-flight requests.
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
