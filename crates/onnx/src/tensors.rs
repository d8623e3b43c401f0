//! Protocol tensors to ONNX Runtime values and back, without a per-element conversion:
//! an input whose bytes are aligned for its element type is handed to ONNX Runtime in place
//! (no copy); an unaligned one is copied once; outputs are copied once, as bytes.

use bytemuck::{AnyBitPattern, NoUninit};
use bytes::Bytes;
use ferroserve_protocol::{DataType, Tensor};
use ort::session::SessionInputValue;
use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, TensorRef, ValueType};

/// The ONNX Runtime value of a checked input tensor, borrowing its bytes where they are
/// aligned.
pub fn input_value(t: &Tensor) -> Result<SessionInputValue<'_>, String> {
    let shape: Vec<i64> = t
        .shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| format!("input '{}': dimension {d} is too large", t.name))
        })
        .collect::<Result<_, _>>()?;
    let value = match t.datatype {
        DataType::Bool => bools(t, shape),
        DataType::Uint8 => numeric::<u8>(t, shape),
        DataType::Uint16 => numeric::<u16>(t, shape),
        DataType::Uint32 => numeric::<u32>(t, shape),
        DataType::Uint64 => numeric::<u64>(t, shape),
        DataType::Int8 => numeric::<i8>(t, shape),
        DataType::Int16 => numeric::<i16>(t, shape),
        DataType::Int32 => numeric::<i32>(t, shape),
        DataType::Int64 => numeric::<i64>(t, shape),
        DataType::Fp16 => numeric::<half::f16>(t, shape),
        DataType::Bf16 => numeric::<half::bf16>(t, shape),
        DataType::Fp32 => numeric::<f32>(t, shape),
        DataType::Fp64 => numeric::<f64>(t, shape),
        DataType::Bytes => strings(t, shape),
    };
    value.map_err(|e| format!("input '{}': {e}", t.name))
}

fn numeric<T>(t: &Tensor, shape: Vec<i64>) -> Result<SessionInputValue<'_>, String>
where
    T: PrimitiveTensorElementType + AnyBitPattern + NoUninit + std::fmt::Debug + Clone + 'static,
{
    match bytemuck::try_cast_slice::<u8, T>(&t.data) {
        Ok(values) => Ok(TensorRef::from_array_view((shape, values))
            .map_err(|e| e.to_string())?
            .into()),
        Err(_) => {
            // Unaligned (e.g. sliced from a binary body at an odd offset): one copy.
            let values = bytemuck::pod_collect_to_vec::<u8, T>(&t.data);
            Ok(ort::value::Tensor::from_array((shape, values))
                .map_err(|e| e.to_string())?
                .into())
        }
    }
}

fn bools(t: &Tensor, shape: Vec<i64>) -> Result<SessionInputValue<'_>, String> {
    match bytemuck::checked::try_cast_slice::<u8, bool>(&t.data) {
        Ok(values) => Ok(TensorRef::from_array_view((shape, values))
            .map_err(|e| e.to_string())?
            .into()),
        Err(_) => Err("BOOL elements must be the bytes 0 or 1".to_owned()),
    }
}

fn strings(t: &Tensor, shape: Vec<i64>) -> Result<SessionInputValue<'_>, String> {
    let values = t
        .byte_strings()
        .map(|s| {
            std::str::from_utf8(s)
                .map(str::to_owned)
                .map_err(|_| "a BYTES element is not UTF-8, which ONNX strings must be".to_owned())
        })
        .collect::<Result<Vec<String>, _>>()?;
    Ok(
        ort::value::Tensor::from_string_array((shape, values.as_slice()))
            .map_err(|e| e.to_string())?
            .into(),
    )
}

/// A protocol tensor holding an output's bytes (one copy), its shape and datatype.
pub fn output_tensor(name: &str, value: &DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("output '{name}' is not a tensor"));
    };
    let datatype = crate::signature::datatype(*ty).ok_or_else(|| {
        format!("output '{name}' has element type {ty:?}, which the V2 protocol cannot carry")
    })?;
    let (shape, data) = match ty {
        TensorElementType::Bool => raw::<bool>(value),
        TensorElementType::Uint8 => raw::<u8>(value),
        TensorElementType::Uint16 => raw::<u16>(value),
        TensorElementType::Uint32 => raw::<u32>(value),
        TensorElementType::Uint64 => raw::<u64>(value),
        TensorElementType::Int8 => raw::<i8>(value),
        TensorElementType::Int16 => raw::<i16>(value),
        TensorElementType::Int32 => raw::<i32>(value),
        TensorElementType::Int64 => raw::<i64>(value),
        TensorElementType::Float16 => raw::<half::f16>(value),
        TensorElementType::Bfloat16 => raw::<half::bf16>(value),
        TensorElementType::Float32 => raw::<f32>(value),
        TensorElementType::Float64 => raw::<f64>(value),
        TensorElementType::String => string_bytes(value),
        _ => unreachable_type(*ty),
    }
    .map_err(|e| format!("output '{name}': {e}"))?;
    let shape = shape
        .iter()
        .map(|&d| {
            u64::try_from(d).map_err(|_| format!("output '{name}' has a negative dimension {d}"))
        })
        .collect::<Result<_, _>>()?;
    Tensor::new(name, datatype, shape, data).map_err(|e| e.to_string())
}

fn raw<T: PrimitiveTensorElementType + NoUninit + std::fmt::Debug>(
    value: &DynValue,
) -> Result<(Vec<i64>, Bytes), String> {
    let (shape, values) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
    Ok((
        shape.to_vec(),
        Bytes::copy_from_slice(bytemuck::cast_slice::<T, u8>(values)),
    ))
}

fn string_bytes(value: &DynValue) -> Result<(Vec<i64>, Bytes), String> {
    let (shape, values) = value.try_extract_strings().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(values.iter().map(|s| 4 + s.len()).sum());
    for s in &values {
        let len = u32::try_from(s.len()).map_err(|_| "a string longer than 4 GiB".to_owned())?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    Ok((shape.to_vec(), Bytes::from(out)))
}

fn unreachable_type(ty: TensorElementType) -> Result<(Vec<i64>, Bytes), String> {
    Err(format!("element type {ty:?} has no V2 datatype"))
}
