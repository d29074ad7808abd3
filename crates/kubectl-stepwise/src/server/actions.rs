//! A person's action: decided by the same code as the plugin's commands, from the Rollout as the
//! page showed it. The page sends the resourceVersion it showed; if the Rollout moved on since,
//! the action is refused rather than applied to a state the person never saw, and every patch
//! carries that version as its precondition, so a change in between is refused by the API
//! server itself. What was done is recorded as an Event that names the person.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use kubectl_stepwise::dashboard::view::{ACTION_ANNOTATION, ACTIONS, BY_ANNOTATION, merge_decision};
use kubectl_stepwise::decide::{self, Decision};
use serde_json::{Value, json};
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout};

use super::auth::{Viewer, api_reason};
use super::{Body, Dashboard, error, json_response, read_json};

/// The header every action must carry: a page of another site cannot send it without the
/// browser asking this server first (CORS), which it never allows.
const ACTION_HEADER: &str = "x-stepwise-action";
/// The field manager of the dashboard's patches.
const MANAGER: &str = "stepwise-dashboard";

/// What an action changes.
enum Change {
    /// Merge patches of the spec and of the status.
    Merge(Decision),
    /// A JSON patch of the Rollout, and what it did.
    Json(Value, String),
}

/// Serves `POST /api/rollouts/{ns}/{name}/actions/{action}`.
pub async fn act(
    dashboard: &Dashboard,
    viewer: &Viewer,
    request: Request<Incoming>,
    ns: &str,
    name: &str,
    action: &str,
) -> http::Response<Body> {
    if !ACTIONS.contains(&action) {
        return error(404, format!("no action {action:?}; the actions: {}", ACTIONS.join(", ")));
    }
    if !dashboard.auth.actions {
        return error(403, "read-only: the dashboard was started without --actions");
    }
    if request.headers().get(ACTION_HEADER).is_none() {
        return error(403, format!("an action needs the {ACTION_HEADER} header (the page sends it)"));
    }
    let body = match read_json(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let client = dashboard.auth.client_of(viewer);
    let who = dashboard.auth.name_of(viewer);
    match run(&client, ns, name, action, &body).await {
        Err((status, message)) => error(status, message),
        Ok((done, uid)) => {
            // The record is the server's to write (a person may patch Rollouts without being
            // allowed to create Events); failing to write it does not undo the action.
            let recorded = record(&dashboard.auth.client, (ns, name, uid), action, &who, &done).await;
            let note = recorded
                .err()
                .map(|e| format!(" (the Event recording it could not be written: {e})"))
                .unwrap_or_default();
            json_response(StatusCode::OK, &json!({"message": format!("{done}{note}")}))
        }
    }
}

type Failure = (u16, String);

/// Makes the action; returns what it did and the Rollout's uid, for the record.
async fn run(
    client: &Client,
    ns: &str,
    name: &str,
    action: &str,
    body: &Value,
) -> Result<(String, Option<String>), Failure> {
    let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let rollout = api.get(name).await.map_err(|e| refused(&e, ns, name))?;
    let shown =
        body["resourceVersion"].as_str().ok_or((400, "resourceVersion: missing; reload the page".to_string()))?;
    let current = rollout.resource_version().unwrap_or_default();
    if shown != current {
        return Err((
            409,
            format!(
                "Rollout {name:?} changed since the page showed it (resourceVersion {shown}, now {current}): look at it again, then retry"
            ),
        ));
    }
    let change = decide_change(client, &rollout, action, body).await?;
    let done = apply(&api, name, &current, change).await?;
    Ok((done, rollout.uid()))
}

async fn decide_change(client: &Client, ro: &Rollout, action: &str, body: &Value) -> Result<Change, Failure> {
    let refused = |reason: String| (409, reason);
    if let Some(decision) = merge_decision(ro, action) {
        return decision.map(Change::Merge).map_err(refused);
    }
    match action {
        "restart" => Ok(Change::Merge(decide::restart(ro, &Timestamp::now().to_string()))),
        "set-image" => {
            let field = |f: &str| {
                body[f].as_str().filter(|s| !s.trim().is_empty()).map(str::trim).ok_or((400, format!("{f}: missing")))
            };
            let (container, image) = (field("container")?, field("image")?);
            let (patch, done) = decide::set_image(ro, container, image).map_err(refused)?;
            Ok(Change::Json(patch, done))
        }
        _ => {
            let to = match &body["revision"] {
                Value::Null => None,
                v => Some(v.as_i64().ok_or((400, format!("revision: expected a number, got {v}")))?),
            };
            let revisions = templates(client, ro).await?;
            let (patch, done) = decide::undo(ro, &revisions, to).map_err(refused)?;
            Ok(Change::Json(patch, done))
        }
    }
}

/// The Rollout's ReplicaSets as (revision, pod template), for undo.
async fn templates(client: &Client, ro: &Rollout) -> Result<Vec<(i64, Value)>, Failure> {
    let ns = ro.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let list = api
        .list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL))
        .await
        .map_err(|e| refused(&e, &ns, "replicasets"))?;
    let uid = ro.uid();
    let owned = list.items.iter().filter(|rs| rs.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()));
    Ok(decide::revision_templates(owned))
}

/// Makes the change, the first patch conditional on the version the page showed.
async fn apply(api: &Api<Rollout>, name: &str, version: &str, change: Change) -> Result<String, Failure> {
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    let ns = api.namespace().unwrap_or_default().to_string();
    let failed = |e: kube::Error| refused(&e, &ns, name);
    match change {
        Change::Json(patch, done) => {
            let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": version})];
            ops.extend(patch.as_array().cloned().unwrap_or_default());
            let patch = serde_json::from_value(Value::Array(ops)).map_err(|e| (500, e.to_string()))?;
            api.patch(name, &params, &Patch::<Value>::Json(patch)).await.map_err(failed)?;
            Ok(done)
        }
        Change::Merge(Decision { patches, done }) => {
            let conditional = |mut patch: Value| {
                patch["metadata"]["resourceVersion"] = json!(version);
                patch
            };
            match (patches.spec, patches.status) {
                (Some(spec), status) => {
                    api.patch(name, &params, &Patch::Merge(conditional(spec))).await.map_err(failed)?;
                    if let Some(status) = status {
                        api.patch_status(name, &params, &Patch::Merge(status)).await.map_err(failed)?;
                    }
                }
                (None, Some(status)) => {
                    api.patch_status(name, &params, &Patch::Merge(conditional(status))).await.map_err(failed)?;
                }
                (None, None) => {}
            }
            Ok(done)
        }
    }
}

/// An API server's refusal as a sentence for the page, with its reason.
fn refused(e: &kube::Error, ns: &str, name: &str) -> Failure {
    match e {
        kube::Error::Api(s) if s.code == 404 => (404, format!("no Rollout {name:?} in namespace {ns:?}")),
        kube::Error::Api(s) if s.code == 409 || (s.code == 422 && s.message.contains("test")) => (
            409,
            format!("Rollout {name:?} changed while the action was made: look at it again, then retry ({})", s.message),
        ),
        kube::Error::Api(s) if s.code == 403 => (403, format!("refused by the API server: {}", s.message)),
        kube::Error::Api(s) => (s.code, format!("refused by the API server: {}", s.message)),
        e => (502, format!("cannot reach the API server: {}", api_reason(e))),
    }
}

/// An Event on the Rollout: what was done, by whom.
async fn record(
    client: &Client,
    (ns, name, uid): (&str, &str, Option<String>),
    action: &str,
    who: &str,
    done: &str,
) -> Result<(), String> {
    let now = Timestamp::now();
    let reason: String = action.split('-').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(ns.into()),
            annotations: Some(
                [(ACTION_ANNOTATION.to_string(), action.to_string()), (BY_ANNOTATION.to_string(), who.to_string())]
                    .into(),
            ),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(Rollout::api_version(&()).into()),
            kind: Some("Rollout".into()),
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid,
            ..Default::default()
        },
        reason: Some(reason),
        message: Some(format!("{who} via the dashboard: {done}")),
        type_: Some("Normal".into()),
        source: Some(EventSource { component: Some(MANAGER.into()), ..Default::default() }),
        reporting_component: Some(MANAGER.into()),
        reporting_instance: Some(MANAGER.into()),
        action: Some(action.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &event)
        .await
        .map(drop)
        .map_err(|e| api_reason(&e))
}
