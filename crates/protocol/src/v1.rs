//! The V1 protocol (TensorFlow Serving style): `{"instances": [...]}` or `{"inputs": ...}` in,
//! `{"predictions": [...]}` out. Bodies are free-form JSON that the model interprets.

use crate::ProtocolError;

/// Parses a V1 request body and checks the one rule KServe enforces: `instances`, when
/// present, is a list.
pub fn decode_request(body: &[u8]) -> Result<serde_json::Value, ProtocolError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::Json(format!("unrecognized request format: {e}")))?;
    validate_request(&value)?;
    Ok(value)
}

/// Checks a V1 request body.
pub fn validate_request(value: &serde_json::Value) -> Result<(), ProtocolError> {
    let Some(obj) = value.as_object() else {
        return Err(ProtocolError::Request(
            "expected a JSON object with \"instances\" or \"inputs\"".to_owned(),
        ));
    };
    if let Some(instances) = obj.get("instances")
        && !instances.is_array()
    {
        return Err(ProtocolError::Request(
            "expected \"instances\" to be a list".to_owned(),
        ));
    }
    Ok(())
}
