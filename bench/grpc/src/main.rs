//! `ferroserve-bench-grpc`: a closed-loop load generator for V2 inference that follows Triton
//! perf_analyzer's concurrency mode, over gRPC (`ModelInfer` with `raw_input_contents`) and over
//! HTTP (the binary tensor extension, or plain JSON), plus a single-thread memcpy probe.
//!
//! ```text
//! ferroserve-bench-grpc load --mode grpc|http-binary|http-json --url URL [--model identity]
//!     [--elements 16] [--concurrency 1] [--window 2] [--max-windows 10] [--stability 10]
//!     [--threads 1] [--label TEXT] [--h2-window BYTES] [--server-pid PID] [--shm true]
//! ferroserve-bench-grpc memcpy [--mib 64] [--runs 9]
//! ```
//!
//! Both print one JSON object on stdout and their progress on stderr. `load` exits with status 1
//! if any request failed (a transport error, a non-OK status, or a response whose output does not
//! have the input's size); the JSON is printed first, with the error count and the first error.
//!
//! Method (perf_analyzer's, `peers.md` §2.1): C tasks, each with its own connection (a tonic
//! channel, or a reqwest client that keeps one connection), send the same request in a closed
//! loop. Time is cut into windows; a request belongs to the window in which its response
//! completed. Windows repeat until the throughputs of the last three agree within `--stability`
//! percent (max/min), or `--max-windows` is reached (the result is then marked unstable).
//! Throughput and latency percentiles are taken over those last three windows, and so is the CPU
//! time of this process and, with `--server-pid`, of the server (from `/proc/<pid>/stat`).

mod floor;
mod shm;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferroserve_server::grpc::pb;
use ferroserve_server::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{Value, json};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

const USAGE: &str = "\
usage:
  ferroserve-bench-grpc load --mode grpc|http-binary|http-json --url URL [--model identity]
      [--elements 16] [--concurrency 1] [--window 2] [--max-windows 10] [--stability 10]
      [--threads 1] [--label TEXT] [--h2-window BYTES] [--channels N]
      [--server-pid PID] [--shm true]
  ferroserve-bench-grpc memcpy [--mib 64] [--runs 9]
  ferroserve-bench-grpc floor --port N      (a bare gRPC server echoing ModelInfer)

  --url        gRPC: http://127.0.0.1:8081; HTTP: http://127.0.0.1:8080 (the /v2/... path is added)
  --elements   N: one FP32 input named input-0 of shape [1,N]
  --window     seconds per measurement window
  --stability  the last three windows' throughputs must agree within this many percent
  --threads    tokio worker threads (1: a current-thread runtime)
  --h2-window  gRPC: the client's HTTP/2 stream and connection flow-control windows, in bytes
               (default: hyper's, 2 MiB per stream and 5 MiB per connection)
  --channels   gRPC: N connections shared by the C tasks (many streams per connection, as one
               tritonclient channel); default: one connection per task
  --server-pid the server's process: its CPU time over the measured windows is reported too
  --shm        true: input and output in system shared memory (Triton's extension; grpc or
               http-binary modes, the server started with --allow-client-shm), one object per task
";

const INPUT_NAME: &str = "input-0";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("load") => parse_load(args).and_then(run_load),
        Some("memcpy") => parse_memcpy(args).map(run_memcpy),
        Some("floor") => match (args.next().as_deref(), args.next()) {
            (Some("--port"), Some(port)) => port
                .parse()
                .map_err(|e| format!("--port {port}: {e}"))
                .and_then(floor::run),
            _ => Err("usage: ferroserve-bench-grpc floor --port N".into()),
        },
        Some("-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err("expected a subcommand: load, memcpy or floor".into()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

// --- arguments -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Grpc,
    HttpBinary,
    HttpJson,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Grpc => "grpc",
            Mode::HttpBinary => "http-binary",
            Mode::HttpJson => "http-json",
        }
    }
}

#[derive(Debug, Clone)]
struct LoadArgs {
    mode: Mode,
    url: String,
    model: String,
    elements: usize,
    concurrency: usize,
    window: Duration,
    max_windows: usize,
    stability_pct: f64,
    threads: usize,
    label: Option<String>,
    /// gRPC only: the client's HTTP/2 stream and connection windows (hyper's defaults if None).
    h2_window: Option<u32>,
    /// A process whose CPU time is sampled at every window boundary, as this one's is.
    server_pid: Option<u32>,
    /// gRPC only: this many connections shared by the tasks (task i uses connection
    /// i mod N: many streams on one connection, as tritonclient's one channel); default one
    /// connection per task.
    channels: Option<usize>,
    /// Input and output in registered system shared-memory regions, one object per task.
    shm: bool,
}

/// `--key value` pairs, in any order.
fn pairs(args: impl Iterator<Item = String>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut args = args.peekable();
    while let Some(key) = args.next() {
        let Some(name) = key.strip_prefix("--") else {
            return Err(format!("unexpected argument {key:?}"));
        };
        let value = args.next().ok_or_else(|| format!("{key} needs a value"))?;
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("--{key}: cannot parse {v:?} as a number"))
}

fn parse_load(args: impl Iterator<Item = String>) -> Result<LoadArgs, String> {
    let mut a = LoadArgs {
        mode: Mode::Grpc,
        url: String::new(),
        model: "identity".into(),
        elements: 16,
        concurrency: 1,
        window: Duration::from_secs(2),
        max_windows: 10,
        stability_pct: 10.0,
        threads: 1,
        label: None,
        h2_window: None,
        server_pid: None,
        channels: None,
        shm: false,
    };
    let mut mode = None;
    for (k, v) in pairs(args)? {
        match k.as_str() {
            "mode" => {
                mode = Some(match v.as_str() {
                    "grpc" => Mode::Grpc,
                    "http-binary" => Mode::HttpBinary,
                    "http-json" => Mode::HttpJson,
                    _ => return Err(format!("--mode: unknown mode {v:?}")),
                })
            }
            "url" => a.url = v.trim_end_matches('/').to_owned(),
            "model" => a.model = v,
            "elements" => a.elements = num(&k, &v)?,
            "concurrency" => a.concurrency = num(&k, &v)?,
            "window" => {
                let s: f64 = num(&k, &v)?;
                if !(s.is_finite() && s > 0.0) {
                    return Err("--window must be a positive number of seconds".into());
                }
                a.window = Duration::from_secs_f64(s);
            }
            "max-windows" => a.max_windows = num(&k, &v)?,
            "stability" => a.stability_pct = num(&k, &v)?,
            "threads" => a.threads = num(&k, &v)?,
            "label" => a.label = Some(v),
            "h2-window" => a.h2_window = Some(num(&k, &v)?),
            "server-pid" => a.server_pid = Some(num(&k, &v)?),
            "channels" => a.channels = Some(num(&k, &v)?),
            "shm" => {
                a.shm = v
                    .parse()
                    .map_err(|_| format!("--shm: {v:?} is not true or false"))?
            }
            _ => return Err(format!("unknown option --{k}")),
        }
    }
    a.mode = mode.ok_or("--mode is required")?;
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    if a.elements == 0 || a.concurrency == 0 || a.threads == 0 {
        return Err("--elements, --concurrency and --threads must be above 0".into());
    }
    if a.max_windows < 3 {
        return Err("--max-windows must be at least 3".into());
    }
    if a.shm && (a.mode == Mode::HttpJson || a.channels.is_some()) {
        return Err("--shm is for --mode grpc or http-binary, one connection per task".into());
    }
    if let Some(n) = a.channels {
        if n == 0 || n > a.concurrency {
            return Err("--channels must be 1 to --concurrency".into());
        }
        if !matches!(a.mode, Mode::Grpc) {
            return Err("--channels is for --mode grpc".into());
        }
    }
    Ok(a)
}

// --- requests ------------------------------------------------------------------------------------

/// The input tensor: `elements` FP32 values, little-endian.
fn tensor_values(elements: usize) -> Vec<f32> {
    (0..elements).map(|i| (i % 1000) as f32 * 0.5).collect()
}

fn tensor_bytes(values: &[f32]) -> Bytes {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Bytes::from(out)
}

/// What every task sends, built once and shared (cloning it clones `Bytes` handles only).
#[derive(Debug, Clone)]
enum Prepared {
    Grpc(pb::ModelInferRequest),
    Http {
        url: String,
        body: Bytes,
        content_type: &'static str,
        /// The JSON header's length, for `Inference-Header-Content-Length` (binary mode only).
        header_len: Option<usize>,
    },
}

fn prepare(a: &LoadArgs, values: &[f32], raw: &Bytes) -> Result<Prepared, String> {
    let n = a.elements as i64;
    Ok(match a.mode {
        Mode::Grpc => {
            let mut req = pb::ModelInferRequest {
                model_name: a.model.clone(),
                id: "bench".into(),
                ..Default::default()
            };
            req.inputs.push(pb::model_infer_request::InferInputTensor {
                name: INPUT_NAME.into(),
                datatype: "FP32".into(),
                shape: vec![1, n],
                ..Default::default()
            });
            req.raw_input_contents.push(raw.clone());
            Prepared::Grpc(req)
        }
        Mode::HttpBinary => {
            let header = json!({
                "inputs": [{
                    "name": INPUT_NAME, "shape": [1, n], "datatype": "FP32",
                    "parameters": {"binary_data_size": raw.len()},
                }],
                "parameters": {"binary_data_output": true},
            });
            let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
            let mut body = Vec::with_capacity(header.len() + raw.len());
            body.extend_from_slice(&header);
            body.extend_from_slice(raw);
            Prepared::Http {
                url: format!("{}/v2/models/{}/infer", a.url, a.model),
                body: Bytes::from(body),
                content_type: "application/octet-stream",
                header_len: Some(header.len()),
            }
        }
        Mode::HttpJson => {
            let body = json!({
                "id": "bench",
                "inputs": [{"name": INPUT_NAME, "shape": [1, n], "datatype": "FP32", "data": values}],
            });
            Prepared::Http {
                url: format!("{}/v2/models/{}/infer", a.url, a.model),
                body: Bytes::from(serde_json::to_vec(&body).map_err(|e| e.to_string())?),
                content_type: "application/json",
                header_len: None,
            }
        }
    })
}

/// One task's connection and request.
enum Conn {
    Grpc(GrpcInferenceServiceClient<Channel>, pb::ModelInferRequest),
    Http(reqwest::Client, Prepared),
    /// `--shm true` over gRPC.
    GrpcShm(
        GrpcInferenceServiceClient<Channel>,
        pb::ModelInferRequest,
        shm::TaskRegions,
    ),
    /// `--shm true` over HTTP: the URL, the JSON body.
    HttpShm(reqwest::Client, String, Bytes, shm::TaskRegions),
}

/// `conn` of task `task` moved to shared memory: its regions made and registered.
async fn with_shared_memory(
    conn: Conn,
    a: &LoadArgs,
    task: usize,
    raw: &Bytes,
) -> Result<Conn, String> {
    let regions = shm::TaskRegions::create(task, raw)?;
    match conn {
        Conn::Grpc(mut client, req) => {
            regions.register_grpc(&mut client).await?;
            let req = regions.grpc_request(req);
            Ok(Conn::GrpcShm(client, req, regions))
        }
        Conn::Http(client, _) => {
            regions.register_http(&client, &a.url).await?;
            let body = regions.http_body(a.elements);
            let url = format!("{}/v2/models/{}/infer", a.url, a.model);
            Ok(Conn::HttpShm(client, url, body, regions))
        }
        other => Ok(other),
    }
}

/// The expected output, for the checks.
#[derive(Debug)]
struct Expect {
    elements: usize,
    bytes: Bytes,
    values: Vec<f32>,
}

async fn connect(a: &LoadArgs, prepared: &Prepared) -> Result<Conn, String> {
    match prepared {
        Prepared::Grpc(req) => {
            let channel = Endpoint::from_shared(a.url.clone())
                .map_err(|e| format!("bad --url {:?}: {e}", a.url))?
                .tcp_nodelay(true)
                .initial_stream_window_size(a.h2_window)
                .initial_connection_window_size(a.h2_window)
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {}: {e:?}", a.url))?;
            let client = GrpcInferenceServiceClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20);
            Ok(Conn::Grpc(client, req.clone()))
        }
        Prepared::Http { .. } => {
            let client = reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            Ok(Conn::Http(client, prepared.clone()))
        }
    }
}

impl Conn {
    /// Sends the request once and checks the answer: OK / 200, and one output with as many
    /// bytes (or elements) as the input. With `full`, also that the output equals the input.
    async fn call(&mut self, expect: &Expect, full: bool) -> Result<(), String> {
        match self {
            Conn::Grpc(client, req) => {
                let resp = client
                    .model_infer(req.clone())
                    .await
                    .map_err(|s| format!("gRPC status {:?}: {}", s.code(), s.message()))?
                    .into_inner();
                let out = resp.outputs.first().ok_or("the response has no output")?;
                if out.datatype != "FP32" {
                    return Err(format!("output datatype {:?}, not FP32", out.datatype));
                }
                if let Some(raw) = resp.raw_output_contents.first() {
                    if raw.len() != expect.bytes.len() {
                        return Err(format!(
                            "raw output of {} bytes, the input has {}",
                            raw.len(),
                            expect.bytes.len()
                        ));
                    }
                    if full && raw != &expect.bytes {
                        return Err("the raw output differs from the input".into());
                    }
                } else {
                    let got = out
                        .contents
                        .as_ref()
                        .map(|c| c.fp32_contents.as_slice())
                        .unwrap_or_default();
                    if got.len() != expect.elements {
                        return Err(format!(
                            "output of {} FP32 values, the input has {}",
                            got.len(),
                            expect.elements
                        ));
                    }
                    if full && got != expect.values.as_slice() {
                        return Err("the output differs from the input".into());
                    }
                }
                Ok(())
            }
            Conn::Http(
                client,
                Prepared::Http {
                    url,
                    body,
                    content_type,
                    header_len,
                },
            ) => {
                let mut rb = client
                    .post(url.as_str())
                    .header("content-type", *content_type)
                    .body(body.clone());
                if let Some(h) = header_len {
                    rb = rb.header("inference-header-content-length", h.to_string());
                }
                let resp = rb.send().await.map_err(|e| format!("HTTP error: {e:?}"))?;
                let out_hlen = resp
                    .headers()
                    .get("inference-header-content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok());
                let bytes = ok_body(resp).await?;
                if header_len.is_some() {
                    check_binary(&bytes, out_hlen, expect, full)
                } else {
                    check_json(&bytes, expect, full)
                }
            }
            Conn::Http(_, Prepared::Grpc(_)) => {
                Err("an HTTP connection with a gRPC request".into())
            }
            Conn::GrpcShm(client, req, regions) => {
                let resp = client
                    .model_infer(req.clone())
                    .await
                    .map_err(|s| format!("gRPC status {:?}: {}", s.code(), s.message()))?
                    .into_inner();
                regions.check(shm::grpc_output_size(&resp), &expect.bytes, full)
            }
            Conn::HttpShm(client, url, body, regions) => {
                let resp = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| format!("HTTP error: {e:?}"))?;
                let bytes = ok_body(resp).await?;
                regions.check(shm::http_output_size(&bytes)?, &expect.bytes, full)
            }
        }
    }
}

/// The body of an answer, which must be a 200 (else an error quoting the body).
async fn ok_body(resp: reqwest::Response) -> Result<Bytes, String> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("HTTP error reading the body: {e:?}"))?;
    if status != reqwest::StatusCode::OK {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]);
        return Err(format!("HTTP {status}: {text}"));
    }
    Ok(bytes)
}

fn first_output(header: &Value) -> Result<&Value, String> {
    header
        .get("outputs")
        .and_then(|o| o.get(0))
        .ok_or_else(|| "the response has no output".to_owned())
}

fn check_binary(
    body: &Bytes,
    hlen: Option<usize>,
    expect: &Expect,
    full: bool,
) -> Result<(), String> {
    let hlen = hlen.ok_or("no Inference-Header-Content-Length in the binary response")?;
    if hlen > body.len() {
        return Err("Inference-Header-Content-Length beyond the body".into());
    }
    let header: Value = serde_json::from_slice(&body[..hlen])
        .map_err(|e| format!("the response header is not JSON: {e}"))?;
    let size = first_output(&header)?
        .pointer("/parameters/binary_data_size")
        .and_then(Value::as_u64);
    let tail = &body[hlen..];
    if size != Some(expect.bytes.len() as u64) || tail.len() != expect.bytes.len() {
        return Err(format!(
            "binary output: binary_data_size {size:?} and {} bytes after the header, the input has {}",
            tail.len(),
            expect.bytes.len()
        ));
    }
    if full && tail != expect.bytes.as_ref() {
        return Err("the binary output differs from the input".into());
    }
    Ok(())
}

fn check_json(body: &Bytes, expect: &Expect, full: bool) -> Result<(), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    let data = first_output(&v)?
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the output has no data array")?;
    if data.len() != expect.elements {
        return Err(format!(
            "output of {} values, the input has {}",
            data.len(),
            expect.elements
        ));
    }
    if full {
        let same = data
            .iter()
            .zip(&expect.values)
            .all(|(d, &e)| d.as_f64() == Some(f64::from(e)));
        if !same {
            return Err("the JSON output differs from the input".into());
        }
    }
    Ok(())
}

// --- the closed loop -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Completion time, in ns since the start of measurement.
    end_ns: u64,
    latency_ns: u64,
}

#[derive(Debug, Default)]
struct Shared {
    samples: Mutex<Vec<Sample>>,
    stop: AtomicBool,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn worker(
    mut conn: Conn,
    expect: Arc<Expect>,
    shared: Arc<Shared>,
    mut go: watch::Receiver<Option<Instant>>,
) {
    let Ok(epoch) = go.wait_for(Option::is_some).await.map(|e| *e) else {
        return;
    };
    let Some(epoch) = epoch else { return };
    while !shared.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let result = conn.call(&expect, false).await;
        let t1 = Instant::now();
        match result {
            Ok(()) => lock(&shared.samples).push(Sample {
                end_ns: t1.saturating_duration_since(epoch).as_nanos() as u64,
                latency_ns: t1.duration_since(t0).as_nanos() as u64,
            }),
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                lock(&shared.first_error).get_or_insert(e);
                // An error usually repeats at once (a refused connection): do not spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

#[derive(Debug)]
struct Window {
    count: usize,
    latencies_ns: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

fn stable(rates: &[f64], pct: f64) -> bool {
    let last = &rates[rates.len().saturating_sub(3)..];
    if last.len() < 3 {
        return false;
    }
    let max = last.iter().copied().fold(f64::MIN, f64::max);
    let min = last.iter().copied().fold(f64::MAX, f64::min);
    min > 0.0 && max <= min * (1.0 + pct / 100.0)
}

/// User + system CPU time of a process so far, in clock ticks (`/proc/<pid>/stat` fields 14
/// and 15; `USER_HZ`, 100 per second on Linux).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

const TICKS_PER_S: f64 = 100.0;

/// CPU ticks of this process and of the server, sampled together.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    client: Option<u64>,
    server: Option<u64>,
}

fn cpu_mark(server_pid: Option<u32>) -> CpuMark {
    CpuMark {
        client: cpu_ticks("self"),
        server: server_pid.and_then(|p| cpu_ticks(&p.to_string())),
    }
}

fn run_load(a: LoadArgs) -> Result<ExitCode, String> {
    let runtime = if a.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start tokio: {e}"))?;
    let (report, failed) = runtime.block_on(load(a))?;
    println!("{report}");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn load(a: LoadArgs) -> Result<(Value, bool), String> {
    let values = tensor_values(a.elements);
    let raw = tensor_bytes(&values);
    let prepared = prepare(&a, &values, &raw)?;
    let expect = Arc::new(Expect {
        elements: a.elements,
        bytes: raw.clone(),
        values,
    });
    let tensor_len = raw.len();
    let what = format!(
        "{}{} {} [1,{}] c={}",
        a.mode.name(),
        if a.shm { "+shm" } else { "" },
        a.url,
        a.elements,
        a.concurrency
    );

    // Connect every task, and check one full round trip on each, before any clock starts.
    let mut conns = Vec::with_capacity(a.concurrency);
    let connections = a.channels.unwrap_or(a.concurrency);
    for i in 0..a.concurrency {
        let mut conn = match (i < connections, conns.get(i % connections)) {
            (false, Some(Conn::Grpc(client, req))) => Conn::Grpc(client.clone(), req.clone()),
            _ => connect(&a, &prepared).await?,
        };
        if a.shm {
            conn = with_shared_memory(conn, &a, i, &raw).await?;
        }
        conn.call(&expect, true)
            .await
            .map_err(|e| format!("{what}: the first request of task {i} failed: {e}"))?;
        conns.push(conn);
    }

    let shared = Arc::new(Shared::default());
    let (go_tx, go_rx) = watch::channel(None);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(worker(c, expect.clone(), shared.clone(), go_rx.clone())))
        .collect();
    let epoch = Instant::now();
    let mut marks = vec![cpu_mark(a.server_pid)];
    let _ = go_tx.send(Some(epoch));

    let mut windows: Vec<Window> = Vec::new();
    let mut rates: Vec<f64> = Vec::new();
    let mut pending: Vec<Sample> = Vec::new();
    let secs = a.window.as_secs_f64();
    while windows.len() < a.max_windows {
        let k = windows.len() as u32 + 1;
        let end = a.window * k;
        tokio::time::sleep_until((epoch + end).into()).await;
        marks.push(cpu_mark(a.server_pid));
        pending.append(&mut lock(&shared.samples));
        let end_ns = end.as_nanos() as u64;
        let (inside, rest): (Vec<Sample>, Vec<Sample>) =
            pending.into_iter().partition(|s| s.end_ns < end_ns);
        pending = rest;
        let rate = inside.len() as f64 / secs;
        eprintln!(
            "  {what}: window {k}: {rate:.0} req/s{}",
            match shared.errors.load(Ordering::Relaxed) {
                0 => String::new(),
                n => format!(", {n} errors"),
            }
        );
        rates.push(rate);
        windows.push(Window {
            count: inside.len(),
            latencies_ns: inside.iter().map(|s| s.latency_ns).collect(),
        });
        if shared.errors.load(Ordering::Relaxed) > 0 || stable(&rates, a.stability_pct) {
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .is_err()
        {
            let mut e = lock(&shared.first_error);
            e.get_or_insert_with(|| "a request did not finish within 60 s of the end".into());
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    let is_stable = stable(&rates, a.stability_pct);
    let last = &windows[windows.len().saturating_sub(3)..];
    let count: usize = last.iter().map(|w| w.count).sum();
    let mut lat: Vec<u64> = last
        .iter()
        .flat_map(|w| w.latencies_ns.iter().copied())
        .collect();
    lat.sort_unstable();
    let rps = count as f64 / (secs * last.len() as f64);
    let mean_ns = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().map(|&l| l as f64).sum::<f64>() / lat.len() as f64
    };
    let us = |ns: f64| (ns / 1e3 * 10.0).round() / 10.0;
    // CPU over the same windows: cores busy, and ms per measured request.
    let (m0, m1) = (marks[marks.len() - 1 - last.len()], marks[marks.len() - 1]);
    let cpu = |t0: Option<u64>, t1: Option<u64>| -> Value {
        match (t0, t1) {
            (Some(t0), Some(t1)) => {
                let s = t1.saturating_sub(t0) as f64 / TICKS_PER_S;
                json!({
                    "cores": s / (secs * last.len() as f64),
                    "ms_per_request": if count > 0 { s * 1e3 / count as f64 } else { f64::NAN },
                })
            }
            _ => Value::Null,
        }
    };
    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = lock(&shared.first_error).clone();
    let total: usize = windows.iter().map(|w| w.count).sum();
    if !is_stable && errors == 0 {
        eprintln!(
            "  {what}: !!! not stable within {}% after {} windows; reporting the last three",
            a.stability_pct,
            windows.len()
        );
    }
    if let Some(e) = &first_error {
        eprintln!("  {what}: !!! {errors} errors; the first: {e}");
    }
    let report = json!({
        "label": a.label,
        "mode": a.mode.name(),
        "shm": a.shm,
        "url": a.url,
        "model": a.model,
        "shape": [1, a.elements],
        "datatype": "FP32",
        "tensor_bytes": tensor_len,
        "concurrency": a.concurrency,
        "threads": a.threads,
        "h2_window": a.h2_window,
        "channels": a.channels,
        "window_s": secs,
        "max_windows": a.max_windows,
        "stability_pct": a.stability_pct,
        "windows": windows.len(),
        "window_rps": rates,
        "stable": is_stable,
        "measured_requests": count,
        "total_requests": total,
        "throughput_rps": rps,
        "payload_mb_s": rps * tensor_len as f64 / 1e6,
        "latency_us": {
            "mean": us(mean_ns),
            "p50": us(percentile(&lat, 50.0)),
            "p95": us(percentile(&lat, 95.0)),
            "p99": us(percentile(&lat, 99.0)),
            "max": us(lat.last().map_or(f64::NAN, |&l| l as f64)),
        },
        "client_cpu": cpu(m0.client, m1.client),
        "server_pid": a.server_pid,
        "server_cpu": cpu(m0.server, m1.server),
        "errors": errors,
        "first_error": first_error,
    });
    Ok((report, errors > 0))
}

// --- memcpy --------------------------------------------------------------------------------------

#[derive(Debug)]
struct MemcpyArgs {
    mib: usize,
    runs: usize,
}

fn parse_memcpy(args: impl Iterator<Item = String>) -> Result<MemcpyArgs, String> {
    let mut a = MemcpyArgs { mib: 64, runs: 9 };
    for (k, v) in pairs(args)? {
        match k.as_str() {
            "mib" => a.mib = num(&k, &v)?,
            "runs" => a.runs = num(&k, &v)?,
            _ => return Err(format!("unknown option --{k}")),
        }
    }
    if a.mib == 0 || a.runs == 0 {
        return Err("--mib and --runs must be above 0".into());
    }
    Ok(a)
}

/// Copies a buffer of `mib` MiB into another with `copy_from_slice`, several times per run, and
/// prints the median rate over the runs: bytes copied (each counted once) per second, in GB/s.
fn run_memcpy(a: MemcpyArgs) -> ExitCode {
    let n = a.mib << 20;
    // Non-zero fills, so that every page is really allocated before timing.
    let src = vec![0x5au8; n];
    let mut dst = vec![0xa5u8; n];
    dst.copy_from_slice(&src);
    // About 1 GiB per run.
    let reps = (1024 / a.mib).max(1);
    let mut rates = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let t = Instant::now();
        for _ in 0..reps {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        let dt = t.elapsed().as_secs_f64();
        rates.push((n * reps) as f64 / dt / 1e9);
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "  memcpy {} MiB x {reps}, {} runs: median {median:.2} GB/s",
        a.mib, a.runs
    );
    println!(
        "{}",
        json!({"buffer_mib": a.mib, "copies_per_run": reps, "runs_gb_s": rates, "gb_s": median})
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7], 95.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_ticks("self").is_some());
        assert!(cpu_ticks("0").is_none());
    }

    #[test]
    fn stability_needs_three_close_windows() {
        assert!(!stable(&[100.0, 100.0], 10.0));
        assert!(stable(&[10.0, 100.0, 105.0, 109.0], 10.0));
        assert!(!stable(&[100.0, 105.0, 111.0], 10.0));
        assert!(!stable(&[0.0, 0.0, 0.0], 10.0));
    }

    #[test]
    fn binary_request_layout() {
        let a = parse_load(
            [
                "--mode",
                "http-binary",
                "--url",
                "http://h:1/",
                "--elements",
                "4",
            ]
            .map(String::from)
            .into_iter(),
        )
        .unwrap();
        let values = tensor_values(4);
        let raw = tensor_bytes(&values);
        let Prepared::Http {
            url,
            body,
            header_len: Some(h),
            ..
        } = prepare(&a, &values, &raw).unwrap()
        else {
            panic!("not an HTTP request");
        };
        assert_eq!(url, "http://h:1/v2/models/identity/infer");
        assert_eq!(&body[h..], raw.as_ref());
        let header: Value = serde_json::from_slice(&body[..h]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(header["parameters"]["binary_data_output"], true);
        let expect = Expect {
            elements: 4,
            bytes: raw.clone(),
            values,
        };
        // The server's answer has the same layout: header, then the output's bytes.
        let answer = serde_json::to_vec(&json!({"outputs": [{"name": "input-0",
            "parameters": {"binary_data_size": 16}}]}))
        .unwrap();
        let hl = answer.len();
        let full = Bytes::from([answer, raw.to_vec()].concat());
        check_binary(&full, Some(hl), &expect, true).unwrap();
        assert!(check_binary(&full.slice(..full.len() - 1), Some(hl), &expect, false).is_err());
    }
}
