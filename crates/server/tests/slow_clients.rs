//! Slow and hostile HTTP clients against a real server on loopback, over raw sockets: headers
//! that never end, idle keep-alive connections, too many connections, slow bodies; and what a
//! model sees of repeated headers, and the status route switched off.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferroserve_runtime::Deployment;
use ferroserve_server::ServerConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or resets it); returns what it sent and
/// when it closed, or `None` if it was still open after `wait`.
async fn until_closed(stream: &mut TcpStream, wait: Duration) -> Option<(String, Duration)> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = wait.checked_sub(t0.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((String::from_utf8_lossy(&got).into_owned(), t0.elapsed()));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `GET /` on `stream` and reads the whole (small) answer.
async fn get_root(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with("{\"status\":\"alive\"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn config(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut c = ServerConfig::default();
    f(&mut c);
    c
}

#[tokio::test]
async fn headers_that_never_end_are_cut_off_at_the_header_read_timeout() {
    let s = TestServer::start_with(
        vec![identity()],
        config(|c| c.header_read_timeout = Duration::from_millis(300)),
    )
    .await;
    let t0 = Instant::now();
    // Half a head, then nothing.
    let mut half = TcpStream::connect(addr(&s)).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(addr(&s)).await.unwrap();
    // A byte a 100 ms: never a whole head within the timeout.
    let mut trickle = TcpStream::connect(addr(&s)).await.unwrap();
    let dripping = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nX-Slow: ".iter().cycle().take(40) {
            if trickle.write_all(&[*b]).await.is_err() {
                return true; // closed by the server
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    for stream in [&mut half, &mut silent] {
        until_closed(stream, Duration::from_secs(3))
            .await
            .expect("the connection was not closed");
        let after = t0.elapsed();
        assert!(
            after >= Duration::from_millis(250),
            "closed after {after:?}"
        );
    }
    assert!(dripping.await.unwrap(), "a trickled head was not cut off");
    // The server still serves well-behaved clients.
    assert_eq!(s.get("/").await.0, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_keep_alive_timeout() {
    let s = TestServer::start_with(
        vec![identity()],
        config(|c| {
            c.keep_alive_timeout = Duration::from_millis(300);
            c.header_read_timeout = Duration::from_secs(10);
        }),
    )
    .await;
    let mut conn = TcpStream::connect(addr(&s)).await.unwrap();
    assert!(get_root(&mut conn).await.starts_with("HTTP/1.1 200"));
    let (_, after) = until_closed(&mut conn, Duration::from_secs(3))
        .await
        .expect("the idle connection was not closed");
    assert!(
        after >= Duration::from_millis(200),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn the_idle_clock_is_not_the_header_clock() {
    // A short header timeout does not close a connection that is idle between requests, and a
    // request sent after a while is served on it.
    let s = TestServer::start_with(
        vec![identity()],
        config(|c| {
            c.keep_alive_timeout = Duration::from_secs(10);
            c.header_read_timeout = Duration::from_millis(300);
        }),
    )
    .await;
    let mut conn = TcpStream::connect(addr(&s)).await.unwrap();
    assert!(get_root(&mut conn).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(get_root(&mut conn).await.starts_with("HTTP/1.1 200"));
    // ... but a head started after the idle period still has only the header timeout.
    conn.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let (_, after) = until_closed(&mut conn, Duration::from_secs(3))
        .await
        .expect("a stalled head after an idle period was not cut off");
    assert!(
        after >= Duration::from_millis(200),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn past_max_connections_http_answers_503_with_retry_after_and_recovers() {
    let s = TestServer::start_with(vec![identity()], config(|c| c.max_connections = 2)).await;
    let mut a = TcpStream::connect(addr(&s)).await.unwrap();
    let mut b = TcpStream::connect(addr(&s)).await.unwrap();
    assert!(get_root(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(get_root(&mut b).await.starts_with("HTTP/1.1 200"));
    // A third connection is answered at once, and closed.
    let t0 = Instant::now();
    let r = reqwest::Client::new().get(s.url("/")).send().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("limit of 2"),
        "{body}"
    );
    // The two open connections are still served.
    assert!(get_root(&mut a).await.starts_with("HTTP/1.1 200"));
    // Once one closes, a new connection is served.
    drop(b);
    let mut served = false;
    for _ in 0..50 {
        let r = reqwest::Client::new().get(s.url("/")).send().await.unwrap();
        if r.status() == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no connection was served after one closed");
}

#[tokio::test]
async fn a_slow_body_does_not_hold_the_replica() {
    // One slot and no queue: if a request entered the router before its body arrived, the
    // second client would be refused with 503.
    let s = TestServer::start(vec![
        identity().max_ongoing_requests(1).max_queued_requests(0),
    ])
    .await;
    s.wait_model("identity", 200).await;
    let mut slow = TcpStream::connect(addr(&s)).await.unwrap();
    let body = br#"{"instances": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"#;
    slow.write_all(
        format!(
            "POST /v1/models/identity:predict HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    slow.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let t0 = Instant::now();
        let (status, answer) = s
            .post_json("/v1/models/identity:predict", json!({"instances": [1]}))
            .await;
        assert_eq!((status, answer), (200, json!({"predictions": [1]})));
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }
    // The slow client is served once its body is complete.
    slow.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_trickled_past_the_body_read_timeout_is_408_and_closed() {
    let s = TestServer::start_with(
        vec![identity()],
        config(|c| c.body_read_timeout = Duration::from_millis(300)),
    )
    .await;
    s.wait_model("identity", 200).await;
    let mut conn = TcpStream::connect(addr(&s)).await.unwrap();
    conn.write_all(
        b"POST /v1/models/identity:predict HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n{\"instances\": [",
    )
    .await
    .unwrap();
    let (mut read, mut write) = conn.into_split();
    let dripping = tokio::spawn(async move {
        for _ in 0..50 {
            if write.write_all(b"1,").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), read.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {:?}: {}",
                t0.elapsed(),
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    dripping.abort();
}

#[tokio::test]
async fn repeated_headers_reach_the_model_joined() {
    let s = TestServer::start(vec![Deployment::new("echo", || Echo)]).await;
    s.wait_model("echo", 200).await;
    let r = s
        .client
        .post(s.url("/v2/models/echo/infer"))
        .header("x-test", "a")
        .header("x-test", "b")
        .body(json!({"inputs": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["parameters"]["header.x-test"], "a, b", "{body}");
}

#[tokio::test]
async fn the_status_route_can_be_switched_off() {
    let s = TestServer::start_with(vec![identity()], config(|c| c.status_route = false)).await;
    let (status, body) = s.get("/-/status").await;
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("does not expose"),
        "{body}"
    );
    assert_eq!(s.get("/v2/health/live").await.0, 200);
}

#[tokio::test]
async fn h2c_is_served_on_the_http_port() {
    let s = TestServer::start(vec![identity()]).await;
    let stream = TcpStream::connect(addr(&s)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(s.url("/v2/health/live"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
}
