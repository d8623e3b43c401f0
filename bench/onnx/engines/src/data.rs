//! The manifest prepare.py writes, and tensors as (dtype, shape, bytes-or-strings).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub kind: String,
    pub name: String,
    pub model: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub file: Option<String>,
    pub strings: Option<Vec<String>>,
}

/// A tensor as a server holds it: protocol dtype, shape, and either raw little-endian bytes
/// (kept in a u64 buffer so they are aligned for any element type) or strings.
#[derive(Debug, Clone)]
pub struct Data {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    words: Vec<u64>,
    len: usize,
    pub strings: Option<Vec<String>>,
}

impl Data {
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    pub fn from_bytes(name: &str, dtype: &str, shape: Vec<usize>, bytes: &[u8]) -> Data {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Data { name: name.into(), dtype: dtype.into(), shape, words, len: bytes.len(), strings: None }
    }

    pub fn from_strings(name: &str, shape: Vec<usize>, strings: Vec<String>) -> Data {
        Data { name: name.into(), dtype: "BYTES".into(), shape, words: vec![], len: 0, strings: Some(strings) }
    }

    pub fn load(spec: &TensorSpec) -> Result<Data> {
        if let Some(s) = &spec.strings {
            return Ok(Data::from_strings(&spec.name, spec.shape.clone(), s.clone()));
        }
        let file = spec.file.as_deref().context("tensor without file or strings")?;
        let bytes = std::fs::read(Path::new(file)).with_context(|| format!("reading {file}"))?;
        Ok(Data::from_bytes(&spec.name, &spec.dtype, spec.shape.clone(), &bytes))
    }

    /// Max abs difference against `want`, or an error when they differ in kind/shape/values.
    pub fn compare(&self, want: &Data, tol: f64) -> Result<f64> {
        if self.shape != want.shape {
            bail!("{}: shape {:?}, expected {:?}", want.name, self.shape, want.shape);
        }
        if self.dtype != want.dtype {
            bail!("{}: dtype {}, expected {}", want.name, self.dtype, want.dtype);
        }
        if let Some(w) = &want.strings {
            if self.strings.as_ref() != Some(w) {
                bail!("{}: strings {:?}, expected {:?}", want.name, self.strings, w);
            }
            return Ok(0.0);
        }
        let (got, exp): (Vec<f64>, Vec<f64>) = match self.dtype.as_str() {
            "FP32" => (f(self.bytes(), |b: &[f32]| b.iter().map(|&x| x as f64).collect()), f(want.bytes(), |b: &[f32]| b.iter().map(|&x| x as f64).collect())),
            "FP16" => (f(self.bytes(), |b: &[half::f16]| b.iter().map(|x| x.to_f64()).collect()), f(want.bytes(), |b: &[half::f16]| b.iter().map(|x| x.to_f64()).collect())),
            "INT32" => (f(self.bytes(), |b: &[i32]| b.iter().map(|&x| x as f64).collect()), f(want.bytes(), |b: &[i32]| b.iter().map(|&x| x as f64).collect())),
            "INT8" | "BOOL" => (self.bytes().iter().map(|&x| x as i8 as f64).collect(), want.bytes().iter().map(|&x| x as i8 as f64).collect()),
            other => bail!("compare: dtype {other} not handled"),
        };
        let mut worst = 0.0f64;
        for (g, e) in got.iter().zip(&exp) {
            let d = (g - e).abs();
            if d > tol * (1.0 + e.abs()) || d.is_nan() {
                bail!("{}: {g} vs expected {e} (|d|={d:e})", want.name);
            }
            worst = worst.max(d);
        }
        Ok(worst)
    }
}

fn f<T: bytemuck::Pod>(bytes: &[u8], g: impl Fn(&[T]) -> Vec<f64>) -> Vec<f64> {
    g(&bytemuck::pod_collect_to_vec::<u8, T>(bytes))
}
