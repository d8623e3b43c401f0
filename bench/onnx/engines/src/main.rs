//! Benchmarks candidate ONNX engines for ferroserve's ONNX backend. See ../README.md.
//!
//!   engines-bench --data /tmp/engines/data [--ort-lib PATH] [--secs 3] [--engines ort,tract,tract-fixed]
//!                 [--check-only] [--threads 1,2] [--batches 1,16]
//!
//! Prints one TSV line per measurement: `bench engine model threads batch median_us calls`,
//! and `check engine case OK|FAIL detail` lines for the correctness/support checks.
#![forbid(unsafe_code)]

mod data;
#[cfg(feature = "ort")]
mod ort_engine;
#[cfg(feature = "tract")]
mod tract_engine;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use data::{Case, Data, Manifest};

const TOL: f64 = 1e-5;

enum Model {
    #[cfg(feature = "ort")]
    Ort(ort_engine::OrtModel),
    #[cfg(feature = "tract")]
    Tract(tract_engine::TractModel),
}

impl Model {
    fn run(&mut self, inputs: &[Data]) -> Result<Vec<Data>> {
        match self {
            #[cfg(feature = "ort")]
            Model::Ort(m) => m.run(inputs),
            #[cfg(feature = "tract")]
            Model::Tract(m) => m.run(inputs),
        }
    }
    fn describe(&self) -> String {
        match self {
            #[cfg(feature = "ort")]
            Model::Ort(m) => m.describe(),
            #[cfg(feature = "tract")]
            Model::Tract(m) => m.describe(),
        }
    }
}

struct Engines {
    #[cfg(feature = "ort")]
    env: Option<ort::environment::Environment>,
}

impl Engines {
    fn load(&self, engine: &str, model: &Path, threads: usize, inputs: &[Data]) -> Result<Model> {
        let _ = (model, threads, inputs);
        match engine {
            #[cfg(feature = "ort")]
            "ort" => Ok(Model::Ort(ort_engine::OrtModel::load(
                self.env.as_ref().context("no --ort-lib")?,
                model,
                threads,
            )?)),
            #[cfg(feature = "tract")]
            "tract" => Ok(Model::Tract(tract_engine::TractModel::load(model, threads, None)?)),
            #[cfg(feature = "tract")]
            "tract-fixed" => Ok(Model::Tract(tract_engine::TractModel::load(model, threads, Some(inputs))?)),
            other => anyhow::bail!("engine {other} not built in"),
        }
    }
}

fn check(model: &mut Model, case: &Case, inputs: &[Data]) -> Result<f64> {
    let got = model.run(inputs)?;
    anyhow::ensure!(got.len() == case.outputs.len(), "{} outputs, expected {}", got.len(), case.outputs.len());
    let mut worst = 0.0f64;
    for (g, spec) in got.iter().zip(&case.outputs) {
        anyhow::ensure!(g.name == spec.name, "output named {:?}, expected {:?}", g.name, spec.name);
        worst = worst.max(g.compare(&Data::load(spec)?, TOL)?);
    }
    Ok(worst)
}

fn time(model: &mut Model, inputs: &[Data], secs: f64) -> Result<(f64, usize)> {
    let warm = Instant::now();
    let mut n = 0;
    while n < 5 || (warm.elapsed() < Duration::from_secs_f64(0.5) && n < 200) {
        model.run(inputs)?;
        n += 1;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs_f64(secs) || samples.len() < 10 {
        let t = Instant::now();
        let out = model.run(inputs)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(out);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok((samples[samples.len() / 2], samples.len()))
}

fn list(s: &str) -> Vec<String> {
    s.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

fn main() -> Result<()> {
    let mut data_dir = PathBuf::from("/tmp/engines/data");
    let mut ort_lib: Option<PathBuf> = None;
    let mut secs = 3.0;
    let mut engines = list("ort,tract");
    let mut threads = vec![1usize, 2];
    let mut batches = vec![1usize, 16];
    let mut check_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().context("missing value");
        match a.as_str() {
            "--data" => data_dir = v()?.into(),
            "--ort-lib" => ort_lib = Some(v()?.into()),
            "--secs" => secs = v()?.parse()?,
            "--engines" => engines = list(&v()?),
            "--threads" => threads = list(&v()?).iter().map(|x| x.parse()).collect::<Result<_, _>>()?,
            "--batches" => batches = list(&v()?).iter().map(|x| x.parse()).collect::<Result<_, _>>()?,
            "--check-only" => check_only = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(data_dir.join("manifest.json"))?)?;

    #[cfg(feature = "ort")]
    let eng = Engines {
        env: match &ort_lib {
            Some(p) => Some(ort_engine::init(p)?),
            None => None,
        },
    };
    #[cfg(not(feature = "ort"))]
    let eng = {
        let _ = &ort_lib;
        Engines {}
    };

    // Correctness and support: every case, 1 thread, both engines.
    for engine in &engines {
        for case in &manifest.cases {
            let inputs = case.inputs.iter().map(Data::load).collect::<Result<Vec<_>>>()?;
            let t = Instant::now();
            let res = eng.load(engine, Path::new(&case.model), 1, &inputs).and_then(|mut m| {
                let load_ms = t.elapsed().as_secs_f64() * 1e3;
                let desc = m.describe();
                check(&mut m, case, &inputs).map(|w| (w, load_ms, desc))
            });
            match res {
                Ok((w, load_ms, desc)) => {
                    println!("check\t{engine}\t{}\tOK\tmax|d|={w:.2e} load={load_ms:.1}ms {desc}", case.name)
                }
                Err(e) => println!("check\t{engine}\t{}\tFAIL\t{}", case.name, format!("{e:#}").replace('\n', " | ")),
            }
        }
    }
    if check_only {
        return Ok(());
    }

    for engine in &engines {
        for case in manifest.cases.iter().filter(|c| c.kind == "bench") {
            let (model_name, batch) = case.name.rsplit_once("_b").context("bench case name")?;
            let batch: usize = batch.parse()?;
            if !batches.contains(&batch) {
                continue;
            }
            let inputs = case.inputs.iter().map(Data::load).collect::<Result<Vec<_>>>()?;
            for &n in &threads {
                let mut m = eng.load(engine, Path::new(&case.model), n, &inputs)?;
                check(&mut m, case, &inputs).with_context(|| format!("{engine} {} {n}t", case.name))?;
                let (median, calls) = time(&mut m, &inputs, secs)?;
                println!("bench\t{engine}\t{model_name}\t{n}\t{batch}\t{median:.1}\t{calls}");
            }
        }
    }
    Ok(())
}
