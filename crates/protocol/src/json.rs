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
use serde::{Deserialize, Deserializer, Serialize};

use crate::parameters::deserialize_optional;
use crate::shared_memory::{self, SharedMemoryReader, SharedMemoryRef};
use crate::tensor::{check_data, element_count};
use crate::v2::{InferRequest, InferResponse, RequestedOutput};
use crate::{DataType, Parameters, ProtocolError, Tensor};

/// The deepest nesting accepted in a tensor's JSON `data`.
pub const MAX_DATA_DEPTH: u32 = 32;

/// Decodes a V2 inference request sent as plain JSON (no binary tensor data).
pub fn decode_request(body: &[u8]) -> Result<InferRequest, ProtocolError> {
    decode_header(body)?.assemble(Bytes::new(), false, &shared_memory::NoSharedMemory)
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

/// A tensor from a JSON value holding its elements, flat or nested as V2's `data` (what a V1
/// body's `instances` become for a model's input), parsed and checked against `shape` exactly
/// as a decoded input's `data` is.
pub fn tensor_from_value(
    name: &str,
    datatype: DataType,
    shape: Vec<u64>,
    data: &serde_json::Value,
) -> Result<Tensor, ProtocolError> {
    let mut sink = Sink::new(Some(datatype));
    DataSeed {
        sink: &mut sink,
        depth: 0,
        name: Some(name),
    }
    .deserialize(data)
    .map_err(|e| ProtocolError::tensor(name, e.to_string()))?;
    let data = sink.into_bytes(name, datatype)?;
    Tensor::new(name, datatype, shape, data)
}

pub(crate) fn decode_header(json: &[u8]) -> Result<RequestHeader, ProtocolError> {
    serde_json::from_slice(json).map_err(|e| ProtocolError::Json(e.to_string()))
}

impl RequestHeader {
    /// Builds the request, taking the data of inputs with `binary_data_size` from `binary` in
    /// order. `binary_allowed` is false when the request came without the binary header.
    /// Inputs in shared memory are read through `shm`.
    pub(crate) fn assemble(
        self,
        binary: Bytes,
        binary_allowed: bool,
        shm: &dyn SharedMemoryReader,
    ) -> Result<InferRequest, ProtocolError> {
        let inputs = assemble_tensors(self.inputs, &binary, binary_allowed, "input", Some(shm))?;
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

/// The JSON part of a response (what a forwarding replica reads back), before binary data.
#[derive(Deserialize)]
pub(crate) struct ResponseHeader {
    #[serde(default)]
    model_name: String,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "deserialize_optional")]
    parameters: Parameters,
    #[serde(default)]
    outputs: Vec<InputHeader>,
}

pub(crate) fn decode_response_header(json: &[u8]) -> Result<ResponseHeader, ProtocolError> {
    serde_json::from_slice(json).map_err(|e| ProtocolError::Json(e.to_string()))
}

impl ResponseHeader {
    /// Builds the response, taking the data of outputs with `binary_data_size` from `binary`.
    pub(crate) fn assemble(
        self,
        binary: Bytes,
        binary_allowed: bool,
    ) -> Result<InferResponse, ProtocolError> {
        Ok(InferResponse {
            model_name: self.model_name,
            model_version: self.model_version,
            id: self.id,
            parameters: self.parameters,
            outputs: assemble_tensors(self.outputs, &binary, binary_allowed, "output", None)?,
        })
    }
}

/// The tensors of a decoded header: JSON `data`, or binary data taken from `binary` in order
/// for tensors with `binary_data_size`, or read through `shm` for tensors in shared memory;
/// every size checked against the shape. `kind` names them in errors (`input`, `output`).
fn assemble_tensors(
    headers: Vec<InputHeader>,
    binary: &Bytes,
    binary_allowed: bool,
    kind: &str,
    shm: Option<&dyn SharedMemoryReader>,
) -> Result<Vec<Tensor>, ProtocolError> {
    let mut offset = 0usize;
    let mut tensors = Vec::with_capacity(headers.len());
    for mut header in headers {
        let name = header.name;
        let binary_size = header.parameters.get("binary_data_size");
        let in_shm = match shm {
            Some(_) => SharedMemoryRef::from_parameters(&name, &header.parameters)?,
            None => None,
        };
        let data = if let (Some(at), Some(shm)) = (&in_shm, shm) {
            if header.data.is_some() || binary_size.is_some() {
                return Err(ProtocolError::tensor(
                    &name,
                    "has data and the 'shared_memory_region' parameter; give one",
                ));
            }
            let shape = checked_shape(&name, &header.shape)?;
            at.check_size(&name, header.datatype, &shape)?;
            shared_memory::strip_parameters(&mut header.parameters);
            shm.read(&name, at)?
        } else {
            match (header.data, binary_size) {
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::tensor(
                        &name,
                        "has both 'data' and the 'binary_data_size' parameter",
                    ));
                }
                (None, None) => {
                    return Err(ProtocolError::tensor(&name, "'data' field is missing"));
                }
                (Some(sink), None) => sink.into_bytes(&name, header.datatype)?,
                (None, Some(size)) => {
                    if !binary_allowed {
                        return Err(ProtocolError::tensor(
                            &name,
                            "has 'binary_data_size' but the body has no Inference-Header-Content-Length header",
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
                        "{kind} '{name}' needs {size} bytes at offset {offset} but only {} remain",
                        binary.len() - offset
                    ))
                })?;
                    let data = binary.slice(offset..end);
                    offset = end;
                    data
                }
            }
        };
        let shape = checked_shape(&name, &header.shape)?;
        let count = element_count(&name, &shape)?;
        check_data(&name, header.datatype, count, &data)?;
        tensors.push(Tensor {
            name,
            datatype: header.datatype,
            shape,
            data,
            parameters: header.parameters,
        });
    }
    if offset != binary.len() {
        return Err(ProtocolError::Binary(format!(
            "{} bytes follow the last binary {kind}",
            binary.len() - offset
        )));
    }
    Ok(tensors)
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
    let mut obj = Object::begin(out);
    obj.key("model_name");
    write_string(obj.out, &resp.model_name);
    if let Some(v) = &resp.model_version {
        obj.key("model_version");
        write_string(obj.out, v);
    }
    if let Some(id) = &resp.id {
        obj.key("id");
        write_string(obj.out, id);
    }
    if !resp.parameters.is_empty() {
        obj.key("parameters");
        write_serde(obj.out, &resp.parameters)?;
    }
    obj.key("outputs");
    write_tensors(obj.out, &resp.outputs, binary)?;
    obj.end();
    Ok(())
}

/// Writes a request's JSON: `id`, `parameters`, `inputs`, `outputs`. Inputs flagged in
/// `binary` get a `binary_data_size` parameter instead of `data`.
pub(crate) fn write_request(
    req: &InferRequest,
    binary: &[bool],
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut obj = Object::begin(out);
    if let Some(id) = &req.id {
        obj.key("id");
        write_string(obj.out, id);
    }
    if !req.parameters.is_empty() {
        obj.key("parameters");
        write_serde(obj.out, &req.parameters)?;
    }
    obj.key("inputs");
    write_tensors(obj.out, &req.inputs, binary)?;
    if !req.outputs.is_empty() {
        obj.key("outputs");
        write_serde(obj.out, &req.outputs)?;
    }
    obj.end();
    Ok(())
}

/// A JSON object being written: tracks the commas between members.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Writes `"key":` (keys here never need escaping).
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_serde<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), ProtocolError> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|e| ProtocolError::Request(format!("cannot encode as JSON: {e}")))
}

fn write_tensors(
    out: &mut Vec<u8>,
    tensors: &[Tensor],
    binary: &[bool],
) -> Result<(), ProtocolError> {
    out.push(b'[');
    for (i, t) in tensors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_tensor(out, t, binary.get(i).copied().unwrap_or(false))?;
    }
    out.push(b']');
    Ok(())
}

/// One tensor: name, datatype, shape, parameters, and `data` unless it goes binary.
fn write_tensor(out: &mut Vec<u8>, t: &Tensor, binary: bool) -> Result<(), ProtocolError> {
    let mut obj = Object::begin(out);
    obj.key("name");
    write_string(obj.out, &t.name);
    obj.key("datatype");
    write_string(obj.out, t.datatype.as_str());
    obj.key("shape");
    write_serde(obj.out, &t.shape)?;
    if shared_memory::is_written(t) {
        // Its data went to the client's region; the parameters say where.
        obj.key("parameters");
        write_serde(obj.out, &t.parameters)?;
    } else if binary {
        let mut params = t.parameters.clone();
        params.insert(
            "binary_data_size".to_owned(),
            crate::Parameter::Int(i64::try_from(t.data.len()).unwrap_or(i64::MAX)),
        );
        obj.key("parameters");
        write_serde(obj.out, &params)?;
    } else {
        if !t.parameters.is_empty() {
            obj.key("parameters");
            write_serde(obj.out, &t.parameters)?;
        }
        obj.key("data");
        write_data(obj.out, t)?;
    }
    obj.end();
    Ok(())
}

/// Writes a tensor's buffer as a flat JSON array. Non-finite floats are written as `NaN`,
/// `Infinity` and `-Infinity`, as Python's `json` module (and so tritonclient and the kserve
/// client) reads and writes them, rather than as a silent `null`.
fn write_data(out: &mut Vec<u8>, t: &Tensor) -> Result<(), ProtocolError> {
    let data = &t.data[..];
    out.reserve(data.len() * 2 + 2);
    out.push(b'[');
    let mut ints = itoa::Buffer::new();
    let mut floats = ryu::Buffer::new();
    macro_rules! each {
        ($t:ty, |$v:ident| $write:expr) => {{
            for (i, c) in data.chunks_exact(std::mem::size_of::<$t>()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let $v = <$t as crate::Element>::read_le(c);
                $write;
            }
        }};
    }
    macro_rules! int {
        ($t:ty) => {
            each!($t, |v| out.extend_from_slice(ints.format(v).as_bytes()))
        };
    }
    macro_rules! float {
        ($t:ty, $conv:expr) => {
            each!($t, |v| {
                let x = $conv(v);
                if x.is_finite() {
                    out.extend_from_slice(floats.format_finite(x).as_bytes());
                } else {
                    out.extend_from_slice(non_finite(x.is_nan(), x.is_sign_negative()));
                }
            })
        };
    }
    match t.datatype {
        DataType::Bool => {
            for (i, &b) in data.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(if b != 0 { b"true" } else { b"false" });
            }
        }
        DataType::Uint8 => int!(u8),
        DataType::Uint16 => int!(u16),
        DataType::Uint32 => int!(u32),
        DataType::Uint64 => int!(u64),
        DataType::Int8 => int!(i8),
        DataType::Int16 => int!(i16),
        DataType::Int32 => int!(i32),
        DataType::Int64 => int!(i64),
        DataType::Fp16 => float!(half::f16, |v: half::f16| v.to_f32()),
        DataType::Bf16 => float!(half::bf16, |v: half::bf16| v.to_f32()),
        DataType::Fp32 => float!(f32, |v: f32| v),
        DataType::Fp64 => float!(f64, |v: f64| v),
        DataType::Bytes => {
            for (i, e) in t.byte_strings().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let s = std::str::from_utf8(e).map_err(|_| {
                    ProtocolError::tensor(
                        &t.name,
                        format!("element {i} is not valid UTF-8; request it as binary data"),
                    )
                })?;
                write_string(out, s);
            }
        }
    }
    out.push(b']');
    Ok(())
}

fn non_finite(nan: bool, negative: bool) -> &'static [u8] {
    match (nan, negative) {
        (true, _) => b"NaN",
        (false, false) => b"Infinity",
        (false, true) => b"-Infinity",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        decode_request(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn tensors_from_json_values_are_checked_like_decoded_inputs() {
        let nested = serde_json::json!([[1, 2], [3, 4]]);
        let t = tensor_from_value("x", DataType::Int32, vec![2, 2], &nested).unwrap();
        assert_eq!(t.to_vec::<i32>().unwrap(), vec![1, 2, 3, 4]);
        let e = tensor_from_value("x", DataType::Int8, vec![1], &serde_json::json!([300]));
        assert!(e.unwrap_err().to_string().contains("out of range for INT8"));
        let e = tensor_from_value("x", DataType::Fp32, vec![3], &serde_json::json!([1.0, 2.0]));
        assert!(e.is_err(), "two elements for a shape of three");
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
    fn non_finite_floats_are_written_as_python_json_literals() {
        let resp = InferResponse {
            model_name: "m".into(),
            outputs: vec![
                Tensor::from_values(
                    "o",
                    vec![4],
                    &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5],
                )
                .unwrap(),
            ],
            ..Default::default()
        };
        let json = String::from_utf8(encode_response(&resp).unwrap()).unwrap();
        assert!(
            json.contains(r#""data":[NaN,Infinity,-Infinity,0.5]"#),
            "{json}"
        );
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
