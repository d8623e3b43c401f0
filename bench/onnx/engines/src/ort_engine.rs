//! ort 2.0.0-rc.15 over the onnxruntime wheel's libonnxruntime.so (load-dynamic). No unsafe.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use ort::{
    environment::Environment,
    session::{Session, SessionInputValue},
    value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType},
};

use crate::data::Data;

pub fn init(lib: &Path) -> Result<Environment> {
    // init_from dlopens the library (checks its version >= 1.23 for api-23) before any other ort call.
    let env = ort::init_from(lib)?.with_name("engines-bench").build()?;
    Ok(env)
}

pub struct OrtModel {
    session: Session,
}

/// (c): names, element types and shapes (-1 = dynamic; symbols like "batch" separately).
pub fn describe(session: &Session) -> String {
    let io = |o: &ort::value::Outlet| match o.dtype() {
        ValueType::Tensor { ty, shape, dimension_symbols } => {
            format!("{}:{ty}{:?}{:?}", o.name(), &**shape, &**dimension_symbols)
        }
        other => format!("{}:{other:?}", o.name()),
    };
    let ins: Vec<_> = session.inputs().iter().map(io).collect();
    let outs: Vec<_> = session.outputs().iter().map(io).collect();
    format!("in [{}] out [{}]", ins.join(", "), outs.join(", "))
}

impl OrtModel {
    pub fn load(env: &Environment, model: &Path, threads: usize) -> Result<OrtModel> {
        let session = Session::builder(env)?
            .with_intra_threads(threads)
            .map_err(|e| anyhow!("{e}"))?
            .with_inter_threads(1)
            .map_err(|e| anyhow!("{e}"))?
            .commit_from_file(model)?;
        Ok(OrtModel { session })
    }

    pub fn describe(&self) -> String {
        describe(&self.session)
    }

    /// (a): a borrowed input tensor over the request's bytes: no per-element conversion. bytemuck
    /// checks alignment/size; the element type is picked at run time from the protocol dtype.
    fn input<'a>(d: &'a Data) -> Result<SessionInputValue<'a>> {
        let shape = d.shape.clone();
        let b = d.bytes();
        Ok(match d.dtype.as_str() {
            "FP32" => TensorRef::from_array_view((shape, bytemuck::try_cast_slice::<u8, f32>(b)?))?.into(),
            "FP16" => TensorRef::from_array_view((shape, bytemuck::try_cast_slice::<u8, half::f16>(b)?))?.into(),
            "INT32" => TensorRef::from_array_view((shape, bytemuck::try_cast_slice::<u8, i32>(b)?))?.into(),
            "INT8" => TensorRef::from_array_view((shape, bytemuck::try_cast_slice::<u8, i8>(b)?))?.into(),
            // bool is not Pod: one pass u8 -> bool (owned tensor).
            "BOOL" => Tensor::from_array((shape, b.iter().map(|&x| x != 0).collect::<Vec<bool>>()))?.into(),
            // (b): string tensors in: from &[String] / &[&str] (ort copies them into C strings).
            "BYTES" => Tensor::from_string_array((shape, d.strings.as_deref().unwrap_or_default()))?.into(),
            other => bail!("dtype {other} not wired"),
        })
    }

    fn output(name: &str, v: &DynValue) -> Result<Data> {
        let ValueType::Tensor { ty, .. } = v.dtype() else { bail!("non-tensor output") };
        Ok(match ty {
            // (b): string tensors out.
            TensorElementType::String => {
                let (shape, s) = v.try_extract_strings()?;
                Data::from_strings(name, dims(shape), s)
            }
            TensorElementType::Float32 => bytes_out::<f32>(name, "FP32", v)?,
            TensorElementType::Float16 => bytes_out::<half::f16>(name, "FP16", v)?,
            TensorElementType::Int32 => bytes_out::<i32>(name, "INT32", v)?,
            TensorElementType::Int8 => bytes_out::<i8>(name, "INT8", v)?,
            TensorElementType::Bool => {
                let (shape, s) = v.try_extract_tensor::<bool>()?;
                let bytes: Vec<u8> = s.iter().map(|&x| x as u8).collect();
                Data::from_bytes(name, "BOOL", dims(shape), &bytes)
            }
            other => bail!("output type {other} not wired"),
        })
    }

    pub fn run(&mut self, inputs: &[Data]) -> Result<Vec<Data>> {
        let feeds = inputs
            .iter()
            .map(|d| Ok((d.name.as_str(), Self::input(d)?)))
            .collect::<Result<Vec<_>>>()?;
        // (f): Session::run takes &mut self.
        let outputs = self.session.run(feeds)?;
        outputs.iter().map(|(name, v)| Self::output(name, &v)).collect()
    }
}

fn dims(shape: &ort::value::Shape) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

fn bytes_out<T: ort::value::PrimitiveTensorElementType + bytemuck::Pod>(name: &str, dt: &str, v: &DynValue) -> Result<Data> {
    let (shape, s) = v.try_extract_tensor::<T>()?;
    Ok(Data::from_bytes(name, dt, dims(shape), bytemuck::cast_slice(s)))
}
