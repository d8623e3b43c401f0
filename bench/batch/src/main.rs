//! The batching benchmark's Rust model (`bench/batch/run.sh`), the counterpart of
//! `models.py:FixedCost`: each call blocks its replica's thread for 5 ms + 0.05 ms per row
//! (standing in for a GPU) and echoes its input as `output-0`. Served twice by one ferroserve:
//! `rust_unbatched`, and `rust_batched` (max_batch_size 32, the given wait).
//!
//! Usage: `ferroserve-bench-batch PORT BATCH_WAIT_TIMEOUT_S`

use std::time::Duration;

use async_trait::async_trait;
use ferroserve_protocol::v2::InferResponse;
use ferroserve_runtime::{Deployment, Model, ModelError, Payload, Prediction, RequestContext};

/// 5 ms + 0.05 ms per row, then the input back.
struct FixedCost;

#[async_trait]
impl Model for FixedCost {
    async fn predict(
        &self,
        payload: Payload,
        _ctx: &RequestContext,
    ) -> Result<Prediction, ModelError> {
        let Payload::V2(req) = payload else {
            return Err(ModelError::invalid_input("V2 requests only"));
        };
        let input = req
            .inputs
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::invalid_input("one input is needed"))?;
        let rows = input.shape.first().copied().unwrap_or(1);
        std::thread::sleep(Duration::from_micros(5_000 + 50 * rows));
        let mut output = input;
        output.name = "output-0".to_owned();
        output.parameters.clear();
        Ok(Prediction::V2(InferResponse {
            id: req.id,
            outputs: vec![output],
            ..InferResponse::default()
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().unwrap_or_else(|| "18500".into()).parse()?;
    let wait: f64 = args.next().unwrap_or_else(|| "0.005".into()).parse()?;
    let deployments = vec![
        Deployment::new("rust_unbatched", || FixedCost).max_queued_requests(1024),
        Deployment::new("rust_batched", || FixedCost)
            .max_batch_size(32)
            .batch_wait_timeout_s(wait)
            .max_queued_requests(1024),
    ];
    let listeners = ferroserve::server::Listeners {
        http: tokio::net::TcpListener::bind(("127.0.0.1", port)).await?,
        grpc: None,
    };
    ferroserve::server::serve_deployments(
        deployments,
        ferroserve_server::ServerConfig::default(),
        listeners,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await
}
