//! The REST routes of KServe's V1 and V2 protocols.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferroserve_protocol::binary::{self, HEADER_CONTENT_LENGTH};
use ferroserve_protocol::v2::ServerMetadata;
use ferroserve_runtime::{InferError, Payload, Prediction};
use prometheus_client::encoding::text::encode;
use serde_json::json;
use tower_http::decompression::RequestDecompressionLayer;

use crate::body::{self, Chunks};
use crate::{ApiError, AppState};

pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(v1_models))
        .route("/v1/models/{name}", get(v1_model).post(v1_verb))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models", get(v2_models))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/stats", get(model_stats))
        .route("/v2/models/stats", get(all_stats))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(versioned_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(versioned_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(versioned_infer),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository_unload),
        )
        .route(
            "/v2/systemsharedmemory/status",
            get(shm_status_all).post(shm_status_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/status",
            get(shm_status).post(shm_status),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/register",
            post(shm_register),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/unregister",
            post(shm_unregister),
        )
        .route(
            "/v2/systemsharedmemory/unregister",
            post(shm_unregister_all),
        )
        // No CUDA region exists here (no GPU); clients clear them before they start.
        .route(
            "/v2/cudasharedmemory/status",
            get(cuda_status_all).post(cuda_status_all),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/status",
            get(cuda_status).post(cuda_status),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/register",
            post(cuda_register),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/unregister",
            post(shm_nothing_to_unregister),
        )
        .route(
            "/v2/cudasharedmemory/unregister",
            post(shm_nothing_to_unregister),
        )
        .route("/-/status", get(admin_status))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Request bodies may be gzip or deflate (tritonclient's request_compression_algorithm);
        // the size limit applies to the decompressed bytes.
        .layer(RequestDecompressionLayer::new())
        .with_state(state)
}

async fn root() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

/// Ready only when every model is ready (KServe always says ready).
async fn ready(State(s): State<AppState>) -> Response {
    let ready = s.handle.server_ready().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

async fn server_metadata(State(s): State<AppState>) -> Json<ServerMetadata> {
    Json(crate::server_metadata(s.shared_memory.enabled()))
}

/// Triton's model configuration (`tritonclient.get_model_config`).
async fn model_config(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match crate::model_info::model_config(&s.handle, &name) {
        Ok(c) => Json(crate::model_info::model_config_json(&c)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Triton's statistics (`tritonclient.get_inference_statistics`).
async fn model_stats(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match crate::model_info::model_statistics(&s.handle, &name) {
        Ok(st) => Json(json!({"model_stats": [crate::model_info::model_statistics_json(&st)]}))
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Statistics of every model.
async fn all_stats(State(s): State<AppState>) -> Response {
    let stats: Result<Vec<_>, _> = s
        .handle
        .model_names()
        .iter()
        .map(|n| {
            crate::model_info::model_statistics(&s.handle, n)
                .map(|st| crate::model_info::model_statistics_json(&st))
        })
        .collect();
    match stats {
        Ok(v) => Json(json!({"model_stats": v})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn v2_models(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "models": s.handle.model_names() }))
}

async fn v1_models(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "models": s.handle.model_names() }))
}

/// `{"name", "ready": true}`, 404 when unknown, 503 when not ready.
async fn readiness(s: &AppState, name: &str) -> Result<Response, ApiError> {
    if s.handle.model_ready(name).await? {
        Ok(Json(json!({ "name": name, "ready": true })).into_response())
    } else {
        // Says why (e.g. the load error) through the runtime's not-ready error.
        let detail = match s.handle.status(name)? {
            ferroserve_runtime::ModelStatus::Failed(why) => Some(why),
            ferroserve_runtime::ModelStatus::Stopped => Some("It is shutting down.".to_owned()),
            _ => None,
        };
        Err(InferError::ModelNotReady {
            name: name.to_owned(),
            detail,
        }
        .into())
    }
}

async fn v1_model(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    readiness(&s, &name).await.into_response()
}

async fn model_ready(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    readiness(&s, &name).await.into_response()
}

async fn model_metadata(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.handle.metadata(&name) {
        Ok(m) => Json(m).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /v2/models/{name}/versions/{version}`: the version served (a repository model's).
async fn versioned_metadata(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    if let Err(e) = s.handle.check_version(&name, &version) {
        return ApiError::from(e).into_response();
    }
    model_metadata(State(s), Path(name)).await
}

async fn versioned_ready(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    if let Err(e) = s.handle.check_version(&name, &version) {
        return ApiError::from(e).into_response();
    }
    readiness(&s, &name).await.into_response()
}

async fn versioned_infer(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = s.handle.check_version(&name, &version) {
        return ApiError::from(e).into_response();
    }
    infer(State(s), Path(name), headers, body).await
}

/// Admin route read by `ferroserve status`: every deployment and its replicas; 404 when the
/// server is configured not to expose it (`status_route: false`).
async fn admin_status(State(s): State<AppState>) -> Response {
    if !s.config.status_route {
        return ApiError::NotFound(
            "this server does not expose /-/status (status_route: false)".into(),
        )
        .into_response();
    }
    Json(json!({ "deployments": s.handle.deployment_statuses() })).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &s.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    tracing::debug!(%method, path = uri.path(), "method not allowed");
    ApiError::MethodNotAllowed
}

/// Records the request in the ingress metrics. Unknown model names share one label so that
/// clients cannot grow the label set.
fn record(s: &AppState, name: &str, protocol: &'static str, started: Instant, resp: &Response) {
    let known = s.handle.has_model(name);
    s.metrics.record(
        if known { name } else { "<unknown>" },
        protocol,
        resp.status().as_u16(),
        started.elapsed(),
    );
}

/// `POST /v1/models/{name}:predict` (and `:explain`, which no model implements yet).
async fn v1_verb(
    State(s): State<AppState>,
    Path(name_verb): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some((name, verb)) = name_verb.rsplit_once(':') else {
        return ApiError::MethodNotAllowed.into_response();
    };
    let resp = match verb {
        "predict" => v1_predict(&s, name, &headers, body).await.into_response(),
        "explain" => {
            ApiError::NotImplemented(format!("model '{name}' has no explainer")).into_response()
        }
        other => ApiError::NotFound(format!("unknown verb ':{other}'")).into_response(),
    };
    record(&s, name, "v1", started, &resp);
    resp
}

async fn v1_predict(
    s: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(body, headers, &s.config).await?;
    let value = ferroserve_protocol::v1::decode_request(&bytes)?;
    match s
        .handle
        .infer(
            name,
            Payload::V1(value),
            crate::context::from_headers(headers),
        )
        .await?
    {
        Prediction::V1(body) => Ok(Json(body).into_response()),
        Prediction::V2(_) => {
            Err(InferError::Internal("model returned a V2 response".into()).into())
        }
    }
}

/// `POST /v2/models/{name}/infer`, JSON or binary tensor extension.
async fn infer(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let resp = v2_infer(&s, &name, &headers, body).await.into_response();
    record(&s, &name, "v2", started, &resp);
    resp
}

async fn v2_infer(
    s: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(body, headers, &s.config).await?;
    // A body is binary exactly when it has the header: tritonclient sends JSON without any
    // Content-Type, so the content type decides nothing.
    let json_len = match headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Inference-Header-Content-Length must be a non-negative integer".into(),
                    )
                })?,
        ),
    };
    let req = binary::decode_request_with(
        bytes,
        json_len,
        &s.shared_memory.reader_for(&s.handle, name),
    )?;
    let params = req.parameters.clone();
    let requested = req.outputs.clone();
    let mut resp = match s
        .handle
        .infer(
            name,
            Payload::V2(req),
            crate::context::from_headers(headers),
        )
        .await?
    {
        Prediction::V2(resp) => resp,
        Prediction::V1(_) => {
            return Err(InferError::Internal("model returned a V1 response".into()).into());
        }
    };
    s.shared_memory.write_outputs(&mut resp, &requested)?;
    let encoded = binary::encode_response(&resp, &params, &requested)?;
    if encoded.is_binary() {
        let json_len = HeaderValue::from(encoded.json.len());
        let body = Chunks::new(std::iter::once(Bytes::from(encoded.json)).chain(encoded.blobs));
        Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    http::HeaderName::from_static(HEADER_CONTENT_LENGTH),
                    json_len,
                ),
            ],
            Body::from(body),
        )
            .into_response())
    } else {
        Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            encoded.json,
        )
            .into_response())
    }
}

use bytes::Bytes;

/// `GET|POST /v2/systemsharedmemory/status`: every registered region.
async fn shm_status_all(State(s): State<AppState>) -> Response {
    match s.shared_memory.status(None) {
        Ok(regions) => Json(regions).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET|POST /v2/systemsharedmemory/region/{name}/status`.
async fn shm_status(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.shared_memory.status(Some(&name)) {
        Ok(regions) => Json(regions).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of a region's `register`: `{"key", "offset", "byte_size"}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRegion {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

/// `POST /v2/systemsharedmemory/region/{name}/register`.
async fn shm_register(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let registered = async {
        let bytes = body::read(body, &headers, &s.config).await?;
        let r: RegisterRegion = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::BadRequest(format!(
                "a register request is {{\"key\", \"offset\", \"byte_size\"}}: {e}"
            ))
        })?;
        s.shared_memory
            .register(&name, &r.key, r.offset, r.byte_size)
    }
    .await;
    match registered {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v2/systemsharedmemory/region/{name}/unregister`.
async fn shm_unregister(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Json<serde_json::Value> {
    s.shared_memory.unregister(Some(&name));
    Json(json!({}))
}

/// `POST /v2/systemsharedmemory/unregister`: every region.
async fn shm_unregister_all(State(s): State<AppState>) -> Json<serde_json::Value> {
    s.shared_memory.unregister(None);
    Json(json!({}))
}

/// `GET|POST /v2/cudasharedmemory/status`: no region.
async fn cuda_status_all() -> Json<serde_json::Value> {
    Json(json!([]))
}

/// `GET|POST /v2/cudasharedmemory/region/{name}/status`: unknown.
async fn cuda_status(Path(name): Path<String>) -> ApiError {
    ApiError::BadRequest(format!(
        "unable to find cuda shared memory region: '{name}'"
    ))
}

/// `POST /v2/cudasharedmemory/region/{name}/register`: refused, no GPU.
async fn cuda_register() -> ApiError {
    ApiError::NotImplemented(crate::grpc::CUDA_UNSUPPORTED.to_owned())
}

/// Unregistering CUDA regions: there are none.
async fn shm_nothing_to_unregister() -> Json<serde_json::Value> {
    Json(json!({}))
}

/// Answers 403 when the model-repository API is restricted and the header is missing or wrong.
fn restricted(s: &AppState, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(r) = &s.config.http_restricted else {
        return Ok(());
    };
    let value = headers.get(r.header.as_str()).and_then(|v| v.to_str().ok());
    r.check(value).map_err(ApiError::Forbidden)
}

/// The JSON body of a repository request (`{}` when empty), once its restriction admits it.
fn repository_request(
    s: &AppState,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    restricted(s, headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

/// Triton's `POST /v2/repository/index`: every model with its state.
async fn repository_index(
    State(s): State<AppState>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Vec<crate::repository::RepositoryModel>>, ApiError> {
    let body = repository_request(&s, &headers, &body)?;
    let ready_only = body.get("ready").and_then(serde_json::Value::as_bool) == Some(true);
    Ok(Json(crate::repository::index(&s, ready_only).await))
}

/// `POST /v2/repository/models/{name}/load`, with an optional config override
/// (`{"parameters": {"config": "<JSON model configuration>"}}`).
async fn repository_load(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = repository_request(&s, &headers, &body)?;
    let parameters = body
        .get("parameters")
        .and_then(serde_json::Value::as_object);
    let names = parameters
        .into_iter()
        .flat_map(|p| p.keys().map(String::as_str));
    crate::repository::refuse_files(&name, names)?;
    let config = match parameters.and_then(|p| p.get("config")) {
        None => None,
        Some(serde_json::Value::String(c)) => Some(c.as_str()),
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "failed to load '{name}': parameters.config must be a string holding the model configuration as JSON"
            )));
        }
    };
    crate::repository::load(&s, &name, config).await?;
    Ok(Json(json!({ "name": name, "load": true })))
}

/// `POST /v2/repository/models/{name}/unload`.
async fn repository_unload(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    repository_request(&s, &headers, &body)?;
    crate::repository::unload(&s, &name).await?;
    Ok(Json(json!({ "name": name, "unload": true })))
}
