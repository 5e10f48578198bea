//! Admins' payment analytics, computed from the ledger.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::helpers::{capture, eur, refund, spawn_app};

#[tokio::test]
async fn analytics_count_volume_success_declines_and_refunds_by_day_provider_and_currency() {
    let mut app = spawn_app().await;
    let (first, _) = app.authorize("pm_card_visa", 1000).await;
    assert_eq!(app.ask(capture(&first, None)).await.name(), "captured");
    assert_eq!(app.ask(refund(&first, eur(400))).await.name(), "refunded");
    app.authorize("pm_card_visa", 2000).await;
    app.authorize("pm_card_chargeDeclined", 500).await;
    app.authorize("pm_card_chargeDeclinedInsufficientFunds", 500)
        .await;
    let (_, challenged) = app.authorize("pm_card_threeDSecure2Required", 700).await;
    assert_eq!(challenged.name(), "requires_action");

    let report: Value = app
        .get("/v1/payments/analytics", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    let days = report["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{report}");
    let today = &days[0];
    assert_eq!(today["day"], report["to"]);
    assert_eq!(today["provider"], "sandbox");
    assert_eq!(today["attempted"], 5);
    assert_eq!(today["authorized"], 2);
    assert_eq!(today["declined"], 2);
    assert_eq!(today["abandoned_challenges"], 0);
    assert_eq!(today["open"], 1, "the challenge is still open");
    assert_eq!(today["success_rate"], 0.5, "2 authorized of 4 decided");
    assert_eq!(
        today["authorized_amount"],
        json!({"amount": 3000, "currency": "EUR"})
    );
    assert_eq!(today["captured_amount"]["amount"], 1000);
    assert_eq!(today["refunded_amount"]["amount"], 400);
    assert_eq!(
        report["decline_reasons"],
        json!([{"code": "card_declined", "count": 1}, {"code": "insufficient_funds", "count": 1}])
    );

    // A window with nothing in it, bad windows, and non-admins.
    let empty: Value = app
        .get(
            "/v1/payments/analytics?from=2020-01-01&to=2020-01-31",
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["days"], json!([]));
    for bad in [
        "?from=2026-12-02&to=2026-12-01",
        "?from=2020-01-01&to=2026-12-01",
        "?from=yesterday",
        "?days=3",
    ] {
        let response = app
            .get(&format!("/v1/payments/analytics{bad}"), Some(&app.admin))
            .await;
        assert_eq!(response.status(), 422, "{bad}");
    }
    let customer = app.get("/v1/payments/analytics", Some(&app.customer)).await;
    assert_eq!(customer.status(), 403);
}

#[tokio::test]
async fn payments_by_outcome_are_prometheus_metrics_read_from_the_ledger() {
    let mut app = crate::helpers::spawn_app_with(&["--metrics-refresh-seconds=1"]).await;
    let (auth, reply) = app
        .authorize(
            tienda_payments::provider::sandbox::REFUND_PENDING_CARD,
            1_500,
        )
        .await;
    assert_eq!(reply.name(), "authorized");
    let reply = app.ask(crate::helpers::capture(&auth, None)).await;
    assert_eq!(reply.name(), "captured");
    let (_, reply) = app
        .authorize("pm_card_chargeDeclinedInsufficientFunds", 900)
        .await;
    assert_eq!(reply.name(), "declined");

    let wanted = [
        r#"payments_attempts_last_hour{code="",operation="authorize",outcome="succeeded",provider="sandbox",service="payments"} 1"#,
        r#"payments_attempts_last_hour{code="",operation="capture",outcome="succeeded",provider="sandbox",service="payments"} 1"#,
        r#"payments_attempts_last_hour{code="insufficient_funds",operation="authorize",outcome="declined",provider="sandbox",service="payments"} 1"#,
        r#"payments_amount_last_hour_minor{currency="EUR",kind="captured",provider="sandbox",service="payments"} 1500"#,
        r#"payments_amount_last_hour_minor{currency="EUR",kind="authorized",provider="sandbox",service="payments"} 1500"#,
        r#"payments_webhook_backlog{service="payments"} 0"#,
        r#"payments_attempts_last_hour{code="",operation="refund",outcome="succeeded",provider="sandbox",service="payments"} 1"#,
        r#"payments_refunds_pending{service="payments"} 1"#,
    ];
    // A refund the sandbox leaves pending (for 200 ms; the worker looks after 30 s).
    app.send(crate::helpers::refund(&auth, crate::helpers::eur(100)))
        .await;
    let mut text = String::new();
    for _ in 0..100 {
        text = app
            .http
            .get(format!("{}/metrics", app.admin_base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted.iter().all(|w| text.contains(w)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let missing: Vec<_> = wanted.iter().filter(|w| !text.contains(*w)).collect();
    panic!("missing from /metrics after 10 s: {missing:?}\n{text}");
}
