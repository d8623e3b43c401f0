//! KServe's V1 protocol for ONNX models, as KServe's scikit-learn server answers it:
//! `{"instances": [...]}` (or `"inputs"`) becomes the model's one input, each instance a row;
//! the answer is `{"predictions": [...]}`, the model's first output by rows (a classifier's
//! labels, for a scikit-learn model exported with skl2onnx).

use ferroserve_protocol::Tensor;
use ferroserve_protocol::v2::{InferRequest, InferResponse, TensorMetadata};
use serde_json::Value;

/// The V2 request of a V1 body for a model whose one input is `input`.
pub fn request(body: &Value, input: &TensorMetadata) -> Result<InferRequest, String> {
    let instances = body
        .get("instances")
        .or_else(|| body.get("inputs"))
        .ok_or("a V1 body needs \"instances\" (or \"inputs\"): a list with one entry per row")?;
    let shape = shape_of(instances)?;
    let tensor =
        ferroserve_protocol::json::tensor_from_value(&input.name, input.datatype, shape, instances)
            .map_err(|e| format!("instances: {e}"))?;
    Ok(InferRequest {
        inputs: vec![tensor],
        ..InferRequest::default()
    })
}

/// `{"predictions": ...}`: the first output, nested by its shape.
pub fn response(resp: &InferResponse) -> Result<Value, String> {
    let first = resp.outputs.first().ok_or("the model returned no output")?;
    Ok(serde_json::json!({ "predictions": nested(first)? }))
}

/// The dimensions of a rectangular nested list (`[[1, 2], [3, 4]]` → `[2, 2]`).
fn shape_of(value: &Value) -> Result<Vec<u64>, String> {
    let mut shape = Vec::new();
    let mut level = value;
    while let Value::Array(items) = level {
        shape.push(items.len() as u64);
        match items.first() {
            Some(first) => level = first,
            None => break,
        }
    }
    if shape.is_empty() {
        return Err("instances must be a list".into());
    }
    // Rectangular: every list at each depth has the length of the first.
    fn check(value: &Value, shape: &[u64]) -> Result<(), String> {
        match (value, shape.split_first()) {
            (Value::Array(items), Some((&n, rest))) => {
                if items.len() as u64 != n {
                    return Err(format!(
                        "instances are ragged: a list of {} where {n} were expected",
                        items.len()
                    ));
                }
                items.iter().try_for_each(|i| check(i, rest))
            }
            (Value::Array(_), None) => Err("instances are nested deeper in some rows".into()),
            (_, Some(_)) => Err("instances are ragged: a value where a list was expected".into()),
            (_, None) => Ok(()),
        }
    }
    check(value, &shape)?;
    Ok(shape)
}

/// A tensor's values as JSON, nested by its shape.
fn nested(t: &Tensor) -> Result<Value, String> {
    let encoded = ferroserve_protocol::json::encode_response(&InferResponse {
        outputs: vec![t.clone()],
        ..InferResponse::default()
    })
    .map_err(|e| e.to_string())?;
    let mut doc: Value = serde_json::from_slice(&encoded).map_err(|e| e.to_string())?;
    let flat = match doc.pointer_mut("/outputs/0/data").map(Value::take) {
        Some(Value::Array(values)) => values,
        _ => return Err(format!("output '{}' has no JSON data", t.name)),
    };
    Ok(nest(flat, &t.shape))
}

fn nest(flat: Vec<Value>, shape: &[u64]) -> Value {
    match shape {
        [] | [_] => Value::Array(flat),
        [rows, rest @ ..] => {
            let per_row = flat.len() / (*rows).max(1) as usize;
            let mut flat = flat.into_iter();
            Value::Array(
                (0..*rows)
                    .map(|_| nest(flat.by_ref().take(per_row).collect(), rest))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_of_nested_lists() {
        assert_eq!(shape_of(&json!([1, 2, 3])), Ok(vec![3]));
        assert_eq!(shape_of(&json!([[1, 2], [3, 4], [5, 6]])), Ok(vec![3, 2]));
        assert_eq!(shape_of(&json!([])), Ok(vec![0]));
        assert!(shape_of(&json!([[1, 2], [3]])).is_err());
        assert!(shape_of(&json!([[1, 2], 3])).is_err());
        assert!(shape_of(&json!([1, [2]])).is_err());
        assert!(shape_of(&json!(7)).is_err());
    }

    #[test]
    fn values_nest_by_shape() {
        let flat: Vec<Value> = (0..6).map(|i| json!(i)).collect();
        assert_eq!(nest(flat.clone(), &[6]), json!([0, 1, 2, 3, 4, 5]));
        assert_eq!(nest(flat.clone(), &[2, 3]), json!([[0, 1, 2], [3, 4, 5]]));
        assert_eq!(
            nest(flat, &[3, 1, 2]),
            json!([[[0, 1]], [[2, 3]], [[4, 5]]])
        );
    }
}
