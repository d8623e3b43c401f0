//! Turns configured deployments into runtime deployments.

use std::sync::Arc;

use ferroserve_example_iris::{IrisModel, WeightsSource};
use ferroserve_onnx::{OnnxModel, OnnxOptions, default_intra_op_threads};
use ferroserve_python::PythonBackend;
use ferroserve_remote::RemoteBackend;
use ferroserve_runtime::graph::GraphModel;
use ferroserve_runtime::{Deployment, Identity};

use crate::config::{DeploymentConfig, ModelKind};

/// The runtime deployment of a configured one.
pub fn deployment(d: &DeploymentConfig) -> Deployment {
    let deployment = match &d.model {
        ModelKind::Identity => Deployment::new(d.name.clone(), || Identity),
        ModelKind::Iris { weights } => {
            let source = weights
                .clone()
                .map_or(WeightsSource::Embedded, WeightsSource::File);
            Deployment::new(d.name.clone(), move || IrisModel::new(source.clone()))
        }
        ModelKind::Graph(spec) => {
            let spec = spec.clone();
            Deployment::new(d.name.clone(), move || GraphModel::new(spec.clone()))
        }
        ModelKind::Onnx {
            path,
            intra_op_threads,
            intra_op_spinning,
        } => {
            let replicas = d
                .options
                .autoscaling_config
                .as_ref()
                .and_then(|a| a.max_replicas)
                .or(d.options.num_replicas)
                .unwrap_or(1);
            let options = OnnxOptions {
                path: path.clone(),
                intra_op_threads: intra_op_threads
                    .unwrap_or_else(|| default_intra_op_threads(replicas)),
                intra_op_spinning: *intra_op_spinning,
            };
            Deployment::new(d.name.clone(), move || OnnxModel::new(options.clone()))
        }
        ModelKind::Python(spec) => {
            Deployment::from_backend(d.name.clone(), Arc::new(PythonBackend::new(spec.clone())))
        }
        ModelKind::Remote(spec) => {
            Deployment::from_backend(d.name.clone(), Arc::new(RemoteBackend::new(spec.clone())))
        }
    };
    deployment.options(d.options.clone()).exposed(d.exposed)
}
