//! `ferroserve status`: reads `GET /-/status` from a running server and prints each deployment
//! and its replicas.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use ferroserve_runtime::DeploymentStatus;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Deserialize)]
struct StatusBody {
    deployments: Vec<DeploymentStatus>,
}

/// Fetches the status of the server at `address` (`host:port`).
pub async fn fetch(address: &str) -> anyhow::Result<Vec<DeploymentStatus>> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to ferroserve at {address}"))?;
    let request =
        format!("GET /-/status HTTP/1.0\r\nHost: {address}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {address}");
    };
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        bail!("{address} answered {status_line}: {body}");
    }
    let parsed: StatusBody = serde_json::from_str(body).context("unexpected status body")?;
    Ok(parsed.deployments)
}

/// Renders deployments and replicas as text tables.
pub fn render(deployments: &[DeploymentStatus]) -> String {
    let mut out = String::new();
    for d in deployments {
        let _ = writeln!(
            out,
            "{}  {}  target={} ongoing={} queued={} restarts={}{}",
            d.name,
            d.status,
            d.target_replicas,
            d.ongoing_requests,
            d.queued_requests,
            d.restarts,
            if d.message.is_empty() {
                String::new()
            } else {
                format!("  ({})", d.message)
            },
        );
        if let Some(a) = &d.autoscaling {
            let _ = writeln!(
                out,
                "  autoscaling: min={} max={} target_ongoing_requests={} average_load={:.2}",
                a.min_replicas, a.max_replicas, a.target_ongoing_requests, a.average_load
            );
        }
        if let Some(b) = &d.batching {
            let _ = writeln!(
                out,
                "  batching ({}): max_batch_size={} batch_wait_timeout_s={} preferred_batch_sizes={:?} max_concurrent_batches={}",
                b.kind,
                b.max_batch_size,
                b.batch_wait_timeout_s,
                b.preferred_batch_sizes,
                b.max_concurrent_batches
            );
        }
        if let Some(e) = &d.last_error {
            let _ = writeln!(out, "  last error: {e}");
        }
        let _ = writeln!(
            out,
            "  {:<24} {:<10} {:>7} {:>7}  REASON",
            "REPLICA", "STATE", "ONGOING", "VERSION"
        );
        for r in &d.replicas {
            let _ = writeln!(
                out,
                "  {:<24} {:<10} {:>7} {:>7}  {}",
                r.id,
                r.state.as_str(),
                r.ongoing_requests,
                r.version,
                r.reason
            );
        }
    }
    out
}
