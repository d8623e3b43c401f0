//! An example Rust custom model for ferroserve: a linear iris classifier.
//!
//! It shows the two handlers every model has. [`IrisModel::load`] reads the weights (from a
//! file, or the copy of `weights.json` embedded in the binary so that `ferroserve serve` works
//! from anywhere). [`IrisModel::predict`] answers both protocols:
//! - V1: `{"instances": [[5.1, 3.5, 1.4, 0.2], ...]}` → `{"predictions": [0, ...]}`;
//! - V2: input `input-0`, FP32 or FP64, shape `[N, 4]` → outputs `output-0` (INT64 class
//!   index, `[N]`) and `probabilities` (FP32, `[N, 3]`).

use std::path::PathBuf;

use async_trait::async_trait;
use ferroserve_runtime::protocol::v2::{InferResponse, TensorMetadata};
use ferroserve_runtime::protocol::{DataType, Tensor};
use ferroserve_runtime::{Model, ModelError, ModelInfo, Payload, Prediction, RequestContext};
use serde::Deserialize;

/// The weights shipped with the example.
pub const EMBEDDED_WEIGHTS: &str = include_str!("../weights.json");

const FEATURES: usize = 4;

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum WeightsSource {
    /// A JSON file with `classes`, `coef` and `intercept`.
    File(PathBuf),
    /// The copy of `weights.json` compiled into the binary.
    Embedded,
}

#[derive(Debug, Clone, Deserialize)]
struct Weights {
    classes: Vec<String>,
    coef: Vec<[f64; FEATURES]>,
    intercept: Vec<f64>,
}

/// A linear classifier over the four iris measurements.
#[derive(Debug)]
pub struct IrisModel {
    source: WeightsSource,
    weights: Option<Weights>,
}

impl IrisModel {
    /// A model that will load its weights from `source`.
    pub fn new(source: WeightsSource) -> Self {
        IrisModel {
            source,
            weights: None,
        }
    }

    fn weights(&self) -> Result<&Weights, ModelError> {
        self.weights
            .as_ref()
            .ok_or_else(|| ModelError::Unavailable("iris weights are not loaded".into()))
    }

    /// Class probabilities (softmax of the linear scores) of one row.
    fn probabilities(w: &Weights, row: &[f64]) -> Vec<f64> {
        let scores: Vec<f64> = w
            .coef
            .iter()
            .zip(&w.intercept)
            .map(|(c, b)| c.iter().zip(row).map(|(c, x)| c * x).sum::<f64>() + b)
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        exp.into_iter().map(|e| e / total).collect()
    }

    fn argmax(p: &[f64]) -> usize {
        p.iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    }

    fn predict_v1(&self, body: &serde_json::Value) -> Result<serde_json::Value, ModelError> {
        let w = self.weights()?;
        let instances = body
            .get("instances")
            .and_then(|v| v.as_array())
            .ok_or_else(|| {
                ModelError::invalid_input("expected {\"instances\": [[f, f, f, f], ...]}")
            })?;
        let mut predictions = Vec::with_capacity(instances.len());
        for (i, inst) in instances.iter().enumerate() {
            let row: Option<Vec<f64>> = inst
                .as_array()
                .filter(|a| a.len() == FEATURES)
                .and_then(|a| a.iter().map(|v| v.as_f64()).collect());
            let row = row.ok_or_else(|| {
                ModelError::invalid_input(format!(
                    "instance {i} must be a list of {FEATURES} numbers"
                ))
            })?;
            predictions.push(Self::argmax(&Self::probabilities(w, &row)));
        }
        Ok(serde_json::json!({ "predictions": predictions }))
    }

    fn predict_v2(
        &self,
        req: &ferroserve_runtime::protocol::v2::InferRequest,
    ) -> Result<InferResponse, ModelError> {
        let w = self.weights()?;
        let input = req
            .inputs
            .first()
            .ok_or_else(|| ModelError::invalid_input("expected one input of shape [N, 4]"))?;
        if input.shape.len() != 2 || input.shape[1] != FEATURES as u64 {
            return Err(ModelError::invalid_input(format!(
                "input '{}' must have shape [N, {FEATURES}], got {:?}",
                input.name, input.shape
            )));
        }
        let values: Vec<f64> = match input.datatype {
            DataType::Fp32 => input.to_vec::<f32>()?.into_iter().map(f64::from).collect(),
            DataType::Fp64 => input.to_vec::<f64>()?,
            other => {
                return Err(ModelError::invalid_input(format!(
                    "input '{}' must be FP32 or FP64, got {other}",
                    input.name
                )));
            }
        };
        let rows = input.shape[0];
        let mut classes = Vec::with_capacity(values.len() / FEATURES);
        let mut probs = Vec::with_capacity(values.len() / FEATURES * w.classes.len());
        for row in values.chunks_exact(FEATURES) {
            let p = Self::probabilities(w, row);
            classes.push(Self::argmax(&p) as i64);
            probs.extend(p.iter().map(|&v| v as f32));
        }
        Ok(InferResponse {
            outputs: vec![
                Tensor::from_values("output-0", vec![rows], &classes)?,
                Tensor::from_values("probabilities", vec![rows, w.classes.len() as u64], &probs)?,
            ],
            ..InferResponse::default()
        })
    }
}

#[async_trait]
impl Model for IrisModel {
    async fn load(&mut self) -> Result<(), ModelError> {
        let text = match &self.source {
            WeightsSource::Embedded => EMBEDDED_WEIGHTS.to_owned(),
            WeightsSource::File(path) => tokio::fs::read_to_string(path).await.map_err(|e| {
                ModelError::internal(format!("cannot read weights {}: {e}", path.display()))
            })?,
        };
        let w: Weights = serde_json::from_str(&text)
            .map_err(|e| ModelError::internal(format!("invalid weights file: {e}")))?;
        if w.classes.is_empty()
            || w.coef.len() != w.classes.len()
            || w.intercept.len() != w.classes.len()
        {
            return Err(ModelError::internal(
                "invalid weights file: classes, coef and intercept must have the same non-zero length",
            ));
        }
        self.weights = Some(w);
        Ok(())
    }

    /// A few multiply-adds per row: never blocks, so replicas run as tasks.
    fn may_block(&self) -> bool {
        false
    }

    fn info(&self) -> ModelInfo {
        let n = self.weights.as_ref().map_or(-1, |w| w.classes.len() as i64);
        ModelInfo {
            platform: "rust".into(),
            inputs: vec![TensorMetadata::new(
                "input-0",
                DataType::Fp32,
                vec![-1, FEATURES as i64],
            )],
            outputs: vec![
                TensorMetadata::new("output-0", DataType::Int64, vec![-1]),
                TensorMetadata::new("probabilities", DataType::Fp32, vec![-1, n]),
            ],
        }
    }

    async fn predict(
        &self,
        payload: Payload,
        _ctx: &RequestContext,
    ) -> Result<Prediction, ModelError> {
        match payload {
            Payload::V1(body) => self.predict_v1(&body).map(Prediction::V1),
            Payload::V2(req) => self.predict_v2(&req).map(Prediction::V2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn classifies_one_flower_of_each_class() {
        let mut m = IrisModel::new(WeightsSource::Embedded);
        m.load().await.unwrap();
        let body = serde_json::json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]});
        let out = m.predict_v1(&body).unwrap();
        assert_eq!(out, serde_json::json!({"predictions": [0, 1, 2]}));
    }

    #[tokio::test]
    async fn a_missing_weights_file_fails_load() {
        let mut m = IrisModel::new(WeightsSource::File("/nonexistent/weights.json".into()));
        let err = m.load().await.unwrap_err().to_string();
        assert!(err.contains("cannot read weights"), "{err}");
    }
}
