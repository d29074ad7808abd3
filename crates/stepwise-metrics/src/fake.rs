//! A provider that returns scripted readings, for tests of the AnalysisRun controller.

use std::collections::VecDeque;
use std::sync::Mutex;

use stepwise_api::{Measurement, Metric};

use crate::{Error, MetricProvider, RunRef, Taken};

/// Returns its scripted results in order (for `run` and `resume` alike), then reports no data;
/// records every call.
#[derive(Debug, Default)]
pub struct FakeProvider {
    kind: Option<&'static str>,
    script: Mutex<VecDeque<Result<Taken, String>>>,
    calls: Mutex<Vec<String>>,
}

impl FakeProvider {
    /// A provider that answers with `script`, in order; an `Err` becomes a source error.
    pub fn new(script: impl IntoIterator<Item = Result<Taken, String>>) -> Self {
        FakeProvider { kind: None, script: Mutex::new(script.into_iter().collect()), calls: Mutex::default() }
    }

    /// The same, standing in for the provider of `kind` (`fake` otherwise).
    pub fn as_kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }

    /// The calls made so far, as `run <metric>`, `resume <metric>`, `terminate <metric>` or
    /// `gc <metric> <n>`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls lock").clone()
    }

    fn next(&self, call: String, metric: &Metric) -> Result<Taken, Error> {
        self.calls.lock().expect("calls lock").push(call);
        match self.script.lock().expect("script lock").pop_front() {
            Some(Ok(taken)) => Ok(taken),
            Some(Err(message)) => Err(Error::Source { target: "fake".into(), message }),
            None => Err(Error::NoData { metric: metric.name.clone() }),
        }
    }
}

impl MetricProvider for FakeProvider {
    fn kind(&self) -> &'static str {
        self.kind.unwrap_or("fake")
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        self.next(format!("run {}", metric.name), metric)
    }

    async fn resume(&self, _run: &RunRef, metric: &Metric, _measurement: &Measurement) -> Result<Taken, Error> {
        self.next(format!("resume {}", metric.name), metric)
    }

    async fn terminate(&self, _run: &RunRef, metric: &Metric, _measurement: &Measurement) -> Result<(), Error> {
        self.calls.lock().expect("calls lock").push(format!("terminate {}", metric.name));
        Ok(())
    }

    async fn garbage_collect(&self, _run: &RunRef, metric: &Metric, dropped: &[Measurement]) -> Result<(), Error> {
        self.calls.lock().expect("calls lock").push(format!("gc {} {}", metric.name, dropped.len()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reading;

    #[tokio::test]
    async fn scripted_readings_come_back_in_order_then_no_data() {
        let p = FakeProvider::new([Ok(Taken::new(Reading::Value(serde_json::json!([0.99])))), Err("down".into())]);
        let m = Metric { name: "success-rate".into(), ..Default::default() };
        let run = RunRef::default();
        assert_eq!(p.run(&run, &m).await.unwrap().reading, Reading::Value(serde_json::json!([0.99])));
        assert_eq!(p.run(&run, &m).await.unwrap_err().to_string(), "fake: down");
        assert!(matches!(p.run(&run, &m).await, Err(Error::NoData { .. })));
        assert_eq!(p.calls(), ["run success-rate", "run success-rate", "run success-rate"]);
    }

    fn metric(provider: serde_json::Value) -> Metric {
        serde_json::from_value(serde_json::json!({"name": "m", "provider": provider})).unwrap()
    }

    #[tokio::test]
    async fn a_measurement_goes_to_the_provider_of_its_kind_and_an_unknown_kind_is_named() {
        let value = |v: i32| Ok(Taken::new(Reading::Value(serde_json::json!(v))));
        let providers = crate::Providers::default()
            .with(FakeProvider::new([value(1)]).as_kind("web"))
            .with(FakeProvider::new([value(2)]).as_kind("job"));
        let run = RunRef::default();
        let web = metric(serde_json::json!({"web": {"url": "http://127.0.0.1:1/"}}));
        let job = metric(serde_json::json!({"job": {"spec": {"template": {}}}}));
        let taken = |m: Metric| {
            let providers = &providers;
            let run = &run;
            async move { providers.of(&m).unwrap().run(run, &m).await.unwrap().reading }
        };
        assert_eq!(taken(job).await, Reading::Value(serde_json::json!(2)));
        assert_eq!(taken(web).await, Reading::Value(serde_json::json!(1)));
        let prometheus = metric(serde_json::json!({"prometheus": {"address": "http://127.0.0.1:1", "query": "up"}}));
        assert_eq!(
            providers.of(&prometheus).err().unwrap(),
            "the metric needs a provider this controller has (job, web): provider.prometheus is not one"
        );
        assert_eq!(
            providers.of(&metric(serde_json::json!({}))).err().unwrap(),
            "the metric needs a provider this controller has (job, web): it sets none"
        );
    }
}
