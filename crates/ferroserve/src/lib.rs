//! The `ferroserve` binary's library half: configuration and wiring of backends into
//! deployments, so that tests can start exactly what the binary starts.

pub mod applications;
pub mod config;
pub mod kserve_args;
pub mod model_dir;
pub mod models;
pub mod repository;
pub mod server;
pub mod status;
