//! A provider that returns scripted values, for tests.

use std::collections::VecDeque;

use stepwise_api::Metric;

use crate::{Error, MeasuredValue, MetricProvider};

/// Returns its scripted values in order, then reports no data.
#[derive(Debug, Default)]
pub struct FakeProvider {
    /// Values still to return.
    pub script: VecDeque<MeasuredValue>,
}

impl MetricProvider for FakeProvider {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn measure(&mut self, metric: &Metric) -> Result<MeasuredValue, Error> {
        self.script.pop_front().ok_or_else(|| Error::NoData { metric: metric.name.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_values_come_back_in_order_then_no_data() {
        let mut p = FakeProvider { script: VecDeque::from([MeasuredValue::Scalar(0.99)]) };
        let m = Metric { name: "success-rate".into(), ..Default::default() };
        assert_eq!(p.measure(&m).unwrap(), MeasuredValue::Scalar(0.99));
        assert!(matches!(p.measure(&m), Err(Error::NoData { .. })));
    }
}
