//! `OnnxModel` against real ONNX Runtime (the test venv's onnxruntime wheel) and a model made
//! by `tests/python/onnx_models.py`: inputs whose bytes are aligned are used in place,
//! unaligned ones (as sliced from a binary body) are copied, and both give the same answer.
//!
//! Needs `FERROSERVE_TEST_PYTHON` (set by `scripts/test.sh`): a Python with `onnx` and
//! `onnxruntime`, as `scripts/python-venv.sh` makes it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::{Bytes, BytesMut};
use ferroserve_onnx::{OnnxModel, OnnxOptions};
use ferroserve_protocol::v2::InferRequest;
use ferroserve_protocol::{DataType, Tensor};
use ferroserve_runtime::{Model, ModelError, Payload, Prediction, RequestContext};

fn python() -> String {
    std::env::var("FERROSERVE_TEST_PYTHON").expect(
        "FERROSERVE_TEST_PYTHON must name a Python with onnx and onnxruntime (scripts/test.sh sets it)",
    )
}

/// Writes the test repository's models into a fresh directory; returns `simple`'s file.
fn simple_model(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/onnx_models.py");
    let status = Command::new(python())
        .arg(script)
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run onnx_models.py");
    assert!(status.success());
    dir.join("simple/1/model.onnx")
}

fn ort_library() -> String {
    let out = Command::new(python())
        .args([
            "-c",
            "import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))[-1])",
        ])
        .output()
        .expect("ask Python for onnxruntime");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// INT32 values as bytes starting `offset` bytes into a buffer (so unaligned when odd).
fn int32_bytes(values: &[i32], offset: usize) -> Bytes {
    let mut buf = BytesMut::zeroed(offset);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.freeze().slice(offset..)
}

fn request(a: Bytes, b: Bytes, rows: u64) -> Payload {
    let t =
        |name: &str, data: Bytes| Tensor::new(name, DataType::Int32, vec![rows, 16], data).unwrap();
    Payload::V2(InferRequest {
        inputs: vec![t("INPUT0", a), t("INPUT1", b)],
        ..InferRequest::default()
    })
}

async fn outputs(model: &OnnxModel, payload: Payload) -> Result<Vec<Vec<i32>>, ModelError> {
    let Prediction::V2(resp) = model.predict(payload, &RequestContext::default()).await? else {
        panic!("a V2 request answers V2");
    };
    Ok(resp
        .outputs
        .iter()
        .map(|t| t.to_vec::<i32>().unwrap())
        .collect())
}

#[tokio::test]
async fn aligned_and_unaligned_inputs_give_the_same_answer() {
    let dir = std::env::temp_dir().join(format!("ferroserve-onnx-test-{}", std::process::id()));
    let path = simple_model(&dir);
    ferroserve_onnx::library::use_python(PathBuf::from(python()));
    assert_eq!(
        ferroserve_onnx::find_library()
            .unwrap()
            .display()
            .to_string(),
        ort_library(),
        "ONNX Runtime is found in the Python given for models"
    );
    let mut model = OnnxModel::new(OnnxOptions {
        path,
        intra_op_threads: 1,
        intra_op_spinning: true,
    });
    model.load().await.unwrap();
    assert_eq!(model.signature().inputs.len(), 2);
    assert_eq!(model.signature().inputs[0].shape, vec![-1, 16]);

    let a: Vec<i32> = (0..32).collect();
    let b: Vec<i32> = (0..32).map(|i| 100 - i).collect();
    let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let diff: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    for offset in [0, 1, 3] {
        let got = outputs(
            &model,
            request(int32_bytes(&a, offset), int32_bytes(&b, offset), 2),
        )
        .await
        .unwrap();
        assert_eq!(
            got,
            vec![sum.clone(), diff.clone()],
            "inputs at offset {offset}"
        );
    }

    // A request that does not fit is refused before the engine, naming the input.
    let bad = request(int32_bytes(&a[..16], 0), int32_bytes(&b[..16], 0), 1);
    let Payload::V2(mut bad) = bad else {
        unreachable!()
    };
    bad.inputs[1].datatype = DataType::Uint32;
    let err = outputs(&model, Payload::V2(bad)).await.unwrap_err();
    assert!(
        matches!(&err, ModelError::InvalidInput(m) if m.contains("'INPUT1' has datatype UINT32")),
        "{err:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_missing_or_corrupt_file_fails_the_load_with_its_path() {
    ferroserve_onnx::library::use_python(PathBuf::from(python()));
    let dir = std::env::temp_dir().join(format!("ferroserve-onnx-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corrupt = dir.join("model.onnx");
    std::fs::write(&corrupt, b"not a model").unwrap();
    for path in [dir.join("absent.onnx"), corrupt] {
        let mut model = OnnxModel::new(OnnxOptions {
            path: path.clone(),
            intra_op_threads: 1,
            intra_op_spinning: true,
        });
        let err = model.load().await.unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
