//! In-process benchmark of ferroserve's runtime (`bench/runtime.sh`): no HTTP, no load
//! generator, so both cores go to the runtime and the callers.
//!
//! 1. **Router overhead**: the built-in `Identity` through `Handle::infer` next to the same
//!    `Identity.predict` called directly, one call at a time; then the handle at 16 callers.
//! 2. **CPU-bound model** (~5 ms of computation per call) on 1 and 2 replicas, 8 callers.
//! 3. **Sleep model** (20 ms `tokio::time::sleep`) on 1, 4 and 16 replicas with
//!    `max_ongoing_requests` 5 and replicas × 5 callers.
//!
//! Callers run on a 2-worker multi-thread Tokio runtime; each replica has its own thread.
//! Progress goes to stderr, the markdown report to stdout.
//!
//! Usage: `ferroserve-bench-runtime [--quick] [--duration S] [--repeats N] [--only LIST]`, or
//! the environment variables `QUICK=1`, `DURATION`, `REPEATS`, `WARMUP`, `CALLS`, `ONLY`
//! (arguments win). `LIST` is a comma-separated subset of `router,cpu,sleep`.

mod models;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferroserve_runtime::protocol::Tensor;
use ferroserve_runtime::protocol::v2::InferRequest;
use ferroserve_runtime::{
    Controller, Deployment, Handle, Identity, Model, Payload, Prediction, ReplicaState,
    RequestContext, RuntimeMetrics,
};

use crate::models::{Cpu, Sleep};

/// Targets from the issue.
const ROUTER_OVERHEAD_P50_US: f64 = 20.0;
const CPU_SCALING_RATIO: f64 = 1.8;
const SLEEP_FRACTION_OF_IDEAL: f64 = 0.9;

const CPU_CALL: Duration = Duration::from_millis(5);
const CPU_CALLERS: usize = 8;
const CPU_REPLICAS: [usize; 2] = [1, 2];
/// Calls sent at once in the CPU burst probe: the default `max_ongoing_requests`.
const CPU_BURST: usize = 5;
const CPU_BURST_ROUNDS: usize = 5;
const SLEEP_DELAY: Duration = Duration::from_millis(20);
const SLEEP_MAX_ONGOING: usize = 5;
const SLEEP_REPLICAS: [usize; 3] = [1, 4, 16];
const IDENTITY_CALLERS: usize = 16;
/// Sequential calls are measured in blocks, alternating direct and handle, so that drift in
/// the machine's state hits both alike.
const BLOCK: usize = 10_000;

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    duration: Duration,
    repeats: usize,
    warmup: Duration,
    /// Measured sequential calls per path and repeat.
    calls: usize,
    /// Unmeasured sequential calls per path first.
    warmup_calls: usize,
    router: bool,
    cpu: bool,
    sleep: bool,
}

const USAGE: &str = "usage: ferroserve-bench-runtime [--quick] [--duration SECONDS] \
[--repeats N] [--only router,cpu,sleep]
environment: QUICK=1, DURATION (5; 1 with QUICK), REPEATS (3; 1 with QUICK), WARMUP (1),
CALLS (100000; 20000 with QUICK: sequential calls per path and repeat), ONLY";

fn parse_config() -> Result<Config> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut quick = env("QUICK").is_some_and(|v| v != "0");
    let mut duration = env("DURATION");
    let mut repeats = env("REPEATS");
    let mut only = env("ONLY");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => quick = true,
            "--duration" => duration = Some(value("--duration")?),
            "--repeats" => repeats = Some(value("--repeats")?),
            "--only" => only = Some(value("--only")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    let seconds = |name: &str, v: Option<String>, default: f64| -> Result<Duration> {
        let s = v.map_or(Ok(default), |v| {
            v.parse::<f64>().map_err(|e| format!("{name}='{v}': {e}"))
        })?;
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero() || name == "WARMUP")
            .ok_or(format!("{name} must be a positive number of seconds"))
    };
    let count = |name: &str, v: Option<String>, default: usize| -> Result<usize> {
        let n = v.map_or(Ok(default), |v| {
            v.parse::<usize>().map_err(|e| format!("{name}='{v}': {e}"))
        })?;
        if n == 0 {
            return Err(format!("{name} must be at least 1"));
        }
        Ok(n)
    };
    let calls = count("CALLS", env("CALLS"), if quick { 20_000 } else { 100_000 })?;
    let (mut router, mut cpu, mut sleep) = (true, true, true);
    if let Some(list) = only {
        (router, cpu, sleep) = (false, false, false);
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "router" => router = true,
                "cpu" => cpu = true,
                "sleep" => sleep = true,
                other => return Err(format!("unknown scenario '{other}' in ONLY/--only")),
            }
        }
    }
    Ok(Config {
        quick,
        duration: seconds("DURATION", duration, if quick { 1.0 } else { 5.0 })?,
        repeats: count("REPEATS", repeats, if quick { 1 } else { 3 })?,
        warmup: seconds("WARMUP", env("WARMUP"), 1.0)?,
        calls,
        warmup_calls: calls / 5,
        router,
        cpu,
        sleep,
    })
}

fn main() -> ExitCode {
    let config = match parse_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    print_header(&config);
    // Calibrate before any runtime thread exists, so nothing competes for the core.
    let calibration = config.cpu.then(|| {
        let (iters, call) = models::calibrate(CPU_CALL);
        eprintln!(
            "calibrated the CPU model: {iters} rounds, {:.2} ms per call",
            ms(call)
        );
        (iters, call)
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Everything runs in a spawned task, i.e. on a runtime worker as in a server (the future
    // given to `block_on` would run on the main thread).
    let outcome = rt.block_on(async move {
        tokio::spawn(run(config, calibration))
            .await
            .map_err(|e| format!("the benchmark task failed: {e}"))?
    });
    match outcome {
        Ok(report) => {
            print!("{}", report.render());
            if report.errors > 0 {
                eprintln!(
                    "!!! {} requests failed; their runs are not trustworthy",
                    report.errors
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

// --- machine ------------------------------------------------------------------------------------

fn print_header(config: &Config) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let model = cpu_field("model name").unwrap_or_else(|| "unknown".into());
    let smt = match (cpu_field("siblings"), cpu_field("cpu cores")) {
        (Some(s), Some(c)) if s != c => format!(", {s} threads on {c} cores (SMT)"),
        _ => String::new(),
    };
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into());
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => " (working tree has changes)",
        _ => "",
    };
    println!("# ferroserve runtime benchmark\n");
    println!("- machine: {nproc} CPUs, {model}{smt}; clocksource {clocksource}");
    println!("- load average at start: {loadavg}");
    println!("- commit: {commit}{dirty}");
    println!(
        "- runs: {} s measured after {} s warm-up, median of {} repeat(s){}; \
         {} sequential calls per path and repeat after {} warm-up calls",
        config.duration.as_secs_f64(),
        config.warmup.as_secs_f64(),
        config.repeats,
        if config.quick {
            " (QUICK: checks the pipeline, numbers not meaningful)"
        } else {
            ""
        },
        config.calls,
        config.warmup_calls,
    );
    println!("- callers: a multi-thread Tokio runtime with 2 workers; one thread per replica\n");
}

// --- measurements -------------------------------------------------------------------------------

/// A latency distribution, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    mean: f64,
}

impl Latency {
    fn of(mut ns: Vec<u64>) -> Latency {
        if ns.is_empty() {
            return Latency::default();
        }
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64;
        Latency {
            p50: at(0.50),
            p99: at(0.99),
            mean: ns.iter().sum::<u64>() as f64 / ns.len() as f64,
        }
    }

    fn median(runs: &[Latency]) -> Latency {
        Latency {
            p50: median(runs.iter().map(|l| l.p50)),
            p99: median(runs.iter().map(|l| l.p99)),
            mean: median(runs.iter().map(|l| l.mean)),
        }
    }
}

/// One closed-loop run.
#[derive(Debug, Clone, Copy, Default)]
struct Throughput {
    rps: f64,
    latency: Latency,
}

impl Throughput {
    fn median(runs: &[Throughput]) -> Throughput {
        Throughput {
            rps: median(runs.iter().map(|t| t.rps)),
            latency: Latency::median(&runs.iter().map(|t| t.latency).collect::<Vec<_>>()),
        }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Starts a controller with one deployment and waits until all its replicas run.
async fn start(deployment: Deployment, replicas: usize) -> Result<(Controller, Handle)> {
    let name = deployment.name().to_owned();
    let (controller, handle) = Controller::start(vec![deployment], RuntimeMetrics::unregistered())
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = handle.deployment_statuses();
        let running = statuses
            .iter()
            .filter(|s| s.name == name)
            .flat_map(|s| &s.replicas)
            .filter(|r| r.state == ReplicaState::Running)
            .count();
        if running == replicas {
            return Ok((controller, handle));
        }
        if Instant::now() > deadline {
            controller.shutdown().await;
            return Err(format!(
                "{name}: {running} of {replicas} replicas running after 60 s: {statuses:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `callers` tasks call `name` in a closed loop (each sends its next request as soon as the
/// previous one answered); requests that end in the `duration` after `warmup` are measured.
async fn closed_loop(
    handle: &Handle,
    name: &str,
    payload: &Payload,
    callers: usize,
    warmup: Duration,
    duration: Duration,
    errors: &mut u64,
) -> Throughput {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (handle, name, payload) = (handle.clone(), name.to_owned(), payload.clone());
            let (measuring, stop) = (measuring.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut errors = 0u64;
                let mut first_error = None;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = handle
                        .infer(&name, payload.clone(), RequestContext::default())
                        .await;
                    let ns = elapsed_ns(t);
                    if measuring.load(Ordering::Relaxed) {
                        match r {
                            Ok(_) => latencies.push(ns),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok((latencies, e, first)) => {
                all.extend(latencies);
                *errors += e;
                if let Some(first) = first {
                    eprintln!("!!! {name}: {e} failed requests, first: {first}");
                }
            }
            Err(e) => {
                *errors += 1;
                eprintln!("!!! {name}: a caller task failed: {e}");
            }
        }
    }
    Throughput {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        latency: Latency::of(all),
    }
}

/// The V2 request of the router scenario: one FP32 `[1,16]` input.
fn identity_request() -> Result<InferRequest> {
    let values: Vec<f32> = (0..16u8).map(f32::from).collect();
    let input = Tensor::from_values("input-0", vec![1, 16], &values)
        .map_err(|e| format!("cannot build the request tensor: {e}"))?;
    Ok(InferRequest {
        inputs: vec![input],
        ..InferRequest::default()
    })
}

/// How a sequential call reaches `Identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `Identity.predict` awaited in the calling task.
    Direct,
    /// A bare round trip to a current-thread runtime on another thread (unbounded mpsc there,
    /// `oneshot` back), which calls `Identity.predict` inline: the floor of any design with a
    /// thread per replica. Not part of the target; it shows how much of the overhead is the
    /// thread hop itself.
    Hop,
    /// `Handle::infer`: router, replica thread, pipeline.
    Handle,
}

const PATHS: [Path; 3] = [Path::Direct, Path::Hop, Path::Handle];

type HopMsg = (Payload, tokio::sync::oneshot::Sender<Option<Prediction>>);

/// Starts the thread for [`Path::Hop`]; it ends when the sender is dropped.
fn start_hop() -> Result<tokio::sync::mpsc::UnboundedSender<HopMsg>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<HopMsg>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    std::thread::Builder::new()
        .name("hop".into())
        .spawn(move || {
            rt.block_on(async move {
                let ctx = RequestContext::default();
                while let Some((payload, reply)) = rx.recv().await {
                    let _ = reply.send(Identity.predict(payload, &ctx).await.ok());
                }
            });
        })
        .map_err(|e| format!("cannot spawn the hop thread: {e}"))?;
    Ok(tx)
}

/// `n` sequential calls to `Identity` along `path`, each timed.
async fn sequential(
    handle: &Handle,
    hop: &tokio::sync::mpsc::UnboundedSender<HopMsg>,
    request: &InferRequest,
    n: usize,
    path: Path,
    out: &mut Vec<u64>,
    errors: &mut u64,
) {
    let ctx = RequestContext::default();
    for _ in 0..n {
        let payload = Payload::V2(request.clone());
        let t = Instant::now();
        let ok = match path {
            Path::Direct => Identity.predict(payload, &ctx).await.is_ok(),
            Path::Hop => {
                let (reply, rx) = tokio::sync::oneshot::channel();
                hop.send((payload, reply)).is_ok() && matches!(rx.await, Ok(Some(_)))
            }
            Path::Handle => handle
                .infer("identity", payload, RequestContext::default())
                .await
                .is_ok(),
        };
        let ns = elapsed_ns(t);
        if ok {
            out.push(ns);
        } else {
            *errors += 1;
        }
    }
}

// --- scenarios ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct RouterLatency {
    direct: Latency,
    hop: Latency,
    handle: Latency,
}

#[derive(Debug, Default)]
struct Report {
    /// Sequential latency along each [`Path`].
    router: Option<RouterLatency>,
    identity_c16: Option<Throughput>,
    /// Measured time of one CPU-model call, and throughput per replica count.
    cpu: Option<(Duration, Vec<(usize, Throughput)>)>,
    /// First and last reply of a burst of `max_ongoing_requests` calls on one CPU replica.
    cpu_burst: Option<(Duration, Duration)>,
    /// Mean of a lone 20 ms sleep on a current-thread runtime, and throughput per replica count.
    sleep: Option<(Duration, Vec<(usize, Throughput)>)>,
    errors: u64,
}

async fn run(config: Config, calibration: Option<(u64, Duration)>) -> Result<Report> {
    let mut report = Report::default();
    if config.router {
        router_scenario(&config, &mut report).await?;
    }
    if let Some((iters, call)) = calibration {
        let runs = replicas_scenario(
            &config,
            "cpu",
            &CPU_REPLICAS,
            |n| {
                Deployment::new("cpu", move || Cpu { iters })
                    .num_replicas(n)
                    .max_queued_requests(-1)
            },
            |_| CPU_CALLERS,
            &mut report.errors,
        )
        .await?;
        report.cpu = Some((call, runs));
        report.cpu_burst = Some(cpu_burst(iters, &mut report.errors).await?);
        if let Some((first, last)) = report.cpu_burst {
            eprintln!(
                "cpu burst of {CPU_BURST} calls on 1 replica: first reply {:.1} ms, last {:.1} ms",
                ms(first),
                ms(last)
            );
        }
    }
    if config.sleep {
        let floor = timer_floor(SLEEP_DELAY, if config.quick { 10 } else { 50 }).await?;
        eprintln!(
            "a lone {} ms tokio sleep takes {:.2} ms on average",
            ms(SLEEP_DELAY),
            ms(floor)
        );
        let runs = replicas_scenario(
            &config,
            "sleep",
            &SLEEP_REPLICAS,
            |n| {
                Deployment::new("sleep", || Sleep { delay: SLEEP_DELAY })
                    .num_replicas(n)
                    .max_ongoing_requests(SLEEP_MAX_ONGOING)
                    .max_queued_requests(-1)
            },
            |n| n * SLEEP_MAX_ONGOING,
            &mut report.errors,
        )
        .await?;
        report.sleep = Some((floor, runs));
    }
    Ok(report)
}

async fn router_scenario(config: &Config, report: &mut Report) -> Result<()> {
    let request = identity_request()?;
    let (controller, handle) = start(
        Deployment::new("identity", || Identity).max_queued_requests(-1),
        1,
    )
    .await?;
    let hop = start_hop()?;
    let mut scratch = Vec::with_capacity(config.warmup_calls);
    for path in PATHS {
        scratch.clear();
        sequential(
            &handle,
            &hop,
            &request,
            config.warmup_calls,
            path,
            &mut scratch,
            &mut report.errors,
        )
        .await;
    }
    let mut runs: [Vec<Latency>; 3] = Default::default();
    for r in 0..config.repeats {
        let mut samples: [Vec<u64>; 3] = std::array::from_fn(|_| Vec::with_capacity(config.calls));
        let mut left = config.calls;
        let mut block_no = 0;
        while left > 0 {
            let n = left.min(BLOCK);
            // The paths take turns in blocks, the first one rotating every block, so that
            // drift in the machine's state hits all alike.
            for k in 0..PATHS.len() {
                let i = (block_no + k) % PATHS.len();
                sequential(
                    &handle,
                    &hop,
                    &request,
                    n,
                    PATHS[i],
                    &mut samples[i],
                    &mut report.errors,
                )
                .await;
            }
            left -= n;
            block_no += 1;
        }
        let [d, h, t] = samples.map(Latency::of);
        eprintln!(
            "router repeat {}/{}: p50 direct {:.2} µs, bare hop {:.2} µs, handle {:.2} µs; \
             p99 direct {:.2} µs, bare hop {:.2} µs, handle {:.2} µs",
            r + 1,
            config.repeats,
            d.p50 / 1e3,
            h.p50 / 1e3,
            t.p50 / 1e3,
            d.p99 / 1e3,
            h.p99 / 1e3,
            t.p99 / 1e3,
        );
        for (run, l) in runs.iter_mut().zip([d, h, t]) {
            run.push(l);
        }
    }
    drop(hop);
    let [d, h, t] = runs.map(|r| Latency::median(&r));
    report.router = Some(RouterLatency {
        direct: d,
        hop: h,
        handle: t,
    });

    let payload = Payload::V2(request);
    let mut runs = Vec::new();
    for r in 0..config.repeats {
        let t = closed_loop(
            &handle,
            "identity",
            &payload,
            IDENTITY_CALLERS,
            config.warmup,
            config.duration,
            &mut report.errors,
        )
        .await;
        eprintln!(
            "identity c={IDENTITY_CALLERS} repeat {}/{}: {:.0} req/s, p50 {:.1} µs",
            r + 1,
            config.repeats,
            t.rps,
            t.latency.p50 / 1e3
        );
        runs.push(t);
    }
    report.identity_c16 = Some(Throughput::median(&runs));
    controller.shutdown().await;
    Ok(())
}

/// For each repeat, each replica count in turn (order flipped every repeat): a fresh
/// controller, a closed loop of `callers(n)` tasks, shutdown.
async fn replicas_scenario(
    config: &Config,
    name: &str,
    replica_counts: &[usize],
    deployment: impl Fn(usize) -> Deployment,
    callers: impl Fn(usize) -> usize,
    errors: &mut u64,
) -> Result<Vec<(usize, Throughput)>> {
    let payload = Payload::V1(serde_json::json!({ "instances": [[1.0]] }));
    let mut runs: Vec<Vec<Throughput>> = vec![Vec::new(); replica_counts.len()];
    for r in 0..config.repeats {
        let mut order: Vec<usize> = (0..replica_counts.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let n = replica_counts[i];
            let (controller, handle) = start(deployment(n), n).await?;
            let t = closed_loop(
                &handle,
                name,
                &payload,
                callers(n),
                config.warmup,
                config.duration,
                errors,
            )
            .await;
            controller.shutdown().await;
            eprintln!(
                "{name} repeat {}/{} replicas={n} callers={}: {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms",
                r + 1,
                config.repeats,
                callers(n),
                t.rps,
                t.latency.p50 / 1e6,
                t.latency.p99 / 1e6
            );
            runs[i].push(t);
        }
    }
    Ok(replica_counts
        .iter()
        .zip(&runs)
        .map(|(&n, r)| (n, Throughput::median(r)))
        .collect())
}

/// Sends `CPU_BURST` (= the default `max_ongoing_requests`) calls at once to one CPU replica,
/// a few times, and returns the median time of the first and of the last reply. The replica
/// computes them one after the other, so the first could answer after one call time.
async fn cpu_burst(iters: u64, errors: &mut u64) -> Result<(Duration, Duration)> {
    let (controller, handle) = start(
        Deployment::new("cpu", move || Cpu { iters }).max_queued_requests(-1),
        1,
    )
    .await?;
    let (mut firsts, mut lasts) = (Vec::new(), Vec::new());
    for _ in 0..CPU_BURST_ROUNDS {
        let t0 = Instant::now();
        let calls: Vec<_> = (0..CPU_BURST)
            .map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let payload = Payload::V1(serde_json::json!({ "instances": [[1.0]] }));
                    let r = handle
                        .infer("cpu", payload, RequestContext::default())
                        .await;
                    (r.is_ok(), t0.elapsed())
                })
            })
            .collect();
        let mut done = Vec::new();
        for c in calls {
            match c.await {
                Ok((true, t)) => done.push(t),
                _ => *errors += 1,
            }
        }
        done.sort();
        if let (Some(first), Some(last)) = (done.first(), done.last()) {
            firsts.push(ms(*first));
            lasts.push(ms(*last));
        }
    }
    controller.shutdown().await;
    let med = |v: Vec<f64>| Duration::from_secs_f64(median(v.into_iter()).max(0.0) / 1e3);
    Ok((med(firsts), med(lasts)))
}

/// The mean duration of `tokio::time::sleep(delay)` alone on a current-thread runtime (as a
/// replica's): the best a sleep replica can do, timer granularity included.
async fn timer_floor(delay: Duration, samples: u32) -> Result<Duration> {
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        Ok(rt.block_on(async {
            let t = Instant::now();
            for _ in 0..samples {
                tokio::time::sleep(delay).await;
            }
            t.elapsed() / samples
        }))
    })
    .await
    .map_err(|e| format!("the timer probe failed: {e}"))?
}

// --- report -------------------------------------------------------------------------------------

fn verdict(ok: bool) -> &'static str {
    if ok { "yes" } else { "**NO**" }
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("| measurement | result | target | met |".into());
        line("|---|---|---|---|".into());
        if let Some(RouterLatency {
            direct,
            hop,
            handle,
        }) = &self.router
        {
            let us = |ns: f64| ns / 1e3;
            let row = |what: &str, l: &Latency| {
                format!(
                    "| {what}, c=1: p50 / p99 / mean | {:.2} / {:.2} / {:.2} µs | | |",
                    us(l.p50),
                    us(l.p99),
                    us(l.mean)
                )
            };
            line(row("identity, direct `Identity.predict`", direct));
            line(row("identity through `Handle::infer`, 1 replica", handle));
            let added = us(handle.p50 - direct.p50);
            line(format!(
                "| **router overhead** (handle − direct) at p50 / p99 | {added:.2} / {:.2} µs | < {ROUTER_OVERHEAD_P50_US} µs at p50 | {} |",
                us(handle.p99 - direct.p99),
                verdict(added < ROUTER_OVERHEAD_P50_US)
            ));
            // identity never blocks, so its replica runs on the caller's runtime; a model that
            // may block runs on a thread of its own and adds this round trip.
            line(row(
                "reference: the round trip a threaded replica (a model whose `may_block()` is true) adds: mpsc + oneshot to a current-thread runtime on another thread",
                hop,
            ));
        }
        if let Some(t) = &self.identity_c16 {
            line(format!(
                "| identity through `Handle::infer`, 1 replica (max_ongoing 5), c={IDENTITY_CALLERS}: throughput (p50 / p99) | {:.0} req/s ({:.1} / {:.1} µs) | | |",
                t.rps,
                t.latency.p50 / 1e3,
                t.latency.p99 / 1e3
            ));
        }
        if let Some((call, runs)) = &self.cpu {
            for (n, t) in runs {
                let ideal = *n as f64 / call.as_secs_f64();
                line(format!(
                    "| CPU model ({:.2} ms/call), {n} replica(s), c={CPU_CALLERS}: throughput (p50 / p99 / mean) | {:.1} req/s = {:.2} × {n} / call time ({:.1} / {:.1} / {:.1} ms) | | |",
                    ms(*call),
                    t.rps,
                    t.rps / ideal,
                    t.latency.p50 / 1e6,
                    t.latency.p99 / 1e6,
                    t.latency.mean / 1e6
                ));
            }
            if let (Some((1, one)), Some((2, two))) = (runs.first(), runs.get(1)) {
                let ratio = two.rps / one.rps;
                line(format!(
                    "| **CPU scaling**: 2 replicas / 1 replica | {ratio:.2} | ≥ {CPU_SCALING_RATIO} | {} |",
                    verdict(ratio >= CPU_SCALING_RATIO)
                ));
            }
            if let Some((first, last)) = self.cpu_burst {
                line(format!(
                    "| reference: {CPU_BURST} calls at once on 1 CPU replica: first / last reply (the first could come after one call time, {:.1} ms) | {:.1} / {:.1} ms | | |",
                    ms(*call),
                    ms(first),
                    ms(last)
                ));
            }
        }
        if let Some((floor, runs)) = &self.sleep {
            line(format!(
                "| a lone `sleep({} ms)` on a current-thread runtime (timer floor) | {:.2} ms | | |",
                ms(SLEEP_DELAY),
                ms(*floor)
            ));
            for (n, t) in runs {
                let callers = n * SLEEP_MAX_ONGOING;
                let ideal = callers as f64 / SLEEP_DELAY.as_secs_f64();
                let at_floor = callers as f64 / floor.as_secs_f64();
                let ratio = t.rps / ideal;
                line(format!(
                    "| **sleep model**, {n} replica(s) × max_ongoing {SLEEP_MAX_ONGOING}, c={callers}: throughput / ideal {ideal:.0} req/s (p50 / p99 / mean; {:.2} of the timer floor) | {:.1} req/s = **{ratio:.3}** ({:.2} / {:.2} / {:.2} ms) | ≥ {SLEEP_FRACTION_OF_IDEAL} | {} |",
                    t.rps / at_floor,
                    t.rps,
                    t.latency.p50 / 1e6,
                    t.latency.p99 / 1e6,
                    t.latency.mean / 1e6,
                    verdict(ratio >= SLEEP_FRACTION_OF_IDEAL)
                ));
            }
        }
        if self.errors > 0 {
            line(format!(
                "\n!!! {} requests failed; see stderr.",
                self.errors
            ));
        }
        out
    }
}
