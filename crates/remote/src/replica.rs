//! One endpoint of a remote deployment as a replica. A probe (readiness of the server and the
//! model every `health_period`) takes the endpoint out of rotation when it fails and puts it
//! back when it answers; a refused connection takes it out at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferroserve_runtime::{
    InferError, Liveness, ModelInfo, Payload, Permit, Prediction, Replica, RequestContext,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connection::Connection;
use crate::endpoints::Endpoints;
use crate::error::CallError;

/// One endpoint of a remote deployment, as the router's replica.
pub(crate) struct RemoteReplica {
    /// The deployment's name, which answers carry (not the remote's name of the model).
    deployment: String,
    connection: Connection,
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    info: ModelInfo,
    probe_timeout: Duration,
    monitor: JoinHandle<()>,
    died: watch::Sender<Option<String>>,
    released: std::sync::Once,
}

impl RemoteReplica {
    pub(crate) fn new(
        deployment: String,
        connection: Connection,
        endpoints: Arc<Endpoints>,
        liveness: Arc<Liveness>,
        info: ModelInfo,
        health_period: Duration,
        probe_timeout: Duration,
    ) -> Self {
        let monitor = tokio::spawn(monitor(
            connection.clone(),
            endpoints.clone(),
            liveness.clone(),
            health_period,
            probe_timeout,
        ));
        RemoteReplica {
            deployment,
            connection,
            endpoints,
            liveness,
            info,
            probe_timeout,
            monitor,
            died: watch::channel(None).0,
            released: std::sync::Once::new(),
        }
    }

    fn release(&self) {
        self.released
            .call_once(|| self.endpoints.release(self.connection.endpoint()));
    }
}

impl Drop for RemoteReplica {
    fn drop(&mut self) {
        self.monitor.abort();
        self.release();
    }
}

/// Takes the endpoint out of rotation while its probe fails (or it left DNS), and puts it back
/// when the probe passes again.
async fn monitor(
    connection: Connection,
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    period: Duration,
    timeout: Duration,
) {
    loop {
        tokio::time::sleep(period).await;
        let verdict = if endpoints.contains(connection.endpoint()) {
            connection.probe(timeout).await
        } else {
            Err(format!(
                "endpoint {}: no longer in the DNS answer",
                connection.endpoint()
            ))
        };
        match verdict {
            Ok(()) => {
                if liveness.set_ejected(false) {
                    tracing::info!(endpoint = %connection.endpoint(), "remote endpoint back in rotation");
                }
            }
            Err(why) => {
                if liveness.set_ejected(true) {
                    tracing::warn!(endpoint = %connection.endpoint(), reason = %why, "remote endpoint taken out of rotation");
                }
            }
        }
    }
}

#[async_trait]
impl Replica for RemoteReplica {
    async fn infer(
        &self,
        payload: Payload,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Prediction, InferError> {
        // Dropping this future (the caller left or timed out) drops the call, which the
        // endpoint learns of (gRPC: a reset stream).
        let answer = self.connection.infer(payload, ctx.deadline).await;
        drop(permit);
        match answer {
            Ok(mut prediction) => {
                if let Prediction::V2(answer) = &mut prediction {
                    answer.model_name.clone_from(&self.deployment);
                    answer.model_version = None;
                }
                Ok(prediction)
            }
            Err(CallError::NotSent(reason)) => {
                if self.liveness.set_ejected(true) {
                    tracing::warn!(endpoint = %self.connection.endpoint(), %reason, "remote endpoint taken out of rotation");
                }
                Err(InferError::NotSent {
                    replica: self.connection.endpoint().to_owned(),
                    reason,
                })
            }
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    async fn check_health(&self) -> Result<(), String> {
        if !self.endpoints.contains(self.connection.endpoint()) {
            return Err(format!(
                "endpoint {}: no longer in the DNS answer",
                self.connection.endpoint()
            ));
        }
        self.connection.probe(self.probe_timeout).await
    }

    async fn reconfigure(&self, _user_config: serde_json::Value) -> Result<(), String> {
        Err("a remote deployment has no user_config: configure the model on its own servers".into())
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn stop(&self) {
        self.monitor.abort();
        self.release();
    }

    fn died(&self) -> watch::Receiver<Option<String>> {
        self.died.subscribe()
    }
}
