//! Turns configured deployments into runtime deployment specs.

use ferroserve_example_iris::{IrisModel, WeightsSource};
use ferroserve_runtime::{DeploymentSpec, Identity};

use crate::config::{DeploymentConfig, ModelKind};

/// The runtime spec of a configured deployment.
pub fn deployment_spec(d: &DeploymentConfig) -> DeploymentSpec {
    match &d.model {
        ModelKind::Identity => DeploymentSpec::new(d.name.clone(), || Identity),
        ModelKind::Iris { weights } => {
            let source = weights
                .clone()
                .map_or(WeightsSource::Embedded, WeightsSource::File);
            DeploymentSpec::new(d.name.clone(), move || IrisModel::new(source.clone()))
        }
    }
}
