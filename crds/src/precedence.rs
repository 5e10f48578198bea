//! Which of two policies claiming one target wins, the Gateway API way: the older by creation
//! time, then the first by name. One rule for the operator (the loser's status says
//! `Conflicted`) and for every process that applies policies (the gateway, the services), so
//! what a status says is applied is what is applied.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A policy's place in line: lower wins. Policies without a creation time (files under
/// `tienda up`) come first, by name.
pub fn precedence(meta: &ObjectMeta) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        meta.creation_timestamp.as_ref().map(|t| t.0),
        meta.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, created: Option<&str>) -> ObjectMeta {
        serde_json::from_value(serde_json::json!({"name": name, "creationTimestamp": created}))
            .unwrap()
    }

    #[test]
    fn the_older_wins_whatever_the_names_and_names_break_ties() {
        let old = meta("zeta", Some("2026-01-01T00:00:00Z"));
        let new = meta("alpha", Some("2026-06-01T00:00:00Z"));
        assert!(precedence(&old) < precedence(&new));
        let twin = meta("beta", Some("2026-01-01T00:00:00Z"));
        assert!(precedence(&twin) < precedence(&old));
    }
}
