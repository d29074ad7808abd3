use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// `t` plus a number of seconds.
pub fn add_seconds(t: &Time, seconds: i64) -> Time {
    Time(t.0.checked_add(SignedDuration::from_secs(seconds)).unwrap_or(Timestamp::MAX))
}

/// Seconds from `from` to `to`, negative when `to` is earlier.
pub fn seconds_between(from: &Time, to: &Time) -> f64 {
    to.0.duration_since(from.0).as_secs_f64()
}
