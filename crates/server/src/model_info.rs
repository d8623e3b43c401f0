//! Triton's model configuration and statistics of a deployment, for `ModelConfig` /
//! `ModelStatistics` over gRPC and `/v2/models/{name}/config` / `/stats` over REST.

use ferroserve_runtime::{DurationStat, Handle, InferError};
use serde_json::json;

use crate::grpc::{config_datatype, pb};

/// The model's configuration in Triton's shape: inputs and outputs from its metadata, one
/// CPU instance group with the replica count; with tensor batching on, `max_batch_size` is the
/// batcher's and the dims leave out the batch dimension (Triton's convention).
pub fn model_config(handle: &Handle, name: &str) -> Result<pb::ModelConfig, InferError> {
    let meta = handle.metadata(name)?;
    let status = handle.deployment_status(name)?;
    let replicas = status.target_replicas;
    let max_batch_size = status
        .batching
        .as_ref()
        .filter(|b| b.kind == "tensor")
        .map_or(0, |b| b.max_batch_size);
    let dims = |shape: &[i64]| match shape.split_first() {
        Some((_, rest)) if max_batch_size > 0 => rest.to_vec(),
        _ => shape.to_vec(),
    };
    Ok(pb::ModelConfig {
        name: meta.name,
        platform: meta.platform,
        max_batch_size: i32::try_from(max_batch_size).unwrap_or(i32::MAX),
        input: meta
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: config_datatype(t.datatype) as i32,
                dims: dims(&t.shape),
            })
            .collect(),
        output: meta
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: config_datatype(t.datatype) as i32,
                dims: dims(&t.shape),
            })
            .collect(),
        instance_group: vec![pb::ModelInstanceGroup {
            name: name.to_owned(),
            count: i32::try_from(replicas).unwrap_or(i32::MAX),
            kind: pb::model_instance_group::Kind::Cpu as i32,
        }],
        backend: "ferroserve".to_owned(),
    })
}

/// The same configuration as Triton's REST API writes it.
pub fn model_config_json(config: &pb::ModelConfig) -> serde_json::Value {
    let tensors = |items: Vec<(&str, i32, &[i64])>| {
        items
            .into_iter()
            .map(|(name, dt, dims)| {
                let dt = pb::DataType::try_from(dt).unwrap_or(pb::DataType::TypeInvalid);
                json!({"name": name, "data_type": dt.as_str_name(), "dims": dims})
            })
            .collect::<Vec<_>>()
    };
    json!({
        "name": config.name,
        "platform": config.platform,
        "backend": config.backend,
        "max_batch_size": config.max_batch_size,
        "input": tensors(config.input.iter().map(|t| (t.name.as_str(), t.data_type, t.dims.as_slice())).collect()),
        "output": tensors(config.output.iter().map(|t| (t.name.as_str(), t.data_type, t.dims.as_slice())).collect()),
        "instance_group": config.instance_group.iter().map(|g| json!({
            "name": g.name,
            "kind": pb::model_instance_group::Kind::try_from(g.kind).map(|k| k.as_str_name()).unwrap_or("KIND_CPU"),
            "count": g.count,
        })).collect::<Vec<_>>(),
    })
}

fn duration(d: DurationStat) -> pb::StatisticDuration {
    pb::StatisticDuration {
        count: d.count,
        ns: d.ns,
    }
}

/// The model's cumulative statistics in Triton's shape.
pub fn model_statistics(handle: &Handle, name: &str) -> Result<pb::ModelStatistics, InferError> {
    let s = handle.statistics(name)?;
    Ok(pb::ModelStatistics {
        name: name.to_owned(),
        version: String::new(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: Some(duration(s.success)),
            fail: Some(duration(s.fail)),
            queue: Some(duration(s.queue)),
            compute_input: Some(duration(DurationStat::default())),
            compute_infer: Some(duration(s.compute_infer)),
            compute_output: Some(duration(DurationStat::default())),
        }),
    })
}

/// The same statistics as Triton's REST API writes them.
pub fn model_statistics_json(s: &pb::ModelStatistics) -> serde_json::Value {
    let d = |d: Option<pb::StatisticDuration>| {
        let d = d.unwrap_or_default();
        json!({"count": d.count, "ns": d.ns})
    };
    let i = s.inference_stats.unwrap_or_default();
    json!({
        "name": s.name,
        "version": s.version,
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": d(i.success),
            "fail": d(i.fail),
            "queue": d(i.queue),
            "compute_input": d(i.compute_input),
            "compute_infer": d(i.compute_infer),
            "compute_output": d(i.compute_output),
        },
        "batch_stats": [],
    })
}
