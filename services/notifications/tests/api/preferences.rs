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

/// The consumer reads how a recipient is reached in one statement; every part of it is
/// read, for a signed-in customer and for a guest, and nothing of one person leaks into
/// another's.
#[tokio::test]
async fn how_a_recipient_is_reached_is_read_whole_in_one_statement() {
    use tienda_notifications::{
        category::Category,
        channel::Channel,
        digests::Window,
        preferences::{self, Reach},
        quiet::QuietHours,
        trigger::Contact,
    };
    let app = spawn_app().await;
    let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
    let event = Uuid::now_v7();
    let setup = format!(
        "INSERT INTO preferences (user_id, locale, timezone, quiet_start, quiet_end, phone) \
             VALUES ('{user}', 'es', 'Europe/Madrid', '22:00', '07:00', '+34600111222'), \
                    ('{other}', 'de', NULL, NULL, NULL, '+34600999999'); \
         INSERT INTO channel_preferences (user_id, category, channel, enabled) \
             VALUES ('{user}', 'shipping', 'sms', false), ('{other}', 'shipping', 'push', false); \
         INSERT INTO digest_settings (user_id, category, window_kind) \
             VALUES ('{user}', 'marketing', 'daily'), ('{other}', 'shipping', 'hourly'); \
         INSERT INTO opt_outs (subject, category, source) \
             VALUES ('user:{user}', 'marketing', 'preferences'), \
                    ('email:ana@example.com', 'shipping', 'unsubscribe'), \
                    ('user:{other}', 'account', 'preferences'); \
         INSERT INTO push_devices (id, user_id, provider, token) \
             VALUES (gen_random_uuid(), '{user}', 'fcm', 'device-1'); \
         INSERT INTO suppressions (channel, recipient, reason) \
             VALUES ('email', 'ana@example.com', 'hard_bounce'), \
                    ('sms', '+34600111222', 'unsubscribed'), \
                    ('push', 'user:{user}', 'unsubscribed'), \
                    ('sms', '+34600999999', 'unsubscribed'), \
                    ('email', 'someone@example.com', 'complaint')"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&app.db)
        .await
        .unwrap();
    let mut conn = app.db.acquire().await.unwrap();

    let customer = Contact {
        user_id: Some(user),
        email: " Ana@Example.com".into(),
    };
    let subjects = [
        preferences::user_subject(user),
        preferences::email_subject("ana@example.com"),
    ];
    let reach = preferences::reach(&mut conn, event, &customer, &subjects)
        .await
        .unwrap();
    assert_eq!(
        reach,
        Reach {
            locale: Some("es".parse().unwrap()),
            timezone: Some("Europe/Madrid".into()),
            quiet_hours: Some(
                serde_json::from_value::<QuietHours>(json!({"start": "22:00", "end": "07:00"}))
                    .unwrap()
            ),
            phone: Some("+34600111222".into()),
            has_device: true,
            chosen: vec![(Category::Shipping, Channel::Sms, false)],
            digests: vec![(Category::Marketing, Window::Daily)],
            opted_out: vec![Category::Marketing, Category::Shipping],
            suppressed: vec![
                (
                    "email".into(),
                    "ana@example.com".into(),
                    "hard_bounce".into()
                ),
                ("push".into(), format!("user:{user}"), "unsubscribed".into()),
                ("sms".into(), "+34600111222".into(), "unsubscribed".into()),
            ],
            delivered: false,
        }
    );
    assert_eq!(
        reach.suppression(Channel::Email, "ANA@example.com "),
        Some("hard_bounce")
    );
    assert_eq!(reach.suppression(Channel::Sms, "+34600999999"), None);

    // A guest: their address's opt-outs and suppression, nobody's settings.
    let guest = Contact {
        user_id: None,
        email: "someone@example.com".into(),
    };
    let guest_subjects = [preferences::email_subject("someone@example.com")];
    let reach = preferences::reach(&mut conn, event, &guest, &guest_subjects)
        .await
        .unwrap();
    assert_eq!(
        reach,
        Reach {
            suppressed: vec![(
                "email".into(),
                "someone@example.com".into(),
                "complaint".into()
            )],
            ..Reach::default()
        }
    );

    // The event's email to them recorded: a redelivery is known as one.
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, event_type, kind, category, critical, sensitive, \
             channel, recipient, locale, template_version, subject, body_text, body_html, status) \
         VALUES ($1, $2, 'order.placed', 'order_placed', 'orders', true, false, 'email', $3, \
                 'en', 0, 's', 't', '', 'queued')",
    )
    .bind(Uuid::now_v7())
    .bind(event)
    .bind(&guest.email)
    .execute(&app.db)
    .await
    .unwrap();
    let again = preferences::reach(&mut conn, event, &guest, &guest_subjects)
        .await
        .unwrap();
    assert!(again.delivered);
}
