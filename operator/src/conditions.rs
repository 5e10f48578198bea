//! Standard conditions: `lastTransitionTime` changes only when a condition's status changes,
//! so a status patch that repeats the same state is a no-op for watchers.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `True`
    True,
    /// `False`
    False,
    /// `Unknown`
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Sets (adds or updates) condition `type_` in `conditions`.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status.as_str() {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.as_str().to_owned();
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.as_str().to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Whether condition `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let t0: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-29T11:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            "Ready",
            Status::False,
            "Provisioning",
            "creating the database",
            Some(1),
            t0,
        );
        set(
            &mut conditions,
            "Ready",
            Status::False,
            "Provisioning",
            "creating streams",
            Some(2),
            t1,
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].last_transition_time,
            Time(t0),
            "same status: time kept"
        );
        assert_eq!(conditions[0].message, "creating streams");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set(
            &mut conditions,
            "Ready",
            Status::True,
            "Ready",
            "",
            Some(2),
            t2,
        );
        assert_eq!(conditions[0].last_transition_time, Time(t2));
        assert!(is_true(&conditions, "Ready"));
        assert!(!is_true(&conditions, "Available"));
    }
}
