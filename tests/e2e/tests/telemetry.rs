//! Traces on the local control plane: a controller told an OTLP endpoint by the standard
//! variable exports the span of every reconcile to it over OTLP/HTTP (protobuf), each line it
//! logs while reconciling carries the trace id of that span, and the spans still queued leave
//! when it stops. The collector is this test's own, on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use stepwise_api::RolloutPhase;
use stepwise_e2e::{ControllerProcess, Env, eventually, secs};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const STEPS: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      steps:\n      - setWeight: 50\n      - pause: {}\n";

/// The bodies of the POST /v1/traces requests a collector received.
type Bodies = Arc<Mutex<Vec<Vec<u8>>>>;

/// An OTLP/HTTP collector on 127.0.0.1 that keeps every body POSTed to /v1/traces and answers
/// each with an empty success; returns its base URL (what OTEL_EXPORTER_OTLP_ENDPOINT names).
async fn collector() -> anyhow::Result<(String, Bodies)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let bodies = Bodies::default();
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                if let Some((path, body)) = read_request(&mut stream).await
                    && path == "POST /v1/traces"
                {
                    kept.lock().unwrap().push(body);
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok((endpoint, bodies))
}

/// The method and path of one HTTP/1.1 request, and its body (of the length its header gives).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut read = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        read.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while read.len() < head_end + length {
        let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        read.extend_from_slice(&buf[..n]);
    }
    let path = head.split(' ').take(2).collect::<Vec<_>>().join(" ");
    Some((path, read[head_end..head_end + length].to_vec()))
}

/// A span as the collector received it.
#[derive(Debug)]
struct Received {
    name: String,
    /// Its trace id, in the W3C form (32 lowercase hex digits).
    trace_id: String,
    attributes: BTreeMap<String, String>,
    /// The `service.name` of its resource.
    service: Option<String>,
}

fn text_attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(text) => Some((kv.key.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

/// Every span the collector received so far; fails on a body that is no OTLP trace request.
fn received(bodies: &Bodies) -> anyhow::Result<Vec<Received>> {
    let mut spans = Vec::new();
    for body in bodies.lock().unwrap().iter() {
        for resource in ExportTraceServiceRequest::decode(body.as_slice())?.resource_spans {
            let service =
                text_attributes(&resource.resource.map(|r| r.attributes).unwrap_or_default()).remove("service.name");
            for span in resource.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                spans.push(Received {
                    name: span.name,
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                    attributes: text_attributes(&span.attributes),
                    service: service.clone(),
                });
            }
        }
    }
    Ok(spans)
}

/// The trace id a log line carries (`trace_id=<32 hex digits>`), if any.
fn logged_trace_id(line: &str) -> Option<&str> {
    let id = line.split("trace_id=").nth(1)?.get(..32)?;
    id.bytes().all(|b| b.is_ascii_hexdigit()).then_some(id)
}

/// A namespace with a controller that exports its spans to a collector of the test's, in batches
/// that leave every `batch_delay_ms`, the app's Services, and the Rollout, Healthy.
async fn traced_canary(name: &str, batch_delay_ms: &str) -> anyhow::Result<(Env, Bodies)> {
    let (endpoint, bodies) = collector().await?;
    let mut env = Env::without_controller(name).await?;
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", batch_delay_ms)];
    env.controllers.push(ControllerProcess::start_with_env(&env.ns, "controller-0", &["--leader-elect=false"], &otel)?);
    env.given_services(&["app-stable", "app-canary"]).await?;
    env.given_rollout(2, STEPS).await?;
    Ok((env, bodies))
}

/// The start of the span of the Rollout's reconciles in the text log, its trace id after it.
fn rollout_span(env: &Env) -> String {
    format!("reconcile{{controller=\"rollout\" namespace=\"{}\" rollout=\"app\"", env.ns)
}

/// The trace ids of the lines logged while reconciling the Rollout; every such line has one.
fn logged_traces(env: &Env) -> BTreeSet<String> {
    let log = env.controllers[0].log_text();
    let span = rollout_span(env);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&span)).collect();
    assert!(lines.iter().all(|l| logged_trace_id(l).is_some()), "a trace id on every line of:\n{}", lines.join("\n"));
    lines.iter().filter_map(|l| logged_trace_id(l)).map(str::to_string).collect()
}

/// The spans received of the Rollout's reconciles: named reconcile, with the loop, the namespace
/// and the Rollout as attributes.
fn rollout_reconciles(env: &Env, bodies: &Bodies) -> anyhow::Result<Vec<Received>> {
    let is_this_rollouts_reconcile = |span: &Received| {
        let attribute = |key: &str| span.attributes.get(key).map(String::as_str);
        span.name == "reconcile"
            && attribute("controller") == Some("rollout")
            && attribute("namespace") == Some(env.ns.as_str())
            && attribute("rollout") == Some("app")
    };
    Ok(received(bodies)?.into_iter().filter(is_this_rollouts_reconcile).collect())
}

fn trace_ids(spans: &[Received]) -> BTreeSet<String> {
    spans.iter().map(|s| s.trace_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_reconcile_is_exported_as_a_span_whose_trace_id_its_log_lines_carry() -> anyhow::Result<()> {
    // Batches leave every 200 ms rather than every 5 s, so that the test need not wait.
    let (env, bodies) = traced_canary("otel", "200").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;

    let log = env.controllers[0].log_text();
    let created = log.lines().find(|l| l.contains(&rollout_span(&env)) && l.contains("created ReplicaSet"));
    assert!(created.and_then(logged_trace_id).is_some(), "the ReplicaSet's creation, with a trace id, in:\n{log}");
    let logged = logged_traces(&env);
    assert!(logged.len() > 1, "the reconciles log different trace ids: {logged:?}");
    // The trace of every logged line reaches the collector (the last ones within a batch delay).
    let arrived = eventually("the collector to receive the spans of the logged traces", secs(30), || async {
        Ok(logged.is_subset(&trace_ids(&rollout_reconciles(&env, &bodies)?)))
    })
    .await;
    let spans = rollout_reconciles(&env, &bodies)?;
    assert!(arrived.is_ok(), "logged trace ids {logged:?}, exported {:?}", trace_ids(&spans));
    assert_eq!(trace_ids(&spans).len(), spans.len(), "each reconcile is a trace of its own: {spans:#?}");
    for span in &spans {
        assert_eq!(span.service.as_deref(), Some("stepwise-controller"), "service.name of {span:?}");
    }
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spans_still_queued_leave_when_the_controller_stops() -> anyhow::Result<()> {
    // A batch waits an hour: only the shutdown sends it.
    let (mut env, bodies) = traced_canary("otel-stop", "3600000").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    assert!(received(&bodies)?.is_empty(), "nothing is sent before the batch is due");

    let status = env.controllers[0].terminate()?;
    assert!(status.success(), "the controller stops cleanly: {status}");
    let logged = logged_traces(&env);
    let exported = trace_ids(&rollout_reconciles(&env, &bodies)?);
    assert!(!logged.is_empty() && logged.is_subset(&exported), "logged {logged:?}, exported at shutdown {exported:?}");
    env.cleanup().await
}
