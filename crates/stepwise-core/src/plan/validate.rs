//! What the schema cannot check: the facts only the controller has (Services, templates, the
//! routers this build drives), and fields of objects written before the schema had a rule. Each
//! message names the field.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use stepwise_api::{Metric, Rollout, RolloutAnalysis, RolloutSpec};

use crate::analysis_run::{RunRequest, build_analysis_run};
use crate::hash::steps_hash;
use crate::measure::check_condition;
use crate::observed::{AnalysisKind, Observed};

/// Checks what the schema cannot: the facts that only the controller has, and fields of objects
/// written before the schema had a rule. The message names the field.
/// Why a spec cannot be carried out.
pub(crate) struct Invalid {
    /// The message, which names the field.
    pub message: String,
    /// Whether the cause is an object that may yet appear without the Rollout changing (an
    /// AnalysisTemplate, which does not wake the Rollout when it is created): plan again later.
    pub look_again: bool,
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid { message, look_again: false }
    }
}

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Invalid { message: message.into(), look_again: false }
    }
}

/// The pod template and selector of the Rollout's pods, once everything checks out.
pub(crate) fn validate(rollout: &Rollout, observed: &Observed) -> Result<(PodTemplateSpec, LabelSelector), Invalid> {
    let spec = &rollout.spec;
    let strategies = usize::from(spec.strategy.canary.is_some())
        + usize::from(spec.strategy.blue_green.is_some())
        + usize::from(spec.strategy.recreate.is_some());
    if strategies != 1 {
        return Err("spec.strategy must set exactly one of canary, blueGreen and recreate".into());
    }
    if spec.replicas.is_some_and(|r| r < 0) {
        return Err("spec.replicas must not be negative".into());
    }
    let (template, selector) = template_and_selector(spec, observed)?;
    if let (Some(deadline), Some(min_ready)) = (spec.progress_deadline_seconds, spec.min_ready_seconds)
        && deadline <= min_ready
    {
        return Err("spec.progressDeadlineSeconds must be greater than spec.minReadySeconds".into());
    }
    validate_steps(rollout)?;
    super::metadata::validate(spec, &selector)?;
    validate_services(spec, observed)?;
    validate_fenceposts(spec)?;
    validate_routers(spec, observed)?;
    validate_ping_pong_routers(spec, observed)?;
    validate_analyses(rollout, observed).map_err(|message| Invalid { message, look_again: true })?;
    Ok((template, selector))
}

fn template_and_selector(spec: &RolloutSpec, observed: &Observed) -> Result<(PodTemplateSpec, LabelSelector), String> {
    let (template, selector) = match (&spec.template, &spec.workload_ref) {
        (Some(_), Some(_)) => return Err("spec.template and spec.workloadRef cannot both be set".into()),
        (Some(t), None) => (t.clone(), spec.selector.clone()),
        (None, Some(w)) => match &observed.workload {
            Some((t, sel)) => (t.clone(), spec.selector.clone().or_else(|| sel.clone())),
            None => return Err(format!("spec.workloadRef: {} {} not found", w.kind, w.name)),
        },
        (None, None) => return Err("spec.template is required unless spec.workloadRef is set".into()),
    };
    let selector = selector.ok_or("spec.selector is required")?;
    let match_labels = selector.match_labels.clone().unwrap_or_default();
    if match_labels.is_empty() && selector.match_expressions.as_ref().is_none_or(Vec::is_empty) {
        return Err("spec.selector must not be empty".into());
    }
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    for (k, v) in &match_labels {
        if labels.get(k) != Some(v) {
            return Err(format!("spec.selector.matchLabels {k}={v} does not match spec.template.metadata.labels"));
        }
    }
    Ok((template, selector))
}

fn validate_steps(rollout: &Rollout) -> Result<(), String> {
    let Some(canary) = &rollout.spec.strategy.canary else { return Ok(()) };
    let steps = canary.steps.as_deref().unwrap_or_default();
    let max_weight = crate::traffic::max_weight(canary);
    for (i, step) in steps.iter().enumerate() {
        let field = format!("spec.strategy.canary.steps[{i}]");
        let exclusive =
            [step.set_weight.is_some(), step.pause.is_some(), step.analysis.is_some(), step.experiment.is_some()];
        let others = [
            step.set_canary_scale.is_some(),
            step.set_header_route.is_some(),
            step.set_mirror_route.is_some(),
            step.plugin.is_some(),
        ];
        if exclusive.iter().filter(|k| **k).count() > 1 || !exclusive.iter().chain(&others).any(|k| *k) {
            return Err(format!(
                "{field} must set one of setWeight, pause, analysis, experiment, setCanaryScale, setHeaderRoute, setMirrorRoute and plugin, and at most one of setWeight, pause, analysis and experiment"
            ));
        }
        // Accepted by the schema so that Argo manifests apply, refused here before any pod moves:
        // skipping the step would release a version that the experiment was meant to judge.
        if step.experiment.is_some() {
            return Err(format!(
                "{field}.experiment: stepwise runs no experiments; replace the step with an analysis step (a canary and a baseline can be compared by one query) or remove it"
            ));
        }
        if step.plugin.is_some() {
            return Err(format!(
                "{field}.plugin: stepwise runs no step plugins; replace the step with an analysis step (a metric plugin can run any check) or remove it"
            ));
        }
        if let Some(w) = step.set_weight
            && !(0..=max_weight).contains(&w)
        {
            return Err(format!("{field}.setWeight {w} must be between 0 and {max_weight}"));
        }
        if let Some(d) = step.pause.as_ref().and_then(|p| p.duration.as_ref())
            && let Err(e) = d.to_std()
        {
            return Err(format!("{field}.pause.duration: {e}"));
        }
        let needs_router =
            step.set_canary_scale.is_some() || step.set_header_route.is_some() || step.set_mirror_route.is_some();
        if needs_router && canary.traffic_routing.is_none() {
            return Err(format!("{field} needs spec.strategy.canary.trafficRouting"));
        }
        let route = step.set_header_route.as_ref().map(|r| ("setHeaderRoute", &r.name));
        let route = route.or(step.set_mirror_route.as_ref().map(|r| ("setMirrorRoute", &r.name)));
        if let Some((kind, name)) = route {
            let managed = canary.traffic_routing.iter().flat_map(|t| t.managed_routes.iter().flatten());
            if !managed.clone().any(|r| &r.name == name) {
                return Err(format!(
                    "{field}.{kind}.name: {name} is not listed in spec.strategy.canary.trafficRouting.managedRoutes"
                ));
            }
        }
    }
    let status = rollout.status.clone().unwrap_or_default();
    if let Some(idx) = status.current_step_index
        && status.current_step_hash.as_deref() == Some(steps_hash(steps).as_str())
        && (idx < 0 || idx as usize > steps.len())
    {
        return Err(format!(
            "status.currentStepIndex {idx} is outside spec.strategy.canary.steps, which has {} steps",
            steps.len()
        ));
    }
    Ok(())
}

fn validate_services(spec: &RolloutSpec, observed: &Observed) -> Result<(), String> {
    let exists = |field: &str, svc: Option<&String>| match svc {
        Some(svc) if !observed.services.contains_key(svc) => Err(format!("{field}: Service {svc} not found")),
        Some(svc) => match observed.services_of_others.get(svc) {
            Some(other) => Err(format!(
                "{field}: Service {svc} is managed by Rollout {other}, which names it too; a Service serves one Rollout"
            )),
            None => Ok(()),
        },
        None => Ok(()),
    };
    if let Some(canary) = &spec.strategy.canary {
        if let (Some(c), Some(s)) = (&canary.canary_service, &canary.stable_service)
            && c == s
        {
            return Err("spec.strategy.canary.canaryService must differ from stableService".into());
        }
        // Istio's subset-level splitting routes to DestinationRule subsets, not to Services.
        let subset_level = canary
            .traffic_routing
            .as_ref()
            .and_then(|t| t.istio.as_ref())
            .is_some_and(|i| i.destination_rule.is_some());
        if let Some(pp) = &canary.ping_pong {
            if canary.canary_service.is_some() || canary.stable_service.is_some() {
                return Err("spec.strategy.canary.pingPong cannot be combined with canaryService or stableService: the ping and pong Services take both roles in turn".into());
            }
            if pp.ping_service.is_empty() || pp.pong_service.is_empty() {
                return Err("spec.strategy.canary.pingPong needs both pingService and pongService".into());
            }
            if pp.ping_service == pp.pong_service {
                return Err("spec.strategy.canary.pingPong.pingService must differ from pongService".into());
            }
            if canary.traffic_routing.is_none() {
                return Err("spec.strategy.canary.pingPong needs trafficRouting".into());
            }
        }
        if canary.traffic_routing.is_some()
            && !subset_level
            && canary.ping_pong.is_none()
            && (canary.canary_service.is_none() || canary.stable_service.is_none())
        {
            return Err("spec.strategy.canary.trafficRouting needs canaryService and stableService, or pingPong (only Istio subset-level splitting, with a destinationRule, does without)".into());
        }
        exists("spec.strategy.canary.canaryService", canary.canary_service.as_ref())?;
        exists("spec.strategy.canary.stableService", canary.stable_service.as_ref())?;
        let ping_pong = canary.ping_pong.as_ref();
        exists("spec.strategy.canary.pingPong.pingService", ping_pong.map(|p| &p.ping_service))?;
        exists("spec.strategy.canary.pingPong.pongService", ping_pong.map(|p| &p.pong_service))?;
    }
    if let Some(bg) = &spec.strategy.blue_green {
        if bg.preview_service.as_deref() == Some(bg.active_service.as_str()) {
            return Err("spec.strategy.blueGreen.previewService must differ from activeService".into());
        }
        exists("spec.strategy.blueGreen.activeService", Some(&bg.active_service))?;
        exists("spec.strategy.blueGreen.previewService", bg.preview_service.as_ref())?;
    }
    Ok(())
}

/// maxSurge and maxUnavailable that are neither a number nor a percentage: the schema cannot
/// always tell (a string of digits is a percentage to Argo), so core refuses what it cannot read.
fn validate_fenceposts(spec: &RolloutSpec) -> Result<(), String> {
    let canary = spec.strategy.canary.as_ref();
    let bg = spec.strategy.blue_green.as_ref();
    let fields = [
        ("spec.strategy.canary.maxSurge", canary.and_then(|c| c.max_surge.as_ref())),
        ("spec.strategy.canary.maxUnavailable", canary.and_then(|c| c.max_unavailable.as_ref())),
        ("spec.strategy.blueGreen.maxUnavailable", bg.and_then(|b| b.max_unavailable.as_ref())),
    ];
    for (field, value) in fields {
        if let Some(v) = value
            && crate::replicas::scaled_value(v, 100, true).is_none_or(|n| n < 0)
        {
            let shown = match v {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => format!("{s:?}"),
            };
            return Err(format!(
                "{field} {shown} must be a non-negative number of pods or a percentage such as \"25%\""
            ));
        }
    }
    Ok(())
}

/// The routers a Rollout names, by their field under trafficRouting.
fn named_routers(spec: &RolloutSpec) -> Vec<String> {
    spec.strategy.canary.as_ref().and_then(|c| c.traffic_routing.as_ref()).map(|r| r.named()).unwrap_or_default()
}

/// A Rollout that names a router this build cannot drive is refused before anything moves: it
/// would otherwise shift pods while no traffic follows them.
fn validate_routers(spec: &RolloutSpec, observed: &Observed) -> Result<(), String> {
    let named = named_routers(spec);
    if spec.strategy.canary.as_ref().is_some_and(|c| c.traffic_routing.is_some()) && named.is_empty() {
        return Err("spec.strategy.canary.trafficRouting must name a router".into());
    }
    for kind in &named {
        if observed.router_kinds.contains(kind) {
            continue;
        }
        let field = format!("spec.strategy.canary.trafficRouting.{kind}");
        if let Some(plugin) = kind.strip_prefix("plugins.") {
            return Err(format!(
                "{field}: the router plugin {plugin} is not registered with this controller; start it with --router-plugin {plugin}=URL (docs/plugins.md)"
            ));
        }
        let why = if ["alb", "appMesh"].contains(&kind.as_str()) { " (it needs AWS)" } else { "" };
        let built_in = observed.router_kinds.iter().filter(|k| !k.starts_with("plugins."));
        let available = built_in.cloned().collect::<Vec<_>>().join(", ");
        return Err(format!(
            "{field}: the {kind} router is not available in this build of stepwise{why}; it drives {available}"
        ));
    }
    // Refused before the rollout starts rather than failing when the step is reached.
    let steps = spec.strategy.canary.iter().flat_map(|c| c.steps.iter().flatten()).enumerate();
    for (i, step) in steps {
        let wanted = [
            (step.set_header_route.is_some(), "setHeaderRoute", &observed.header_route_kinds),
            (step.set_mirror_route.is_some(), "setMirrorRoute", &observed.mirror_route_kinds),
        ];
        for (_, kind, supported) in wanted.into_iter().filter(|(set, _, _)| *set) {
            if let Some(router) = named.iter().find(|k| !supported.contains(*k)) {
                let able = supported.iter().cloned().collect::<Vec<_>>().join(", ");
                return Err(format!(
                    "spec.strategy.canary.steps[{i}].{kind}: the {router} router cannot make {kind} routes; {able} can"
                ));
            }
        }
    }
    Ok(())
}

/// pingPong needs a router that splits between two Services named as they are in their roles
/// now, and so follows a swap (`Observed::ping_pong_kinds`: Istio host-level, Gateway API and
/// router plugins). The others derive their objects from the stable Service (nginx's stable
/// Ingress, SMI's root Service, Ambassador's Mapping) or are not built for the swap; Istio's
/// subset-level splitting routes to subsets, not Services.
fn validate_ping_pong_routers(spec: &RolloutSpec, observed: &Observed) -> Result<(), String> {
    let Some(canary) = spec.strategy.canary.as_ref().filter(|c| c.ping_pong.is_some()) else { return Ok(()) };
    if canary.traffic_routing.as_ref().and_then(|t| t.istio.as_ref()).is_some_and(|i| i.destination_rule.is_some()) {
        return Err("spec.strategy.canary.pingPong cannot be combined with trafficRouting.istio.destinationRule: subset-level splitting routes to subsets, not to the ping and pong Services".into());
    }
    if let Some(kind) = named_routers(spec).into_iter().find(|k| !observed.ping_pong_kinds.contains(k)) {
        let able = observed.ping_pong_kinds.iter().filter(|k| !k.starts_with("plugins.")).cloned();
        return Err(format!(
            "spec.strategy.canary.pingPong: the {kind} router cannot swap the ping and pong Services; {} and router plugins can",
            able.collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// Every analysis the Rollout may start, with the field where it sits.
fn analyses(spec: &RolloutSpec) -> Vec<(String, &RolloutAnalysis)> {
    let mut all = Vec::new();
    if let Some(canary) = &spec.strategy.canary {
        if let Some(bg) = &canary.analysis {
            all.push(("spec.strategy.canary.analysis".to_string(), &bg.analysis));
        }
        for (i, step) in canary.steps.iter().flatten().enumerate() {
            if let Some(a) = &step.analysis {
                all.push((format!("spec.strategy.canary.steps[{i}].analysis"), a));
            }
        }
    }
    if let Some(bg) = &spec.strategy.blue_green {
        if let Some(a) = &bg.pre_promotion_analysis {
            all.push(("spec.strategy.blueGreen.prePromotionAnalysis".to_string(), a));
        }
        if let Some(a) = &bg.post_promotion_analysis {
            all.push(("spec.strategy.blueGreen.postPromotionAnalysis".to_string(), a));
        }
    }
    all
}

/// Each analysis can be turned into a run: its templates exist and combine, its arguments have
/// values. Checked on every plan, as Argo does, so that a missing template is reported when the
/// Rollout is applied rather than when the step is reached.
fn validate_analyses(rollout: &Rollout, observed: &Observed) -> Result<(), String> {
    for (field, analysis) in analyses(&rollout.spec) {
        if analysis.templates.is_empty() {
            return Err(format!("{field}.templates must name at least one template"));
        }
        let request = RunRequest { name: "validate", kind: AnalysisKind::Background, hash: "validate", revision: 1 };
        let run = build_analysis_run(rollout, observed, analysis, &request).map_err(|e| format!("{field}: {e}"))?;
        check_conditions(&run.spec.metrics).map_err(|e| format!("{field}: {e}"))?;
    }
    Ok(())
}

/// A broken condition is told when the Rollout that uses it is applied, not when its analysis
/// is reached. An `{{args.name}}` in a condition stands for a value, which the run fills in.
fn check_conditions(metrics: &[Metric]) -> Result<(), String> {
    for metric in metrics {
        for (which, condition) in
            [("successCondition", &metric.success_condition), ("failureCondition", &metric.failure_condition)]
        {
            let Some(expression) = condition.as_deref() else { continue };
            check_condition(expression).map_err(|e| format!("metric {} {which}: {e}", metric.name))?;
        }
    }
    Ok(())
}
