//! Built-in models.

use async_trait::async_trait;
use ferroserve_protocol::v2::InferResponse;

use crate::{Model, ModelError, ModelInfo, Payload, Prediction, RequestContext};

/// Returns each input as an output of the same name, datatype, shape and bytes (V2), or the
/// `instances` as `predictions` (V1). Measures pure serving overhead.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

#[async_trait]
impl Model for Identity {
    fn may_block(&self) -> bool {
        false
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            platform: "ferroserve_identity".to_owned(),
            ..ModelInfo::default()
        }
    }

    async fn predict(
        &self,
        payload: Payload,
        _ctx: &RequestContext,
    ) -> Result<Prediction, ModelError> {
        match payload {
            Payload::V2(req) => Ok(Prediction::V2(InferResponse {
                id: req.id,
                outputs: req
                    .inputs
                    .into_iter()
                    .map(|mut t| {
                        t.parameters.clear();
                        t
                    })
                    .collect(),
                ..InferResponse::default()
            })),
            Payload::V1(body) => {
                let predictions = body
                    .get("instances")
                    .or_else(|| body.get("inputs"))
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                Ok(Prediction::V1(
                    serde_json::json!({ "predictions": predictions }),
                ))
            }
        }
    }
}
