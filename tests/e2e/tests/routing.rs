//! Traffic routers on the local control plane, against the real CRDs of Istio, Gateway API and Traefik
//! (installed from their Go modules by tests/cluster/router-crds.sh): the weights of the routing
//! object after every step, everything else in it untouched, and traffic back on stable before
//! the canary loses its pods.

use std::sync::{Arc, Mutex};

use kube::api::{DynamicObject, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout, RolloutPhase};
use stepwise_e2e::routing::{check_traffic_leaves_before_pods, given_object, objects, router_crds, without_weights};
use stepwise_e2e::{Env, eventually, repo_root, secs};

fn virtual_services(env: &Env) -> Api<DynamicObject> {
    objects(env, "networking.istio.io", "v1", "VirtualService", "virtualservices")
}

fn http_routes(env: &Env) -> Api<DynamicObject> {
    objects(env, "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
}

fn ingresses(env: &Env) -> Api<DynamicObject> {
    objects(env, "networking.k8s.io", "v1", "Ingress", "ingresses")
}

/// A stable Ingress as users write them: TLS, an nginx annotation of its own, the app's path and
/// a docs path to another Service.
fn stable_ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "app", "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"}},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["app.example.invalid"], "secretName": "app-tls"}],
            "rules": [{"host": "app.example.invalid", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "app-stable", "port": {"number": 80}}}},
                {"path": "/docs", "pathType": "Prefix", "backend": {"service": {"name": "docs", "port": {"number": 80}}}}
            ]}}]
        }
    })
}

fn traefik_services(env: &Env) -> Api<DynamicObject> {
    objects(env, "traefik.io", "v1alpha1", "TraefikService", "traefikservices")
}

/// A weighted TraefikService as users write them: ports and a sticky cookie.
fn traefik_service() -> Value {
    json!({
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": {"name": "app"},
        "spec": {"weighted": {
            "sticky": {"cookie": {"name": "lb"}},
            "services": [
                {"name": "app-stable", "port": 80, "weight": 100},
                {"name": "app-canary", "port": 80, "weight": 0}
            ]
        }}
    })
}

/// A VirtualService as users write them: a header route to a preview Service, the route to
/// split with retries and a timeout.
fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "app"},
        "spec": {
            "hosts": ["app.example.invalid"],
            "http": [
                {"name": "preview", "match": [{"headers": {"x-preview": {"exact": "1"}}}],
                 "route": [{"destination": {"host": "app-preview"}}]},
                {"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
                 "route": [
                    {"destination": {"host": "app-stable", "port": {"number": 80}}, "weight": 100},
                    {"destination": {"host": "app-canary", "port": {"number": 80}}, "weight": 0}
                 ]}
            ]
        }
    })
}

/// An HTTPRoute as users write them: a rule for /admin to another Service, the rule to split
/// with a timeout.
fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "app"},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "hostnames": ["app.example.invalid"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80}]},
                {"timeouts": {"request": "10s"},
                 "backendRefs": [
                    {"name": "app-stable", "port": 80, "weight": 100},
                    {"name": "app-canary", "port": 80, "weight": 0}
                 ]}
            ]
        }
    })
}

/// Where the split destinations are in each router's object: (canary, stable) pointers.
#[derive(Clone, Copy)]
enum Router {
    Istio,
    GatewayApi,
    Traefik,
    /// The weight lives in the canary Ingress stepwise generates beside the stable one.
    Nginx,
}

impl Router {
    /// The step reached was read back from the routing object (Istio, Gateway API, Traefik keep
    /// the weight in the object they patch); nginx's lives in the canary Ingress it generates,
    /// which the controller does not read back.
    async fn then_weight_verified(self, env: &Env) -> anyhow::Result<()> {
        let status = env.get().await?.status.unwrap_or_default();
        let verified = status.canary.and_then(|c| c.weights).and_then(|w| w.verified);
        let expected = (!matches!(self, Router::Nginx)).then_some(true);
        anyhow::ensure!(verified == expected, "weights.verified is {verified:?}, not {expected:?}");
        Ok(())
    }

    fn api(self, env: &Env) -> Api<DynamicObject> {
        match self {
            Router::Istio => virtual_services(env),
            Router::GatewayApi => http_routes(env),
            Router::Traefik => traefik_services(env),
            Router::Nginx => ingresses(env),
        }
    }

    fn object(self) -> Value {
        match self {
            Router::Istio => virtual_service(),
            Router::GatewayApi => http_route(),
            Router::Traefik => traefik_service(),
            Router::Nginx => stable_ingress(),
        }
    }

    /// (canary, stable) weights of the split route.
    fn weights(self, object: &Value) -> (Option<i64>, Option<i64>) {
        if let Router::Nginx = self {
            let weight = object
                .pointer("/metadata/annotations/nginx.ingress.kubernetes.io~1canary-weight")
                .and_then(Value::as_str)
                .and_then(|w| w.parse::<i64>().ok());
            return (weight, weight.map(|w| 100 - w));
        }
        let (canary, stable) = match self {
            Router::Nginx => unreachable!("handled above"),
            Router::Istio => ("/spec/http/1/route/1/weight", "/spec/http/1/route/0/weight"),
            Router::GatewayApi => ("/spec/rules/1/backendRefs/1/weight", "/spec/rules/1/backendRefs/0/weight"),
            Router::Traefik => ("/spec/weighted/services/1/weight", "/spec/weighted/services/0/weight"),
        };
        (object.pointer(canary).and_then(Value::as_i64), object.pointer(stable).and_then(Value::as_i64))
    }

    /// Waits until the object (named as the Rollout; for nginx, its canary Ingress) splits
    /// `canary` / 100 − `canary`, and checks that nothing but the weights differs from `created`,
    /// the object as the user created it (for nginx, the stable Ingress, which is never written).
    async fn then_weight(self, env: &Env, created: &Value, canary: i64) -> anyhow::Result<()> {
        let api = self.api(env);
        let seen = Arc::new(Mutex::new(None));
        let result = eventually(&format!("canary weight {canary}"), secs(20), || {
            let (api, seen) = (api.clone(), seen.clone());
            async move {
                let weights = match self {
                    // No canary Ingress yet: nothing goes to the canary.
                    Router::Nginx => match api.get_opt(&format!("{0}-{0}-canary", env.rollout)).await? {
                        Some(canary) => self.weights(&serde_json::to_value(canary)?),
                        None => (Some(0), Some(100)),
                    },
                    _ => self.weights(&serde_json::to_value(api.get(&env.rollout).await?)?),
                };
                *seen.lock().unwrap() = Some(weights);
                Ok(weights == (Some(canary), Some(100 - canary)))
            }
        })
        .await;
        if let Err(e) = result {
            anyhow::bail!("{e}: (canary, stable) = {:?}", seen.lock().unwrap());
        }
        let object = serde_json::to_value(api.get(&env.rollout).await?)?;
        assert_eq!(
            without_weights(&object["spec"]),
            without_weights(&created["spec"]),
            "only the weights of the split route changed"
        );
        Ok(())
    }
}

const STEPS: &str =
    "      steps:\n      - setWeight: 20\n      - pause: {}\n      - setWeight: 60\n      - pause: {}\n";

/// A namespace with the two Services, the router's object and a Healthy Rollout of 5 pods routed
/// through it; and the object as created.
async fn routed_env(name: &str, router: Router, routing: &str) -> anyhow::Result<(Env, Value)> {
    let env = Env::new(name).await?;
    router_crds(&env).await?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    let created = given_object(&router.api(&env), router.object()).await?;
    let strategy = format!(
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      abortScaleDownDelaySeconds: 1\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n{routing}{STEPS}"
    );
    env.given_rollout(5, &strategy).await?;
    Ok((env, created))
}

/// Walks a canary through its steps, checking the router's object after each.
async fn walk(env: &Env, router: Router, created: &Value) -> anyhow::Result<()> {
    router.then_weight(env, created, 0).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 5, secs(30)).await?;
    router.then_weight(env, created, 20).await?;
    router.then_weight_verified(env).await?;

    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    env.then_pods(3, 5, secs(30)).await?;
    router.then_weight(env, created, 60).await?;
    router.then_weight_verified(env).await?;

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    // With a router the stable keeps all its pods until the canary is promoted; the old ones
    // go after scaleDownDelaySeconds.
    env.then_pods(5, 0, secs(60)).await?;
    // Promoted: the stable Service now selects the new pods and carries all the traffic.
    router.then_weight(env, created, 0).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(env.service_hash("app-stable").await?, st.current_pod_hash);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_istio_canary_sets_the_virtual_service_weights_at_every_step() -> anyhow::Result<()> {
    let routing = "        istio:\n          virtualService: {name: app, routes: [primary]}\n";
    let (env, created) = routed_env("istio-walk", Router::Istio, routing).await?;
    walk(&env, Router::Istio, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_api_canary_sets_the_http_route_weights_at_every_step() -> anyhow::Result<()> {
    let routing = "        gatewayAPI: {httpRoute: app}\n";
    let (env, created) = routed_env("gateway-walk", Router::GatewayApi, routing).await?;
    walk(&env, Router::GatewayApi, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traefik_canary_sets_the_weighted_traefik_service_weights_at_every_step() -> anyhow::Result<()> {
    let routing = "        traefik: {weightedTraefikServiceName: app}\n";
    let (env, created) = routed_env("traefik-walk", Router::Traefik, routing).await?;
    walk(&env, Router::Traefik, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traefik_abort_sends_all_traffic_to_stable_before_the_canary_is_scaled_down() -> anyhow::Result<()> {
    let routing = "        traefik: {weightedTraefikServiceName: app}\n";
    let (env, created) = routed_env("traefik-abort", Router::Traefik, routing).await?;
    abort_moves_traffic_before_pods(&env, Router::Traefik, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nginx_canary_generates_a_canary_ingress_with_the_weight_at_every_step() -> anyhow::Result<()> {
    let routing = "        nginx: {stableIngress: app}\n";
    let (env, created) = routed_env("nginx-walk", Router::Nginx, routing).await?;
    walk(&env, Router::Nginx, &created).await?;
    let canary = serde_json::to_value(ingresses(&env).get("app-app-canary").await?)?;
    assert_eq!(
        canary["spec"]["rules"][0]["http"]["paths"],
        json!([{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "app-canary", "port": {"number": 80}}}}]),
        "the stable Service's path, sent to the canary"
    );
    assert_eq!(canary["spec"]["tls"], created["spec"]["tls"]);
    assert_eq!(canary["metadata"]["ownerReferences"][0]["kind"], "Rollout");
    assert_eq!(canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"], "true");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nginx_abort_sends_all_traffic_to_stable_before_the_canary_is_scaled_down() -> anyhow::Result<()> {
    let routing = "        nginx: {stableIngress: app}\n";
    let (env, created) = routed_env("nginx-abort", Router::Nginx, routing).await?;
    abort_moves_traffic_before_pods(&env, Router::Nginx, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nginx_canary_ingress_name_taken_by_a_person_is_never_replaced() -> anyhow::Result<()> {
    let env = Env::new("nginx-taken").await?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    given_object(&ingresses(&env), stable_ingress()).await?;
    let mut theirs = stable_ingress();
    theirs["metadata"] = json!({"name": "app-app-canary"});
    let theirs = given_object(&ingresses(&env), theirs).await?;
    let yaml = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        nginx: {stableIngress: app}\n      steps:\n      - setWeight: 20\n";
    let rollouts: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    rollouts.create(&PostParams::default(), &serde_yaml::from_str(yaml)?).await?;
    env.then("a ReconcileError naming the Ingress", secs(60), |ro| {
        ro.status.as_ref().and_then(|s| s.message.clone()).is_some_and(|m| {
            m.contains("Ingress") && m.contains("app-app-canary exists and is not owned by this Rollout")
        })
    })
    .await?;
    let now = serde_json::to_value(ingresses(&env).get("app-app-canary").await?)?;
    assert_eq!(now["spec"], theirs["spec"], "their Ingress is untouched");
    assert_eq!(now["metadata"]["annotations"], theirs["metadata"]["annotations"]);
    env.cleanup().await
}

/// Argo users configure Gateway API through the `argoproj-labs/gatewayAPI` plugin: the same
/// manifest, with only the apiVersion changed, drives the built-in router.
#[tokio::test(flavor = "multi_thread")]
async fn an_argo_gateway_api_plugin_manifest_sets_the_http_route_weights_at_every_step() -> anyhow::Result<()> {
    let routing = "        plugins:\n          argoproj-labs/gatewayAPI: {httpRoute: app}\n";
    let (env, created) = routed_env("gateway-plugin", Router::GatewayApi, routing).await?;
    walk(&env, Router::GatewayApi, &created).await?;
    env.cleanup().await
}

/// What the watches saw, in the API server's order (resourceVersions): when the canary's weight
/// reached 0, and when its ReplicaSet was first scaled down.
/// Aborts at step 3 and checks, from watches of the router's object and the ReplicaSets, that the
/// weight was 0 before the canary's ReplicaSet was scaled down.
async fn abort_moves_traffic_before_pods(env: &Env, router: Router, created: &Value) -> anyhow::Result<()> {
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    env.then_pods(3, 5, secs(30)).await?;
    router.then_weight(env, created, 60).await?;
    let canary = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    check_traffic_leaves_before_pods(
        env,
        router.api(env),
        move |o| router.weights(o).0,
        canary,
        3,
        || async {
            env.when_abort().await?;
            env.then_phase(RolloutPhase::Degraded, secs(30)).await?;
            env.then_pods(0, 5, secs(60)).await?;
            router.then_weight(env, created, 0).await
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_api_abort_sends_all_traffic_to_stable_before_the_canary_is_scaled_down() -> anyhow::Result<()> {
    let routing = "        gatewayAPI: {httpRoutes: [app]}\n";
    let (env, created) = routed_env("gateway-abort", Router::GatewayApi, routing).await?;
    abort_moves_traffic_before_pods(&env, Router::GatewayApi, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_istio_abort_sends_all_traffic_to_stable_before_the_canary_is_scaled_down() -> anyhow::Result<()> {
    let routing = "        istio:\n          virtualService: {name: app, routes: [primary]}\n";
    let (env, created) = routed_env("istio-abort", Router::Istio, routing).await?;
    abort_moves_traffic_before_pods(&env, Router::Istio, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_the_rollout_names_that_is_absent_is_a_reconcile_error_and_nothing_is_written() -> anyhow::Result<()> {
    let env = Env::new("istio-absent").await?;
    router_crds(&env).await?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    let created = given_object(&virtual_services(&env), virtual_service()).await?;
    let yaml = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio:\n          virtualService: {name: app, routes: [primary, secondary]}\n      steps:\n      - setWeight: 20\n";
    let rollout: Rollout = serde_yaml::from_str(yaml)?;
    Api::<Rollout>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &rollout).await?;

    let expected = format!("VirtualService {}/app: route secondary not found", env.ns);
    env.then("a ReconcileError condition naming the absent route", secs(30), |ro| {
        ro.status.as_ref().is_some_and(|st| {
            st.conditions.iter().any(|c| {
                c.r#type == "ReconcileError"
                    && c.status == "True"
                    && c.message.as_deref().is_some_and(|m| m.contains(&expected))
            })
        })
    })
    .await?;
    eventually("a ReconcileError event", secs(30), || async {
        Ok(env.events().await?.iter().any(|(r, m)| r == "ReconcileError" && m.contains(&expected)))
    })
    .await?;
    let vs = serde_json::to_value(virtual_services(&env).get("app").await?)?;
    assert_eq!(vs["spec"], created["spec"], "nothing was written");
    env.cleanup().await
}

/// The API of a kind the examples hold.
fn api_of(env: &Env, kind: &str) -> anyhow::Result<Api<DynamicObject>> {
    Ok(match kind {
        "VirtualService" => virtual_services(env),
        "HTTPRoute" => http_routes(env),
        "TraefikService" => traefik_services(env),
        "Ingress" => ingresses(env),
        "Service" => objects(env, "", "v1", kind, "services"),
        "Rollout" => objects(env, "stepwise.dev", "v1alpha1", kind, "rollouts"),
        other => anyhow::bail!("no API for {other} in the examples"),
    })
}

/// Applies `examples/<file>` as a user would, then walks its canary to the first pause and
/// promotes it: the example in docs/routers.md works as written.
async fn the_example_shifts_traffic(name: &str, file: &str, router: Router) -> anyhow::Result<()> {
    let mut env = Env::new(name).await?;
    router_crds(&env).await?;
    env.rollout = "demo".into();
    let text = std::fs::read_to_string(repo_root().join("examples").join(file))?;
    let mut created = Value::Null;
    for doc in text.split("\n---\n") {
        let object: Value = serde_yaml::from_str(doc)?;
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let stored = given_object(&api_of(&env, &kind)?, object).await?;
        if matches!(kind.as_str(), "VirtualService" | "HTTPRoute" | "TraefikService" | "Ingress") {
            created = stored;
        }
    }
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    router.then_weight(&env, &created, 0).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    router.then_weight(&env, &created, 20).await?;
    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    router.then_weight(&env, &created, 0).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_istio_example_shifts_traffic_as_documented() -> anyhow::Result<()> {
    the_example_shifts_traffic("istio-example", "canary-istio.yaml", Router::Istio).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_api_example_shifts_traffic_as_documented() -> anyhow::Result<()> {
    the_example_shifts_traffic("gateway-example", "canary-gateway-api.yaml", Router::GatewayApi).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_traefik_example_shifts_traffic_as_documented() -> anyhow::Result<()> {
    the_example_shifts_traffic("traefik-example", "canary-traefik.yaml", Router::Traefik).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nginx_example_shifts_traffic_as_documented() -> anyhow::Result<()> {
    the_example_shifts_traffic("nginx-example", "canary-nginx.yaml", Router::Nginx).await
}

/// The names of a VirtualService's HTTP routes, in order.
async fn http_route_names(env: &Env) -> anyhow::Result<Vec<String>> {
    let object = serde_json::to_value(virtual_services(env).get(&env.rollout).await?)?;
    let routes = object.pointer("/spec/http").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(routes.iter().map(|r| r["name"].as_str().unwrap_or_default().to_string()).collect())
}

/// Waits until the VirtualService's HTTP routes are named `want`, in that order.
async fn then_http_routes(env: &Env, want: &[&str]) -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let result = eventually(&format!("HTTP routes {want:?}"), secs(30), || {
        let seen = seen.clone();
        async move {
            let names = http_route_names(env).await?;
            *seen.lock().unwrap() = names.clone();
            Ok(names == want)
        }
    })
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}: the routes are {:?}", seen.lock().unwrap());
    }
    Ok(())
}

const MANAGED_ROUTES: &str = "        istio:\n          virtualService: {name: app, routes: [primary]}\n        managedRoutes: [{name: mirror-get}, {name: beta}]\n";
const MANAGED_STEPS: &str = "      steps:\n      - setWeight: 20\n      - setHeaderRoute: {name: beta, match: [{headerName: x-beta, headerValue: {exact: 'yes'}}]}\n      - setMirrorRoute: {name: mirror-get, percentage: 40, match: [{method: {exact: GET}}]}\n      - pause: {}\n      - setWeight: 60\n      - pause: {}\n";

/// A namespace with `services`, the VirtualService `virtual_service` and a Healthy Rollout of 5
/// pods with `strategy`; and the VirtualService as created.
async fn istio_env(
    name: &str,
    services: &[&str],
    virtual_service: Value,
    strategy: &str,
) -> anyhow::Result<(Env, Value)> {
    let env = Env::new(name).await?;
    router_crds(&env).await?;
    env.given_services(services).await?;
    let created = given_object(&virtual_services(&env), virtual_service).await?;
    env.given_rollout(5, strategy).await?;
    Ok((env, created))
}

async fn managed_routes_env(name: &str) -> anyhow::Result<(Env, Value)> {
    let strategy = format!(
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      abortScaleDownDelaySeconds: 1\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n{MANAGED_ROUTES}{MANAGED_STEPS}"
    );
    istio_env(name, &["app-stable", "app-canary"], virtual_service(), &strategy).await
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_header_and_mirror_routes_come_first_in_managed_routes_order_and_go_when_the_rollout_completes()
-> anyhow::Result<()> {
    let (env, created) = managed_routes_env("istio-managed").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(3, secs(60)).await?;
    then_http_routes(&env, &["mirror-get", "beta", "preview", "primary"]).await?;

    let vs = serde_json::to_value(virtual_services(&env).get(&env.rollout).await?)?;
    let (mirror, header) = (&vs["spec"]["http"][0], &vs["spec"]["http"][1]);
    assert_eq!(header["match"][0]["headers"]["x-beta"], json!({"exact": "yes"}), "{header}");
    assert_eq!(header["route"].as_array().map(Vec::len), Some(1), "{header}");
    assert_eq!(header["route"][0]["destination"]["host"], "app-canary", "{header}");
    assert_eq!(mirror["match"][0]["method"], json!({"exact": "GET"}), "{mirror}");
    assert_eq!(mirror["mirror"]["host"], "app-canary", "{mirror}");
    assert_eq!(mirror["mirrorPercentage"]["value"].as_f64(), Some(40.0), "{mirror}");
    // The user's routes are as they were, but for the split route's weights.
    let users: Vec<Value> = vs["spec"]["http"].as_array().unwrap()[2..].to_vec();
    assert_eq!(without_weights(&json!(users)), without_weights(&created["spec"]["http"]));
    assert_eq!(vs["spec"]["http"][3]["route"][1]["weight"], 20);
    let status = env.get().await?.status.unwrap();
    let recorded = status.canary.and_then(|c| c.managed_routes).unwrap_or_default();
    assert_eq!(recorded.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["mirror-get", "beta"]);

    env.when_promote().await?;
    env.then_paused_at_step(5, secs(60)).await?;
    then_http_routes(&env, &["mirror-get", "beta", "preview", "primary"]).await?;
    let vs = serde_json::to_value(virtual_services(&env).get(&env.rollout).await?)?;
    assert_eq!(vs["spec"]["http"][3]["route"][1]["weight"], 60, "the split route follows the steps");

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    then_http_routes(&env, &["preview", "primary"]).await?;
    Router::Istio.then_weight(&env, &created, 0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_istio_abort_removes_the_managed_routes_with_all_traffic_back_on_stable() -> anyhow::Result<()> {
    let (env, created) = managed_routes_env("istio-managed-abort").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(3, secs(60)).await?;
    then_http_routes(&env, &["mirror-get", "beta", "preview", "primary"]).await?;
    env.when_abort().await?;
    then_http_routes(&env, &["preview", "primary"]).await?;
    Router::Istio.then_weight(&env, &created, 0).await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_rollout_mid_rollout_sends_all_traffic_back_to_stable_before_it_goes() -> anyhow::Result<()> {
    let (env, created) = managed_routes_env("istio-delete").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(3, secs(60)).await?;
    then_http_routes(&env, &["mirror-get", "beta", "preview", "primary"]).await?;
    let rollout = env.get().await?;
    assert!(
        rollout.finalizers().iter().any(|f| f == "stepwise.dev/restore-traffic"),
        "a routed Rollout carries the finalizer: {:?}",
        rollout.finalizers()
    );

    env.rollouts().delete(&env.rollout, &Default::default()).await?;
    eventually("the Rollout is gone", secs(30), || async { Ok(env.rollouts().get_opt(&env.rollout).await?.is_none()) })
        .await?;
    // Restored before the finalizer let the deletion go on: no waiting needed.
    assert_eq!(http_route_names(&env).await?, ["preview", "primary"]);
    let vs = serde_json::to_value(virtual_services(&env).get(&env.rollout).await?)?;
    assert_eq!(without_weights(&vs["spec"]), without_weights(&created["spec"]));
    assert_eq!(Router::Istio.weights(&vs), (Some(0), Some(100)));
    Ok(())
}

fn destination_rules(env: &Env) -> Api<DynamicObject> {
    objects(env, "networking.istio.io", "v1", "DestinationRule", "destinationrules")
}

/// The (canary, stable) pod-template-hashes the DestinationRule's subsets select, once it splits
/// as wanted, and the VirtualService's (canary, stable) weights.
async fn then_subsets(env: &Env, canary: &str, stable: &str, canary_weight: i64) -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(None));
    let result = eventually(&format!("subsets at {canary}/{stable}, weight {canary_weight}"), secs(30), || {
        let seen = seen.clone();
        async move {
            let dr = serde_json::to_value(destination_rules(env).get(&env.rollout).await?)?;
            let vs = serde_json::to_value(virtual_services(env).get(&env.rollout).await?)?;
            let label =
                |i: usize| dr["spec"]["subsets"][i]["labels"][POD_TEMPLATE_HASH_LABEL].as_str().map(String::from);
            let weights = (
                vs.pointer("/spec/http/0/route/1/weight").cloned(),
                vs.pointer("/spec/http/0/route/0/weight").cloned(),
            );
            let now = (label(1), label(0), weights);
            let done = now.0.as_deref() == Some(canary)
                && now.1.as_deref() == Some(stable)
                && now.2 == (Some(json!(canary_weight)), Some(json!(100 - canary_weight)));
            *seen.lock().unwrap() = Some(now);
            Ok(done)
        }
    })
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}: (canary subset, stable subset, (canary, stable) weights) = {:?}", seen.lock().unwrap());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn istio_subset_level_splitting_points_the_subsets_at_their_pods_and_needs_no_services() -> anyhow::Result<()> {
    let env = Env::new("istio-subsets").await?;
    router_crds(&env).await?;
    let dr = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "app"},
        "spec": {
            "host": "app",
            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
            "subsets": [
                {"name": "stable", "labels": {"app": "demo"}},
                {"name": "canary", "labels": {"app": "demo"}},
                {"name": "legacy", "labels": {"app": "legacy"}}
            ]
        }
    });
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "app"},
        "spec": {
            "hosts": ["app"],
            "http": [{"name": "primary", "route": [
                {"destination": {"host": "app", "subset": "stable"}, "weight": 100},
                {"destination": {"host": "app", "subset": "canary"}, "weight": 0}
            ]}]
        }
    });
    let dr_created = given_object(&destination_rules(&env), dr).await?;
    given_object(&virtual_services(&env), vs).await?;
    let strategy = format!(
        "    canary:\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n        istio:\n          virtualService: {{name: app}}\n          destinationRule: {{name: app, canarySubsetName: canary, stableSubsetName: stable}}\n{STEPS}"
    );
    let first = env.given_rollout(5, &strategy).await?;
    let v1 = first.status.and_then(|s| s.stable_rs).expect("a stable version");

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let v2 = env.get().await?.status.and_then(|s| s.current_pod_hash).expect("the new version");
    then_subsets(&env, &v2, &v1, 20).await?;

    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    then_subsets(&env, &v2, &v1, 60).await?;

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    then_subsets(&env, &v2, &v2, 0).await?;

    // Only the two subsets' hash labels were written.
    let mut dr_now = serde_json::to_value(destination_rules(&env).get(&env.rollout).await?)?;
    for i in 0..2 {
        dr_now["spec"]["subsets"][i]["labels"].as_object_mut().unwrap().remove(POD_TEMPLATE_HASH_LABEL);
    }
    assert_eq!(dr_now["spec"], dr_created["spec"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_grpc_and_tcp_routes_are_split_at_every_step() -> anyhow::Result<()> {
    let env = Env::new("gateway-grpc-tcp").await?;
    router_crds(&env).await?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    let grpc_routes = objects(&env, "gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes");
    let tcp_routes = objects(&env, "gateway.networking.k8s.io", "v1", "TCPRoute", "tcproutes");
    let backends = json!([
        {"name": "app-stable", "port": 9000, "weight": 100},
        {"name": "app-canary", "port": 9000, "weight": 0}
    ]);
    let grpc = given_object(
        &grpc_routes,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute", "metadata": {"name": "app"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
                {"matches": [{"method": {"service": "shop.Admin"}}], "backendRefs": [{"name": "admin", "port": 9000}]},
                {"backendRefs": backends}
            ]}
        }),
    )
    .await?;
    let tcp = given_object(
        &tcp_routes,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "TCPRoute", "metadata": {"name": "app"},
            "spec": {"parentRefs": [{"name": "gateway", "sectionName": "tcp"}], "rules": [{"backendRefs": backends}]}
        }),
    )
    .await?;
    let strategy = format!(
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n        gatewayAPI: {{grpcRoute: app, tcpRoute: app}}\n{STEPS}"
    );
    env.given_rollout(5, &strategy).await?;
    let weights_are = |canary: i64| {
        let (grpc_routes, tcp_routes, grpc, tcp) = (grpc_routes.clone(), tcp_routes.clone(), grpc.clone(), tcp.clone());
        async move {
            let g = serde_json::to_value(grpc_routes.get("app").await?)?;
            let t = serde_json::to_value(tcp_routes.get("app").await?)?;
            let split = |o: &Value, rule: usize| {
                (
                    o["spec"]["rules"][rule]["backendRefs"][1]["weight"].as_i64(),
                    o["spec"]["rules"][rule]["backendRefs"][0]["weight"].as_i64(),
                )
            };
            let want = (Some(canary), Some(100 - canary));
            let done = split(&g, 1) == want && split(&t, 0) == want;
            if done {
                assert_eq!(without_weights(&g["spec"]), without_weights(&grpc["spec"]), "only the weights changed");
                assert_eq!(without_weights(&t["spec"]), without_weights(&tcp["spec"]), "only the weights changed");
            }
            Ok(done)
        }
    };
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    eventually("GRPCRoute and TCPRoute at 20", secs(20), || weights_are(20)).await?;
    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    eventually("GRPCRoute and TCPRoute at 60", secs(20), || weights_are(60)).await?;
    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    eventually("GRPCRoute and TCPRoute back at 0", secs(20), || weights_are(0)).await?;
    Ok(())
}

/// The names of an HTTPRoute's rules (a user's unnamed rule reads as ""), in order.
async fn http_rule_names(env: &Env) -> anyhow::Result<Vec<String>> {
    let object = serde_json::to_value(http_routes(env).get(&env.rollout).await?)?;
    let rules = object.pointer("/spec/rules").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(rules.iter().map(|r| r["name"].as_str().unwrap_or_default().to_string()).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_header_and_mirror_rules_are_accepted_by_the_real_crd_and_go_when_the_rollout_completes()
-> anyhow::Result<()> {
    let env = Env::new("gateway-managed").await?;
    router_crds(&env).await?;
    env.given_services(&["app-stable", "app-canary", "admin"]).await?;
    let created = given_object(&http_routes(&env), http_route()).await?;
    let routing = "        gatewayAPI: {httpRoute: app}\n        managedRoutes: [{name: shadow}, {name: beta}]\n";
    let strategy = format!(
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n{routing}{MANAGED_STEPS}"
    )
    .replace("mirror-get", "shadow");
    env.given_rollout(5, &strategy).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(3, secs(60)).await?;
    eventually("the header and mirror rules before the split rule", secs(30), || async {
        Ok(http_rule_names(&env).await? == ["", "shadow", "beta", ""])
    })
    .await?;
    let route = serde_json::to_value(http_routes(&env).get(&env.rollout).await?)?;
    let (shadow, beta) = (&route["spec"]["rules"][1], &route["spec"]["rules"][2]);
    assert_eq!(beta["backendRefs"].as_array().map(Vec::len), Some(1), "{beta}");
    assert_eq!(beta["backendRefs"][0]["name"], "app-canary", "{beta}");
    let header = &beta["matches"][0]["headers"][0];
    assert_eq!((header["name"].as_str(), header["value"].as_str()), (Some("x-beta"), Some("yes")), "{beta}");
    let mirror = shadow["filters"].as_array().and_then(|f| f.iter().find(|f| f["type"] == "RequestMirror"));
    let mirror = mirror.unwrap_or_else(|| panic!("a RequestMirror filter: {shadow}"));
    assert_eq!(mirror["requestMirror"]["backendRef"]["name"], "app-canary", "{shadow}");
    assert_eq!(mirror["requestMirror"]["percent"], 40, "{shadow}");
    assert_eq!(route["spec"]["rules"][3]["backendRefs"][1]["weight"], 20, "the split rule is at 20");

    env.when_promote().await?;
    env.then_paused_at_step(5, secs(60)).await?;
    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    eventually("the user's rules alone again", secs(30), || async { Ok(http_rule_names(&env).await? == ["", ""]) })
        .await?;
    Router::GatewayApi.then_weight(&env, &created, 0).await?;
    Ok(())
}

/// A VirtualService split between the pingPong Services, all the traffic on ping.
fn ping_pong_virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "app"},
        "spec": {
            "hosts": ["app.example.invalid"],
            "http": [
                {"name": "preview", "match": [{"headers": {"x-preview": {"exact": "1"}}}],
                 "route": [{"destination": {"host": "app-preview"}}]},
                {"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"},
                 "route": [
                    {"destination": {"host": "app-ping", "port": {"number": 80}}, "weight": 100},
                    {"destination": {"host": "app-pong", "port": {"number": 80}}, "weight": 0}
                 ]}
            ]
        }
    })
}

/// (ping, pong) weights of the VirtualService's primary route.
fn ping_pong_weights(object: &Value) -> (Option<i64>, Option<i64>) {
    let weight = |i: usize| object.pointer(&format!("/spec/http/1/route/{i}/weight")).and_then(Value::as_i64);
    (weight(0), weight(1))
}

/// Waits until the VirtualService sends `ping` to app-ping and `pong` to app-pong, and checks
/// that nothing but the weights differs from the VirtualService as created.
async fn then_ping_pong_weights(env: &Env, created: &Value, ping: i64, pong: i64) -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(None));
    let result = eventually(&format!("ping {ping}, pong {pong}"), secs(30), || {
        let seen = seen.clone();
        async move {
            let weights = ping_pong_weights(&serde_json::to_value(virtual_services(env).get(&env.rollout).await?)?);
            *seen.lock().unwrap() = Some(weights);
            Ok(weights == (Some(ping), Some(pong)))
        }
    })
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}: (ping, pong) = {:?}", seen.lock().unwrap());
    }
    let object = serde_json::to_value(virtual_services(env).get(&env.rollout).await?)?;
    assert_eq!(without_weights(&object["spec"]), without_weights(&created["spec"]), "only the weights changed");
    Ok(())
}

/// The stable pingPong Service as the status records it, and the versions ping and pong select.
async fn ping_pong_state(env: &Env) -> anyhow::Result<(Option<String>, Option<String>, Option<String>)> {
    let status = env.get().await?.status.unwrap_or_default();
    let stable = status.canary.and_then(|c| c.stable_ping_pong).map(|p| format!("{p:?}").to_lowercase());
    Ok((stable, env.service_hash("app-ping").await?, env.service_hash("app-pong").await?))
}

/// The versions the Rollout's events say `service` was switched to, in order.
async fn switches_of(env: &Env, service: &str) -> anyhow::Result<Vec<String>> {
    let prefix = format!("Switched selector of Service {service} to ");
    let events = env.events().await?;
    Ok(events.iter().filter_map(|(_, m)| m.strip_prefix(&prefix).map(String::from)).collect())
}

/// A namespace with the ping and pong Services, the VirtualService split between them and a
/// Healthy pingPong Rollout of 5 pods routed through it; and the VirtualService as created.
async fn ping_pong_env(name: &str) -> anyhow::Result<(Env, Value)> {
    let strategy = format!(
        "    canary:\n      pingPong: {{pingService: app-ping, pongService: app-pong}}\n      abortScaleDownDelaySeconds: 1\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n        istio:\n          virtualService: {{name: app, routes: [primary]}}\n{STEPS}"
    );
    istio_env(name, &["app-ping", "app-pong"], ping_pong_virtual_service(), &strategy).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_istio_ping_pong_canary_swaps_the_services_at_each_promotion_and_not_on_abort() -> anyhow::Result<()> {
    let (env, created) = ping_pong_env("istio-pingpong").await?;
    let v1 = env.get().await?.status.unwrap().current_pod_hash;
    let ping = || Some("ping".to_string());
    let pong = || Some("pong".to_string());
    // First deploy: ping is stable, both Services select the only version.
    eventually("both Services on the first version", secs(30), || async {
        Ok(ping_pong_state(&env).await? == (ping(), v1.clone(), v1.clone()))
    })
    .await?;
    then_ping_pong_weights(&env, &created, 100, 0).await?;

    // First release: pong is the canary.
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 5, secs(30)).await?;
    let v2 = env.get().await?.status.unwrap().current_pod_hash;
    then_ping_pong_weights(&env, &created, 80, 20).await?;
    assert_eq!(ping_pong_state(&env).await?, (ping(), v1.clone(), v2.clone()));
    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    then_ping_pong_weights(&env, &created, 40, 60).await?;
    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(5, 0, secs(60)).await?;
    // Pong carried all the traffic at the end: it is stable now, and ping, with none, follows.
    then_ping_pong_weights(&env, &created, 0, 100).await?;
    assert_eq!(ping_pong_state(&env).await?, (pong(), v2.clone(), v2.clone()));
    assert_eq!(
        switches_of(&env, "app-pong").await?,
        [v1.clone().unwrap(), v2.clone().unwrap()],
        "pong was switched to the new version once, before it had traffic, and never again"
    );

    // Second release: ping is the canary, and stable again at the end.
    env.when_image("example.invalid/demo:3").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 5, secs(30)).await?;
    let v3 = env.get().await?.status.unwrap().current_pod_hash;
    then_ping_pong_weights(&env, &created, 20, 80).await?;
    assert_eq!(ping_pong_state(&env).await?, (pong(), v3.clone(), v2.clone()));
    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(5, 0, secs(60)).await?;
    then_ping_pong_weights(&env, &created, 100, 0).await?;
    assert_eq!(ping_pong_state(&env).await?, (ping(), v3.clone(), v3.clone()));

    // Third release, aborted: pong is the canary; all the traffic goes back to ping, no swap.
    env.when_image("example.invalid/demo:4").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 5, secs(30)).await?;
    let v4 = env.get().await?.status.unwrap().current_pod_hash;
    then_ping_pong_weights(&env, &created, 80, 20).await?;
    assert_eq!(ping_pong_state(&env).await?, (ping(), v3.clone(), v4.clone()));
    check_traffic_leaves_before_pods(
        &env,
        virtual_services(&env),
        |o| ping_pong_weights(o).1,
        v4.clone().unwrap(),
        1,
        || async {
            env.when_abort().await?;
            env.then_phase(RolloutPhase::Degraded, secs(30)).await?;
            env.then_pods(0, 5, secs(60)).await
        },
    )
    .await?;
    then_ping_pong_weights(&env, &created, 100, 0).await?;
    assert_eq!(ping_pong_state(&env).await?, (ping(), v3.clone(), v3.clone()), "pong went back to the stable pods");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_ping_pong_rollout_mid_rollout_sends_all_traffic_to_the_service_that_is_stable_now()
-> anyhow::Result<()> {
    let (env, created) = ping_pong_env("pingpong-delete").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    then_ping_pong_weights(&env, &created, 0, 100).await?;
    // Pong is stable now; ping is the canary of the next release.
    env.when_image("example.invalid/demo:3").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    then_ping_pong_weights(&env, &created, 20, 80).await?;

    env.rollouts().delete(&env.rollout, &Default::default()).await?;
    eventually("the Rollout is gone", secs(30), || async { Ok(env.rollouts().get_opt(&env.rollout).await?.is_none()) })
        .await?;
    let vs = serde_json::to_value(virtual_services(&env).get(&env.rollout).await?)?;
    assert_eq!(ping_pong_weights(&vs), (Some(0), Some(100)), "all the traffic on pong, the stable Service");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_pong_with_a_canary_service_is_refused_by_the_api_server_naming_the_field() -> anyhow::Result<()> {
    let env = Env::new("pingpong-refused").await?;
    let yaml = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n    canary:\n      canaryService: app-canary\n      pingPong: {pingService: app-ping, pongService: app-pong}\n      trafficRouting:\n        istio:\n          virtualService: {name: app}\n";
    let rollout: Rollout = serde_yaml::from_str(yaml)?;
    let err = env.rollouts().create(&PostParams::default(), &rollout).await.expect_err("refused");
    assert!(
        err.to_string()
            .contains("spec.strategy.canary.pingPong cannot be combined with canaryService or stableService"),
        "{err}"
    );
    env.cleanup().await
}

/// Applies examples/canary-istio-pingpong.yaml as a user would and releases a version through
/// it: the example in docs/routers.md works as written.
#[tokio::test(flavor = "multi_thread")]
async fn the_istio_ping_pong_example_swaps_the_services_as_documented() -> anyhow::Result<()> {
    let mut env = Env::new("pingpong-example").await?;
    router_crds(&env).await?;
    env.rollout = "demo".into();
    let text = std::fs::read_to_string(repo_root().join("examples/canary-istio-pingpong.yaml"))?;
    for doc in text.split("\n---\n") {
        let object: Value = serde_yaml::from_str(doc)?;
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        given_object(&api_of(&env, &kind)?, object).await?;
    }
    let weights = || async {
        let object = serde_json::to_value(virtual_services(&env).get("demo").await?)?;
        let weight = |i: usize| object.pointer(&format!("/spec/http/0/route/{i}/weight")).and_then(Value::as_i64);
        anyhow::Ok((weight(0), weight(1)))
    };
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    eventually("ping 80, pong 20", secs(30), || async { Ok(weights().await? == (Some(80), Some(20))) }).await?;
    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    eventually("ping 0, pong 100", secs(30), || async { Ok(weights().await? == (Some(0), Some(100))) }).await?;
    let status = env.get().await?.status.unwrap();
    assert_eq!(status.canary.and_then(|c| c.stable_ping_pong), Some(stepwise_api::PingPong::Pong));
    assert_eq!(env.service_hash("demo-pong").await?, status.current_pod_hash);
    env.cleanup().await
}
