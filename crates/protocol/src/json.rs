//! The V2 JSON codec.
//!
//! Decoding is single-pass: when an input's `datatype` comes before its `data` (as every known
//! client sends it), elements are written straight into the tensor's little-endian buffer as
//! they are parsed; otherwise they are collected as loose scalars and converted once the
//! datatype is known. Nested `data` is flattened on the way; nesting is limited to
//! [`MAX_DATA_DEPTH`]. Nothing is allocated from a client-given size: buffers grow with the
//! elements actually parsed, which the body size bounds, and the element count is checked
//! against the shape afterwards.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::parameters::deserialize_optional;
use crate::tensor::{check_data, element_count};
use crate::v2::{InferRequest, InferResponse, RequestedOutput};
use crate::{DataType, Parameters, ProtocolError, Tensor};

/// The deepest nesting accepted in a tensor's JSON `data`.
pub const MAX_DATA_DEPTH: u32 = 32;

/// Decodes a V2 inference request sent as plain JSON (no binary tensor data).
pub fn decode_request(body: &[u8]) -> Result<InferRequest, ProtocolError> {
    decode_header(body)?.assemble(Bytes::new(), false)
}

/// Encodes a V2 inference request as plain JSON, every input with its `data` (what a client
/// or a forwarding replica sends).
pub fn encode_request(req: &InferRequest) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(256);
    write_request(req, &vec![false; req.inputs.len()], &mut out)?;
    Ok(out)
}

/// Encodes a V2 inference response as plain JSON, every output with its `data`.
pub fn encode_response(resp: &InferResponse) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(256);
    write_response(resp, &vec![false; resp.outputs.len()], &mut out)?;
    Ok(out)
}

/// The JSON part of a request, before binary data (if any) is attached.
#[derive(Deserialize)]
pub(crate) struct RequestHeader {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "deserialize_optional")]
    parameters: Parameters,
    inputs: Vec<InputHeader>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

pub(crate) fn decode_header(json: &[u8]) -> Result<RequestHeader, ProtocolError> {
    serde_json::from_slice(json).map_err(|e| ProtocolError::Json(e.to_string()))
}

impl RequestHeader {
    /// Builds the request, taking the data of inputs with `binary_data_size` from `binary` in
    /// order. `binary_allowed` is false when the request came without the binary header.
    pub(crate) fn assemble(
        self,
        binary: Bytes,
        binary_allowed: bool,
    ) -> Result<InferRequest, ProtocolError> {
        let mut offset = 0usize;
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for input in self.inputs {
            let name = input.name;
            let binary_size = input.parameters.get("binary_data_size");
            let data = match (input.data, binary_size) {
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::tensor(
                        &name,
                        "has both 'data' and the 'binary_data_size' parameter",
                    ));
                }
                (None, None) => {
                    return Err(ProtocolError::tensor(&name, "'data' field is missing"));
                }
                (Some(sink), None) => sink.into_bytes(&name, input.datatype)?,
                (None, Some(size)) => {
                    if !binary_allowed {
                        return Err(ProtocolError::tensor(
                            &name,
                            "has 'binary_data_size' but the request has no Inference-Header-Content-Length header",
                        ));
                    }
                    let size = size
                        .as_u64()
                        .and_then(|s| usize::try_from(s).ok())
                        .ok_or_else(|| {
                            ProtocolError::tensor(
                                &name,
                                "'binary_data_size' must be a non-negative integer",
                            )
                        })?;
                    let end = offset.checked_add(size).filter(|&e| e <= binary.len()).ok_or_else(|| {
                        ProtocolError::Binary(format!(
                            "input '{name}' needs {size} bytes at offset {offset} but only {} remain",
                            binary.len() - offset
                        ))
                    })?;
                    let data = binary.slice(offset..end);
                    offset = end;
                    data
                }
            };
            let shape = checked_shape(&name, &input.shape)?;
            let count = element_count(&name, &shape)?;
            check_data(&name, input.datatype, count, &data)?;
            inputs.push(Tensor {
                name,
                datatype: input.datatype,
                shape,
                data,
                parameters: input.parameters,
            });
        }
        if offset != binary.len() {
            return Err(ProtocolError::Binary(format!(
                "{} bytes follow the last binary input",
                binary.len() - offset
            )));
        }
        let req = InferRequest {
            id: self.id,
            parameters: self.parameters,
            inputs,
            outputs: self.outputs.unwrap_or_default(),
        };
        req.validate()?;
        Ok(req)
    }
}

fn checked_shape(name: &str, shape: &[i64]) -> Result<Vec<u64>, ProtocolError> {
    shape
        .iter()
        .map(|&d| {
            u64::try_from(d).map_err(|_| {
                ProtocolError::tensor(name, format!("shape {shape:?} has a negative dimension"))
            })
        })
        .collect()
}

/// One input of the JSON part: everything but the binary data.
pub(crate) struct InputHeader {
    name: String,
    datatype: DataType,
    shape: Vec<i64>,
    parameters: Parameters,
    data: Option<Sink>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum InputField {
    Name,
    Datatype,
    Shape,
    Parameters,
    Data,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for InputHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = InputHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputHeader, A::Error> {
        let mut name: Option<String> = None;
        let mut datatype: Option<DataType> = None;
        let mut shape: Option<Vec<i64>> = None;
        let mut parameters: Option<Parameters> = None;
        let mut data: Option<Sink> = None;
        let duplicate = |field: &str| de::Error::custom(format!("duplicate field '{field}'"));
        while let Some(key) = map.next_key::<InputField>()? {
            match key {
                InputField::Name => {
                    if name.is_some() {
                        return Err(duplicate("name"));
                    }
                    name = Some(map.next_value()?);
                }
                InputField::Datatype => {
                    if datatype.is_some() {
                        return Err(duplicate("datatype"));
                    }
                    let raw: std::borrow::Cow<'de, str> = map.next_value()?;
                    let dt = raw.parse::<DataType>().map_err(|e| {
                        de::Error::custom(format!(
                            "input '{}': {e}",
                            name.as_deref().unwrap_or("?")
                        ))
                    })?;
                    datatype = Some(dt);
                }
                InputField::Shape => {
                    if shape.is_some() {
                        return Err(duplicate("shape"));
                    }
                    shape = Some(map.next_value()?);
                }
                InputField::Parameters => {
                    if parameters.is_some() {
                        return Err(duplicate("parameters"));
                    }
                    parameters = Some(map.next_value::<Option<Parameters>>()?.unwrap_or_default());
                }
                InputField::Data => {
                    if data.is_some() {
                        return Err(duplicate("data"));
                    }
                    let mut sink = Sink::new(datatype);
                    map.next_value_seed(DataSeed {
                        sink: &mut sink,
                        depth: 0,
                        name: name.as_deref(),
                    })?;
                    data = Some(sink);
                }
                InputField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let missing = |field: &'static str| {
            de::Error::custom(format!("input '{name}': missing field '{field}'"))
        };
        Ok(InputHeader {
            datatype: datatype.ok_or_else(|| missing("datatype"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
            parameters: parameters.unwrap_or_default(),
            data,
            name,
        })
    }
}

/// Where parsed JSON elements go: straight into little-endian bytes when the datatype is known,
/// else into loose scalars converted later.
enum Sink {
    Typed(TypedSink),
    Loose(Vec<Scalar>),
}

enum Scalar {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
}

struct TypedSink {
    datatype: DataType,
    buf: Vec<u8>,
    count: u64,
}

impl Sink {
    fn new(datatype: Option<DataType>) -> Self {
        match datatype {
            Some(datatype) => Sink::Typed(TypedSink::new(datatype)),
            None => Sink::Loose(Vec::new()),
        }
    }

    fn push(&mut self, v: Scalar) -> Result<(), String> {
        match self {
            Sink::Typed(t) => t.push(v),
            Sink::Loose(l) => {
                l.push(v);
                Ok(())
            }
        }
    }

    /// The little-endian buffer of `datatype` elements.
    fn into_bytes(self, name: &str, datatype: DataType) -> Result<Bytes, ProtocolError> {
        let typed = match self {
            Sink::Typed(t) => t,
            Sink::Loose(scalars) => {
                let mut t = TypedSink::new(datatype);
                for s in scalars {
                    t.push(s).map_err(|e| ProtocolError::tensor(name, e))?;
                }
                t
            }
        };
        Ok(Bytes::from(typed.buf))
    }
}

impl TypedSink {
    fn new(datatype: DataType) -> Self {
        TypedSink {
            datatype,
            buf: Vec::new(),
            count: 0,
        }
    }

    fn push(&mut self, v: Scalar) -> Result<(), String> {
        let dt = self.datatype;
        let index = self.count;
        let wrong = |what: &str| format!("element {index}: expected {dt} element, found {what}");
        let range = |v: &dyn fmt::Display| format!("element {index}: {v} is out of range for {dt}");
        macro_rules! int {
            ($t:ty) => {{
                let x: $t = match v {
                    Scalar::U64(u) => <$t>::try_from(u).map_err(|_| range(&u))?,
                    Scalar::I64(i) => <$t>::try_from(i).map_err(|_| range(&i))?,
                    Scalar::F64(_) => return Err(wrong("a non-integer number")),
                    Scalar::Bool(_) => return Err(wrong("a boolean")),
                    Scalar::Str(_) => return Err(wrong("a string")),
                };
                self.buf.extend_from_slice(&x.to_le_bytes());
            }};
        }
        macro_rules! float {
            ($conv:expr) => {{
                let x: f64 = match v {
                    Scalar::U64(u) => u as f64,
                    Scalar::I64(i) => i as f64,
                    Scalar::F64(f) => f,
                    Scalar::Bool(_) => return Err(wrong("a boolean")),
                    Scalar::Str(_) => return Err(wrong("a string")),
                };
                self.buf.extend_from_slice(&$conv(x).to_le_bytes());
            }};
        }
        match dt {
            DataType::Bool => match v {
                Scalar::Bool(b) => self.buf.push(u8::from(b)),
                Scalar::Str(_) => return Err(wrong("a string")),
                _ => return Err(wrong("a number")),
            },
            DataType::Uint8 => int!(u8),
            DataType::Uint16 => int!(u16),
            DataType::Uint32 => int!(u32),
            DataType::Uint64 => int!(u64),
            DataType::Int8 => int!(i8),
            DataType::Int16 => int!(i16),
            DataType::Int32 => int!(i32),
            DataType::Int64 => int!(i64),
            DataType::Fp16 => float!(half::f16::from_f64),
            DataType::Bf16 => float!(half::bf16::from_f64),
            DataType::Fp32 => float!(|x: f64| x as f32),
            DataType::Fp64 => float!(|x: f64| x),
            DataType::Bytes => match v {
                Scalar::Str(s) => {
                    let len = u32::try_from(s.len())
                        .map_err(|_| format!("element {index}: string over 4 GiB"))?;
                    self.buf.extend_from_slice(&len.to_le_bytes());
                    self.buf.extend_from_slice(s.as_bytes());
                }
                Scalar::Bool(_) => return Err(wrong("a boolean")),
                _ => return Err(wrong("a number")),
            },
        }
        self.count += 1;
        Ok(())
    }
}

/// Parses one level of a (possibly nested) `data` array into a [`Sink`].
struct DataSeed<'s, 'n> {
    sink: &'s mut Sink,
    depth: u32,
    name: Option<&'n str>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl DataSeed<'_, '_> {
    fn scalar<E: de::Error>(self, v: Scalar) -> Result<(), E> {
        let name = self.name.unwrap_or("?");
        if self.depth == 0 {
            return Err(E::custom(format!(
                "input '{name}': 'data' must be an array"
            )));
        }
        self.sink
            .push(v)
            .map_err(|e| E::custom(format!("input '{name}': {e}")))
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers, booleans or strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DATA_DEPTH {
            return Err(de::Error::custom(format!(
                "input '{}': 'data' is nested deeper than {MAX_DATA_DEPTH} levels",
                self.name.unwrap_or("?")
            )));
        }
        while seq
            .next_element_seed(DataSeed {
                sink: &mut *self.sink,
                depth: self.depth + 1,
                name: self.name,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::I64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::U64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.scalar(Scalar::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(format!(
            "input '{}': 'data' elements must not be null",
            self.name.unwrap_or("?")
        )))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(format!(
            "input '{}': 'data' elements must be numbers, booleans or strings, not objects",
            self.name.unwrap_or("?")
        )))
    }
}

/// Writes a response's JSON: `model_name`, `model_version`, `id`, `parameters`, `outputs`.
/// Outputs flagged in `binary` get a `binary_data_size` parameter instead of `data`.
/// Empty `parameters` and unset `id`/`model_version` are left out.
pub(crate) fn write_response(
    resp: &InferResponse,
    binary: &[bool],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut ser = serde_json::Serializer::new(out);
    ResponseView { resp, binary }
        .serialize(&mut ser)
        .map_err(|e| ProtocolError::Request(format!("cannot encode the response as JSON: {e}")))
}

/// Writes a request's JSON: `id`, `parameters`, `inputs`, `outputs`. Inputs flagged in
/// `binary` get a `binary_data_size` parameter instead of `data`.
pub(crate) fn write_request(
    req: &InferRequest,
    binary: &[bool],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut ser = serde_json::Serializer::new(out);
    RequestView { req, binary }
        .serialize(&mut ser)
        .map_err(|e| ProtocolError::Request(format!("cannot encode the request as JSON: {e}")))
}

struct RequestView<'a> {
    req: &'a InferRequest,
    binary: &'a [bool],
}

impl Serialize for RequestView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.req;
        let mut map = s.serialize_map(None)?;
        if let Some(id) = &r.id {
            map.serialize_entry("id", id)?;
        }
        if !r.parameters.is_empty() {
            map.serialize_entry("parameters", &r.parameters)?;
        }
        map.serialize_entry(
            "inputs",
            &TensorsView {
                tensors: &r.inputs,
                binary: self.binary,
            },
        )?;
        if !r.outputs.is_empty() {
            map.serialize_entry("outputs", &r.outputs)?;
        }
        map.end()
    }
}

struct ResponseView<'a> {
    resp: &'a InferResponse,
    binary: &'a [bool],
}

impl Serialize for ResponseView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.resp;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model_name", &r.model_name)?;
        if let Some(v) = &r.model_version {
            map.serialize_entry("model_version", v)?;
        }
        if let Some(id) = &r.id {
            map.serialize_entry("id", id)?;
        }
        if !r.parameters.is_empty() {
            map.serialize_entry("parameters", &r.parameters)?;
        }
        map.serialize_entry(
            "outputs",
            &TensorsView {
                tensors: &r.outputs,
                binary: self.binary,
            },
        )?;
        map.end()
    }
}

/// A list of input or output tensors.
struct TensorsView<'a> {
    tensors: &'a [Tensor],
    binary: &'a [bool],
}

impl Serialize for TensorsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.tensors.len()))?;
        for (i, t) in self.tensors.iter().enumerate() {
            seq.serialize_element(&TensorView {
                tensor: t,
                binary: self.binary.get(i).copied().unwrap_or(false),
            })?;
        }
        seq.end()
    }
}

/// One tensor: name, datatype, shape, parameters, and `data` unless it goes binary.
struct TensorView<'a> {
    tensor: &'a Tensor,
    binary: bool,
}

impl Serialize for TensorView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.tensor;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("name", &t.name)?;
        map.serialize_entry("datatype", &t.datatype)?;
        map.serialize_entry("shape", &t.shape)?;
        if self.binary {
            let mut params = t.parameters.clone();
            params.insert(
                "binary_data_size".to_owned(),
                crate::Parameter::Int(i64::try_from(t.data.len()).unwrap_or(i64::MAX)),
            );
            map.serialize_entry("parameters", &params)?;
        } else {
            if !t.parameters.is_empty() {
                map.serialize_entry("parameters", &t.parameters)?;
            }
            map.serialize_entry("data", &DataView(t))?;
        }
        map.end()
    }
}

/// Serializes a tensor's buffer as a flat JSON array.
struct DataView<'a>(&'a Tensor);

impl Serialize for DataView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let data = &t.data[..];
        let mut seq = s.serialize_seq(None)?;
        macro_rules! each {
            ($t:ty, $f:expr) => {{
                for c in data.chunks_exact(std::mem::size_of::<$t>()) {
                    let v = <$t as crate::Element>::read_le(c);
                    seq.serialize_element(&$f(v))?;
                }
            }};
        }
        match t.datatype {
            DataType::Bool => {
                for &b in data {
                    seq.serialize_element(&(b != 0))?;
                }
            }
            DataType::Uint8 => each!(u8, |v| v),
            DataType::Uint16 => each!(u16, |v| v),
            DataType::Uint32 => each!(u32, |v| v),
            DataType::Uint64 => each!(u64, |v| v),
            DataType::Int8 => each!(i8, |v| v),
            DataType::Int16 => each!(i16, |v| v),
            DataType::Int32 => each!(i32, |v| v),
            DataType::Int64 => each!(i64, |v| v),
            DataType::Fp16 => each!(half::f16, |v: half::f16| v.to_f32()),
            DataType::Bf16 => each!(half::bf16, |v: half::bf16| v.to_f32()),
            DataType::Fp32 => each!(f32, |v| v),
            DataType::Fp64 => each!(f64, |v| v),
            DataType::Bytes => {
                for (i, e) in t.byte_strings().enumerate() {
                    let s = std::str::from_utf8(e).map_err(|_| {
                        S::Error::custom(format!(
                            "output '{}' element {i} is not valid UTF-8; request it as binary data",
                            t.name
                        ))
                    })?;
                    seq.serialize_element(s)?;
                }
            }
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        decode_request(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn flat_and_nested_data_decode_to_the_same_tensor() {
        let flat =
            r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[1,2,3,4.5]}]}"#;
        let nested =
            r#"{"inputs":[{"name":"a","data":[[1,2],[3,4.5]],"shape":[2,2],"datatype":"FP32"}]}"#;
        let a = decode_request(flat.as_bytes()).unwrap();
        let b = decode_request(nested.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.inputs[0].to_vec::<f32>().unwrap(),
            vec![1.0, 2.0, 3.0, 4.5]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(
            err(r#"{"inputs":[{"name":"a","shape":[3],"datatype":"FP32","data":[1,2]}]}"#)
                .contains("3 FP32 elements need 12 bytes, got 8")
        );
        assert!(
            err(r#"{"inputs":[{"name":"a","shape":[-1],"datatype":"FP32","data":[1]}]}"#)
                .contains("negative")
        );
        assert!(
            err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP8","data":[1]}]}"#)
                .contains("unknown datatype 'FP8'")
        );
        assert!(
            err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":[300]}]}"#)
                .contains("out of range for INT8")
        );
        assert!(
            err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"BOOL","data":[1]}]}"#)
                .contains("expected BOOL element")
        );
        assert!(
            err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","data":[1.5]}]}"#)
                .contains("non-integer")
        );
        assert!(err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]},{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]}"#)
            .contains("duplicate input name 'a'"));
        assert!(
            err(r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32"}]}"#)
                .contains("'data' field is missing")
        );
        let deep = format!(
            r#"{{"inputs":[{{"name":"a","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(err(&deep).contains("nested deeper"));
        assert!(err(r#"{"inputs":[{"name":"a","shape":[4294967296,4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#)
            .contains("too many elements"));
    }

    #[test]
    fn data_before_datatype_is_converted_later() {
        let body = r#"{"inputs":[{"data":[1,-2],"name":"a","shape":[2],"datatype":"INT64"}]}"#;
        let r = decode_request(body.as_bytes()).unwrap();
        assert_eq!(r.inputs[0].to_vec::<i64>().unwrap(), vec![1, -2]);
    }

    #[test]
    fn response_is_flat_json() {
        let resp = InferResponse {
            model_name: "m".into(),
            id: Some("42".into()),
            outputs: vec![
                Tensor::from_values("o", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.5]).unwrap(),
                Tensor::from_byte_strings("s", vec![1], ["hi"]).unwrap(),
            ],
            ..Default::default()
        };
        let json = String::from_utf8(encode_response(&resp).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"model_name":"m","id":"42","outputs":[{"name":"o","datatype":"FP32","shape":[2,2],"data":[1.0,2.0,3.0,4.5]},{"name":"s","datatype":"BYTES","shape":[1],"data":["hi"]}]}"#
        );
    }
}
