//! The `decode_request` fuzz target's corpus and regressions as tests (see
//! `fuzz/harness/corpus.rs`); the seeds are built here.

#[path = "../../../fuzz/harness/decode_request.rs"]
mod harness;

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;

use ferroserve_protocol::v2::{InferRequest, RequestedOutput};
use ferroserve_protocol::{Parameter, Tensor, binary};

/// A JSON body as the target takes it: `ff ff` (no header length), then the body.
fn json(body: &str) -> Vec<u8> {
    [&[0xff, 0xff][..], body.as_bytes()].concat()
}

/// A binary-extension body as the target takes it: the JSON length, then the body.
fn binary(req: &InferRequest) -> Vec<u8> {
    let body = binary::encode_request(req).expect("an encodable request");
    let len = u16::try_from(body.json.len()).expect("a short header");
    [&len.to_le_bytes()[..], &body.to_vec()].concat()
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut req = InferRequest {
        id: Some("1".into()),
        parameters: [("binary_data_output".to_owned(), Parameter::Bool(true))]
            .into_iter()
            .collect(),
        inputs: vec![
            Tensor::from_values("x", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]).expect("a tensor"),
            Tensor::from_byte_strings("s", vec![2], ["ab", ""]).expect("a tensor"),
        ],
        outputs: vec![RequestedOutput {
            name: "y".into(),
            parameters: Default::default(),
        }],
    };
    let binary_two = binary(&req);
    req.inputs.truncate(1);
    let binary_fp32 = binary(&req);
    let mut cut = binary_fp32.clone();
    cut.truncate(cut.len() - 3);
    let deep = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"INT32","data":{}1{}}}]}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    vec![
        (
            "valid-json-fp32",
            json(
                r#"{"id":"1","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            ),
        ),
        (
            "valid-json-nested-data",
            json(
                r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT64","data":[[1,-2],[3,4]]}]}"#,
            ),
        ),
        (
            "valid-json-every-kind",
            json(
                r#"{"id":"a","parameters":{"p":1,"q":"s","r":true,"f":0.5},"inputs":[
                {"name":"b","shape":[3],"datatype":"BOOL","data":[true,false,true]},
                {"name":"u","shape":[2],"datatype":"UINT8","data":[0,255]},
                {"name":"i","shape":[2],"datatype":"INT16","data":[-32768,32767]},
                {"name":"h","shape":[1],"datatype":"FP16","data":[1.5]},
                {"name":"d","shape":[2],"datatype":"FP64","data":[1e300,-0.0]},
                {"name":"s","shape":[2],"datatype":"BYTES","data":["ab","\u00e9"],"parameters":{"k":2}}],
                "outputs":[{"name":"y","parameters":{"binary_data":true}},{"name":"z"}]}"#,
            ),
        ),
        ("valid-binary-fp32", binary_fp32),
        ("valid-binary-fp32-bytes", binary_two),
        ("broken-binary-cut", cut),
        ("broken-json-syntax", json(r#"{"inputs":[{"name":"x""#)),
        (
            "broken-json-shape-mismatch",
            json(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#),
        ),
        (
            "broken-json-negative-shape",
            json(r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[]}]}"#),
        ),
        (
            "broken-json-huge-shape",
            json(
                r#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,4294967296],"datatype":"FP32","data":[]}]}"#,
            ),
        ),
        ("broken-json-too-deep", json(&deep)),
        (
            "broken-json-unknown-datatype",
            json(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP8","data":[1]}]}"#),
        ),
    ]
}

#[test]
fn corpus_and_regressions_never_panic() {
    corpus::check_corpus("decode_request", &seeds(), harness::check);
}
