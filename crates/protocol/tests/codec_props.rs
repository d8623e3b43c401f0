//! Property tests of the codecs: every datatype round-trips through JSON and binary, and no
//! input, however malformed, makes a decoder panic.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use ferroserve_protocol::{DataType, Parameter, Tensor, binary, json};
use proptest::prelude::*;

/// Raw little-endian data of `count` elements of a fixed-size datatype, with values that
/// survive JSON (finite floats; FP16/BF16 exact by construction).
fn fixed_data(dt: DataType, count: usize) -> BoxedStrategy<Vec<u8>> {
    let size = dt.element_size().unwrap_or(1);
    match dt {
        DataType::Bool => prop::collection::vec(any::<bool>().prop_map(u8::from), count).boxed(),
        DataType::Fp32 => {
            prop::collection::vec(any::<f32>().prop_filter("finite", |f| f.is_finite()), count)
                .prop_map(|v| v.iter().flat_map(|f| f.to_le_bytes()).collect())
                .boxed()
        }
        DataType::Fp64 => {
            prop::collection::vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), count)
                .prop_map(|v| v.iter().flat_map(|f| f.to_le_bytes()).collect())
                .boxed()
        }
        DataType::Fp16 => prop::collection::vec(
            any::<u16>().prop_filter("finite", |b| half::f16::from_bits(*b).is_finite()),
            count,
        )
        .prop_map(|v| v.iter().flat_map(|f| f.to_le_bytes()).collect())
        .boxed(),
        DataType::Bf16 => prop::collection::vec(
            any::<u16>().prop_filter("finite", |b| half::bf16::from_bits(*b).is_finite()),
            count,
        )
        .prop_map(|v| v.iter().flat_map(|f| f.to_le_bytes()).collect())
        .boxed(),
        _ => prop::collection::vec(any::<u8>(), count * size).boxed(),
    }
}

fn tensor(name: String) -> impl Strategy<Value = Tensor> {
    (
        prop::sample::select(DataType::ALL.to_vec()),
        prop::collection::vec(0u64..4, 0..4),
    )
        .prop_flat_map(move |(dt, shape)| {
            let count = shape.iter().product::<u64>() as usize;
            let name = name.clone();
            let data = if dt == DataType::Bytes {
                prop::collection::vec(".{0,6}", count)
                    .prop_map(|v| {
                        v.iter()
                            .flat_map(|s| {
                                (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())
                            })
                            .collect::<Vec<u8>>()
                    })
                    .boxed()
            } else {
                fixed_data(dt, count)
            };
            data.prop_map(move |d| {
                Tensor::new(name.clone(), dt, shape.clone(), Bytes::from(d)).unwrap()
            })
        })
}

fn request() -> impl Strategy<Value = InferRequest> {
    (
        prop::option::of("[a-z0-9]{0,8}"),
        tensor("a".into()),
        tensor("b".into()),
        any::<i64>(),
    )
        .prop_map(|(id, a, b, p)| InferRequest {
            id,
            parameters: [("p".to_owned(), Parameter::Int(p))].into_iter().collect(),
            inputs: vec![a, b],
            outputs: vec![],
        })
}

proptest! {
    #[test]
    fn json_round_trips_every_datatype(req in request()) {
        let encoded = json::encode_request(&req).unwrap();
        let decoded = json::decode_request(&encoded).unwrap();
        prop_assert_eq!(decoded, req);
    }

    #[test]
    fn binary_round_trips_every_datatype(req in request()) {
        let encoded = binary::encode_request(&req).unwrap();
        let mut decoded = binary::decode_request(Bytes::from(encoded.to_vec()), Some(encoded.json.len())).unwrap();
        for t in &mut decoded.inputs {
            let size = t.parameters.remove("binary_data_size").and_then(|p| p.as_u64());
            prop_assert_eq!(size, Some(t.data.len() as u64));
        }
        prop_assert_eq!(decoded, req);
    }

    #[test]
    fn responses_encode_as_the_inputs_decoded(req in request()) {
        // A response's outputs in JSON carry the same data a request's inputs do.
        let resp = InferResponse { model_name: "m".into(), outputs: req.inputs.clone(), ..Default::default() };
        let encoded = json::encode_response(&resp).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
        let as_request = serde_json::json!({ "inputs": value["outputs"] });
        let decoded = json::decode_request(as_request.to_string().as_bytes()).unwrap();
        prop_assert_eq!(decoded.inputs, req.inputs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), len in prop::option::of(0usize..600)) {
        let _ = binary::decode_request(Bytes::from(body), len);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let body = serde_json::json!({ "inputs": [value.clone()], "outputs": value }).to_string();
        let _ = json::decode_request(body.as_bytes());
        let _ = json::decode_request(value.to_string().as_bytes());
    }

    #[test]
    fn shaped_json_inputs_never_panic(
        shape in prop::collection::vec(any::<i64>(), 0..5),
        dt in "[A-Z0-9]{2,6}",
        data in json_value(),
    ) {
        let body = serde_json::json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt, "data": data}]});
        let _ = json::decode_request(body.to_string().as_bytes());
        for dt in DataType::ALL {
            let body = serde_json::json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt.as_str(), "data": data}]});
            let _ = json::decode_request(body.to_string().as_bytes());
        }
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,4}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
