//! The `worker_frame` fuzz target's corpus and regressions as tests (see
//! `fuzz/harness/corpus.rs`); the seeds, frames from a worker, are built here.

#[path = "../../../fuzz/harness/worker_frame.rs"]
mod harness;

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;

/// One frame: `u32 LE header length | u64 LE payload length | header | payload`.
fn frame(header: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Two FP32 elements, then one BYTES element `abc`.
fn result_payload() -> Vec<u8> {
    [
        &1.5f32.to_le_bytes()[..],
        &(-2f32).to_le_bytes(),
        &3u32.to_le_bytes(),
        b"abc",
    ]
    .concat()
}

const RESULT: &str = r#"{"type":"result","id":1,"response":{"model_name":"m","id":"a","parameters":{"p":1},"outputs":[
    {"name":"y","datatype":"FP32","shape":[2],"offset":0,"length":8},
    {"name":"s","datatype":"BYTES","shape":[1],"offset":8,"length":7,"parameters":{"binary_data":true}}]}}"#;

/// A call to another deployment, with the same tensors as `RESULT` as its inputs.
const CALL: &str = r#"{"type":"call","id":7,"target":"other","protocol":"v2","parent":1,"request":{"id":"c","inputs":[
    {"name":"y","datatype":"FP32","shape":[2],"offset":0,"length":8},
    {"name":"s","datatype":"BYTES","shape":[1],"offset":8,"length":7}],"outputs":[{"name":"z"}]}}"#;

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ready = frame(
        r#"{"type":"ready","info":{"platform":"python","inputs":[{"name":"x","datatype":"FP32","shape":[-1,2]}],"outputs":[]}}"#,
        b"",
    );
    let result = frame(RESULT, &result_payload());
    let health = frame(r#"{"type":"health","id":3,"ok":true}"#, b"");
    let mut cut = result.clone();
    cut.truncate(cut.len() - 2);
    let mut too_large = frame(r#"{"type":"health","id":3,"ok":true}"#, b"");
    too_large[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    vec![
        ("valid-ready", ready.clone()),
        ("valid-result-v2", result.clone()),
        (
            "valid-result-v1",
            frame(
                r#"{"type":"result","id":2,"body":{"predictions":[1,2]}}"#,
                b"",
            ),
        ),
        (
            "valid-error",
            frame(
                r#"{"type":"error","id":4,"kind":"invalid_input","message":"ValueError : no"}"#,
                b"",
            ),
        ),
        ("valid-health", health.clone()),
        (
            "valid-reconfigured",
            frame(r#"{"type":"reconfigured","id":5,"error":null}"#, b""),
        ),
        (
            "valid-load-failed",
            frame(r#"{"type":"load_failed","error":"Traceback ..."}"#, b""),
        ),
        (
            "valid-several-frames",
            [ready, result.clone(), health.clone()].concat(),
        ),
        ("valid-call-v2", frame(CALL, &result_payload())),
        (
            "valid-call-v1",
            frame(
                r#"{"type":"call","id":8,"target":"other","protocol":"v1","body":{"instances":[[1,2]]}}"#,
                b"",
            ),
        ),
        (
            "broken-call-outside-payload",
            frame(
                &CALL.replace(r#""length":7"#, r#""length":8"#),
                &result_payload(),
            ),
        ),
        ("broken-cut-payload", cut),
        ("broken-cut-prefix", [&health[..], &health[..5]].concat()),
        ("broken-too-large", too_large),
        ("broken-not-json", frame("{\"type\":", b"")),
        (
            "broken-unknown-type",
            frame(r#"{"type":"hello","id":1}"#, b""),
        ),
        (
            "broken-outside-payload",
            frame(
                &RESULT.replace(r#""offset":8"#, r#""offset":9"#),
                &result_payload(),
            ),
        ),
        (
            "broken-shape-mismatch",
            frame(
                &RESULT.replace(r#""shape":[2]"#, r#""shape":[3]"#),
                &result_payload(),
            ),
        ),
        (
            "broken-offset-overflow",
            frame(
                &RESULT.replace(r#""offset":8"#, r#""offset":18446744073709551615"#),
                &result_payload(),
            ),
        ),
    ]
}

#[test]
fn corpus_and_regressions_never_panic() {
    corpus::check_corpus("worker_frame", &seeds(), harness::check);
}

/// Regression, found while writing the `worker_frame` target: `read_frame` allocated the
/// header and payload lengths a frame declares (up to 64 MiB and 16 GiB) before reading them,
/// so the 14 bytes of `fuzz/regressions/worker_frame/oom-payload-16gib` made it allocate 16 GiB.
/// Where that much cannot be had (strict overcommit, `ulimit -v`, less RAM + swap than that),
/// the allocation failed and ferroserve aborted, where a broken frame should only end the
/// worker. The test reads that frame in a child process limited to 4 GiB of address space:
/// the reader grows its buffers with the bytes received, so the cut-off frame is an error.
#[test]
fn read_frame_allocates_only_what_it_receives() {
    const NAME: &str = "read_frame_allocates_only_what_it_receives";
    let input = include_bytes!("../../../fuzz/regressions/worker_frame/oom-payload-16gib");
    if std::env::var_os("FERROSERVE_READ_FRAME_CHILD").is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let read = runtime.block_on(ferroserve_python::frame::read_frame(&mut &input[..]));
        assert!(read.is_err(), "a cut-off frame is an error");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 4194304 && exec "$0" --ignored --exact "$1" --test-threads=1"#)
        .arg(exe)
        .arg(NAME)
        .env("FERROSERVE_READ_FRAME_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reading a 14-byte frame that declares a 16 GiB payload failed within 4 GiB of address \
         space ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
