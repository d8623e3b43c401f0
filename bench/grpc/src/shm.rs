//! `--shm true`: Triton's system shared-memory extension, as perf_analyzer's
//! `--shared-memory system` uses it. Each task makes its own shared-memory object (input, then
//! room for the output), writes the input once, registers both halves as regions, and sends
//! requests whose input and requested output name those regions instead of carrying bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bytes::Bytes;
use ferroserve_server::grpc::pb;
use ferroserve_server::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::INPUT_NAME;

/// One task's shared-memory object and its two registered regions.
#[derive(Debug)]
pub(crate) struct TaskRegions {
    path: PathBuf,
    file: File,
    /// The object's key (`/name`).
    key: String,
    /// Region names: the input, the output.
    input: String,
    output: String,
    len: u64,
}

impl TaskRegions {
    /// Makes the object of task `task` and writes `raw` (the input) at its start.
    pub(crate) fn create(task: usize, raw: &Bytes) -> Result<TaskRegions, String> {
        let name = format!("ferroserve-bench-{}-{task}", std::process::id());
        let path = PathBuf::from("/dev/shm").join(&name);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let len = raw.len() as u64;
        file.set_len(2 * len)
            .and_then(|()| file.write_all_at(raw, 0))
            .map_err(|e| format!("cannot fill {}: {e}", path.display()))?;
        Ok(TaskRegions {
            path,
            file,
            key: format!("/{name}"),
            input: format!("{name}-in"),
            output: format!("{name}-out"),
            len,
        })
    }

    /// Registers the two regions over gRPC.
    pub(crate) async fn register_grpc(
        &self,
        client: &mut GrpcInferenceServiceClient<Channel>,
    ) -> Result<(), String> {
        for (name, offset) in [(&self.input, 0), (&self.output, self.len)] {
            client
                .system_shared_memory_register(pb::SystemSharedMemoryRegisterRequest {
                    name: name.clone(),
                    key: self.key.clone(),
                    offset,
                    byte_size: self.len,
                })
                .await
                .map_err(|s| format!("registering {name}: {}", s.message()))?;
        }
        Ok(())
    }

    /// Registers the two regions over HTTP at `base` (`http://host:port`).
    pub(crate) async fn register_http(
        &self,
        client: &reqwest::Client,
        base: &str,
    ) -> Result<(), String> {
        for (name, offset) in [(&self.input, 0), (&self.output, self.len)] {
            let resp = client
                .post(format!(
                    "{base}/v2/systemsharedmemory/region/{name}/register"
                ))
                .json(&json!({"key": self.key, "offset": offset, "byte_size": self.len}))
                .send()
                .await
                .map_err(|e| format!("registering {name}: {e}"))?;
            if !resp.status().is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(format!("registering {name}: {text}"));
            }
        }
        Ok(())
    }

    fn parameter(value: pb::infer_parameter::ParameterChoice) -> pb::InferParameter {
        pb::InferParameter {
            parameter_choice: Some(value),
        }
    }

    fn grpc_parameters(
        &self,
        region: &str,
    ) -> std::collections::HashMap<String, pb::InferParameter> {
        use pb::infer_parameter::ParameterChoice;
        [
            (
                "shared_memory_region".to_owned(),
                Self::parameter(ParameterChoice::StringParam(region.to_owned())),
            ),
            (
                "shared_memory_byte_size".to_owned(),
                Self::parameter(ParameterChoice::Int64Param(self.len as i64)),
            ),
        ]
        .into()
    }

    /// `req` with its input and requested output in the regions.
    pub(crate) fn grpc_request(&self, mut req: pb::ModelInferRequest) -> pb::ModelInferRequest {
        req.raw_input_contents.clear();
        for input in &mut req.inputs {
            input.parameters = self.grpc_parameters(&self.input);
        }
        req.outputs = vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: INPUT_NAME.into(),
            parameters: self.grpc_parameters(&self.output),
        }];
        req
    }

    /// The JSON body of an HTTP request of `elements` values with both tensors in the regions.
    pub(crate) fn http_body(&self, elements: usize) -> Bytes {
        let body = json!({
            "inputs": [{
                "name": INPUT_NAME, "shape": [1, elements], "datatype": "FP32",
                "parameters": {"shared_memory_region": self.input, "shared_memory_byte_size": self.len},
            }],
            "outputs": [{
                "name": INPUT_NAME,
                "parameters": {"shared_memory_region": self.output, "shared_memory_byte_size": self.len},
            }],
        });
        Bytes::from(body.to_string())
    }

    /// Checks the answer's output names the output region with the input's size; with
    /// `full`, also that the region holds the input.
    pub(crate) fn check(
        &self,
        byte_size: Option<u64>,
        expect: &Bytes,
        full: bool,
    ) -> Result<(), String> {
        if byte_size != Some(self.len) {
            return Err(format!(
                "the output's shared_memory_byte_size is {byte_size:?}, the input has {} bytes",
                self.len
            ));
        }
        if full {
            let mut got = vec![0u8; expect.len()];
            self.file
                .read_exact_at(&mut got, self.len)
                .map_err(|e| format!("reading the output region: {e}"))?;
            if got != expect.as_ref() {
                return Err("the output region differs from the input".into());
            }
        }
        Ok(())
    }
}

/// The `shared_memory_byte_size` of the first output of a JSON response.
pub(crate) fn http_output_size(body: &[u8]) -> Result<Option<u64>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    Ok(v.pointer("/outputs/0/parameters/shared_memory_byte_size")
        .and_then(Value::as_u64))
}

/// The `shared_memory_byte_size` of the first output of a gRPC response.
pub(crate) fn grpc_output_size(resp: &pb::ModelInferResponse) -> Option<u64> {
    use pb::infer_parameter::ParameterChoice;
    match resp
        .outputs
        .first()?
        .parameters
        .get("shared_memory_byte_size")?
        .parameter_choice
    {
        Some(ParameterChoice::Int64Param(n)) => u64::try_from(n).ok(),
        Some(ParameterChoice::Uint64Param(n)) => Some(n),
        _ => None,
    }
}

impl Drop for TaskRegions {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
