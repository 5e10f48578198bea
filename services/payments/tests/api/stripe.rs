//! The `stripe` provider against localstripe (a stateful Stripe emulator, PyPI; the kit's
//! `testing::LocalStripe`), started per test on a loopback port, and the webhook endpoint with Stripe's signature scheme. The
//! emulator does not check idempotency keys; `requests_carry_the_key_the_secret_and_stripes_shapes`
//! checks what we send against a recording server instead.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use chrono::Utc;
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tienda_events::payment::AuthorizePayment;
use tienda_kit::{
    outbound::Outbound,
    policy::{Policies, Scope},
};
use tienda_payments::{
    domain::money::Amount,
    provider::{AuthorizeOutcome, AuthorizeRequest, Provider, stripe::Stripe},
    webhooks::WebhookSecrets,
};
use uuid::Uuid;

use crate::helpers::{TestApp, capture, eur, refund, spawn_app_with};

use tienda_kit::testing::{
    LocalStripe, STRIPE_TEST_KEY as SECRET_KEY, STRIPE_TEST_WEBHOOK_SECRET as WEBHOOK_SECRET,
    STRIPE_THREE_DS_CARD as THREE_DS_CARD,
};

fn stripe_flags(emulator: &LocalStripe) -> Vec<String> {
    vec![
        "--provider=stripe".into(),
        format!("--stripe-api-base={}", emulator.base()),
        format!("--stripe-secret-key={SECRET_KEY}"),
        format!("--stripe-webhook-secrets={WEBHOOK_SECRET}"),
    ]
}

async fn spawn_on_stripe(emulator: &LocalStripe, extra: &[&str]) -> TestApp {
    let mut flags = stripe_flags(emulator);
    flags.extend(extra.iter().map(|f| (*f).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    spawn_app_with(&flags).await
}

/// Posts `event` to the app's Stripe webhook, signed with `secret` at `timestamp`.
async fn deliver(
    app: &TestApp,
    event: &Value,
    secret: Option<&str>,
    timestamp: i64,
) -> reqwest::Response {
    let body = serde_json::to_vec(event).unwrap();
    let mut request = app
        .http
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json");
    if let Some(secret) = secret {
        request = request.header(
            "Stripe-Signature",
            WebhookSecrets::sign(secret.as_bytes(), timestamp, &body),
        );
    }
    request.body(body).send().await.unwrap()
}

fn intent_event(id: &str, kind: &str, intent: &str, status: &str) -> Value {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": Utc::now().timestamp(),
        "data": {"object": {"id": intent, "object": "payment_intent", "status": status}}
    })
}

/// Waits until the stored event is processed; its outcome.
async fn processed(app: &TestApp, event_id: &str) -> String {
    for _ in 0..200 {
        let outcome: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT outcome FROM webhook_events WHERE event_id = $1 AND processed_at IS NOT NULL",
        )
        .bind(event_id)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if let Some((Some(outcome),)) = outcome {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("webhook event {event_id} not processed within 10 s");
}

/// The challenge token in a `requires_action` reply's action URL.
fn action_path(reply: &crate::helpers::Reply) -> String {
    reply.data()["action_url"].as_str().unwrap().to_owned()
}

/// A 3-D Secure payment at Stripe waiting for the customer.
struct Challenged {
    auth: AuthorizePayment,
    /// The action URL (a path on our API).
    action: String,
    /// The PaymentIntent.
    reference: String,
    /// What Stripe.js would be given.
    client_secret: String,
}

/// Authorizes `amount` on a card Stripe asks to authenticate.
async fn challenged(app: &mut TestApp, emulator: &LocalStripe, amount: i64) -> Challenged {
    let card = emulator.payment_method(THREE_DS_CARD).await;
    let (auth, reply) = app.authorize(&card, amount).await;
    assert_eq!(reply.name(), "requires_action", "{:?}", reply.data());
    let reference = reference_of(app, auth.payment_id).await;
    let client_secret = emulator.intent(&reference).await["client_secret"]
        .as_str()
        .expect("a client secret")
        .to_owned();
    Challenged {
        auth,
        action: action_path(&reply),
        reference,
        client_secret,
    }
}

async fn reference_of(app: &TestApp, id: Uuid) -> String {
    app.payment(id).await["provider_reference"]
        .as_str()
        .expect("a PaymentIntent id")
        .to_owned()
}

#[tokio::test]
async fn a_payment_is_authorized_captured_in_part_and_refunded_at_stripe() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(&emulator, &[]).await;

    let (auth, reply) = app.authorize("pm_card_visa", 1_000).await;
    assert_eq!(reply.name(), "authorized", "{:?}", reply.data());
    assert_eq!(reply.data()["provider"], "stripe");
    let reference = reference_of(&app, auth.payment_id).await;
    assert!(reference.starts_with("pi_"), "{reference}");
    let at_stripe = emulator.intent(&reference).await;
    assert_eq!(at_stripe["status"], "requires_capture");
    assert_eq!(at_stripe["amount"], 1_000);
    assert_eq!(at_stripe["currency"], "eur");
    assert_eq!(at_stripe["capture_method"], "manual");
    assert_eq!(
        at_stripe["metadata"]["payment_id"],
        auth.payment_id.to_string()
    );

    let reply = app.ask(capture(&auth, Some(eur(600)))).await;
    assert_eq!(reply.name(), "captured", "{:?}", reply.data());
    assert_eq!(emulator.intent(&reference).await["status"], "succeeded");

    let reply = app.ask(refund(&auth, eur(250))).await;
    assert_eq!(reply.name(), "refunded", "{:?}", reply.data());
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["captured"]["amount"], 600);
    assert_eq!(payment["refunded"]["amount"], 250);
    // The refund is Stripe's: its id is on our attempt.
    let refund_reference: String = sqlx::query_scalar(
        "SELECT provider_reference FROM payment_attempts \
         WHERE payment_id = $1 AND operation = 'refund'",
    )
    .bind(auth.payment_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(refund_reference.starts_with("re_"), "{refund_reference}");

    // More than is left of the capture is refused by us before Stripe is asked (the emulator
    // would take it).
    let reply = app.ask(refund(&auth, eur(351))).await;
    assert_eq!(reply.name(), "failed", "{:?}", reply.data());
}

#[tokio::test]
async fn declines_are_declines_and_unknown_payment_methods_are_refused() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(&emulator, &[]).await;

    let (_, reply) = app.authorize("pm_card_chargeCustomerFail", 1_000).await;
    assert_eq!(reply.name(), "declined", "{:?}", reply.data());
    assert_eq!(reply.data()["code"], "card_declined");

    let (auth, reply) = app.authorize("pm_card_no_such_method", 1_000).await;
    assert_eq!(reply.name(), "failed", "{:?}", reply.data());
    assert_eq!(
        reply.data()["retryable"],
        false,
        "a refused request cannot work later"
    );
    assert_eq!(app.payment(auth.payment_id).await["status"], "failed");
}

#[tokio::test]
async fn a_three_d_secure_payment_is_concluded_by_a_signed_webhook_and_the_emulators_verify() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(&emulator, &[]).await;
    emulator
        .send_webhooks_to(&app.url("/v1/webhooks/stripe"))
        .await;
    let Challenged {
        auth,
        action,
        reference,
        client_secret,
    } = challenged(&mut app, &emulator, 2_500).await;

    // The page reads the client secret for Stripe.js.
    let view: Value = app.get(&action, None).await.json().await.unwrap();
    assert_eq!(view["provider"], "stripe");
    assert_eq!(view["client_secret"], client_secret.as_str());
    assert!(client_secret.starts_with(&reference), "{client_secret}");

    // Saying "complete" before Stripe has the authentication changes nothing.
    let early = app
        .http
        .post(app.url(&action))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), StatusCode::CONFLICT);
    assert_eq!(
        app.payment(auth.payment_id).await["status"],
        "requires_action"
    );

    // The customer authenticates with Stripe; Stripe's webhook concludes the challenge. The
    // emulator sends no event when a manual-capture intent becomes capturable, so the test
    // sends the one Stripe sends (`amount_capturable_updated`), signed as Stripe signs.
    emulator
        .authenticate(&reference, &client_secret, true)
        .await;
    let event = intent_event(
        "evt_capturable",
        "payment_intent.amount_capturable_updated",
        &reference,
        "requires_capture",
    );
    let response = deliver(&app, &event, Some(WEBHOOK_SECRET), Utc::now().timestamp()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply = app.reply().await;
    assert_eq!(reply.name(), "authorized", "{:?}", reply.data());
    assert_eq!(
        reply.envelope.correlation_id,
        auth_correlation(&app, &auth).await
    );
    assert_eq!(app.payment(auth.payment_id).await["status"], "authorized");
    assert_eq!(
        processed(&app, "evt_capturable").await,
        "challenge_concluded"
    );

    // Capturing makes the emulator send `payment_intent.succeeded`, signed by the emulator
    // itself: its signature verifies, and the event changes nothing (we are already there).
    let reply = app.ask(capture(&auth, None)).await;
    assert_eq!(reply.name(), "captured", "{:?}", reply.data());
    let mut from_emulator = None;
    for _ in 0..100 {
        from_emulator = sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT event_id, outcome FROM webhook_events \
             WHERE intent = $1 AND type = 'payment_intent.succeeded' AND processed_at IS NOT NULL",
        )
        .bind(&reference)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if from_emulator.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (event_id, outcome) = from_emulator.expect("the emulator's webhook within 10 s");
    assert!(event_id.starts_with("evt_"), "{event_id}");
    assert_eq!(outcome.as_deref(), Some("unchanged"));
}

async fn auth_correlation(app: &TestApp, auth: &AuthorizePayment) -> Uuid {
    sqlx::query_scalar("SELECT correlation_id FROM payments WHERE id = $1")
        .bind(auth.payment_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failed_authentication_at_stripe_declines_when_the_customer_comes_back() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(&emulator, &[]).await;
    let challenge = challenged(&mut app, &emulator, 2_500).await;
    let action = challenge.action;
    emulator
        .authenticate(&challenge.reference, &challenge.client_secret, false)
        .await;

    // No webhook configured: the customer's "complete" asks Stripe, which says it failed.
    let answer = app
        .http
        .post(app.url(&action))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "declined");
    let reply = app.reply().await;
    assert_eq!(reply.name(), "declined");
    assert_eq!(
        reply.data()["code"],
        "payment_intent_authentication_failure"
    );
}

#[tokio::test]
async fn webhooks_are_verified_stored_once_and_accept_either_secret_while_rotating() {
    let emulator = LocalStripe::start();
    let app = spawn_on_stripe(&emulator, &["--stripe-webhook-secrets=whsec_old,whsec_new"]).await;
    let event = intent_event(
        "evt_rotation",
        "payment_intent.succeeded",
        "pi_not_ours",
        "succeeded",
    );
    let now = Utc::now().timestamp();
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };

    for (what, secret, at) in [
        ("unsigned", None, now),
        (
            "signed with a secret we do not have",
            Some("whsec_other"),
            now,
        ),
        // Well past the 300 s tolerance: the server reads its clock a moment after `now`,
        // so a timestamp one second beyond the edge races it.
        ("older than the tolerance", Some("whsec_new"), now - 360),
        ("from the future", Some("whsec_new"), now + 360),
    ] {
        let response = deliver(&app, &event, secret, at).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("STRIPE_WEBHOOK_SECRETS"),
            "{what}: says what to check: {problem}"
        );
    }
    assert_eq!(stored().await, 0, "nothing refused is stored");

    let first = deliver(&app, &event, Some("whsec_old"), now).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({"received": true, "duplicate": false})
    );
    // Stripe signing with the new secret (rotation), resending the same event: a duplicate.
    let again = deliver(&app, &event, Some("whsec_new"), now).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"received": true, "duplicate": true})
    );
    assert_eq!(stored().await, 1);
    assert_eq!(processed(&app, "evt_rotation").await, "not_ours");

    // A body that is not an event, correctly signed, is refused; other providers are 404.
    let response = deliver(&app, &json!({"hello": "world"}), Some("whsec_new"), now).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app
        .http
        .post(app.url("/v1/webhooks/paypal"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_out_of_order_failure_event_cannot_undo_what_stripe_says() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(&emulator, &[]).await;
    let Challenged {
        auth,
        reference,
        client_secret,
        ..
    } = challenged(&mut app, &emulator, 4_000).await;
    emulator
        .authenticate(&reference, &client_secret, true)
        .await;

    // The first event to arrive is an old `payment_failed` (an earlier attempt's): the payload
    // says failed, Stripe says the intent is held now. Stripe wins.
    let stale = intent_event(
        "evt_stale_failure",
        "payment_intent.payment_failed",
        &reference,
        "requires_payment_method",
    );
    let response = deliver(&app, &stale, Some(WEBHOOK_SECRET), Utc::now().timestamp()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        processed(&app, "evt_stale_failure").await,
        "challenge_concluded"
    );
    let reply = app.reply().await;
    assert_eq!(reply.name(), "authorized", "{:?}", reply.data());

    // The `succeeded` event arriving afterwards changes nothing.
    let late = intent_event(
        "evt_late_success",
        "payment_intent.succeeded",
        &reference,
        "requires_capture",
    );
    deliver(&app, &late, Some(WEBHOOK_SECRET), Utc::now().timestamp()).await;
    assert_eq!(processed(&app, "evt_late_success").await, "unchanged");
    assert_eq!(app.payment(auth.payment_id).await["status"], "authorized");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM payment_attempts WHERE payment_id = $1 AND operation = 'challenge'",
            auth.payment_id
        )
        .await,
        1
    );
}

#[tokio::test]
async fn an_authorization_completed_at_stripe_after_the_challenge_lapsed_here_is_cancelled() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(
        &emulator,
        &["--challenge-ttl-seconds=0", "--challenge-sweep-seconds=1"],
    )
    .await;
    let Challenged {
        auth,
        reference,
        client_secret,
        ..
    } = challenged(&mut app, &emulator, 4_000).await;
    let reply = app.reply().await;
    assert_eq!(
        reply.name(),
        "declined",
        "the sweeper declined the lapsed challenge"
    );

    // The customer finishes at Stripe anyway: money is held for an order that is gone.
    emulator
        .authenticate(&reference, &client_secret, true)
        .await;
    assert_eq!(
        emulator.intent(&reference).await["status"],
        "requires_capture"
    );
    let event = intent_event(
        "evt_after_lapse",
        "payment_intent.amount_capturable_updated",
        &reference,
        "requires_capture",
    );
    deliver(&app, &event, Some(WEBHOOK_SECRET), Utc::now().timestamp()).await;
    assert_eq!(processed(&app, "evt_after_lapse").await, "orphan_voided");
    assert_eq!(emulator.intent(&reference).await["status"], "canceled");
    assert_eq!(app.payment(auth.payment_id).await["status"], "declined");
}

#[tokio::test]
async fn a_circuit_policy_on_stripe_opens_while_it_is_down_and_closes_when_it_is_back() {
    let mut emulator = LocalStripe::start();
    let policies = tempfile_dir();
    std::fs::write(
        policies.join("stripe.yaml"),
        "apiVersion: tienda.dev/v1alpha1\n\
         kind: CircuitPolicy\n\
         metadata: {name: stripe}\n\
         spec:\n  \
           targetRef: {kind: External, name: stripe}\n  \
           timeout: 2s\n  \
           circuitBreaker: {consecutiveFailures: 2, window: 30s, openFor: 2s, halfOpenRequests: 1}\n",
    )
    .unwrap();
    let policy_flag = format!("--policy-path={}", policies.display());
    let mut app = spawn_on_stripe(&emulator, &[&policy_flag]).await;
    let (_, reply) = app.authorize("pm_card_visa", 1_000).await;
    assert_eq!(reply.name(), "authorized");

    emulator.stop();
    let mut details = Vec::new();
    for _ in 0..3 {
        let (_, reply) = app.authorize("pm_card_visa", 1_000).await;
        assert_eq!(reply.name(), "failed", "{:?}", reply.data());
        assert_eq!(reply.data()["retryable"], true, "a retry may work later");
        details.push(
            reply.data()["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(
        details.last().unwrap().contains("circuit"),
        "the third call is refused by the open circuit without reaching Stripe: {details:?}"
    );

    emulator.restart();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (_, reply) = app.authorize("pm_card_visa", 1_000).await;
    assert_eq!(reply.name(), "authorized", "{:?}", reply.data());
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tienda-payments-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the recording server saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: String,
}

#[tokio::test]
async fn requests_carry_the_key_the_secret_and_stripes_shapes() {
    tienda_kit::install_crypto_provider();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let recorder = Router::new()
        .route(
            "/v1/payment_intents",
            post(
                |State(seen): State<Arc<Mutex<Vec<Seen>>>>, headers: HeaderMap, body: String| async move {
                    seen.lock().unwrap().push(Seen {
                        path: "/v1/payment_intents".into(),
                        headers,
                        body,
                    });
                    axum::Json(json!({"id": "pi_recorded", "object": "payment_intent", "status": "requires_capture"}))
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, recorder).await });

    let registry = prometheus::Registry::new();
    let policies = Arc::new(Policies::new(
        Scope::component("local", "payments"),
        &registry,
    ));
    let stripe = Stripe::new(
        Outbound::new(policies, Duration::from_secs(5), &registry),
        &base,
        SECRET_KEY.to_owned(),
    );
    let request = AuthorizeRequest {
        payment_id: Uuid::now_v7(),
        amount: Amount::parse(tienda_events::money::Money {
            amount: 1_234,
            currency: "JPY".parse().unwrap(),
        })
        .unwrap(),
        payment_method: "pm_card_visa".into(),
        idempotency_key: "authorize-key-1".into(),
        deadline: Utc::now() + chrono::TimeDelta::seconds(10),
    };
    for _ in 0..2 {
        let outcome = stripe.authorize(&request).await.unwrap();
        assert_eq!(
            outcome,
            AuthorizeOutcome::Authorized {
                reference: "pi_recorded".into()
            }
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for request_seen in &seen {
        assert_eq!(request_seen.path, "/v1/payment_intents");
        assert_eq!(
            request_seen.headers["idempotency-key"], "authorize-key-1",
            "a repeat carries the same key, so Stripe answers it with the first result"
        );
        assert_eq!(
            request_seen.headers["authorization"],
            format!("Bearer {SECRET_KEY}").as_str()
        );
        assert_eq!(
            request_seen.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        let form: Vec<(String, String)> = form_urlencoded::parse(request_seen.body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| {
            form.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        // JPY has no minor unit: 1234 yen is amount=1234.
        assert_eq!(get("amount"), Some("1234"));
        assert_eq!(get("currency"), Some("jpy"));
        assert_eq!(get("confirm"), Some("true"));
        assert_eq!(get("capture_method"), Some("manual"));
        assert_eq!(get("payment_method"), Some("pm_card_visa"));
        assert_eq!(
            get("metadata[payment_id]"),
            Some(request.payment_id.to_string().as_str())
        );
    }
}

#[tokio::test]
async fn reconciliation_reports_every_payment_stripe_disagrees_with() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(&emulator, &[]).await;
    let (_, reply) = app.authorize("pm_card_visa", 1_000).await;
    assert_eq!(reply.name(), "authorized");
    let (changed, reply) = app.authorize("pm_card_visa", 2_000).await;
    assert_eq!(reply.name(), "authorized");
    let (_, reply) = app.authorize("pm_card_chargeCustomerFail", 500).await;
    assert_eq!(reply.name(), "declined");
    // Someone cancels one in Stripe's dashboard, behind our back.
    let reference = reference_of(&app, changed.payment_id).await;
    emulator
        .post(&format!("/v1/payment_intents/{reference}/cancel"), &[])
        .await;

    let day = Utc::now().date_naive();
    let path = format!("/v1/payments/reconciliations/{day}");
    assert_eq!(
        app.get(&path, Some(&app.admin)).await.status(),
        StatusCode::NOT_FOUND,
        "not reconciled yet"
    );
    let response = app.post(&path, &app.admin).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["checked"], 3, "{report}");
    assert_eq!(report["unchecked"], 0, "{report}");
    assert_eq!(
        report["mismatches"],
        json!([{"payment_id": changed.payment_id, "provider": "stripe",
                "provider_reference": reference, "ours": "authorized", "theirs": "canceled"}])
    );
    let again: Value = app.get(&path, Some(&app.admin)).await.json().await.unwrap();
    assert_eq!(again["mismatches"], report["mismatches"]);

    for (bad, status) in [
        (
            "/v1/payments/reconciliations/yesterday",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/payments/reconciliations/2999-01-01",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        assert_eq!(app.post(bad, &app.admin).await.status(), status, "{bad}");
    }
    assert_eq!(
        app.post(&path, &app.customer).await.status(),
        StatusCode::FORBIDDEN
    );

    // Sandbox payments have no records elsewhere: skipped, not compared.
    let mut sandbox = spawn_app_with(&[]).await;
    let (_, reply) = sandbox.authorize("pm_card_visa", 1_000).await;
    assert_eq!(reply.name(), "authorized");
    let report: Value = sandbox
        .post(&path, &sandbox.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (report["checked"].as_i64(), report["skipped"].as_i64()),
        (Some(0), Some(1))
    );
}

/// A Stripe that holds every refund `pending` until the test says how it ends: what
/// localstripe cannot do (its refunds succeed at once). Shared: refund id → (status,
/// failure_reason), and the number of refund reads.
#[derive(Default)]
struct PendingRefunds {
    refunds: std::collections::HashMap<String, (String, Option<String>)>,
    reads: usize,
}

async fn start_pending_refund_stripe() -> (String, Arc<Mutex<PendingRefunds>>) {
    use axum::{extract::Path, routing::get};
    let state: Arc<Mutex<PendingRefunds>> = Arc::default();
    let authorized = |_: State<Arc<Mutex<PendingRefunds>>>| async {
        let id = format!("pi_{}", Uuid::now_v7().simple());
        axum::Json(json!({"id": id, "object": "payment_intent", "status": "requires_capture"}))
    };
    let captured = |Path(id): Path<String>| async move {
        axum::Json(json!({"id": id, "object": "payment_intent", "status": "succeeded"}))
    };
    let refund = |State(state): State<Arc<Mutex<PendingRefunds>>>| async move {
        let id = format!("re_{}", Uuid::now_v7().simple());
        state
            .lock()
            .unwrap()
            .refunds
            .insert(id.clone(), ("pending".into(), None));
        axum::Json(json!({"id": id, "object": "refund", "status": "pending"}))
    };
    let show = |State(state): State<Arc<Mutex<PendingRefunds>>>, Path(id): Path<String>| async move {
        let mut state = state.lock().unwrap();
        state.reads += 1;
        let (status, reason) = state.refunds[&id].clone();
        axum::Json(
            json!({"id": id, "object": "refund", "status": status, "failure_reason": reason}),
        )
    };
    let router = Router::new()
        .route("/v1/payment_intents", post(authorized))
        .route("/v1/payment_intents/{id}/capture", post(captured))
        .route("/v1/refunds", post(refund))
        .route("/v1/refunds/{id}", get(show))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, state)
}

#[tokio::test]
async fn a_refund_stripe_leaves_pending_is_read_back_until_it_succeeds_or_fails() {
    use tienda_payments::provider::{FollowUpRequest, RefundState};
    tienda_kit::install_crypto_provider();
    let (base, state) = start_pending_refund_stripe().await;
    let registry = prometheus::Registry::new();
    let policies = Arc::new(Policies::new(
        Scope::component("local", "payments"),
        &registry,
    ));
    let stripe = Stripe::new(
        Outbound::new(policies, Duration::from_secs(5), &registry),
        &base,
        SECRET_KEY.to_owned(),
    );
    let deadline = Utc::now() + chrono::TimeDelta::seconds(10);
    let request = FollowUpRequest {
        reference: "pi_1".into(),
        amount: None,
        reason: Some("damaged".into()),
        capture_reference: None,
        payment_method: "pm_card_visa".into(),
        idempotency_key: "refund-1".into(),
        deadline,
    };

    let receipt = stripe.refund(&request).await.unwrap();
    assert!(receipt.pending, "{receipt:?}");
    assert_eq!(
        stripe.refund_status(&receipt.reference, deadline).await,
        Ok(RefundState::Pending)
    );
    state
        .lock()
        .unwrap()
        .refunds
        .get_mut(&receipt.reference)
        .unwrap()
        .0 = "succeeded".into();
    assert_eq!(
        stripe.refund_status(&receipt.reference, deadline).await,
        Ok(RefundState::Succeeded)
    );
    *state
        .lock()
        .unwrap()
        .refunds
        .get_mut(&receipt.reference)
        .unwrap() = ("failed".into(), Some("expired_or_canceled_card".into()));
    assert_eq!(
        stripe.refund_status(&receipt.reference, deadline).await,
        Ok(RefundState::Failed {
            reason: "expired_or_canceled_card".into()
        })
    );
}

#[tokio::test]
async fn a_signed_refund_webhook_has_a_pending_refund_looked_at_at_once() {
    let (base, state) = start_pending_refund_stripe().await;
    // The worker's own rounds are an hour apart: only the webhook can have it look now.
    let mut app = spawn_app_with(&[
        "--provider=stripe",
        &format!("--stripe-api-base={base}"),
        &format!("--stripe-secret-key={SECRET_KEY}"),
        &format!("--stripe-webhook-secrets={WEBHOOK_SECRET}"),
        "--refund-poll-seconds=3600",
    ])
    .await;
    let (auth, reply) = app.authorize("pm_card_visa", 1_000).await;
    assert_eq!(reply.name(), "authorized", "{:?}", reply.data());
    assert_eq!(app.ask(capture(&auth, None)).await.name(), "captured");
    let command = app.send(refund(&auth, eur(1_000))).await;
    app.no_reply_for(Duration::from_millis(500)).await;
    assert_eq!(app.refund_status(command.data.refund_id).await, "pending");
    let reference: String =
        sqlx::query_scalar("SELECT provider_reference FROM refunds WHERE id = $1")
            .bind(command.data.refund_id)
            .fetch_one(&app.db)
            .await
            .unwrap();

    state.lock().unwrap().refunds.get_mut(&reference).unwrap().0 = "succeeded".into();
    let event = json!({
        "id": "evt_refund_updated",
        "object": "event",
        "type": "refund.updated",
        "created": Utc::now().timestamp(),
        "data": {"object": {"id": reference, "object": "refund", "status": "succeeded",
                            "payment_intent": reference_of(&app, auth.payment_id).await}}
    });
    let answer = deliver(&app, &event, Some(WEBHOOK_SECRET), Utc::now().timestamp()).await;
    assert_eq!(answer.status(), StatusCode::OK);

    let reply = app.reply().await;
    assert_eq!(reply.name(), "refunded", "{:?}", reply.data());
    assert_eq!(reply.envelope.causation_id, Some(command.id));
    assert_eq!(app.payment(auth.payment_id).await["status"], "refunded");
    assert_eq!(
        state.lock().unwrap().reads,
        1,
        "Stripe's state was read, not the event's"
    );
}

#[tokio::test]
async fn the_fraud_rules_read_the_cards_fingerprint_and_country_from_stripe() {
    let emulator = LocalStripe::start();
    let mut app = spawn_on_stripe(&emulator, &[]).await;
    let mut decided = Vec::new();
    for billing in ["FR", "US"] {
        let mut command = crate::helpers::authorize("pm_card_visa", eur(1_000));
        command.billing_country = Some(billing.into());
        let reply = app.ask(command.clone()).await;
        assert_eq!(reply.name(), "authorized", "{:?}", reply.data());
        let row: (Option<String>, Option<String>, String) = sqlx::query_as(
            "SELECT p.card_fingerprint, p.card_country, d.verdict \
             FROM payments p JOIN fraud_decisions d ON d.payment_id = p.id WHERE p.id = $1",
        )
        .bind(command.payment_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        decided.push(row);
    }
    // localstripe issues its cards in France, one fingerprint per card number.
    let fingerprint = decided[0].0.clone().expect("Stripe's card.fingerprint");
    assert_eq!(
        decided[0],
        (Some(fingerprint.clone()), Some("FR".into()), "allow".into())
    );
    assert_eq!(
        decided[1],
        (Some(fingerprint), Some("FR".into()), "review".into())
    );
}
