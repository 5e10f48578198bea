//! Campaigns: a segment gets the message once each, in batches, respecting opt-outs and the
//! suppression list; a batch written again sends nobody twice; cancelling stops the rest.

use std::{collections::BTreeMap, time::Duration};

use pretty_assertions::assert_eq;
use reqwest::Method;
use serde_json::{Value, json};
use tienda_events::user::UserRegistered;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app};

fn admin(app: &TestApp) -> String {
    app.issuer.token(&Uuid::now_v7().to_string(), &["admin"])
}

/// Registers `n` people through `user.registered`; their ids in order.
async fn register(app: &TestApp, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let user_id = Uuid::now_v7();
        app.publish(
            "auth",
            UserRegistered {
                user_id,
                email: format!("person{i}@example.com"),
                name: format!("Person {i}"),
                roles: vec!["customer".into()],
            },
        )
        .await;
        ids.push(user_id);
    }
    app.drained("USER", "notifications-user-events").await;
    ids
}

fn content() -> Value {
    json!({
        "en": {"subject": "Spring sale, {{ name }}", "body_text": "Hi {{ name }}, 20% off.\n",
               "body_html": "<p>Hi {{ name }}, 20% off.</p>\n"},
        "es": {"subject": "Rebajas de primavera, {{ name }}", "body_text": "Hola {{ name }}, 20 % menos.\n",
               "body_html": "<p>Hola {{ name }}, 20 % menos.</p>\n"},
    })
}

async fn create(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let response = app
        .send(
            Method::POST,
            "/v1/notifications/campaigns",
            Some(token),
            Some(body),
        )
        .await;
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn campaign(app: &TestApp, token: &str, id: &str) -> Value {
    app.send(
        Method::GET,
        &format!("/v1/notifications/campaigns/{id}"),
        Some(token),
        None,
    )
    .await
    .json()
    .await
    .unwrap()
}

/// Waits until the campaign is fully enqueued and nothing of it is queued.
async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    eventually("the campaign is sent", || async {
        let c = campaign(app, token, id).await;
        c["status"] == "completed" && c["deliveries"].get("queued").is_none()
    })
    .await;
    campaign(app, token, id).await
}

/// The campaign's mails in the outbox: recipient → subjects.
fn mails_with(app: &TestApp, marker: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_recipient: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for mail in app.mails() {
        let subject = mail.header("Subject").unwrap_or_default();
        if subject.contains(marker) {
            by_recipient
                .entry(mail.header("To").unwrap())
                .or_default()
                .push(subject);
        }
    }
    by_recipient
}

#[tokio::test]
async fn a_campaign_reaches_its_segment_once_each_in_batches_respecting_opt_outs() {
    let app = spawn_app().await;
    let admin = admin(&app);
    let people = register(&app, 12).await;
    // One reads Spanish, one left marketing, one's address bounced.
    let spanish = app.issuer.token(&people[0].to_string(), &["customer"]);
    let put = |token: String, body: Value| {
        let app = &app;
        async move {
            let r = app
                .send(
                    Method::PUT,
                    "/v1/notifications/preferences",
                    Some(&token),
                    Some(body),
                )
                .await;
            assert_eq!(r.status(), 200);
        }
    };
    put(spanish, json!({"locale": "es"})).await;
    put(
        app.issuer.token(&people[1].to_string(), &["customer"]),
        json!({"categories": [{"category": "marketing", "subscribed": false}]}),
    )
    .await;
    sqlx::query(
        "INSERT INTO suppressions (channel, recipient, reason) VALUES ('email', 'person2@example.com', 'hard_bounce')",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let (status, created) = create(
        &app,
        &admin,
        json!({"name": "Spring sale", "channel": "email", "content": content(), "rate_per_second": 5}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["audience"], 12);
    let id = created["id"].as_str().unwrap().to_owned();

    let done = finished(&app, &admin, &id).await;
    assert_eq!(done["enqueued"], 12);
    assert_eq!(
        done["deliveries"],
        json!({"sent": 10, "suppressed": 2}),
        "{done}"
    );
    let reasons: Vec<(String, String)> = sqlx::query_as(
        "SELECT recipient, status_reason FROM deliveries WHERE event_id = $1::uuid AND status = 'suppressed'
         ORDER BY recipient",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        reasons,
        [
            ("person1@example.com".to_owned(), "opted_out".to_owned()),
            ("person2@example.com".to_owned(), "hard_bounce".to_owned())
        ]
    );

    let mails: BTreeMap<String, Vec<String>> = mails_with(&app, "Spring sale")
        .into_iter()
        .chain(mails_with(&app, "Rebajas"))
        .collect();
    assert_eq!(mails.len(), 10, "{mails:?}");
    assert!(
        mails.values().all(|subjects| subjects.len() == 1),
        "once each: {mails:?}"
    );
    assert_eq!(
        mails["person0@example.com"],
        ["Rebajas de primavera, Person 0"]
    );
    assert_eq!(mails["person3@example.com"], ["Spring sale, Person 3"]);
    let one = app
        .mails()
        .into_iter()
        .find(|m| {
            m.header("To").as_deref() == Some("person3@example.com")
                && m.header("Subject").is_some_and(|s| s.contains("Spring"))
        })
        .unwrap();
    assert!(
        one.header("List-Unsubscribe").is_some(),
        "marketing carries one-click unsubscribe"
    );

    // Batches of five a second: the first and the last delivery are a batch interval apart.
    let spread: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 FROM deliveries WHERE event_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        spread >= 1.5,
        "three batches at 5 people per second, {spread} s apart"
    );

    // A segment by language.
    let (_, spanish_only) = create(
        &app,
        &admin,
        json!({"name": "Solo español", "channel": "email", "segment": {"locales": ["es"]},
               "content": {"es": content()["es"]}, "rate_per_second": 100}),
    )
    .await;
    assert_eq!(spanish_only["audience"], 1);
    let done = finished(&app, &admin, spanish_only["id"].as_str().unwrap()).await;
    assert_eq!(done["deliveries"], json!({"sent": 1}));
}

#[tokio::test]
async fn a_batch_written_again_sends_nobody_twice_and_cancelling_stops_the_rest() {
    let app = spawn_app().await;
    let admin = admin(&app);
    register(&app, 6).await;
    let (_, created) = create(
        &app,
        &admin,
        json!({"name": "Twice", "channel": "email", "content": content(), "rate_per_second": 100}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    finished(&app, &admin, &id).await;
    // As if the cursor were lost: the whole campaign runs again.
    sqlx::query(
        "UPDATE campaigns SET cursor = NULL, status = 'running', next_batch_at = now() WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    let done = finished(&app, &admin, &id).await;
    assert_eq!(done["deliveries"], json!({"sent": 6}), "{done}");
    assert!(
        mails_with(&app, "Spring sale")
            .values()
            .all(|s| s.len() == 1)
    );

    // A slow campaign cancelled after its first batch: the rest is never enqueued, and what
    // was queued is not sent.
    register(&app, 4).await;
    let (_, slow) = create(
        &app,
        &admin,
        json!({"name": "Slow", "channel": "email", "content": content(), "rate_per_second": 2,
               "start_at": (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339()}),
    )
    .await;
    let slow_id = slow["id"].as_str().unwrap().to_owned();
    assert_eq!(slow["status"], "scheduled");
    eventually("the first batch", || async {
        campaign(&app, &admin, &slow_id).await["enqueued"] == 2
    })
    .await;
    let cancel = format!("/v1/notifications/campaigns/{slow_id}/cancel");
    let cancelled = app.send(Method::POST, &cancel, Some(&admin), None).await;
    assert_eq!(cancelled.status(), 200);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = campaign(&app, &admin, &slow_id).await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(
        after["enqueued"], 2,
        "nobody more after the cancel: {after}"
    );
    assert_eq!(
        app.send(Method::POST, &cancel, Some(&admin), None)
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn campaigns_are_for_admins_and_bad_content_is_refused_naming_the_part() {
    let app = spawn_app().await;
    let admin = admin(&app);
    let customer = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let (status, _) = create(
        &app,
        &customer,
        json!({"name": "x", "channel": "email", "content": content()}),
    )
    .await;
    assert_eq!(status, 403);

    let (status, problem) = create(
        &app,
        &admin,
        json!({"name": "", "channel": "sms", "rate_per_second": 0,
               "content": {"es": {"short": "Hola {{ name }"}, "en": {"subject": "no short"}}}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "name",
            "rate_per_second",
            "content.es.short",
            "content.en.subject",
            "content.en.short"
        ],
        "{problem}"
    );
    let line = problem["errors"][2]["message"].as_str().unwrap();
    assert!(line.starts_with("line 1:"), "{line}");

    let (status, problem) = create(
        &app,
        &admin,
        json!({"name": "x", "channel": "email", "content": {"en": {"subject": "{{ nope.deeper }}",
               "body_text": "t", "body_html": "h"}}}),
    )
    .await;
    assert_eq!(
        status, 422,
        "an unknown value fails at save, not at send: {problem}"
    );
    assert_eq!(problem["errors"][0]["field"], "content.en.subject");
    let (status, problem) = create(
        &app,
        &admin,
        json!({"name": "x", "channel": "email", "content": {"en": {"subject": "s",
               "body_text": "nul \u{0} here", "body_html": "h"}}}),
    )
    .await;
    assert_eq!(
        status, 422,
        "PostgreSQL keeps no NUL: refused, not a 500: {problem}"
    );
    assert_eq!(problem["errors"][0]["field"], "content.en.body_text");
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM campaigns")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(none, 0);
}
