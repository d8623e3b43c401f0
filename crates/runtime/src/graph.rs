//! Inference graphs in configuration, with KServe's `InferenceGraph` field names: nodes of
//! steps, each step a deployment (`serviceName`) or another node (`nodeName`). A graph is served
//! as a model of its own ([`GraphModel`]) whose steps are calls through the deployments'
//! handles, so every hop has the router's backpressure, deadlines, cancellation and metrics.
//!
//! | `routerType` | what it does |
//! |---|---|
//! | `Sequence` | steps in order; each gets the previous step's response (`data: $response`, the default) or the graph's request (`data: $request`); the last response is the answer |
//! | `Switch` | the first step whose `condition` (a GJSON query on the request's JSON, as KServe's router) matches; none matching returns the request (KServe's rule) |
//! | `Ensemble` | every step at once; V1 answers `{"<step>": <response>, ...}` (KServe's merge); V2 answers one response whose outputs are named `<step>.<output>` |
//! | `Splitter` | one step, chosen at random by `weight` (the weights add up to 100) |
//!
//! A step's response becomes the next step's request as V1 JSON (with
//! `mapPredictionsToInstances: true`, `{"instances": <predictions>}`), or for V2 as a request
//! whose inputs are the response's outputs (same names, datatypes, shapes and bytes). A step
//! with `dependency: Soft` may fail without failing the graph: a Sequence goes on with the
//! step's input, an Ensemble leaves it out. Errors name the node and step that failed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use serde::Deserialize;

use crate::{InferError, Model, ModelError, ModelInfo, Payload, Prediction, RequestContext};

/// A graph as written: nodes by name; `root` is where requests enter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// The graph's name: the model name clients use.
    pub name: String,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeSpec>,
}

/// A routing node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// How the steps are used.
    pub router_type: RouterType,
    /// The steps.
    pub steps: Vec<StepSpec>,
}

/// KServe's router types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RouterType {
    /// Steps in order.
    Sequence,
    /// The first step whose condition matches.
    Switch,
    /// Every step at once, responses merged.
    Ensemble,
    /// One step, chosen by weight.
    Splitter,
}

/// Whether a step's failure fails the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Dependency {
    /// It does (the default).
    #[default]
    Hard,
    /// It does not.
    Soft,
}

/// One step of a node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepSpec {
    /// The step's name (in errors and Ensemble answers); else its target's.
    pub name: Option<String>,
    /// A deployment to call.
    pub service_name: Option<String>,
    /// Another node to run.
    pub node_name: Option<String>,
    /// `$request` (the graph's request) or `$response` (the previous step's, the default).
    pub data: Option<String>,
    /// For `Switch`: a GJSON query on the request's JSON; the step runs if it matches.
    pub condition: Option<String>,
    /// For `Splitter`: the share of requests, in percent.
    pub weight: Option<u32>,
    /// `Hard` (default) or `Soft`.
    #[serde(default)]
    pub dependency: Dependency,
    /// V1: send the previous response's `predictions` as `instances`.
    #[serde(default)]
    pub map_predictions_to_instances: bool,
}

/// The graph or a step is invalid.
#[derive(Debug, thiserror::Error)]
#[error("graph '{graph}': {message}")]
pub struct GraphError {
    graph: String,
    message: String,
}

impl StepSpec {
    fn label(&self, index: usize) -> String {
        self.name
            .clone()
            .or_else(|| self.service_name.clone())
            .or_else(|| self.node_name.clone())
            .unwrap_or_else(|| index.to_string())
    }
}

impl GraphSpec {
    /// Checks that the graph has a `root`, that each step names exactly one target among
    /// `deployments` and its own nodes, that weights and conditions fit their node, and that no
    /// node reaches itself.
    pub fn validate(&self, deployments: &HashSet<String>) -> Result<(), GraphError> {
        let fail = |message: String| GraphError {
            graph: self.name.clone(),
            message,
        };
        if !self.nodes.contains_key("root") {
            return Err(fail(
                "has no node named 'root' (where requests enter)".into(),
            ));
        }
        for (name, node) in &self.nodes {
            if node.steps.is_empty() {
                return Err(fail(format!("nodes.{name}: has no steps")));
            }
            for (i, step) in node.steps.iter().enumerate() {
                let at = format!("nodes.{name}.steps[{i}]");
                match (&step.service_name, &step.node_name) {
                    (Some(s), None) if !deployments.contains(s) => {
                        return Err(fail(format!("{at}.serviceName: no deployment named '{s}'")));
                    }
                    (None, Some(n)) if !self.nodes.contains_key(n) => {
                        return Err(fail(format!("{at}.nodeName: no node named '{n}'")));
                    }
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(fail(format!("{at}: set one of serviceName and nodeName")));
                    }
                    _ => {}
                }
                match step.data.as_deref() {
                    None | Some("$request") | Some("$response") => {}
                    Some(other) => {
                        return Err(fail(format!(
                            "{at}.data: '{other}' must be $request or $response"
                        )));
                    }
                }
                if node.router_type == RouterType::Switch && step.condition.is_none() {
                    return Err(fail(format!("{at}.condition: a Switch step needs one")));
                }
            }
            if node.router_type == RouterType::Splitter {
                let total: u32 = node.steps.iter().map(|s| s.weight.unwrap_or(0)).sum();
                if total != 100 {
                    return Err(fail(format!(
                        "nodes.{name}: the Splitter's weights add up to {total}, not 100"
                    )));
                }
            }
        }
        // No node may reach itself through nodeName steps.
        for start in self.nodes.keys() {
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(start.as_str(), vec![start.as_str()])];
            while let Some((node, path)) = stack.pop() {
                for step in &self.nodes[node].steps {
                    let Some(next) = step.node_name.as_deref() else {
                        continue;
                    };
                    if next == start {
                        return Err(fail(format!(
                            "nodes form a cycle: {} -> {next}",
                            path.join(" -> ")
                        )));
                    }
                    if !path.contains(&next) {
                        let mut p = path.clone();
                        p.push(next);
                        stack.push((next, p));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A graph served as a model: each request runs the `root` node.
#[derive(Debug, Clone)]
pub struct GraphModel {
    spec: Arc<GraphSpec>,
}

impl GraphModel {
    /// A model running `spec` (validate it first).
    pub fn new(spec: Arc<GraphSpec>) -> Self {
        GraphModel { spec }
    }

    fn run<'a>(
        &'a self,
        node: &'a str,
        request: Payload,
        ctx: &'a RequestContext,
    ) -> futures_util::future::BoxFuture<'a, Result<Payload, InferError>> {
        Box::pin(async move {
            let spec = self.spec.nodes.get(node).ok_or_else(|| {
                InferError::Internal(format!("graph {}: no node '{node}'", self.spec.name))
            })?;
            let named = |i: usize, e: InferError| -> InferError {
                let step = spec.steps[i].label(i);
                in_step(e, node, &step)
            };
            match spec.router_type {
                RouterType::Sequence => {
                    let mut current = request.clone();
                    for (i, step) in spec.steps.iter().enumerate() {
                        let input = match step.data.as_deref() {
                            Some("$request") => request.clone(),
                            _ => current.clone(),
                        };
                        let input = map_predictions(input, step);
                        match self.step(step, input, ctx).await {
                            Ok(out) => current = out,
                            Err(_) if step.dependency == Dependency::Soft => {}
                            Err(e) => return Err(named(i, e)),
                        }
                    }
                    Ok(current)
                }
                RouterType::Switch => {
                    let json = request_json(&request)?;
                    for (i, step) in spec.steps.iter().enumerate() {
                        let condition = step.condition.as_deref().unwrap_or_default();
                        if gjson::get(&json, condition).exists() {
                            return self
                                .step(step, map_predictions(request, step), ctx)
                                .await
                                .map_err(|e| named(i, e));
                        }
                    }
                    Ok(request)
                }
                RouterType::Splitter => {
                    let mut pick = fastrand::u32(0..100);
                    let i = spec
                        .steps
                        .iter()
                        .position(|s| {
                            let w = s.weight.unwrap_or(0);
                            if pick < w {
                                true
                            } else {
                                pick -= w;
                                false
                            }
                        })
                        .unwrap_or(0);
                    let step = &spec.steps[i];
                    self.step(step, map_predictions(request, step), ctx)
                        .await
                        .map_err(|e| named(i, e))
                }
                RouterType::Ensemble => {
                    let calls = spec.steps.iter().map(|step| {
                        let input = map_predictions(request.clone(), step);
                        self.step(step, input, ctx)
                    });
                    let results = futures_util::future::join_all(calls).await;
                    let mut merged = Vec::with_capacity(results.len());
                    for (i, result) in results.into_iter().enumerate() {
                        let step = &spec.steps[i];
                        match result {
                            Ok(out) => merged.push((step.label(i), out)),
                            Err(_) if step.dependency == Dependency::Soft => {}
                            Err(e) => return Err(named(i, e)),
                        }
                    }
                    merge(&request, merged)
                }
            }
        })
    }

    /// One step: a call to a deployment, or a run of another node.
    async fn step(
        &self,
        step: &StepSpec,
        input: Payload,
        ctx: &RequestContext,
    ) -> Result<Payload, InferError> {
        if let Some(node) = &step.node_name {
            return self.run(node, input, ctx).await;
        }
        let service = step.service_name.as_deref().unwrap_or_default();
        let prediction = ctx.deployment(service)?.infer(input).await?;
        Ok(match prediction {
            Prediction::V1(body) => Payload::V1(body),
            Prediction::V2(response) => Payload::V2(as_request(response)),
        })
    }
}

#[async_trait]
impl Model for GraphModel {
    fn may_block(&self) -> bool {
        false
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            platform: "inference_graph".into(),
            ..ModelInfo::default()
        }
    }

    async fn predict(
        &self,
        mut p: Payload,
        ctx: &RequestContext,
    ) -> Result<Prediction, ModelError> {
        // The client's requested outputs are for the graph's answer (the handle selects them),
        // not for the steps.
        if let Payload::V2(req) = &mut p {
            req.outputs.clear();
        }
        let answer = self.run("root", p, ctx).await.map_err(ModelError::from)?;
        Ok(match answer {
            Payload::V1(body) => Prediction::V1(body),
            Payload::V2(request) => Prediction::V2(as_response(request)),
        })
    }
}

/// The error of a step, naming where it happened; its kind is kept.
fn in_step(e: InferError, node: &str, step: &str) -> InferError {
    let at = |m: String| format!("node '{node}', step '{step}': {m}");
    match e {
        InferError::InvalidInput(m) => InferError::InvalidInput(at(m)),
        InferError::Unavailable(m) => InferError::Unavailable(at(m)),
        InferError::Internal(m) => InferError::Internal(at(m)),
        InferError::Overloaded { .. } | InferError::ModelNotReady { .. } => {
            InferError::Unavailable(at(e.to_string()))
        }
        other => other,
    }
}

fn map_predictions(input: Payload, step: &StepSpec) -> Payload {
    match input {
        Payload::V1(mut body) if step.map_predictions_to_instances => {
            let predictions = body
                .get_mut("predictions")
                .map(serde_json::Value::take)
                .unwrap_or(serde_json::Value::Null);
            Payload::V1(serde_json::json!({ "instances": predictions }))
        }
        other => other,
    }
}

/// The JSON a Switch's conditions read: a V1 body as it is, a V2 request in its JSON form.
fn request_json(request: &Payload) -> Result<String, InferError> {
    match request {
        Payload::V1(body) => Ok(body.to_string()),
        Payload::V2(req) => {
            let bytes = ferroserve_protocol::json::encode_request(req)?;
            String::from_utf8(bytes)
                .map_err(|e| InferError::Internal(format!("request JSON is not UTF-8: {e}")))
        }
    }
}

/// A V2 response as the next step's request: its outputs become inputs.
fn as_request(response: InferResponse) -> InferRequest {
    InferRequest {
        id: response.id,
        parameters: response.parameters,
        inputs: response.outputs,
        outputs: Vec::new(),
    }
}

/// The graph's answer from what the last step left: inputs become outputs again.
fn as_response(request: InferRequest) -> InferResponse {
    InferResponse {
        model_name: String::new(),
        model_version: None,
        id: request.id,
        parameters: request.parameters,
        outputs: request.inputs,
    }
}

/// An Ensemble's answer: V1 `{"<step>": response}`; V2 outputs named `<step>.<output>`.
fn merge(request: &Payload, parts: Vec<(String, Payload)>) -> Result<Payload, InferError> {
    match request {
        Payload::V1(_) => {
            let mut map = serde_json::Map::new();
            for (step, out) in parts {
                let value = match out {
                    Payload::V1(v) => v,
                    Payload::V2(_) => {
                        return Err(InferError::Internal(format!(
                            "step '{step}' answered V2 to a V1 request"
                        )));
                    }
                };
                map.insert(step, value);
            }
            Ok(Payload::V1(serde_json::Value::Object(map)))
        }
        Payload::V2(req) => {
            let mut inputs = Vec::new();
            for (step, out) in parts {
                let Payload::V2(r) = out else {
                    return Err(InferError::Internal(format!(
                        "step '{step}' answered V1 to a V2 request"
                    )));
                };
                for mut t in r.inputs {
                    t.name = format!("{step}.{}", t.name);
                    inputs.push(t);
                }
            }
            Ok(Payload::V2(InferRequest {
                id: req.id.clone(),
                parameters: Default::default(),
                inputs,
                outputs: Vec::new(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(nodes: serde_json::Value) -> Result<(), String> {
        let spec: GraphSpec =
            serde_json::from_value(serde_json::json!({"name": "g", "nodes": nodes}))
                .map_err(|e| e.to_string())?;
        spec.validate(&["m".to_owned()].into())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn bad_graphs_are_refused_naming_the_problem() {
        let step = |s: serde_json::Value| serde_json::json!({"root": {"routerType": "Sequence", "steps": [s]}});
        assert!(check(step(serde_json::json!({"serviceName": "m"}))).is_ok());
        let cases = [
            (
                serde_json::json!({"other": {"routerType": "Sequence", "steps": [{"serviceName": "m"}]}}),
                "no node named 'root'",
            ),
            (
                step(serde_json::json!({"serviceName": "x"})),
                "nodes.root.steps[0].serviceName: no deployment named 'x'",
            ),
            (
                step(serde_json::json!({"nodeName": "x"})),
                "nodes.root.steps[0].nodeName: no node named 'x'",
            ),
            (
                step(serde_json::json!({"serviceName": "m", "nodeName": "root"})),
                "set one of serviceName and nodeName",
            ),
            (
                step(serde_json::json!({"serviceName": "m", "data": "$body"})),
                "must be $request or $response",
            ),
            (
                serde_json::json!({"root": {"routerType": "Switch", "steps": [{"serviceName": "m"}]}}),
                "a Switch step needs one",
            ),
            (
                serde_json::json!({"root": {"routerType": "Splitter", "steps": [{"serviceName": "m", "weight": 60}]}}),
                "add up to 60, not 100",
            ),
            (
                serde_json::json!({"root": {"routerType": "Sequence", "steps": []}}),
                "has no steps",
            ),
            (
                step(serde_json::json!({"nodeName": "root"})),
                "cycle: root -> root",
            ),
        ];
        for (nodes, message) in cases {
            let e = check(nodes).unwrap_err();
            assert!(e.contains(message), "{e} should say {message}");
        }
        assert!(check(serde_json::json!({"root": {"routerType": "Loop", "steps": []}})).is_err());
    }
}
