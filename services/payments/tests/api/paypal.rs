//! The `paypal` provider against a local PayPal fixture: an HTTP server in the test that checks
//! each request against PayPal's documented shapes (OAuth client credentials, bearer tokens,
//! `PayPal-Request-Id`, Orders v2 and Payments v2 bodies, amounts as decimal strings at the
//! currency's exponent), keeps the state PayPal would (orders, authorizations, captures,
//! refunds and their bounds) and answers a repeated request id with the first answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use chrono::Utc;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_kit::{
    outbound::Outbound,
    policy::{Policies, Scope},
};
use tienda_payments::{
    domain::money::Amount,
    provider::{AuthorizeOutcome, AuthorizeRequest, Provider, paypal::PayPal},
};
use uuid::Uuid;

use crate::helpers::{TestApp, capture, eur, refund, spawn_app_with, void};

const CLIENT_ID: &str = "tienda-client";
const CLIENT_SECRET: &str = "tienda-secret";

#[derive(Default)]
struct Fixture {
    tokens: Vec<String>,
    /// Request id → (method and path, body, status, answer).
    answered: HashMap<String, (String, Value, StatusCode, Value)>,
    /// Authorization id → (currency, authorized, captured, voided).
    authorizations: HashMap<String, (String, i64, i64, bool)>,
    /// Capture id → (currency, captured, refunded).
    captures: HashMap<String, (String, i64, i64)>,
    /// Refunds are answered `PENDING` (as for an eCheck) until the test completes them.
    refunds_pending: bool,
    /// Refund id → status.
    refunds: HashMap<String, &'static str>,
    orders: usize,
    /// Every request: (path, PayPal-Request-Id, body).
    seen: Vec<(String, String, Value)>,
    /// Problems with a request's shape (the test fails if any).
    faults: Vec<String>,
}

type Shared = Arc<Mutex<Fixture>>;

fn problem(status: StatusCode, name: &str, issue: &str) -> (StatusCode, Value) {
    (
        status,
        json!({"name": name, "message": issue, "details": [{"issue": issue, "description": issue}]}),
    )
}

/// Minor units of a PayPal amount, checked: a decimal string with exactly the currency's
/// digits (EUR 2, JPY none).
fn parse_amount(amount: &Value, faults: &mut Vec<String>) -> Option<(String, i64)> {
    let currency = amount["currency_code"].as_str()?.to_owned();
    let value = amount["value"].as_str()?;
    let digits = match currency.as_str() {
        "JPY" => 0,
        "KWD" => 3,
        _ => 2,
    };
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() != digits || whole.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) {
        faults.push(format!(
            "amount {value} {currency} is not at the currency's exponent"
        ));
        return None;
    }
    let minor: i64 = format!("{whole}{fraction}").parse().ok()?;
    Some((currency, minor))
}

async fn token(State(fixture): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        let (s, b) = problem(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client Authentication failed",
        );
        return (s, axum::Json(b)).into_response();
    }
    if body != "grant_type=client_credentials" {
        fixture
            .lock()
            .unwrap()
            .faults
            .push(format!("token body {body:?}"));
    }
    let token = format!("A21AA{}", Uuid::new_v4().simple());
    fixture.lock().unwrap().tokens.push(token.clone());
    axum::Json(
        json!({"scope": "https://uri.paypal.com/services/payments/payment",
                      "access_token": token, "token_type": "Bearer", "expires_in": 32400}),
    )
    .into_response()
}

/// Checks the bearer token and the request id; answers a repeated id with the first answer.
fn api(
    fixture: &Shared,
    headers: &HeaderMap,
    path: String,
    body: &Bytes,
    handle: impl FnOnce(&mut Fixture, &Value) -> (StatusCode, Value),
) -> Response {
    let mut f = fixture.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if !bearer.is_some_and(|t| f.tokens.contains(&t)) {
        let (s, b) = problem(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILURE",
            "INVALID_TOKEN",
        );
        return (s, axum::Json(b)).into_response();
    }
    let Some(request_id) = headers
        .get("paypal-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        f.faults.push(format!("{path} without PayPal-Request-Id"));
        let (s, b) = problem(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "MISSING_REQUEST_ID",
        );
        return (s, axum::Json(b)).into_response();
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        f.faults
            .push(format!("{path} is not sent as application/json"));
    }
    let value: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                f.faults.push(format!("{path}: body is not JSON: {e}"));
                Value::Null
            }
        }
    };
    f.seen
        .push((path.clone(), request_id.clone(), value.clone()));
    if let Some((first_path, first_body, status, answer)) = f.answered.get(&request_id).cloned() {
        if first_path != path || first_body != value {
            f.faults.push(format!(
                "request id {request_id} reused for another request"
            ));
        }
        return respond(status, answer);
    }
    let (status, answer) = handle(&mut f, &value);
    f.answered
        .insert(request_id, (path, value, status, answer.clone()));
    respond(status, answer)
}

fn respond(status: StatusCode, answer: Value) -> Response {
    if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        (status, axum::Json(answer)).into_response()
    }
}

async fn create_order(State(fixture): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    api(
        &fixture,
        &headers,
        "/v2/checkout/orders".into(),
        &body,
        |f, order| {
            if order["intent"] != "AUTHORIZE" {
                f.faults.push(format!("intent {}", order["intent"]));
            }
            let units = order["purchase_units"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if units.len() != 1 || units[0]["reference_id"].as_str().is_none() {
                f.faults
                    .push("one purchase unit with a reference_id".into());
            }
            let Some((currency, minor)) = units
                .first()
                .and_then(|u| parse_amount(&u["amount"], &mut f.faults))
            else {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "INVALID_PARAMETER_VALUE",
                );
            };
            f.orders += 1;
            let order_id = format!("ORDER-{}", f.orders);
            let status = match order["payment_source"]["paypal"]["vault_id"].as_str() {
                Some("vault_ok") => "CREATED",
                Some("vault_denied") => "DENIED",
                Some("vault_declined") => {
                    return problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "UNPROCESSABLE_ENTITY",
                        "INSTRUMENT_DECLINED",
                    );
                }
                _ => {
                    return problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "UNPROCESSABLE_ENTITY",
                        "INVALID_RESOURCE_ID",
                    );
                }
            };
            let authorization = format!("AUTH-{}", f.orders);
            if status == "CREATED" {
                f.authorizations
                    .insert(authorization.clone(), (currency.clone(), minor, 0, false));
            }
            (
                StatusCode::CREATED,
                json!({"id": order_id, "status": "COMPLETED", "intent": "AUTHORIZE",
                   "purchase_units": [{"reference_id": units[0]["reference_id"],
                       "payments": {"authorizations": [{"id": authorization, "status": status,
                           "amount": units[0]["amount"]}]}}]}),
            )
        },
    )
}

async fn capture_authorization(
    State(fixture): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v2/payments/authorizations/{id}/capture");
    api(&fixture, &headers, path, &body, |f, request| {
        if request["final_capture"] != true {
            f.faults.push("captures are final".into());
        }
        let Some((currency, authorized, captured, voided)) = f.authorizations.get(&id).cloned()
        else {
            return problem(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                "INVALID_RESOURCE_ID",
            );
        };
        let amount = if request["amount"].is_null() {
            Some((currency.clone(), authorized))
        } else {
            parse_amount(&request["amount"], &mut f.faults)
        };
        match amount {
            Some((c, minor))
                if c == currency && !voided && captured == 0 && minor <= authorized =>
            {
                f.authorizations
                    .insert(id.clone(), (currency.clone(), authorized, minor, false));
                let capture_id = format!("CAP-{}", f.captures.len() + 1);
                f.captures.insert(capture_id.clone(), (currency, minor, 0));
                (
                    StatusCode::CREATED,
                    json!({"id": capture_id, "status": "COMPLETED"}),
                )
            }
            _ => problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                "AUTHORIZATION_ALREADY_CAPTURED",
            ),
        }
    })
}

async fn void_authorization(
    State(fixture): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v2/payments/authorizations/{id}/void");
    api(&fixture, &headers, path, &body, |f, _| {
        match f.authorizations.get_mut(&id) {
            Some(a) if a.2 == 0 => {
                a.3 = true;
                (StatusCode::NO_CONTENT, Value::Null)
            }
            Some(_) => problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                "PREVIOUSLY_CAPTURED",
            ),
            None => problem(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                "INVALID_RESOURCE_ID",
            ),
        }
    })
}

async fn refund_capture(
    State(fixture): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v2/payments/captures/{id}/refund");
    api(&fixture, &headers, path, &body, |f, request| {
        if request["note_to_payer"]
            .as_str()
            .is_some_and(|n| n.chars().count() > 255)
        {
            f.faults
                .push("note_to_payer is at most 255 characters".into());
        }
        let Some((currency, captured, refunded)) = f.captures.get(&id).cloned() else {
            return problem(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                "INVALID_RESOURCE_ID",
            );
        };
        let amount = if request["amount"].is_null() {
            Some((currency.clone(), captured - refunded))
        } else {
            parse_amount(&request["amount"], &mut f.faults)
        };
        match amount {
            Some((c, minor)) if c == currency && refunded + minor <= captured => {
                f.captures
                    .insert(id.clone(), (currency, captured, refunded + minor));
                let refund_id = format!("REF-{id}-{}", refunded + minor);
                let status = if f.refunds_pending {
                    "PENDING"
                } else {
                    "COMPLETED"
                };
                f.refunds.insert(refund_id.clone(), status);
                (
                    StatusCode::CREATED,
                    json!({"id": refund_id, "status": status}),
                )
            }
            _ => problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                "REFUND_AMOUNT_EXCEEDED",
            ),
        }
    })
}

async fn show_refund(
    State(fixture): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let f = fixture.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let (status, body) = if !bearer.is_some_and(|t| f.tokens.iter().any(|k| k == t)) {
        problem(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILURE",
            "INVALID_TOKEN",
        )
    } else if let Some(status) = f.refunds.get(&id) {
        (StatusCode::OK, json!({"id": id, "status": status}))
    } else {
        problem(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            "INVALID_RESOURCE_ID",
        )
    };
    (status, axum::Json(body)).into_response()
}

async fn show_authorization(
    State(fixture): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let f = fixture.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| f.tokens.iter().any(|k| k == t)) {
        let (s, b) = problem(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILURE",
            "INVALID_TOKEN",
        );
        return (s, axum::Json(b)).into_response();
    }
    match f.authorizations.get(&id) {
        Some((_, authorized, captured, voided)) => {
            let status = match (*voided, *captured) {
                (true, _) => "VOIDED",
                (false, 0) => "CREATED",
                (false, c) if c < *authorized => "PARTIALLY_CAPTURED",
                _ => "CAPTURED",
            };
            axum::Json(json!({"id": id, "status": status})).into_response()
        }
        None => {
            let (s, b) = problem(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                "INVALID_RESOURCE_ID",
            );
            (s, axum::Json(b)).into_response()
        }
    }
}

/// The fixture on a loopback port: its base URL and state.
async fn start_fixture() -> (String, Shared) {
    let fixture: Shared = Arc::default();
    let router = Router::new()
        .route("/v1/oauth2/token", post(token))
        .route("/v2/checkout/orders", post(create_order))
        .route(
            "/v2/payments/authorizations/{id}/capture",
            post(capture_authorization),
        )
        .route(
            "/v2/payments/authorizations/{id}/void",
            post(void_authorization),
        )
        .route("/v2/payments/captures/{id}/refund", post(refund_capture))
        .route(
            "/v2/payments/authorizations/{id}",
            axum::routing::get(show_authorization),
        )
        .route("/v2/payments/refunds/{id}", axum::routing::get(show_refund))
        .with_state(fixture.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, fixture)
}

async fn spawn_on_paypal(base: &str) -> TestApp {
    spawn_on_paypal_with(base, &[]).await
}

async fn spawn_on_paypal_with(base: &str, extra: &[&str]) -> TestApp {
    let mut flags = vec![
        "--provider=paypal".to_owned(),
        format!("--paypal-api-base={base}"),
        format!("--paypal-client-id={CLIENT_ID}"),
        format!("--paypal-client-secret={CLIENT_SECRET}"),
    ];
    flags.extend(extra.iter().map(|f| (*f).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    spawn_app_with(&flags).await
}

fn no_faults(fixture: &Shared) {
    let faults = fixture.lock().unwrap().faults.clone();
    assert!(
        faults.is_empty(),
        "requests PayPal would refuse: {faults:?}"
    );
}

#[tokio::test]
async fn a_payment_is_authorized_captured_in_part_refunded_and_another_voided_at_paypal() {
    let (base, fixture) = start_fixture().await;
    let mut app = spawn_on_paypal(&base).await;

    let (auth, reply) = app.authorize("vault_ok", 1_000).await;
    assert_eq!(reply.name(), "authorized", "{:?}", reply.data());
    assert_eq!(reply.data()["provider"], "paypal");
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["provider_reference"], "AUTH-1");

    let reply = app.ask(capture(&auth, Some(eur(600)))).await;
    assert_eq!(reply.name(), "captured", "{:?}", reply.data());
    let reply = app.ask(refund(&auth, eur(250))).await;
    assert_eq!(reply.name(), "refunded", "{:?}", reply.data());
    let reply = app.ask(refund(&auth, eur(350))).await;
    assert_eq!(reply.name(), "refunded", "the rest of the capture");
    let reply = app.ask(refund(&auth, eur(1))).await;
    assert_eq!(reply.name(), "failed", "nothing is left to refund");

    let (other, reply) = app.authorize("vault_ok", 700).await;
    assert_eq!(reply.name(), "authorized");
    let reply = app.ask(void(&other)).await;
    assert_eq!(reply.name(), "voided", "{:?}", reply.data());

    // Reconciliation reads each authorization back: PayPal agrees with our ledger.
    let day = Utc::now().date_naive();
    let report: Value = app
        .post(&format!("/v1/payments/reconciliations/{day}"), &app.admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["checked"], 2, "{report}");
    assert_eq!(report["mismatches"], json!([]), "{report}");

    let f = fixture.lock().unwrap();
    assert_eq!(
        f.captures["CAP-1"],
        ("EUR".into(), 600, 600),
        "refunds of the capture"
    );
    assert!(
        f.authorizations["AUTH-2"].3,
        "the second authorization is voided"
    );
    assert_eq!(f.tokens.len(), 1, "one token, reused until it expires");
    let ids: Vec<&str> = f.seen.iter().map(|(_, id, _)| id.as_str()).collect();
    assert!(
        ids.contains(&format!("authorize-{}", auth.payment_id).as_str()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&format!("capture-{}", auth.payment_id).as_str()),
        "{ids:?}"
    );
    drop(f);
    no_faults(&fixture);
}

#[tokio::test]
async fn declines_denied_authorizations_and_unknown_vault_ids() {
    let (base, fixture) = start_fixture().await;
    let mut app = spawn_on_paypal(&base).await;

    let (_, reply) = app.authorize("vault_declined", 1_000).await;
    assert_eq!(reply.name(), "declined", "{:?}", reply.data());
    assert_eq!(reply.data()["code"], "instrument_declined");

    // An order PayPal completed is not an authorization until the authorization says so.
    let (_, reply) = app.authorize("vault_denied", 1_000).await;
    assert_eq!(reply.name(), "declined", "{:?}", reply.data());
    assert_eq!(reply.data()["code"], "authorization_denied");

    let (_, reply) = app.authorize("vault_unknown", 1_000).await;
    assert_eq!(reply.name(), "failed", "{:?}", reply.data());
    assert_eq!(reply.data()["retryable"], false);
    no_faults(&fixture);
}

#[tokio::test]
async fn a_repeated_request_id_gets_the_first_answer_and_amounts_follow_the_currency() {
    tienda_kit::install_crypto_provider();
    let (base, fixture) = start_fixture().await;
    let registry = prometheus::Registry::new();
    let policies = Arc::new(Policies::new(
        Scope::component("local", "payments"),
        &registry,
    ));
    let paypal = PayPal::new(
        Outbound::new(policies, Duration::from_secs(5), &registry),
        &base,
        CLIENT_ID.into(),
        CLIENT_SECRET.into(),
    );
    let request = AuthorizeRequest {
        payment_id: Uuid::now_v7(),
        amount: Amount::parse(tienda_events::money::Money {
            amount: 1_234,
            currency: "JPY".parse().unwrap(),
        })
        .unwrap(),
        payment_method: "vault_ok".into(),
        idempotency_key: "authorize-once".into(),
        deadline: Utc::now() + chrono::TimeDelta::seconds(10),
    };
    let first = paypal.authorize(&request).await.unwrap();
    let again = paypal.authorize(&request).await.unwrap();
    assert_eq!(
        first,
        AuthorizeOutcome::Authorized {
            reference: "AUTH-1".into()
        }
    );
    assert_eq!(again, first, "the same request id, the same authorization");
    {
        let f = fixture.lock().unwrap();
        assert_eq!(f.orders, 1, "one order at PayPal");
        let (_, id, body) = &f.seen[0];
        assert_eq!(id, "authorize-once");
        assert_eq!(
            body["purchase_units"][0]["amount"],
            json!({"currency_code": "JPY", "value": "1234"})
        );
        assert_eq!(
            body["purchase_units"][0]["custom_id"],
            request.payment_id.to_string()
        );
    }
    no_faults(&fixture);

    let wrong = PayPal::new(
        Outbound::new(
            Arc::new(Policies::new(
                Scope::component("local", "payments"),
                &prometheus::Registry::new(),
            )),
            Duration::from_secs(5),
            &prometheus::Registry::new(),
        ),
        &base,
        CLIENT_ID.into(),
        "not-the-secret".into(),
    );
    let refused = wrong.authorize(&request).await.unwrap_err();
    assert!(!refused.retryable(), "{refused}");
    assert!(
        refused.to_string().contains("PAYPAL_CLIENT_SECRET"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_refund_paypal_leaves_pending_is_answered_once_paypal_completes_it() {
    let (base, fixture) = start_fixture().await;
    let mut app = spawn_on_paypal_with(&base, &["--refund-poll-seconds=1"]).await;
    let (auth, _) = app.authorize("vault_ok", 1_000).await;
    assert_eq!(app.ask(capture(&auth, None)).await.name(), "captured");
    fixture.lock().unwrap().refunds_pending = true;

    let command = app.send(refund(&auth, eur(400))).await;
    app.no_reply_for(Duration::from_millis(1_500)).await;
    let refund_id = command.data.refund_id;
    assert_eq!(app.refund_status(refund_id).await, "pending");
    assert_eq!(app.payment(auth.payment_id).await["refunded"]["amount"], 0);

    // Due now, still pending at PayPal: asked, and asked again later.
    app.refund_due_now(refund_id).await;
    app.wait_for_refund_checks(refund_id, 1).await;
    assert_eq!(app.refund_status(refund_id).await, "pending");

    for status in fixture.lock().unwrap().refunds.values_mut() {
        *status = "COMPLETED";
    }
    app.refund_due_now(refund_id).await;
    let reply = app.reply().await;
    assert_eq!(reply.name(), "refunded", "{:?}", reply.data());
    assert_eq!(reply.envelope.causation_id, Some(command.id));
    assert_eq!(reply.data()["refunded_total"]["amount"], 400);
    assert_eq!(app.refund_status(refund_id).await, "succeeded");
    assert_eq!(
        app.payment(auth.payment_id).await["status"],
        "partially_refunded"
    );
    let asked = fixture
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|(path, _, _)| path.starts_with("/v2/payments/captures/"))
        .count();
    assert_eq!(
        asked, 1,
        "the refund was asked for once, then only looked at"
    );
    no_faults(&fixture);
}
