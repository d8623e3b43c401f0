//! tract-onnx 0.23 (pure Rust). No unsafe.

use std::{path::Path, sync::Arc};

use anyhow::{Result, bail};
use tract_onnx::prelude::*;

use crate::data::Data;

pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    outputs: Vec<String>,
}

impl TractModel {
    /// `pin`: Some(inputs) fixes every input's shape/type (a plan per batch size);
    /// None keeps the ONNX symbolic `batch` dim (one plan for all batch sizes).
    pub fn load(model: &Path, threads: usize, pin: Option<&[Data]>) -> Result<TractModel> {
        let mut m = tract_onnx::onnx().model_for_path(model)?;
        if let Some(inputs) = pin {
            for (ix, d) in inputs.iter().enumerate() {
                m.set_input_fact(ix, InferenceFact::dt_shape(dt(&d.dtype)?, d.shape.clone()))?;
            }
        }
        let typed = m.into_optimized()?;
        // ONNX output names survive as outlet labels; node names may not ("logits.ab", or the input's
        // name when an Identity is optimised away).
        let outputs = typed
            .output_outlets()?
            .iter()
            .map(|o| typed.outlet_label(*o).map(str::to_owned).unwrap_or_else(|| typed.node(o.node).name.clone()))
            .collect();
        let mut opts = RunOptions::default();
        if threads > 1 {
            opts.executor = Some(tract_linalg::multithread::Executor::multithread(threads));
        }
        let plan = typed.into_runnable_with_options(&opts)?;
        Ok(TractModel { plan, outputs })
    }

    pub fn describe(&self) -> String {
        let m = self.plan.model();
        let f = |o: &OutletId| {
            let name = m.outlet_label(*o).unwrap_or(&m.node(o.node).name);
            m.outlet_fact(*o).map(|f| format!("{name}:{f:?}")).unwrap_or_default()
        };
        let ins: Vec<_> = m.input_outlets().unwrap_or_default().iter().map(f).collect();
        let outs: Vec<_> = m.output_outlets().unwrap_or_default().iter().map(f).collect();
        format!("in [{}] out [{}]", ins.join(", "), outs.join(", "))
    }

    fn input(d: &Data) -> Result<TValue> {
        let b = d.bytes();
        let s = &d.shape;
        let t = match d.dtype.as_str() {
            "FP32" => Tensor::from_shape(s, bytemuck::try_cast_slice::<u8, f32>(b)?)?,
            "FP16" => Tensor::from_shape(s, bytemuck::try_cast_slice::<u8, half::f16>(b)?)?,
            "INT32" => Tensor::from_shape(s, bytemuck::try_cast_slice::<u8, i32>(b)?)?,
            "INT8" => Tensor::from_shape(s, bytemuck::try_cast_slice::<u8, i8>(b)?)?,
            "BOOL" => Tensor::from_shape(s, &b.iter().map(|&x| x != 0).collect::<Vec<bool>>())?,
            "BYTES" => tract_ndarray::ArrayD::from_shape_vec(s.clone(), d.strings.clone().unwrap_or_default())?.into_tensor(),
            other => bail!("dtype {other} not wired"),
        };
        Ok(t.into_tvalue())
    }

    fn output(name: &str, t: &Tensor) -> Result<Data> {
        let shape = t.shape().to_vec();
        let dts = match t.datum_type() {
            DatumType::String => {
                let v = t.to_plain_array_view::<String>()?.iter().cloned().collect();
                return Ok(Data::from_strings(name, shape, v));
            }
            DatumType::F32 => "FP32",
            DatumType::F16 => "FP16",
            DatumType::I32 => "INT32",
            DatumType::I8 => "INT8",
            DatumType::Bool => "BOOL",
            other => bail!("output type {other:?} not wired"),
        };
        Ok(Data::from_bytes(name, dts, shape, t.as_bytes()))
    }

    pub fn run(&self, inputs: &[Data]) -> Result<Vec<Data>> {
        let feeds = inputs.iter().map(Self::input).collect::<Result<TVec<_>>>()?;
        let out = self.plan.run(feeds)?; // &self: a plan is shareable (Arc), state is per call
        out.iter().zip(&self.outputs).map(|(t, n)| Self::output(n, t)).collect()
    }
}

fn dt(s: &str) -> Result<DatumType> {
    Ok(match s {
        "FP32" => DatumType::F32,
        "FP16" => DatumType::F16,
        "INT32" => DatumType::I32,
        "INT8" => DatumType::I8,
        "BOOL" => DatumType::Bool,
        "BYTES" => DatumType::String,
        other => bail!("dtype {other}"),
    })
}
