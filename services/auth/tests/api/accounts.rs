use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, spawn_app};

const PASSWORD: &str = "correct horse battery staple 42";

async fn me(app: &crate::helpers::TestApp, email: &str) -> Value {
    let pair: Value = app.login(email, PASSWORD).await.json().await.unwrap();
    app.http
        .get(app.url("/v1/auth/me"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn registering_creates_a_customer_and_a_user_registered_event() {
    let app = spawn_app().await;
    let response = app.register("Ada@Example.com").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["email"], "ada@example.com");
    // The new account signs in at once, unverified.
    let me = me(&app, "ada@example.com").await;
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["roles"], json!(["customer"]));
    assert_eq!(me["mfa_enabled"], false);
    assert_eq!(me["email_verified"], false);
    let events: Vec<String> =
        sqlx::query_scalar("SELECT message_type FROM tienda_outbox ORDER BY seq")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        events,
        ["user.registered", "user.email_verification_requested"]
    );
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'ada@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "OWASP parameters: {hash}"
    );
}

#[tokio::test]
async fn bad_registrations_are_problems_that_change_nothing() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let users = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    let before = users().await;

    // A taken address is not an error a client can see (see `security`): nothing changes.
    let taken = app.register("ADA@example.com").await;
    assert_eq!(taken.status(), StatusCode::ACCEPTED);

    let weak = app
        .post(
            "/v1/auth/register",
            json!({"email": "bob@example.com", "password": "password123", "name": "Bob"}),
        )
        .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = weak.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "password");

    let contains_email =
        app.post("/v1/auth/register", json!({"email": "bobsmith@example.com", "password": "bobsmith loves long walks 7", "name": "Bob"})).await;
    let problem: Value = contains_email.json().await.unwrap();
    assert!(problem["errors"].to_string().contains("email"), "{problem}");

    let unknown_field = app
        .post(
            "/v1/auth/register",
            json!({"email": "c@example.com", "password": PASSWORD, "name": "C", "role": "admin"}),
        )
        .await;
    assert_eq!(unknown_field.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = unknown_field.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "role");

    let bad_email = app
        .post(
            "/v1/auth/register",
            json!({"email": "not-an-email", "password": PASSWORD, "name": "C"}),
        )
        .await;
    assert_eq!(bad_email.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(users().await, before);
}

#[tokio::test]
async fn login_issues_tokens_another_service_verifies_alone_against_the_jwks() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let response = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.unwrap();
    assert_eq!(pair["token_type"], "Bearer");
    assert!(pair["expires_in"].as_u64().unwrap() <= 900);

    let token = pair["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"].as_str(), header.kid.as_deref());

    let claims = app
        .verifier()
        .verify(token)
        .await
        .expect("verifies with the published keys");
    assert_eq!(claims.roles, ["customer"]);
    assert!(claims.scope.contains("orders"));

    let me: Value = app
        .http
        .get(app.url("/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(
        app.http
            .get(app.url("/v1/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let wrong = app
        .login("ada@example.com", "not the password at all")
        .await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (a, b): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(a, b);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_whole_session() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let first: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let old = first["refresh_token"].clone();

    let rotated = app
        .post("/v1/auth/refresh", json!({"refresh_token": old}))
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let second: Value = rotated.json().await.unwrap();
    assert_ne!(second["refresh_token"], old);

    // The old token again: stolen-token detection.
    let reused = app
        .post("/v1/auth/refresh", json!({"refresh_token": old}))
        .await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    // The legitimate holder's newer token died with the family.
    let newer = app
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    assert_eq!(newer.status(), StatusCode::UNAUTHORIZED);
    let reason: String = sqlx::query_scalar("SELECT revoke_reason FROM sessions")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(reason, "refresh token reused");

    let garbage = app
        .post("/v1/auth/refresh", json!({"refresh_token": "made-up"}))
        .await;
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_ends_the_session_its_refresh_token_belongs_to() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let pair: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let logout = app
        .http
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let refresh = app
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_first_admin_comes_from_configuration() {
    let app = spawn_app().await;
    let pair: Value = app
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let claims = app
        .verifier()
        .verify(pair["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert!(claims.has_role("admin"));
}

#[tokio::test]
async fn signing_keys_are_stored_encrypted_and_shared_by_replicas() {
    let app = spawn_app().await;
    let (kid, private_key, public_key): (String, Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT kid, private_key, public_key FROM signing_keys")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(kid.starts_with("ed25519-"));
    // A PKCS#8 Ed25519 key starts with 0x30 0x51/0x53; encrypted bytes do not carry the public key.
    assert!(
        !private_key
            .windows(public_key.len())
            .any(|w| w == public_key.as_slice()),
        "the private key is not stored in the clear"
    );
    let openapi: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/me",
        "/.well-known/jwks.json",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_signs_new_tokens_while_the_old_one_still_verifies() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let before: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let old_kid = jsonwebtoken::decode_header(before["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();

    // The rotation period is over; a replica starting now (or after its minute of caching)
    // creates the next key.
    sqlx::query("UPDATE signing_keys SET signs_until = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    let replica = crate::helpers::spawn_replica(&app).await;
    let after: Value = app
        .http
        .post(format!("{replica}/v1/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_kid = jsonwebtoken::decode_header(after["access_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(new_kid, old_kid);

    let jwks: Value = app
        .http
        .get(format!("{replica}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    let verifier = app.verifier();
    verifier
        .verify(after["access_token"].as_str().unwrap())
        .await
        .expect("new tokens verify");
    verifier
        .verify(before["access_token"].as_str().unwrap())
        .await
        .expect("old tokens verify until they expire");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        keys, 2,
        "replicas share keys instead of each making its own"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations = tienda_kit::testing::check_openapi(&doc);
    for expected in [
        "POST /v1/auth/register",
        "POST /v1/auth/login",
        "POST /v1/auth/login/mfa",
        "POST /v1/auth/refresh",
        "POST /v1/auth/logout",
        "GET /v1/auth/me",
        "GET /v1/auth/sessions",
        "DELETE /v1/auth/sessions",
        "DELETE /v1/auth/sessions/{id}",
        "POST /v1/auth/password",
        "POST /v1/auth/password/reset",
        "POST /v1/auth/password/reset/confirm",
        "POST /v1/auth/mfa/totp",
        "DELETE /v1/auth/mfa/totp",
        "POST /v1/auth/mfa/totp/verify",
        "PUT /v1/auth/users/{id}/roles",
        "GET /v1/auth/oidc/{provider}/start",
        "GET /v1/auth/oidc/{provider}/callback",
        "GET /.well-known/jwks.json",
        "GET /livez",
        "GET /readyz",
    ] {
        assert!(
            operations.iter().any(|o| o == expected),
            "{expected} missing: {operations:?}"
        );
    }
}
