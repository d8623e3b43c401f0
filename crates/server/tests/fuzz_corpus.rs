//! The `grpc_infer_request` fuzz target's corpus and regressions as tests (see
//! `fuzz/harness/corpus.rs`); the seeds, `ModelInferRequest`s encoded with prost, are built
//! here.

#[path = "../../../fuzz/harness/grpc_infer_request.rs"]
mod harness;

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;

use bytes::Bytes;
use ferroserve_server::grpc::pb;
use pb::infer_parameter::ParameterChoice;
use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use prost::Message;

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn with(datatype: &str, shape: &[i64], contents: pb::InferTensorContents) -> InferInputTensor {
    InferInputTensor {
        contents: Some(contents),
        ..input(datatype, datatype, shape)
    }
}

/// Raw FP32 and BYTES inputs, one request parameter, one requested output.
fn raw_request() -> pb::ModelInferRequest {
    let floats: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: "m".into(),
        id: "1".into(),
        // One entry per map at most: prost writes a HashMap in no fixed order.
        parameters: [(
            "binary_data_output".to_owned(),
            pb::InferParameter {
                parameter_choice: Some(ParameterChoice::BoolParam(true)),
            },
        )]
        .into_iter()
        .collect(),
        inputs: vec![input("x", "FP32", &[2, 2]), input("s", "BYTES", &[1])],
        outputs: vec![InferRequestedOutputTensor {
            name: "y".into(),
            ..Default::default()
        }],
        raw_input_contents: vec![
            Bytes::from(floats),
            Bytes::from_static(b"\x02\x00\x00\x00ab"),
        ],
        ..Default::default()
    }
}

/// Typed `contents` of every kind that has them.
fn typed_request() -> pb::ModelInferRequest {
    let c = pb::InferTensorContents::default;
    pb::ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![
            with(
                "BOOL",
                &[2],
                pb::InferTensorContents {
                    bool_contents: vec![true, false],
                    ..c()
                },
            ),
            with(
                "INT8",
                &[2],
                pb::InferTensorContents {
                    int_contents: vec![-128, 127],
                    ..c()
                },
            ),
            with(
                "INT32",
                &[1, 2],
                pb::InferTensorContents {
                    int_contents: vec![i32::MIN, 7],
                    ..c()
                },
            ),
            with(
                "INT64",
                &[1],
                pb::InferTensorContents {
                    int64_contents: vec![i64::MAX],
                    ..c()
                },
            ),
            with(
                "UINT16",
                &[1],
                pb::InferTensorContents {
                    uint_contents: vec![65535],
                    ..c()
                },
            ),
            with(
                "UINT64",
                &[1],
                pb::InferTensorContents {
                    uint64_contents: vec![u64::MAX],
                    ..c()
                },
            ),
            with(
                "FP32",
                &[2],
                pb::InferTensorContents {
                    fp32_contents: vec![0.5, -1.0],
                    ..c()
                },
            ),
            with(
                "FP64",
                &[1],
                pb::InferTensorContents {
                    fp64_contents: vec![1e300],
                    ..c()
                },
            ),
            with(
                "BYTES",
                &[2],
                pb::InferTensorContents {
                    bytes_contents: vec![Bytes::from_static(b"ab"), Bytes::new()],
                    ..c()
                },
            ),
        ],
        ..Default::default()
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut fp16 = raw_request();
    fp16.inputs = vec![input("h", "FP16", &[2])];
    fp16.raw_input_contents = vec![Bytes::from_static(&[0x00, 0x3c, 0x00, 0xc0])];
    let mut missing_raw = raw_request();
    missing_raw.raw_input_contents.pop();
    let mut negative = raw_request();
    negative.inputs[0].shape = vec![-2, -2];
    let mut short = raw_request();
    short.raw_input_contents[0] = Bytes::from_static(&[0; 15]);
    let mut both = raw_request();
    both.inputs[1].contents = Some(pb::InferTensorContents::default());
    let mut none = typed_request();
    none.inputs[0].contents = None;
    let mut out_of_range = typed_request();
    out_of_range.inputs[1] = with(
        "INT8",
        &[1],
        pb::InferTensorContents {
            int_contents: vec![300],
            ..Default::default()
        },
    );
    let mut fp16_typed = typed_request();
    fp16_typed.inputs = vec![with("FP16", &[1], pb::InferTensorContents::default())];
    let mut unknown = typed_request();
    unknown.inputs[0].datatype = "FP8".into();
    let mut cut = raw_request().encode_to_vec();
    cut.truncate(cut.len() - 5);
    vec![
        ("valid-raw", raw_request().encode_to_vec()),
        ("valid-typed", typed_request().encode_to_vec()),
        ("valid-raw-fp16", fp16.encode_to_vec()),
        (
            "valid-empty",
            pb::ModelInferRequest::default().encode_to_vec(),
        ),
        ("broken-raw-count", missing_raw.encode_to_vec()),
        ("broken-negative-shape", negative.encode_to_vec()),
        ("broken-raw-short", short.encode_to_vec()),
        ("broken-raw-and-typed", both.encode_to_vec()),
        ("broken-no-contents", none.encode_to_vec()),
        ("broken-int8-out-of-range", out_of_range.encode_to_vec()),
        ("broken-fp16-typed", fp16_typed.encode_to_vec()),
        ("broken-unknown-datatype", unknown.encode_to_vec()),
        ("broken-cut", cut),
    ]
}

#[test]
fn corpus_and_regressions_never_panic() {
    corpus::check_corpus("grpc_infer_request", &seeds(), harness::check);
}
