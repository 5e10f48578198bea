//! Every CEL rule of every CRD, evaluated locally: at least one accepted and one rejected case
//! each. `every_cel_rule_has_an_accepted_and_a_rejected_case` fails when a rule is added
//! without cases here.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tienda_crds::{crd_yaml, validation::validate};

use crate::support::merge;

fn shop() -> Value {
    json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop", "metadata": {"name": "demo"},
        "spec": {
            "version": "0.1.0",
            "postgres": {"host": "pg", "adminSecretRef": {"name": "pg-admin"}},
            "nats": {"url": "nats://nats:4222"}
        }
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Service", "metadata": {"name": "demo-orders"},
        "spec": {
            "shop": "demo", "component": "orders",
            "image": "ghcr.io/tienda-dev/tienda-orders:0.1.0",
            "database": {"name": "orders"},
            "streams": [{"name": "ORDERS", "subjects": ["tienda.orders.>"]}],
            "consumers": [{"name": "orders-payments", "stream": "PAYMENTS"}]
        }
    })
}

fn rate_limit() -> Value {
    json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "RateLimitPolicy", "metadata": {"name": "p"},
        "spec": {
            "targetRef": {"kind": "Service", "name": "products"},
            "rules": [{"name": "r", "clientKey": {"type": "ClientIP"}, "requests": 100, "period": "1m"}]
        }
    })
}

fn circuit() -> Value {
    json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "CircuitPolicy", "metadata": {"name": "c"},
        "spec": {"targetRef": {"kind": "Service", "name": "payments"}, "timeout": "2s"}
    })
}

/// A rule's message, the object (a base with a merge patch), the old object for transition
/// rules, and whether it must pass.
struct Case {
    kind: &'static str,
    rule: &'static str,
    patch: Value,
    old_patch: Option<Value>,
    accepted: bool,
}

fn base(kind: &str) -> Value {
    match kind {
        "Shop" => shop(),
        "Service" => service(),
        "RateLimitPolicy" => rate_limit(),
        "CircuitPolicy" => circuit(),
        other => panic!("no base for {other}"),
    }
}

fn ok(kind: &'static str, rule: &'static str, patch: Value) -> Case {
    Case {
        kind,
        rule,
        patch,
        old_patch: None,
        accepted: true,
    }
}

fn bad(kind: &'static str, rule: &'static str, patch: Value) -> Case {
    Case {
        kind,
        rule,
        patch,
        old_patch: None,
        accepted: false,
    }
}

fn ok_update(kind: &'static str, rule: &'static str, old: Value, new: Value) -> Case {
    Case {
        kind,
        rule,
        patch: new,
        old_patch: Some(old),
        accepted: true,
    }
}

fn bad_update(kind: &'static str, rule: &'static str, old: Value, new: Value) -> Case {
    Case {
        kind,
        rule,
        patch: new,
        old_patch: Some(old),
        accepted: false,
    }
}

fn rule(patch: Value) -> Value {
    // RateLimitPolicy rules are a list: patch the one rule of the base.
    let mut r = rate_limit()["spec"]["rules"][0].clone();
    r = merge(r, &patch);
    json!({"spec": {"rules": [r]}})
}

fn stream(patch: Value) -> Value {
    let s = merge(service()["spec"]["streams"][0].clone(), &patch);
    json!({"spec": {"streams": [s]}})
}

fn consumer(patch: Value) -> Value {
    let c = merge(service()["spec"]["consumers"][0].clone(), &patch);
    json!({"spec": {"consumers": [c]}})
}

fn cases() -> Vec<Case> {
    const SHOP_NAME: &str = "a Shop name must be at most 49 lowercase letters";
    const GW: &str = "gateway exposure is set but the gateway component is not listed";
    const NATS_URL: &str = "must be nats:// or tls:// URLs separated by commas";
    const REPLICAS: &str = "must be 1, 3 or 5";
    const EXPOSURE: &str = "set either ingress or httpRoute, not both";
    const OTLP: &str = "must be an http:// or https:// URL";
    const DB_KEPT: &str = "database cannot be removed; delete the Service to release it";
    const GW_DB: &str = "the gateway keeps no state and takes no database";
    const SHOP_IMM: &str = "shop is immutable";
    const COMPONENT_IMM: &str = "component is immutable";
    const DB_NAME_IMM: &str = "database name is immutable";
    const DUP: &str = "duplicateWindow must not exceed maxAge";
    const STORAGE: &str = "storage is immutable";
    const BACKOFF_LEN: &str = "backoff must have fewer entries than maxDeliver";
    const ACK_WAIT: &str = "ackWait must be between 1s and 1h";
    const BURST_TB: &str = "burst applies to the TokenBucket algorithm only";
    const BURST_MAX: &str = "burst must not exceed requests";
    const PERIOD: &str = "period must be between 1s and 24h";
    const PATH: &str = "set either path or pathPrefix, not both";
    const HEADER: &str = "header is required when type is Header, and only then";
    const ANY: &str = "a CircuitPolicy must set at least one of";
    const PER_TRY: &str = "retry.perTryTimeout must not exceed timeout";
    const OUTLIER: &str = "outlierDetection needs endpoints to eject";
    const TIMEOUT: &str = "timeout must be between 10ms and 5m";
    const BASE_MAX: &str = "backoff.base must not exceed backoff.max";
    const BASE_MIN: &str = "backoff.base must be at least 1ms";
    const TRIGGER: &str = "set consecutiveFailures, failureRatio, or both";
    const WINDOW: &str = "window must be between 1s and 10m";
    const OPEN_FOR: &str = "openFor must be between 100ms and 1h";
    const RATIO: &str = "failureRatio must be in (0, 1]";
    const FALLBACK: &str = "must be 429, 502, 503 or 504";
    const STRIPE: &str = "provider stripe needs stripe.secretRef";
    const PAYPAL: &str = "provider paypal needs paypal.secretRef";
    const SMTP_TLS: &str = "credentials are never sent without TLS";
    const SMS: &str = "name at least one SMS provider";
    const PUSH: &str = "name at least one push provider";
    const VAPID: &str = "subject is how push services reach the shop";
    let twilio = json!({"accountSid": "AC0123456789abcdef0123456789abcdef", "from": "+15005550006",
                        "secretRef": {"name": "twilio"}});

    let ingress = json!({"host": "shop.example.com"});
    let route = json!({"parentRefs": [{"name": "public"}]});
    vec![
        ok(
            "Shop",
            SHOP_NAME,
            json!({"metadata": {"name": "a".repeat(49)}}),
        ),
        ok("Shop", SHOP_NAME, json!({"metadata": {"name": "shop-2"}})),
        bad(
            "Shop",
            SHOP_NAME,
            json!({"metadata": {"name": "a".repeat(50)}}),
        ),
        bad("Shop", SHOP_NAME, json!({"metadata": {"name": "2shop"}})),
        bad("Shop", SHOP_NAME, json!({"metadata": {"name": "my.shop"}})),
        bad("Shop", SHOP_NAME, json!({"metadata": {"name": "shop-"}})),
        // Shop
        ok(
            "Shop",
            GW,
            json!({"spec": {"gateway": {"ingress": ingress}}}),
        ),
        bad(
            "Shop",
            GW,
            json!({"spec": {"gateway": {"ingress": ingress}, "components": [{"name": "products"}]}}),
        ),
        ok(
            "Shop",
            NATS_URL,
            json!({"spec": {"nats": {"url": "nats://a:4222, tls://b:4222"}}}),
        ),
        bad(
            "Shop",
            NATS_URL,
            json!({"spec": {"nats": {"url": "nats://a:4222,http://b"}}}),
        ),
        ok(
            "Shop",
            REPLICAS,
            json!({"spec": {"nats": {"streamReplicas": 3}}}),
        ),
        bad(
            "Shop",
            REPLICAS,
            json!({"spec": {"nats": {"streamReplicas": 2}}}),
        ),
        ok(
            "Shop",
            EXPOSURE,
            json!({"spec": {"gateway": {"httpRoute": route}}}),
        ),
        bad(
            "Shop",
            EXPOSURE,
            json!({"spec": {"gateway": {"httpRoute": route, "ingress": ingress}}}),
        ),
        ok(
            "Shop",
            OTLP,
            json!({"spec": {"telemetry": {"otlpEndpoint": "http://otel:4317"}}}),
        ),
        bad(
            "Shop",
            OTLP,
            json!({"spec": {"telemetry": {"otlpEndpoint": "otel:4317"}}}),
        ),
        ok(
            "Shop",
            STRIPE,
            json!({"spec": {"payments": {"provider": "stripe", "stripe": {"secretRef": {"name": "stripe-keys"}}}}}),
        ),
        ok(
            "Shop",
            STRIPE,
            json!({"spec": {"payments": {"provider": "sandbox"}}}),
        ),
        bad(
            "Shop",
            STRIPE,
            json!({"spec": {"payments": {"provider": "stripe"}}}),
        ),
        ok(
            "Shop",
            SMTP_TLS,
            json!({"spec": {"notifications": {"smtp": {"host": "smtp.example.com", "secretRef": {"name": "smtp"}}}}}),
        ),
        ok(
            "Shop",
            SMTP_TLS,
            json!({"spec": {"notifications": {"smtp": {"host": "relay", "tls": "none"}}}}),
        ),
        bad(
            "Shop",
            SMTP_TLS,
            json!({"spec": {"notifications": {"smtp": {"host": "relay", "tls": "none", "secretRef": {"name": "smtp"}}}}}),
        ),
        ok(
            "Shop",
            SMS,
            json!({"spec": {"notifications": {"sms": {"twilio": twilio}}}}),
        ),
        bad("Shop", SMS, json!({"spec": {"notifications": {"sms": {}}}})),
        ok(
            "Shop",
            PUSH,
            json!({"spec": {"notifications": {"push": {"fcm": {"secretRef": {"name": "fcm"}}}}}}),
        ),
        bad(
            "Shop",
            PUSH,
            json!({"spec": {"notifications": {"push": {}}}}),
        ),
        ok(
            "Shop",
            VAPID,
            json!({"spec": {"notifications": {"push": {"webpush": {"subject": "mailto:ops@acme.example",
                   "secretRef": {"name": "vapid"}}}}}}),
        ),
        bad(
            "Shop",
            VAPID,
            json!({"spec": {"notifications": {"push": {"webpush": {"subject": "ops@acme.example",
                   "secretRef": {"name": "vapid"}}}}}}),
        ),
        ok(
            "Shop",
            PAYPAL,
            json!({"spec": {"payments": {"provider": "paypal", "paypal": {"secretRef": {"name": "paypal-app"}}}}}),
        ),
        bad(
            "Shop",
            PAYPAL,
            json!({"spec": {"payments": {"provider": "paypal", "stripe": {"secretRef": {"name": "k"}}}}}),
        ),
        ok(
            "Shop",
            OTLP,
            json!({"spec": {"payments": {"provider": "stripe", "stripe": {"apiBase": "http://localhost:8420", "secretRef": {"name": "k"}}}}}),
        ),
        bad(
            "Shop",
            OTLP,
            json!({"spec": {"payments": {"provider": "stripe", "stripe": {"apiBase": "localhost:8420", "secretRef": {"name": "k"}}}}}),
        ),
        // Service
        ok_update(
            "Service",
            DB_KEPT,
            json!({}),
            json!({"spec": {"replicas": 3}}),
        ),
        ok_update(
            "Service",
            DB_KEPT,
            json!({"spec": {"database": null}}),
            json!({}),
        ),
        bad_update(
            "Service",
            DB_KEPT,
            json!({}),
            json!({"spec": {"database": null}}),
        ),
        ok(
            "Service",
            GW_DB,
            json!({"spec": {"component": "gateway", "database": null}}),
        ),
        bad("Service", GW_DB, json!({"spec": {"component": "gateway"}})),
        ok_update(
            "Service",
            SHOP_IMM,
            json!({}),
            json!({"spec": {"image": "x:2"}}),
        ),
        bad_update(
            "Service",
            SHOP_IMM,
            json!({}),
            json!({"spec": {"shop": "other"}}),
        ),
        ok_update(
            "Service",
            COMPONENT_IMM,
            json!({}),
            json!({"spec": {"replicas": 2}}),
        ),
        bad_update(
            "Service",
            COMPONENT_IMM,
            json!({}),
            json!({"spec": {"component": "payments"}}),
        ),
        ok_update(
            "Service",
            DB_NAME_IMM,
            json!({}),
            json!({"spec": {"database": {"reclaimPolicy": "Delete"}}}),
        ),
        bad_update(
            "Service",
            DB_NAME_IMM,
            json!({}),
            json!({"spec": {"database": {"name": "orders2"}}}),
        ),
        ok(
            "Service",
            DUP,
            stream(json!({"maxAge": "24h", "duplicateWindow": "5m"})),
        ),
        bad(
            "Service",
            DUP,
            stream(json!({"maxAge": "1m", "duplicateWindow": "2m"})),
        ),
        ok_update(
            "Service",
            STORAGE,
            stream(json!({"storage": "File"})),
            stream(json!({"maxAge": "1h"})),
        ),
        bad_update(
            "Service",
            STORAGE,
            stream(json!({"storage": "File"})),
            stream(json!({"storage": "Memory"})),
        ),
        ok("Service", REPLICAS, stream(json!({"replicas": 5}))),
        bad("Service", REPLICAS, stream(json!({"replicas": 4}))),
        ok(
            "Service",
            BACKOFF_LEN,
            consumer(json!({"maxDeliver": 3, "backoff": ["1s", "5s"]})),
        ),
        bad(
            "Service",
            BACKOFF_LEN,
            consumer(json!({"maxDeliver": 2, "backoff": ["1s", "5s"]})),
        ),
        ok("Service", ACK_WAIT, consumer(json!({"ackWait": "1h"}))),
        bad("Service", ACK_WAIT, consumer(json!({"ackWait": "500ms"}))),
        bad("Service", ACK_WAIT, consumer(json!({"ackWait": "2h"}))),
        // RateLimitPolicy
        ok(
            "RateLimitPolicy",
            BURST_TB,
            rule(json!({"algorithm": "TokenBucket", "burst": 20})),
        ),
        bad(
            "RateLimitPolicy",
            BURST_TB,
            rule(json!({"algorithm": "SlidingWindow", "burst": 20})),
        ),
        ok(
            "RateLimitPolicy",
            BURST_MAX,
            rule(json!({"requests": 100, "burst": 100})),
        ),
        bad(
            "RateLimitPolicy",
            BURST_MAX,
            rule(json!({"requests": 100, "burst": 101})),
        ),
        ok("RateLimitPolicy", PERIOD, rule(json!({"period": "24h"}))),
        bad("RateLimitPolicy", PERIOD, rule(json!({"period": "500ms"}))),
        bad("RateLimitPolicy", PERIOD, rule(json!({"period": "25h"}))),
        ok(
            "RateLimitPolicy",
            PATH,
            rule(json!({"match": {"path": "/v1/orders", "methods": ["POST"]}})),
        ),
        bad(
            "RateLimitPolicy",
            PATH,
            rule(json!({"match": {"path": "/v1/orders", "pathPrefix": "/v1"}})),
        ),
        ok(
            "RateLimitPolicy",
            HEADER,
            rule(json!({"clientKey": {"type": "Header", "header": "X-Tenant"}})),
        ),
        bad(
            "RateLimitPolicy",
            HEADER,
            rule(json!({"clientKey": {"type": "Header"}})),
        ),
        bad(
            "RateLimitPolicy",
            HEADER,
            rule(json!({"clientKey": {"type": "User", "header": "X-Tenant"}})),
        ),
        // CircuitPolicy
        ok(
            "CircuitPolicy",
            ANY,
            json!({"spec": {"timeout": null, "bulkhead": {"maxConcurrent": 10}}}),
        ),
        bad("CircuitPolicy", ANY, json!({"spec": {"timeout": null}})),
        ok(
            "CircuitPolicy",
            PER_TRY,
            json!({"spec": {"retry": {"attempts": 3, "perTryTimeout": "2s"}}}),
        ),
        bad(
            "CircuitPolicy",
            PER_TRY,
            json!({"spec": {"retry": {"attempts": 3, "perTryTimeout": "3s"}}}),
        ),
        ok(
            "CircuitPolicy",
            OUTLIER,
            json!({"spec": {"outlierDetection": {}}}),
        ),
        bad(
            "CircuitPolicy",
            OUTLIER,
            json!({"spec": {"targetRef": {"kind": "External", "name": "stripe"}, "outlierDetection": {}}}),
        ),
        ok(
            "CircuitPolicy",
            TIMEOUT,
            json!({"spec": {"timeout": "10ms"}}),
        ),
        bad(
            "CircuitPolicy",
            TIMEOUT,
            json!({"spec": {"timeout": "5ms"}}),
        ),
        bad("CircuitPolicy", TIMEOUT, json!({"spec": {"timeout": "6m"}})),
        ok(
            "CircuitPolicy",
            BASE_MAX,
            json!({"spec": {"retry": {"attempts": 2, "backoff": {"base": "10ms", "max": "10ms"}}}}),
        ),
        bad(
            "CircuitPolicy",
            BASE_MAX,
            json!({"spec": {"retry": {"attempts": 2, "backoff": {"base": "2s", "max": "1s"}}}}),
        ),
        ok(
            "CircuitPolicy",
            BASE_MIN,
            json!({"spec": {"retry": {"attempts": 2, "backoff": {"base": "1ms", "max": "1s"}}}}),
        ),
        bad(
            "CircuitPolicy",
            BASE_MIN,
            json!({"spec": {"retry": {"attempts": 2, "backoff": {"base": "0ms", "max": "1s"}}}}),
        ),
        ok(
            "CircuitPolicy",
            TRIGGER,
            json!({"spec": {"circuitBreaker": {"consecutiveFailures": 5}}}),
        ),
        bad(
            "CircuitPolicy",
            TRIGGER,
            json!({"spec": {"circuitBreaker": {"minRequests": 5}}}),
        ),
        ok(
            "CircuitPolicy",
            WINDOW,
            json!({"spec": {"circuitBreaker": {"failureRatio": 0.5, "window": "10m"}}}),
        ),
        bad(
            "CircuitPolicy",
            WINDOW,
            json!({"spec": {"circuitBreaker": {"failureRatio": 0.5, "window": "500ms"}}}),
        ),
        ok(
            "CircuitPolicy",
            OPEN_FOR,
            json!({"spec": {"circuitBreaker": {"failureRatio": 0.5, "openFor": "100ms"}}}),
        ),
        bad(
            "CircuitPolicy",
            OPEN_FOR,
            json!({"spec": {"circuitBreaker": {"failureRatio": 0.5, "openFor": "2h"}}}),
        ),
        ok(
            "CircuitPolicy",
            RATIO,
            json!({"spec": {"circuitBreaker": {"failureRatio": 1.0}}}),
        ),
        bad(
            "CircuitPolicy",
            RATIO,
            json!({"spec": {"circuitBreaker": {"failureRatio": 0.0}}}),
        ),
        ok(
            "CircuitPolicy",
            FALLBACK,
            json!({"spec": {"fallback": {"status": 429}}}),
        ),
        bad(
            "CircuitPolicy",
            FALLBACK,
            json!({"spec": {"fallback": {"status": 500}}}),
        ),
    ]
}

#[test]
fn every_case_is_accepted_or_rejected_by_its_rule() {
    let mut failures = Vec::new();
    for case in cases() {
        let object = merge(base(case.kind), &case.patch);
        let old = case.old_patch.as_ref().map(|p| merge(base(case.kind), p));
        let result = validate(&object, old.as_ref());
        match (case.accepted, result) {
            (true, Ok(())) => {}
            (true, Err(v)) => failures.push(format!(
                "{} / {:?}: expected accepted, got {v:?}\n  object: {}",
                case.kind, case.rule, object["spec"]
            )),
            (false, Ok(())) => failures.push(format!(
                "{} / {:?}: expected rejected, was accepted\n  object: {}",
                case.kind, case.rule, object["spec"]
            )),
            (false, Err(v)) => {
                if !v.iter().any(|v| v.message.contains(case.rule)) {
                    failures.push(format!(
                        "{} / {:?}: rejected for another reason: {v:?}",
                        case.kind, case.rule
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn rule_messages(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for rule in rules {
                    out.insert(
                        rule["message"]
                            .as_str()
                            .expect("every rule has a message")
                            .into(),
                    );
                }
            }
            map.values().for_each(|v| rule_messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| rule_messages(v, out)),
        _ => {}
    }
}

#[test]
fn every_cel_rule_has_an_accepted_and_a_rejected_case() {
    let cases = cases();
    let mut missing = Vec::new();
    for crd in crd_yaml::crds() {
        let kind = crd.spec.names.kind.clone();
        let mut messages = BTreeSet::new();
        rule_messages(
            &serde_json::to_value(&crd.spec.versions[0].schema).unwrap(),
            &mut messages,
        );
        for message in messages {
            for accepted in [true, false] {
                let covered = cases.iter().any(|c| {
                    c.kind == kind && c.accepted == accepted && message.starts_with(c.rule)
                });
                if !covered {
                    let which = if accepted { "accepted" } else { "rejected" };
                    missing.push(format!("{kind}: no {which} case for {message:?}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_typed_validate_cel_agrees_with_the_schema_validator() {
    let policy: tienda_crds::RateLimitPolicy =
        serde_json::from_value(merge(rate_limit(), &rule(json!({"burst": 101})))).unwrap();
    let errors = policy.validate_cel().unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("burst must not exceed requests"))
    );
}
