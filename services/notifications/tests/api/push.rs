//! Push against local servers: an FCM HTTP v1 that checks the service account's signed token
//! exchange and the message shape, and a Web Push service that checks the VAPID signature
//! and decrypts the payload with the browser's key.

use std::sync::{Arc, Mutex};

use axum::{
    Form, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use tienda_events::order::OrderShipped;
use uuid::Uuid;

use crate::helpers::{TestApp, policy_dir, serve, settled_on, spawn_app_with};

const PROJECT: &str = "tienda-test";
const ACCESS_TOKEN: &str = "ya29.test-access-token";
const GONE: &str = "fcm-token-of-an-uninstalled-app";

#[derive(Clone, Default)]
struct Fcm {
    base: Arc<Mutex<String>>,
    token_requests: Arc<Mutex<u32>>,
    messages: Arc<Mutex<Vec<Value>>>,
    down: Arc<Mutex<bool>>,
}

/// FCM HTTP v1 and Google's token endpoint.
async fn fcm() -> (String, Fcm) {
    async fn token(
        State(fake): State<Fcm>,
        Form(form): Form<Vec<(String, String)>>,
    ) -> impl IntoResponse {
        let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        if get("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "unsupported_grant_type"})),
            );
        }
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(include_bytes!(
            "fixtures/fcm-test-key.pub.pem"
        ))
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        let audience = format!("{}/token", fake.base.lock().unwrap());
        validation.set_audience(&[audience]);
        validation.set_issuer(&["tienda@tienda-test.iam.gserviceaccount.com"]);
        let claims = match jsonwebtoken::decode::<Value>(
            &get("assertion").unwrap_or_default(),
            &key,
            &validation,
        ) {
            Ok(data) => data.claims,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "invalid_grant", "error_description": e.to_string()})),
                );
            }
        };
        if claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_scope"})),
            );
        }
        *fake.token_requests.lock().unwrap() += 1;
        (
            StatusCode::OK,
            Json(json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"})),
        )
    }
    async fn send(
        State(fake): State<Fcm>,
        Path((project, method)): Path<(String, String)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> impl IntoResponse {
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {ACCESS_TOKEN}"))
        {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"status": "UNAUTHENTICATED"}})),
            );
        }
        if project != PROJECT || method != "messages:send" {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"status": "NOT_FOUND", "message": "no such project"}})),
            );
        }
        let message = &body["message"];
        if !message["token"].is_string() || !message["notification"]["title"].is_string() {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"status": "INVALID_ARGUMENT"}})),
            );
        }
        if *fake.down.lock().unwrap() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"status": "UNAVAILABLE"}})),
            );
        }
        if message["token"] == GONE {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"status": "NOT_FOUND",
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})),
            );
        }
        let mut messages = fake.messages.lock().unwrap();
        messages.push(message.clone());
        (
            StatusCode::OK,
            Json(json!({"name": format!("projects/{PROJECT}/messages/{}", messages.len())})),
        )
    }
    let fake = Fcm::default();
    let router = Router::new()
        .route("/token", post(token))
        .route("/v1/projects/{project}/{method}", post(send))
        .with_state(fake.clone());
    let url = serve(router).await;
    *fake.base.lock().unwrap() = url.clone();
    (url, fake)
}

/// A service account key file pointing at the fake's token endpoint.
fn credentials(fcm_url: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tienda-fcm-{}.json", Uuid::now_v7()));
    let account = json!({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
        "private_key": include_str!("fixtures/fcm-test-key.pem"),
        "client_email": "tienda@tienda-test.iam.gserviceaccount.com",
        "token_uri": format!("{fcm_url}/token"),
    });
    std::fs::write(&path, account.to_string()).unwrap();
    path
}

/// A browser: its subscription keys, and what its push service received (decrypted).
#[derive(Clone)]
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
    vapid_public: Arc<Mutex<String>>,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Browser {
    fn p256dh(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }
}

/// A push service (RFC 8030) for one browser.
async fn push_service() -> (String, Browser) {
    async fn push(
        State((browser, origin)): State<(Browser, String)>,
        Path(_id): Path<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> impl IntoResponse {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        if header("content-encoding") != "aes128gcm" || header("ttl").parse::<u64>().is_err() {
            return (
                StatusCode::BAD_REQUEST,
                "aes128gcm and a TTL are required".to_owned(),
            );
        }
        // Authorization: vapid t=<JWT>, k=<public key>
        let authorization = header("authorization");
        let Some(rest) = authorization.strip_prefix("vapid ") else {
            return (
                StatusCode::UNAUTHORIZED,
                "no VAPID authorization".to_owned(),
            );
        };
        let mut t = "";
        let mut k = "";
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("t=") {
                t = v;
            }
            if let Some(v) = part.strip_prefix("k=") {
                k = v;
            }
        }
        if k != *browser.vapid_public.lock().unwrap() {
            return (
                StatusCode::FORBIDDEN,
                "not the key this subscription was made with".to_owned(),
            );
        }
        let point = URL_SAFE_NO_PAD.decode(k).unwrap();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        let key = jsonwebtoken::DecodingKey::from_ec_components(&x, &y).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&[origin]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        if let Err(e) = jsonwebtoken::decode::<Value>(t, &key, &validation) {
            return (StatusCode::FORBIDDEN, format!("bad VAPID token: {e}"));
        }
        let auth = web_push_native::Auth::clone_from_slice(&browser.auth);
        let plain = match web_push_native::decrypt(body.to_vec(), &browser.secret, &auth) {
            Ok(plain) => plain,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("cannot decrypt: {e:?}")),
        };
        browser
            .received
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&plain).unwrap());
        (StatusCode::CREATED, String::new())
    }
    let browser = Browser {
        secret: p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
        auth: rand_auth(),
        vapid_public: Arc::default(),
        received: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/push/{id}", post(push))
        .with_state((browser.clone(), origin.clone()));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (origin, browser)
}

fn rand_auth() -> [u8; 16] {
    *Uuid::new_v4().as_bytes()
}

/// A VAPID private key (base64url scalar).
fn vapid_key() -> String {
    URL_SAFE_NO_PAD
        .encode(p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng).to_bytes())
}

async fn spawn(flags: &[String]) -> TestApp {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    spawn_app_with(&flags).await
}

fn shipped(customer: Uuid) -> OrderShipped {
    OrderShipped {
        order_id: Uuid::now_v7(),
        customer_id: Some(customer),
        email: "ana@example.com".into(),
        carrier: "Correos".into(),
        tracking_number: "PK0042".into(),
    }
}

async fn register(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.send(
        Method::POST,
        "/v1/notifications/devices",
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_shipped_order_is_pushed_by_fcm_and_an_unregistered_token_is_forgotten() {
    let (url, fcm) = fcm().await;
    let app = spawn(&[
        format!("--fcm-api-url={url}"),
        format!("--fcm-credentials-file={}", credentials(&url).display()),
    ])
    .await;
    let user = Uuid::now_v7();
    let token = app.issuer.token(&user.to_string(), &["customer"]);
    for device in ["fcm-token-of-anas-phone", GONE] {
        let response = register(
            &app,
            &token,
            json!({"provider": "fcm", "token": device, "label": "phone"}),
        )
        .await;
        assert_eq!(response.status(), 201);
    }

    let event = app.publish("orders", shipped(user)).await;

    let push = settled_on(&app, event, "push").await;
    assert_eq!(push.status, "sent", "{push:?}");
    assert_eq!(
        push.provider_ref.as_deref(),
        Some("fcm:projects/tienda-test/messages/1")
    );
    let messages = fcm.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["token"], "fcm-token-of-anas-phone");
    let title = messages[0]["notification"]["title"].as_str().unwrap();
    assert!(
        title.starts_with("Your order") && title.ends_with("is on its way"),
        "{title}"
    );
    assert!(
        messages[0]["notification"]["body"]
            .as_str()
            .unwrap()
            .contains("PK0042")
    );

    let devices: Value = app
        .send(Method::GET, "/v1/notifications/devices", Some(&token), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        devices["items"].as_array().unwrap().len(),
        1,
        "the gone token is forgotten: {devices}"
    );

    // The access token is kept for the next message.
    let again = app.publish("orders", shipped(user)).await;
    assert_eq!(settled_on(&app, again, "push").await.status, "sent");
    assert_eq!(*fcm.token_requests.lock().unwrap(), 1);
}

#[tokio::test]
async fn with_fcms_circuit_open_the_browser_gets_it_by_web_push_encrypted_and_signed() {
    let (fcm_url, fcm) = fcm().await;
    *fcm.down.lock().unwrap() = true;
    let (push_origin, browser) = push_service().await;
    let policies = policy_dir(
        "apiVersion: tienda.dev/v1alpha1\n\
         kind: CircuitPolicy\n\
         metadata: {name: fcm}\n\
         spec:\n  \
           targetRef: {kind: External, name: fcm}\n  \
           circuitBreaker: {consecutiveFailures: 1, window: 60s, openFor: 60s, halfOpenRequests: 1}\n",
    );
    // The key file's contents, as a Shop passes it from a Secret.
    let key_file = std::fs::read_to_string(credentials(&fcm_url)).unwrap();
    let app = spawn(&[
        format!("--fcm-api-url={fcm_url}"),
        format!("--fcm-credentials-json={key_file}"),
        format!("--webpush-vapid-private-key={}", vapid_key()),
        "--webpush-vapid-subject=mailto:ops@shop.example".into(),
        "--webpush-allowed-hosts=127.0.0.1".into(),
        format!("--policy-path={}", policies.display()),
        "--retry-base-ms=50".into(),
    ])
    .await;
    let key: Value = app
        .send(
            Method::GET,
            "/v1/notifications/push/vapid-public-key",
            None,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    *browser.vapid_public.lock().unwrap() = key["public_key"].as_str().unwrap().to_owned();

    let user = Uuid::now_v7();
    let token = app.issuer.token(&user.to_string(), &["customer"]);
    assert_eq!(
        register(
            &app,
            &token,
            json!({"provider": "fcm", "token": "fcm-token-of-anas-phone"})
        )
        .await
        .status(),
        201
    );
    let subscription = json!({"provider": "webpush", "subscription": {
        "endpoint": format!("{push_origin}/push/anas-browser"), "expirationTime": null,
        "keys": {"p256dh": browser.p256dh(), "auth": URL_SAFE_NO_PAD.encode(browser.auth)}}});
    assert_eq!(register(&app, &token, subscription).await.status(), 201);

    let event = app.publish("orders", shipped(user)).await;

    let push = settled_on(&app, event, "push").await;
    assert_eq!(push.status, "sent", "{push:?}");
    assert!(
        push.provider_ref
            .as_deref()
            .unwrap()
            .starts_with("webpush:"),
        "{push:?}"
    );
    assert_eq!(push.attempts, 2, "one failed attempt by FCM, then Web Push");
    let received = browser.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert!(
        received[0]["title"]
            .as_str()
            .unwrap()
            .ends_with("is on its way")
    );
    assert!(received[0]["body"].as_str().unwrap().contains("PK0042"));
    assert!(fcm.messages.lock().unwrap().is_empty());
}

#[tokio::test]
async fn devices_are_checked_owned_and_only_push_services_are_called() {
    let app = spawn(&[
        format!("--webpush-vapid-private-key={}", vapid_key()),
        "--webpush-allowed-hosts=fcm.googleapis.com,*.push.apple.com".into(),
    ])
    .await;
    let ana = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let ben = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let browser = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let p256dh = URL_SAFE_NO_PAD.encode(browser.public_key().to_encoded_point(false).as_bytes());
    let auth = URL_SAFE_NO_PAD.encode(rand_auth());

    for (body, field) in [
        (json!({"provider": "apns", "token": "x"}), "provider"),
        (json!({"provider": "fcm"}), "token"),
        (json!({"provider": "fcm", "token": "has spaces"}), "token"),
        (json!({"provider": "webpush", "token": "x"}), "subscription"),
        (
            json!({"provider": "webpush", "subscription": {"endpoint": "http://169.254.169.254/latest/meta-data",
            "keys": {"p256dh": p256dh, "auth": auth}}}),
            "subscription.endpoint",
        ),
        (
            json!({"provider": "webpush", "subscription": {"endpoint": "https://web.push.apple.com/x",
            "keys": {"p256dh": "AAAA", "auth": auth}}}),
            "subscription.keys.p256dh",
        ),
        (
            json!({"provider": "webpush", "subscription": {"endpoint": "https://web.push.apple.com/a\u{0}b",
            "keys": {"p256dh": p256dh, "auth": auth}}}),
            "subscription.endpoint",
        ),
        (
            json!({"provider": "fcm", "token": "tok", "label": "nul\u{0}label"}),
            "label",
        ),
    ] {
        let response = register(&app, &ana, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM push_devices")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(none, 0, "nothing refused is stored");

    let ok = register(
        &app,
        &ana,
        json!({"provider": "webpush", "subscription": {
        "endpoint": "https://web.push.apple.com/QGZ", "keys": {"p256dh": p256dh, "auth": auth}}}),
    )
    .await;
    assert_eq!(ok.status(), 201);
    let id = ok.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/notifications/devices/{id}");
    assert_eq!(
        app.send(Method::DELETE, &path, Some(&ben), None)
            .await
            .status(),
        404,
        "not Ben's"
    );
    assert_eq!(
        app.send(Method::DELETE, &path, Some(&ana), None)
            .await
            .status(),
        204
    );
    assert_eq!(
        app.send(Method::DELETE, &path, Some(&ana), None)
            .await
            .status(),
        404
    );

    // Without a VAPID key there is no Web Push.
    let plain = spawn(&[]).await;
    let missing = plain
        .send(
            Method::GET,
            "/v1/notifications/push/vapid-public-key",
            None,
            None,
        )
        .await;
    assert_eq!(missing.status(), 404);
}
