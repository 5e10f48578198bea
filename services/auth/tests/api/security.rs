use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, spawn_app};

const PASSWORD: &str = "correct horse battery staple 42";

async fn signed_in(app: &TestApp, email: &str) -> Value {
    app.register(email).await;
    app.login(email, PASSWORD).await.json().await.unwrap()
}

fn bearer(pair: &Value) -> String {
    pair["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sessions_are_listed_and_ended_one_by_one_or_all_others() {
    let app = spawn_app().await;
    let phone = signed_in(&app, "ada@example.com").await;
    let laptop: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let tablet: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();

    let list: Value = app
        .http
        .get(app.url("/v1/auth/sessions"))
        .bearer_auth(bearer(&laptop))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);

    let claims = app.verifier().verify(&bearer(&tablet)).await.unwrap();
    let tablet_session = claims.sid.unwrap();
    let ended = app
        .http
        .delete(app.url(&format!("/v1/auth/sessions/{tablet_session}")))
        .bearer_auth(bearer(&laptop))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            json!({"refresh_token": tablet["refresh_token"]})
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );

    let others = app
        .http
        .delete(app.url("/v1/auth/sessions"))
        .bearer_auth(bearer(&laptop))
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            json!({"refresh_token": phone["refresh_token"]})
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            json!({"refresh_token": laptop["refresh_token"]})
        )
        .await
        .status(),
        StatusCode::OK,
        "the current session stays"
    );

    let someone_else = signed_in(&app, "bob@example.com").await;
    let foreign = app
        .http
        .delete(app.url(&format!("/v1/auth/sessions/{tablet_session}")))
        .bearer_auth(bearer(&someone_else))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_an_admin_sets_roles_and_the_change_is_an_event() {
    let app = spawn_app().await;
    let ada = signed_in(&app, "ada@example.com").await;
    let ada_id = app.verifier().verify(&bearer(&ada)).await.unwrap().sub;
    let url = app.url(&format!("/v1/auth/users/{ada_id}/roles"));

    let by_customer = app
        .http
        .put(&url)
        .bearer_auth(bearer(&ada))
        .json(&json!({"roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_customer.status(), StatusCode::FORBIDDEN);

    let admin: Value = app
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let bad = app
        .http
        .put(&url)
        .bearer_auth(bearer(&admin))
        .json(&json!({"roles": ["owner"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let set = app
        .http
        .put(&url)
        .bearer_auth(bearer(&admin))
        .json(&json!({"roles": ["support", "customer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let me: Value = set.json().await.unwrap();
    assert_eq!(me["roles"], json!(["customer", "support"]));
    let events: Vec<String> =
        sqlx::query_scalar("SELECT message_type FROM tienda_outbox ORDER BY seq")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(
        events.contains(&"user.roles_changed".to_owned()),
        "{events:?}"
    );

    let fresh: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        app.verifier()
            .verify(&bearer(&fresh))
            .await
            .unwrap()
            .has_role("support"),
        "new tokens carry the new roles"
    );
}

#[tokio::test]
async fn changing_the_password_signs_out_the_other_sessions() {
    let app = spawn_app().await;
    let here = signed_in(&app, "ada@example.com").await;
    let elsewhere: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let wrong = app
        .http
        .post(app.url("/v1/auth/password"))
        .bearer_auth(bearer(&here))
        .json(&json!({"current_password": "nope nope nope nope", "new_password": "a brand new passphrase 77"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let changed = app
        .http
        .post(app.url("/v1/auth/password"))
        .bearer_auth(bearer(&here))
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new passphrase 77"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            json!({"refresh_token": elsewhere["refresh_token"]})
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post(
            "/v1/auth/refresh",
            json!({"refresh_token": here["refresh_token"]})
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("ada@example.com", "a brand new passphrase 77")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_reset_does_not_reveal_whether_the_account_exists_and_its_token_works_once() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let known = app
        .post(
            "/v1/auth/password/reset",
            json!({"email": "ada@example.com"}),
        )
        .await;
    let unknown = app
        .post(
            "/v1/auth/password/reset",
            json!({"email": "ghost@example.com"}),
        )
        .await;
    assert_eq!(known.status(), StatusCode::ACCEPTED);
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());

    // The token travels to notifications in the event; read it where that service would.
    let event: Value = sqlx::query_scalar(
        "SELECT payload FROM tienda_outbox WHERE message_type = 'user.password_reset_requested'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(event["data"]["email"], "ada@example.com");
    let token = event["data"]["token"].as_str().unwrap();

    let weak = app
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": token, "password": "password1"}),
        )
        .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let done = app
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": token, "password": "reset to something long 55"}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let again = app
        .post(
            "/v1/auth/password/reset/confirm",
            json!({"token": token, "password": "and again something long 56"}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.login("ada@example.com", "reset to something long 55")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn repeated_failures_lock_the_account_and_the_lock_releases() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            app.login("ada@example.com", "wrong wrong wrong")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(
        locked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    assert!(locked.headers().contains_key("retry-after"));
    let events: Vec<String> = sqlx::query_scalar("SELECT message_type FROM tienda_outbox")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(events.contains(&"user.locked".to_owned()), "{events:?}");

    // The same for an email nobody registered: a lock reveals nothing.
    for _ in 0..5 {
        app.login("ghost@example.com", "wrong wrong wrong").await;
    }
    assert_eq!(
        app.login("ghost@example.com", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // Time passes (the lock's end moved into the past): the right password works again.
    sqlx::query("UPDATE login_failures SET locked_until = now() - interval '1 second' WHERE key = 'account:ada@example.com'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}
