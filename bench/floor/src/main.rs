//! The floor for ferroserve's HTTP benchmarks (`bench/http.sh`).
//!
//! A bare axum server doing only what any HTTP JSON model server must do: parse a V2 inference
//! request into typed structs and serialise the identity response. `POST /echo` returns the body
//! unchanged: the floor for the binary tensor workload. Whatever ferroserve spends above this
//! server is its own overhead.
//!
//! Usage: `ferroserve-bench-floor --port N`

use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Router, body::Bytes};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct InferRequest {
    id: Option<String>,
    inputs: Vec<Tensor>,
}

#[derive(Deserialize, Serialize)]
struct Tensor {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    data: Vec<f32>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<Tensor>,
}

async fn infer(Path(name): Path<String>, body: Bytes) -> Response {
    let req: InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let resp = InferResponse {
        model_name: &name,
        id: req.id,
        outputs: req.inputs,
    };
    match serde_json::to_vec(&resp) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn echo(body: Bytes) -> Bytes {
    body
}

fn port_from_args() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--port"), Some(p), None) => p.parse().map_err(|e| format!("bad port {p:?}: {e}")),
        _ => Err("usage: ferroserve-bench-floor --port N".into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = port_from_args()?;
    let app = Router::new()
        .route("/v2/models/{name}/infer", post(infer))
        .route("/echo", post(echo))
        // Same ceiling as ferroserve's default `max_request_bytes` (axum's own default is 2 MB).
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("floor listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
