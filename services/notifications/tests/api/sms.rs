//! SMS against local servers that check requests as Twilio and Vonage document them.

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use base64::Engine;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use tienda_events::order::OrderShipped;
use uuid::Uuid;

use crate::helpers::{TestApp, policy_dir, serve, settled_on, spawn_app_with};

const SID: &str = "ACtest0001";
const AUTH_TOKEN: &str = "twilio-secret";
const PHONE: &str = "+34600111222";

/// A form's fields in order.
type FormFields = Vec<(String, String)>;

/// What a fake provider received, and how it answers.
#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<FormFields>>>,
    /// `None`: accept; else the status and body to answer.
    answer: Arc<Mutex<Option<(u16, Value)>>>,
}

impl Fake {
    fn seen(&self) -> Vec<FormFields> {
        self.seen.lock().unwrap().clone()
    }
    fn answer_with(&self, status: u16, body: Value) {
        *self.answer.lock().unwrap() = Some((status, body));
    }
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {form:?}"))
}

fn parse_form(headers: &HeaderMap, body: &str) -> Result<Vec<(String, String)>, String> {
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return Err("the body must be form-encoded".into());
    }
    Ok(form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// Twilio's Messages resource: Basic auth with the account SID, `To`, `From`, `Body`.
async fn twilio() -> (String, Fake) {
    async fn messages(
        State(fake): State<Fake>,
        Path(account): Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> impl IntoResponse {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{AUTH_TOKEN}"))
        );
        if account != SID
            || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected)
        {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 20003, "message": "Authenticate", "status": 401})),
            );
        }
        let form = match parse_form(&headers, &body) {
            Ok(form) => form,
            Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"message": e}))),
        };
        for required in ["To", "Body"] {
            if !form.iter().any(|(k, _)| k == required) {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"code": 21604, "message": format!("A '{required}' is required")})),
                );
            }
        }
        fake.seen.lock().unwrap().push(form);
        if let Some((status, body)) = fake.answer.lock().unwrap().clone() {
            return (StatusCode::from_u16(status).unwrap(), Json(body));
        }
        let n = fake.seen.lock().unwrap().len();
        (
            StatusCode::CREATED,
            Json(json!({"sid": format!("SM{n:032}"), "status": "queued"})),
        )
    }
    let fake = Fake::default();
    let router = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(messages),
        )
        .with_state(fake.clone());
    (serve(router).await, fake)
}

/// Vonage's SMS API: credentials in the form, `to` without `+`, a status per part.
async fn vonage() -> (String, Fake) {
    async fn sms(State(fake): State<Fake>, headers: HeaderMap, body: String) -> impl IntoResponse {
        let form = match parse_form(&headers, &body) {
            Ok(form) => form,
            Err(e) => {
                return Json(
                    json!({"message-count": "1", "messages": [{"status": "2", "error-text": e}]}),
                );
            }
        };
        let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if get("api_key").as_deref() != Some("vkey")
            || get("api_secret").as_deref() != Some("vsecret")
        {
            return Json(
                json!({"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]}),
            );
        }
        if get("to").is_none_or(|to| to.starts_with('+')) || get("text").is_none() {
            return Json(
                json!({"message-count": "1", "messages": [{"status": "3", "error-text": "Invalid to"}]}),
            );
        }
        let to = get("to");
        fake.seen.lock().unwrap().push(form.clone());
        let n = fake.seen.lock().unwrap().len();
        Json(json!({"message-count": "1", "messages": [
            {"to": to, "message-id": format!("vonage-{n}"), "status": "0"}]}))
    }
    let fake = Fake::default();
    let router = Router::new()
        .route("/sms/json", post(sms))
        .with_state(fake.clone());
    (serve(router).await, fake)
}

fn twilio_flags(url: &str) -> Vec<String> {
    vec![
        format!("--twilio-api-url={url}"),
        format!("--twilio-account-sid={SID}"),
        format!("--twilio-auth-token={AUTH_TOKEN}"),
        "--twilio-from=+15005550006".into(),
    ]
}

fn vonage_flags(url: &str) -> Vec<String> {
    vec![
        format!("--vonage-api-url={url}"),
        "--vonage-api-key=vkey".into(),
        "--vonage-api-secret=vsecret".into(),
    ]
}

async fn spawn(flags: &[String]) -> TestApp {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    spawn_app_with(&flags).await
}

/// A signed-in customer with `channels` for shipping and `PHONE` verified (as
/// `a_number_is_texted_only_after_its_owner_sends_back_the_code` does it); their token.
async fn customer_with_phone(app: &TestApp, user: Uuid, shipping_channels: Value) -> String {
    let token = app.issuer.token(&user.to_string(), &["customer"]);
    let response = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"categories": [
                {"category": "shipping", "subscribed": true, "channels": shipping_channels}]})),
        )
        .await;
    assert_eq!(response.status(), 200);
    sqlx::query("UPDATE preferences SET phone = $2 WHERE user_id = $1")
        .bind(user)
        .bind(PHONE)
        .execute(&app.db)
        .await
        .unwrap();
    token
}

fn shipped(customer: Option<Uuid>) -> OrderShipped {
    OrderShipped {
        order_id: Uuid::now_v7(),
        customer_id: customer,
        email: "ana@example.com".into(),
        carrier: "Correos".into(),
        tracking_number: "PK0042".into(),
    }
}

#[tokio::test]
async fn a_shipped_order_is_texted_to_the_number_in_the_preferences_by_twilio() {
    let (url, twilio) = twilio().await;
    let app = spawn(&twilio_flags(&url)).await;
    let user = Uuid::now_v7();
    customer_with_phone(&app, user, json!({})).await;

    let event = app.publish("orders", shipped(Some(user))).await;

    let sms = settled_on(&app, event, "sms").await;
    assert_eq!(sms.status, "sent", "{sms:?}");
    assert!(
        sms.provider_ref
            .as_deref()
            .unwrap()
            .starts_with("twilio:SM"),
        "{sms:?}"
    );
    let seen = twilio.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(field(&seen[0], "To"), PHONE);
    assert_eq!(field(&seen[0], "From"), "+15005550006");
    let body = field(&seen[0], "Body");
    assert!(
        body.starts_with("Tienda Test: your order is on its way with Correos (PK0042)"),
        "{body}"
    );
    assert!(!body.contains('\n'));
    assert_eq!(settled_on(&app, event, "email").await.status, "sent");

    // A guest has no phone number: mail only.
    let guest = app.publish("orders", shipped(None)).await;
    assert_eq!(settled_on(&app, guest, "email").await.status, "sent");
    let channels: Vec<String> =
        sqlx::query_scalar("SELECT channel FROM deliveries WHERE event_id = $1")
            .bind(guest)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(channels, ["email"]);
    assert_eq!(twilio.seen().len(), 1);
}

#[tokio::test]
async fn a_channel_turned_off_is_recorded_suppressed_and_not_texted() {
    let (url, twilio) = twilio().await;
    let app = spawn(&twilio_flags(&url)).await;
    let user = Uuid::now_v7();
    let token = customer_with_phone(&app, user, json!({"sms": false})).await;

    let read: Value = app
        .send(
            Method::GET,
            "/v1/notifications/preferences",
            Some(&token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["phone"], PHONE);
    let by_category: Vec<(String, Value)> = read["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["category"].as_str().unwrap().to_owned(),
                c["channels"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_category,
        [
            (
                "security".into(),
                json!({"email": true, "sms": true, "push": true})
            ),
            (
                "orders".into(),
                json!({"email": true, "sms": true, "push": true})
            ),
            (
                "shipping".into(),
                json!({"email": true, "sms": false, "push": true})
            ),
            (
                "account".into(),
                json!({"email": true, "sms": true, "push": true})
            ),
            (
                "marketing".into(),
                json!({"email": true, "sms": false, "push": false})
            ),
        ]
    );

    let event = app.publish("orders", shipped(Some(user))).await;
    assert_eq!(settled_on(&app, event, "email").await.status, "sent");
    let (status, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT status, status_reason FROM deliveries WHERE event_id = $1 AND channel = 'sms'",
    )
    .bind(event)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("suppressed", Some("channel_off"))
    );
    assert!(twilio.seen().is_empty());

    // Bad preferences change nothing.
    let refused = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"phone": "600 111 222", "categories": [
                {"category": "orders", "subscribed": true, "channels": {"email": false}}]})),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["phone", "categories[0].channels.email"],
        "{problem}"
    );
    let still: Value = app
        .send(
            Method::GET,
            "/v1/notifications/preferences",
            Some(&token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["phone"], PHONE);
}

#[tokio::test]
async fn with_twilios_circuit_open_the_next_attempt_goes_by_vonage() {
    let (twilio_url, twilio) = twilio().await;
    let (vonage_url, vonage) = vonage().await;
    twilio.answer_with(
        503,
        json!({"code": 20500, "message": "Internal Server Error"}),
    );
    let policies = policy_dir(
        "apiVersion: tienda.dev/v1alpha1\n\
         kind: CircuitPolicy\n\
         metadata: {name: twilio}\n\
         spec:\n  \
           targetRef: {kind: External, name: twilio}\n  \
           circuitBreaker: {consecutiveFailures: 1, window: 60s, openFor: 60s, halfOpenRequests: 1}\n",
    );
    let mut flags = twilio_flags(&twilio_url);
    flags.extend(vonage_flags(&vonage_url));
    flags.push(format!("--policy-path={}", policies.display()));
    flags.push("--retry-base-ms=50".into());
    let app = spawn(&flags).await;
    let user = Uuid::now_v7();
    customer_with_phone(&app, user, json!({})).await;

    let event = app.publish("orders", shipped(Some(user))).await;

    let sms = settled_on(&app, event, "sms").await;
    assert_eq!(sms.status, "sent", "{sms:?}");
    assert_eq!(sms.provider_ref.as_deref(), Some("vonage:vonage-1"));
    assert_eq!(sms.attempts, 2, "one failed attempt by Twilio, then Vonage");
    assert_eq!(twilio.seen().len(), 1, "the open circuit keeps Twilio out");
    let seen = vonage.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(field(&seen[0], "to"), "34600111222");
    assert!(field(&seen[0], "text").contains("PK0042"));
    let history: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT e.status, e.detail FROM delivery_events e JOIN deliveries d ON d.id = e.delivery_id
         WHERE d.event_id = $1 AND d.channel = 'sms' ORDER BY e.id",
    )
    .bind(event)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(history[1].0, "retrying");
    assert!(
        history[1]
            .1
            .as_deref()
            .unwrap()
            .starts_with("twilio: HTTP 503"),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_number_that_replied_stop_is_suppressed_and_not_texted_again() {
    let (url, twilio) = twilio().await;
    let app = spawn(&twilio_flags(&url)).await;
    twilio.answer_with(
        400,
        json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}),
    );
    let user = Uuid::now_v7();
    customer_with_phone(&app, user, json!({})).await;

    let first = app.publish("orders", shipped(Some(user))).await;
    let sms = settled_on(&app, first, "sms").await;
    assert_eq!(
        (sms.status.as_str(), sms.attempts),
        ("failed", 1),
        "{sms:?}"
    );
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM suppressions WHERE channel = 'sms' AND recipient = $1",
    )
    .bind(PHONE)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(reason, "unsubscribed");

    let second = app.publish("orders", shipped(Some(user))).await;
    assert_eq!(settled_on(&app, second, "email").await.status, "sent");
    let (status, why): (String, Option<String>) = sqlx::query_as(
        "SELECT status, status_reason FROM deliveries WHERE event_id = $1 AND channel = 'sms'",
    )
    .bind(second)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), why.as_deref()),
        ("suppressed", Some("unsubscribed"))
    );
    assert_eq!(twilio.seen().len(), 1);
}

#[tokio::test]
async fn without_a_provider_texts_are_written_as_files() {
    let app = spawn(&[]).await;
    let user = Uuid::now_v7();
    customer_with_phone(&app, user, json!({})).await;
    let event = app.publish("orders", shipped(Some(user))).await;
    let sms = settled_on(&app, event, "sms").await;
    assert_eq!(sms.status, "sent");
    let path = sms.provider_ref.unwrap();
    assert!(path.ends_with(".sms.json"), "{path}");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written["to"], PHONE);
    assert!(written["body"].as_str().unwrap().contains("PK0042"));
}

/// The code in the newest text written to the outbox for `number`.
fn code_sent_to(app: &TestApp, number: &str) -> String {
    let mut texts: Vec<(std::time::SystemTime, Value)> = std::fs::read_dir(&app.outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".sms.json"))
        .map(|p| {
            let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
            (
                modified,
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .filter(|(_, v): &(_, Value)| v["to"] == number)
        .collect();
    texts.sort_by_key(|(t, _)| *t);
    let body = texts.last().expect("a code was texted").1["body"]
        .as_str()
        .unwrap()
        .to_owned();
    body.split_whitespace()
        .map(|w| w.trim_end_matches('.'))
        .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in {body:?}"))
        .to_owned()
}

#[tokio::test]
async fn a_number_is_texted_only_after_its_owner_sends_back_the_code() {
    let app = spawn(&[]).await;
    let user = Uuid::now_v7();
    let token = app.issuer.token(&user.to_string(), &["customer"]);
    let put = |body: Value| {
        let (app, token) = (&app, token.clone());
        async move {
            app.send(
                Method::PUT,
                "/v1/notifications/preferences",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let saved: Value = put(json!({"phone": PHONE})).await.json().await.unwrap();
    assert_eq!(
        (saved["phone"].clone(), saved["phone_pending"].clone()),
        (Value::Null, json!(PHONE))
    );
    crate::helpers::eventually("the code is texted", || async {
        std::fs::read_dir(&app.outbox).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.path().to_string_lossy().ends_with(".sms.json"))
        })
    })
    .await;
    let code = code_sent_to(&app, PHONE);

    // Not verified: order updates go by mail only.
    let event = app.publish("orders", shipped(Some(user))).await;
    assert_eq!(settled_on(&app, event, "email").await.status, "sent");
    let texted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE event_id = $1 AND channel = 'sms'",
    )
    .bind(event)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(texted, 0);

    let verify = |code: String| {
        let (app, token) = (&app, token.clone());
        async move {
            app.send(
                Method::POST,
                "/v1/notifications/phone/verify",
                Some(&token),
                Some(json!({"code": code})),
            )
            .await
        }
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = verify(wrong.into()).await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("4 tries left"),
        "{problem}"
    );
    let verified = verify(code).await;
    assert_eq!(verified.status(), 200);
    let verified: Value = verified.json().await.unwrap();
    assert_eq!(
        (verified["phone"].clone(), verified["phone_pending"].clone()),
        (json!(PHONE), Value::Null)
    );
    let sensitive: String = sqlx::query_scalar(
        "SELECT body_text FROM deliveries WHERE kind = 'phone_verification' AND status = 'sent'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(sensitive, "", "the code is not kept once sent");

    let event = app.publish("orders", shipped(Some(user))).await;
    assert_eq!(settled_on(&app, event, "sms").await.status, "sent");

    // Codes are rationed: three an hour per person (the first was one).
    for (i, number) in ["+34600000002", "+34600000003"].into_iter().enumerate() {
        assert_eq!(
            put(json!({"phone": number})).await.status(),
            200,
            "code {}",
            i + 2
        );
    }
    let limited = put(json!({"phone": "+34600000004"})).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let still: Value = app
        .send(
            Method::GET,
            "/v1/notifications/preferences",
            Some(&token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        still["phone"], PHONE,
        "the verified number stays until another is verified"
    );
}

#[tokio::test]
async fn numbers_outside_the_shops_countries_are_refused() {
    let app = spawn(&["--sms-countries=+34,+351".into()]).await;
    let token = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let refused = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"phone": "+88212345678"})),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "phone");
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM phone_verifications")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(none, 0);
}
