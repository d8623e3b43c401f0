//! An endpoint reached over REST (`protocol: http`): V2 requests with the binary tensor
//! extension both ways (`binary_data_output`), V1 bodies passed through as JSON, readiness from
//! `/v2/health/ready` and `/v2/models/{model}/ready`, metadata from `/v2/models/{model}`.
//! The caller's deadline bounds the call (REST has no deadline header to pass on).

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferroserve_runtime::protocol::binary::{self, HEADER_CONTENT_LENGTH};
use ferroserve_runtime::protocol::v2::ModelMetadata;
use ferroserve_runtime::protocol::{Parameter, v2::InferRequest};
use ferroserve_runtime::{InferError, ModelInfo, Payload, Prediction};

use crate::error::{CallError, with_causes};

/// HTTP clients of one endpoint (reqwest keeps a pool of keep-alive connections).
#[derive(Clone)]
pub(crate) struct HttpConnection {
    pub(crate) endpoint: String,
    model: String,
    base: String,
    client: reqwest::Client,
}

impl HttpConnection {
    pub(crate) fn new(
        endpoint: &str,
        model: &str,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
        Ok(HttpConnection {
            endpoint: endpoint.to_owned(),
            model: model.to_owned(),
            base: format!("http://{endpoint}"),
            client,
        })
    }

    fn named(&self, e: impl std::fmt::Display) -> String {
        format!("endpoint {}: {e}", self.endpoint)
    }

    async fn get_ok(&self, path: &str, timeout: Duration) -> Result<Bytes, String> {
        let answer = self
            .client
            .get(format!("{}{path}", self.base))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.named(describe(&e)))?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| self.named(describe(&e)))?;
        if !status.is_success() {
            return Err(self.named(format!("GET {path}: {status} {}", error_message(&body))));
        }
        Ok(body)
    }

    /// The server's and the model's readiness, each GET within `timeout`.
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<(), String> {
        self.get_ok("/v2/health/ready", timeout).await?;
        self.get_ok(&format!("/v2/models/{}/ready", self.model), timeout)
            .await
            .map(|_| ())
    }

    pub(crate) async fn metadata(&self, timeout: Duration) -> Result<ModelInfo, String> {
        let body = self
            .get_ok(&format!("/v2/models/{}", self.model), timeout)
            .await?;
        let meta: ModelMetadata =
            serde_json::from_slice(&body).map_err(|e| self.named(format!("metadata: {e}")))?;
        Ok(ModelInfo {
            platform: meta.platform,
            inputs: meta.inputs,
            outputs: meta.outputs,
        })
    }

    pub(crate) async fn infer(
        &self,
        payload: Payload,
        deadline: Option<Instant>,
    ) -> Result<Prediction, CallError> {
        let v2 = matches!(payload, Payload::V2(_));
        let mut call = match payload {
            Payload::V2(request) => self.v2_call(request)?,
            Payload::V1(body) => self
                .client
                .post(format!("{}/v1/models/{}:predict", self.base, self.model))
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(&body)
                        .map_err(|e| CallError::Failed(InferError::Internal(e.to_string())))?,
                ),
        };
        if let Some(deadline) = deadline {
            call = call.timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let answer = match call.send().await {
            Ok(answer) => answer,
            Err(e) if e.is_connect() => return Err(CallError::NotSent(describe(&e))),
            Err(e) => {
                return Err(CallError::Failed(InferError::Unavailable(
                    self.named(describe(&e)),
                )));
            }
        };
        let status = answer.status();
        let json_len = answer
            .headers()
            .get(HEADER_CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = answer
            .bytes()
            .await
            .map_err(|e| CallError::Failed(InferError::Unavailable(self.named(describe(&e)))))?;
        if !status.is_success() {
            let msg = self.named(error_message(&body));
            return Err(CallError::Failed(match status.as_u16() {
                400 | 422 => InferError::InvalidInput(msg),
                404 | 408 | 429 | 503 | 504 => InferError::Unavailable(msg),
                _ => InferError::Internal(msg),
            }));
        }
        let invalid = |e: String| {
            CallError::Failed(InferError::Internal(
                self.named(format!("invalid response: {e}")),
            ))
        };
        if v2 {
            binary::decode_response(body, json_len)
                .map(Prediction::V2)
                .map_err(|e| invalid(e.to_string()))
        } else {
            serde_json::from_slice(&body)
                .map(Prediction::V1)
                .map_err(|e| invalid(e.to_string()))
        }
    }

    fn v2_call(&self, mut request: InferRequest) -> Result<reqwest::RequestBuilder, CallError> {
        request
            .parameters
            .insert("binary_data_output".to_owned(), Parameter::Bool(true));
        let encoded = binary::encode_request(&request)
            .map_err(|e| CallError::Failed(InferError::InvalidInput(e.to_string())))?;
        // The JSON part, then each tensor's bytes as they are (no copy into one buffer), with
        // the total length so the body is not chunked.
        let length = encoded.len();
        let json_len = encoded.json.len();
        let parts = std::iter::once(Bytes::from(encoded.json))
            .chain(encoded.blobs)
            .map(Ok::<_, std::convert::Infallible>);
        Ok(self
            .client
            .post(format!("{}/v2/models/{}/infer", self.base, self.model))
            .header("content-type", "application/octet-stream")
            .header("content-length", length)
            .header(HEADER_CONTENT_LENGTH, json_len)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            ))))
    }
}

/// The `error` of a V2/V1 error body, else the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn describe(e: &reqwest::Error) -> String {
    with_causes(e.to_string(), e)
}
