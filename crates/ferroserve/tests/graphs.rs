//! Inference graphs from the config file (KServe's InferenceGraph), through the binary.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

fn python(name: &str, class: &str) -> String {
    python_deployment(name, "compose.py", class, "    exposed: false\n")
}

const GRAPHS: &str = r#"graphs:
  - name: seq
    nodes:
      root:
        routerType: Sequence
        steps:
          - {serviceName: a}
          - {nodeName: tail}
          - {serviceName: c, data: $request}
      tail:
        routerType: Sequence
        steps:
          - {serviceName: b}
  - name: seq-response
    nodes:
      root:
        routerType: Sequence
        steps:
          - {serviceName: a}
          - {nodeName: tail}
      tail:
        routerType: Sequence
        steps:
          - {serviceName: b}
  - name: switch
    nodes:
      root:
        routerType: Switch
        steps:
          - {serviceName: a, condition: "instances.#(age>30)"}
          - {serviceName: b, condition: "instances.#(age<=30)"}
  - name: ensemble
    nodes:
      root:
        routerType: Ensemble
        steps:
          - {name: first, serviceName: a}
          - {name: second, serviceName: b}
          - {name: optional, serviceName: broken, dependency: Soft}
  - name: split
    nodes:
      root:
        routerType: Splitter
        steps:
          - {serviceName: a, weight: 70}
          - {serviceName: b, weight: 30}
  - name: hard
    nodes:
      root:
        routerType: Sequence
        steps:
          - {serviceName: broken, dependency: Soft}
          - {serviceName: a}
          - {serviceName: broken}
  - name: tensors
    nodes:
      root:
        routerType: Sequence
        steps:
          - {serviceName: identity}
          - {serviceName: identity}
"#;

fn config() -> String {
    format!(
        "deployments:\n  - name: identity\n    model: identity\n{}{}{}{}{GRAPHS}",
        python("a", "Tagger"),
        python("b", "Tagger"),
        python("c", "Tagger"),
        python("broken", "Broken"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphs_route_sequence_switch_ensemble_and_split() {
    let s = Server::start(&config());
    s.wait_ready(60).await;
    let post = |model: &str, body: serde_json::Value| {
        let path = format!("/v1/models/{model}:predict");
        let s = &s;
        async move { s.post(&path, body).await }
    };

    // Sequence: a, then node `tail` (b), then c on the graph's request.
    let (status, body) = post("seq", json!({"x": 1})).await;
    assert_eq!((status, body), (200, json!({"x": 1, "path": ["c"]})));
    let (_, body) = post("seq-response", json!({"x": 1})).await;
    assert_eq!(body, json!({"x": 1, "path": ["a", "b"]}));

    // Switch on a GJSON condition; no match answers the request itself.
    let (_, body) = post("switch", json!({"instances": [{"age": 40}]})).await;
    assert_eq!(body["path"], json!(["a"]));
    let (_, body) = post("switch", json!({"instances": [{"age": 20}]})).await;
    assert_eq!(body["path"], json!(["b"]));
    let (_, body) = post("switch", json!({"other": 1})).await;
    assert_eq!(body, json!({"other": 1}));

    // Ensemble: every step, answers by step name; a Soft failure is left out.
    let (status, body) = post("ensemble", json!({"x": 2})).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"first": {"x": 2, "path": ["a"]}, "second": {"x": 2, "path": ["b"]}})
        )
    );

    // Splitter: 70/30 by weight.
    let mut to_a = 0;
    for _ in 0..200 {
        let (_, body) = post("split", json!({})).await;
        if body["path"] == json!(["a"]) {
            to_a += 1;
        }
    }
    assert!((110..=170).contains(&to_a), "{to_a} of 200 went to a");

    // A Hard step's failure fails the graph, naming node and step; a Soft one does not.
    let (status, body) = post("hard", json!({})).await;
    assert_eq!(status, 500, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(
        e.contains("node 'root', step 'broken'") && e.contains("broken on purpose"),
        "{e}"
    );

    // V2 tensors through Rust steps; internal deployments stay hidden.
    let (status, body) = s
        .post(
            "/v2/models/tensors/infer",
            json!({"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [4, 5]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([4, 5]));
    assert_eq!(body["model_name"], "tensors");
    let (status, _) = post("a", json!({})).await;
    assert_eq!(status, 404);
}

#[test]
fn a_graph_with_a_bad_reference_or_a_cycle_is_refused_at_start() {
    let dir = TempDir::new("graphs");
    let run = |graphs: &str| {
        let path = dir.path().join("bad.yaml");
        std::fs::write(
            &path,
            format!("deployments:\n  - name: identity\n    model: identity\ngraphs:\n{graphs}"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(
        "  - name: g\n    nodes:\n      root:\n        routerType: Sequence\n        steps: [{serviceName: nope}]\n",
    );
    assert!(
        e.contains(
            "graphs[0]: graph 'g': nodes.root.steps[0].serviceName: no deployment named 'nope'"
        ),
        "{e}"
    );
    let e = run(
        "  - name: g\n    nodes:\n      root:\n        routerType: Sequence\n        steps: [{nodeName: loop}]\n      loop:\n        routerType: Sequence\n        steps: [{nodeName: root}]\n",
    );
    assert!(e.contains("cycle"), "{e}");
}
