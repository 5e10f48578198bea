use chrono::Utc;
use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use tienda_events::user::{UserPasswordResetRequested, UserRegistered};
use uuid::Uuid;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_user_reads_and_replaces_their_preferences() {
    let app = spawn_app().await;
    let user = Uuid::now_v7();
    let token = app.issuer.token(&user.to_string(), &["customer"]);

    let response = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"locale": "es", "categories": [
                {"category": "marketing", "subscribed": false},
                {"category": "shipping", "subscribed": false}
            ]})),
        )
        .await;
    assert_eq!(response.status(), 200);

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
    assert_eq!(read["locale"], "es");
    let subscribed: Vec<(String, bool, bool)> = read["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["category"].as_str().unwrap().to_owned(),
                c["critical"].as_bool().unwrap(),
                c["subscribed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        subscribed,
        vec![
            ("security".to_owned(), true, true),
            ("orders".to_owned(), true, true),
            ("shipping".to_owned(), false, false),
            ("account".to_owned(), false, true),
            ("marketing".to_owned(), false, false),
        ]
    );
}

#[tokio::test]
async fn unsubscribing_from_a_critical_category_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let token = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);

    let response = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"categories": [{"category": "security", "subscribed": false}]})),
        )
        .await;

    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "categories[0].subscribed");
}

#[tokio::test]
async fn preferences_need_a_signed_in_user() {
    let app = spawn_app().await;
    let response = app
        .send(Method::GET, "/v1/notifications/preferences", None, None)
        .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_forged_unsubscribe_token_is_a_client_error() {
    let app = spawn_app().await;
    for path in [
        "/v1/notifications/unsubscribe?token=bm9wZQ.bm9wZQ",
        "/v1/notifications/unsubscribe",
    ] {
        let response = app.send(Method::POST, path, None, None).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

#[tokio::test]
async fn a_user_who_chose_spanish_gets_spanish_mail() {
    let app = spawn_app().await;
    let user = Uuid::now_v7();
    let token = app.issuer.token(&user.to_string(), &["customer"]);
    let response = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"locale": "es"})),
        )
        .await;
    assert_eq!(response.status(), 200);

    let event = app
        .publish(
            "auth",
            UserPasswordResetRequested {
                user_id: user,
                email: "flor@example.com".into(),
                token: "t".into(),
                expires_at: Utc::now(),
            },
        )
        .await;

    let mail = app.mail_for(event).await;
    assert!(mail.part("text/plain").contains("Elige una nueva aquí"));
    assert_eq!(app.settled(event).await.locale, "es");
}

#[tokio::test]
async fn a_welcome_link_opted_out_of_account_mail_shows_in_the_users_preferences() {
    let app = spawn_app().await;
    let user = Uuid::now_v7();
    let event = app
        .publish(
            "auth",
            UserRegistered {
                user_id: user,
                email: "gil@example.com".into(),
                name: "Gil".into(),
                roles: vec!["customer".into()],
            },
        )
        .await;
    let link = app
        .mail_for(event)
        .await
        .header("List-Unsubscribe")
        .unwrap();

    let page = app
        .http
        .get(app.local(link.trim_matches(['<', '>'])))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let posted = app
        .http
        .post(app.local(link.trim_matches(['<', '>'])))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);

    let token = app.issuer.token(&user.to_string(), &["customer"]);
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
    let account = read["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "account")
        .unwrap();
    assert_eq!(account["subscribed"], false);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .send(Method::GET, "/openapi.json", None, None)
        .await
        .json()
        .await
        .unwrap();
    let operations = tienda_kit::testing::check_openapi(&doc);
    for expected in [
        "GET /v1/notifications/preferences",
        "PUT /v1/notifications/preferences",
        "GET /v1/notifications/unsubscribe",
        "POST /v1/notifications/unsubscribe",
        "GET /v1/notifications",
        "GET /v1/notifications/deliveries",
        "GET /v1/notifications/deliveries/{id}",
        "POST /v1/notifications/deliveries/{id}/replay",
        "POST /v1/notifications/callbacks/{channel}",
        "GET /v1/notifications/suppressions",
        "DELETE /v1/notifications/suppressions/{channel}/{recipient}",
        "GET /v1/notifications/templates",
        "GET /v1/notifications/templates/{kind}/{locale}",
        "POST /v1/notifications/templates/{kind}/{locale}",
        "GET /v1/notifications/templates/{kind}/{locale}/versions/{version}",
        "GET /v1/notifications/templates/{kind}/{locale}/versions/{version}/preview",
        "POST /v1/notifications/webhooks",
        "GET /v1/notifications/webhooks",
        "GET /v1/notifications/webhooks/{id}",
        "DELETE /v1/notifications/webhooks/{id}",
        "POST /v1/notifications/webhooks/{id}/rotate-secret",
        "POST /v1/notifications/phone/verify",
        "POST /v1/notifications/devices",
        "GET /v1/notifications/devices",
        "DELETE /v1/notifications/devices/{id}",
        "GET /v1/notifications/push/vapid-public-key",
        "POST /v1/notifications/campaigns",
        "GET /v1/notifications/campaigns",
        "GET /v1/notifications/campaigns/{id}",
        "POST /v1/notifications/campaigns/{id}/cancel",
    ] {
        assert!(
            operations.iter().any(|o| o == expected),
            "{expected} in {operations:?}"
        );
    }
}

#[tokio::test]
async fn quiet_hours_hold_a_shipping_mail_until_they_end_and_never_a_password_reset() {
    let app = spawn_app().await;
    let user = Uuid::now_v7();
    let token = app.issuer.token(&user.to_string(), &["customer"]);
    // A window around now in Madrid (it may span midnight).
    let madrid: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
    let local = Utc::now().with_timezone(&madrid);
    let start = (local - chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let end = (local + chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();

    let refused = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"timezone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem.to_string().contains("timezone"), "{problem}");
    let bad_time = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"quiet_hours": {"start": "25:00", "end": "07:00"}})),
        )
        .await;
    assert_eq!(bad_time.status(), 422);
    let saved: Value = app
        .send(
            Method::PUT,
            "/v1/notifications/preferences",
            Some(&token),
            Some(json!({"timezone": "Europe/Madrid",
                        "quiet_hours": {"start": start, "end": end}})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(saved["timezone"], "Europe/Madrid");
    assert_eq!(saved["quiet_hours"], json!({"start": start, "end": end}));

    let shipping = app
        .publish(
            "orders",
            tienda_events::order::OrderShipped {
                order_id: Uuid::now_v7(),
                customer_id: Some(user),
                email: "quiet@example.com".into(),
                carrier: "Correos".into(),
                tracking_number: "PK1".into(),
            },
        )
        .await;
    let reset = app
        .publish(
            "auth",
            UserPasswordResetRequested {
                user_id: user,
                email: "quiet@example.com".into(),
                token: "t".into(),
                expires_at: Utc::now(),
            },
        )
        .await;

    assert_eq!(
        app.settled(reset).await.status,
        "sent",
        "security never waits"
    );
    let (status, wait_until): (String, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT status, next_attempt_at FROM deliveries WHERE event_id = $1")
            .bind(shipping)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(status, "queued", "held");
    let held = wait_until - Utc::now();
    assert!(
        held > chrono::Duration::minutes(55) && held <= chrono::Duration::minutes(61),
        "held until the window ends, {held} from now"
    );
    // When the window ends, it goes.
    sqlx::query("UPDATE deliveries SET next_attempt_at = now() WHERE event_id = $1")
        .bind(shipping)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(app.settled(shipping).await.status, "sent");
}
