//! OIDC sign-in end to end against a real provider: the certified `oidc-provider` package from
//! npm, run by Node.js (tests/oidc/provider.mjs). A cookie-keeping HTTP client plays the
//! browser: it follows the redirects by hand and fills in the provider's login and consent
//! forms.

use std::{path::PathBuf, process::Stdio};

use pretty_assertions::assert_eq;
use reqwest::{StatusCode, Url, header};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::helpers::{TestApp, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple 42";

/// A running provider and an auth service configured to use it as `test`.
struct Setup {
    app: TestApp,
    issuer: String,
    _provider: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn setup() -> Setup {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "the test OIDC provider is not installed: run tests/tools/install"
    );
    // Each side must know the other's address before it starts: the provider registers the
    // callback URL, the service the issuer. Ports are picked first.
    let auth_port = free_port();
    let provider_port = free_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let callback = format!("http://127.0.0.1:{auth_port}/v1/auth/oidc/test/callback");

    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let mut provider = Command::new(node)
        .arg(dir.join("provider.mjs"))
        .arg(provider_port.to_string())
        .arg(&callback)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (NODE or node on PATH)");
    let mut lines = BufReader::new(provider.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("the provider starts within 30 s")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(ready, format!("ready {issuer}"));
    // Keep reading: a closed pipe would kill the provider at its next line of output.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let providers = json!([
        {"name": "test", "issuer": issuer, "client_id": "tienda", "redirect_uri": callback},
        {"name": "down", "issuer": format!("http://127.0.0.1:{}", free_port()), "client_id": "x"},
    ]);
    let app = spawn_app_with(
        &format!("127.0.0.1:{auth_port}"),
        &[format!("--oidc-providers={providers}")],
    )
    .await;
    Setup {
        app,
        issuer,
        _provider: provider,
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> Url {
    let to = response
        .headers()
        .get(header::LOCATION)
        .unwrap_or_else(|| panic!("{} redirects", response.url()))
        .to_str()
        .unwrap();
    response.url().join(to).unwrap()
}

/// Starts at the service, signs in at the provider as `login`, consents, and stops at the
/// redirect back: returns the callback URL (with `code` and `state`) without visiting it.
async fn sign_in_at_provider(setup: &Setup, browser: &reqwest::Client, login: &str) -> Url {
    let start = browser
        .get(setup.app.url("/v1/auth/oidc/test/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let cookie = start.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let mut url = location(&start);
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert!(url.as_str().starts_with(&setup.issuer), "{url}");
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("nonce").is_some_and(|n| n.len() >= 16));
    assert!(param("state").is_some_and(|s| s.len() >= 16));
    assert!(param("scope").unwrap().split(' ').any(|s| s == "openid"));

    for _ in 0..10 {
        if url.as_str().starts_with(&setup.app.base) {
            return url;
        }
        let response = browser.get(url.clone()).send().await.unwrap();
        if response.status().is_redirection() {
            url = location(&response);
            continue;
        }
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let page = response.text().await.unwrap();
        // The provider's own login and consent pages post back to the interaction URL.
        let form: &[(&str, &str)] = if page.contains("name=\"login\"") {
            &[("prompt", "login"), ("login", login), ("password", "any")]
        } else {
            &[("prompt", "consent")]
        };
        let answer = browser.post(url.clone()).form(form).send().await.unwrap();
        assert!(
            answer.status().is_redirection(),
            "{url}: {}",
            answer.status()
        );
        url = location(&answer);
    }
    panic!("the provider never redirected back; last at {url}");
}

async fn sign_in(setup: &Setup, login: &str) -> reqwest::Response {
    let browser = browser();
    let callback = sign_in_at_provider(setup, &browser, login).await;
    browser.get(callback).send().await.unwrap()
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.http
        .get(app.url("/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_verified_identity_creates_an_account_and_signs_in_to_it_again() {
    let setup = setup().await;
    let response = sign_in(&setup, "carol").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.headers()
    );
    let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.contains("Max-Age=0"),
        "the state cookie is cleared: {cleared}"
    );
    let pair: Value = response.json().await.unwrap();
    let profile = me(&setup.app, pair["access_token"].as_str().unwrap()).await;
    assert_eq!(profile["email"], "carol@example.com");
    assert_eq!(profile["name"], "Carol Newcomer");
    assert_eq!(profile["roles"], json!(["customer"]));

    let again: Value = sign_in(&setup, "carol").await.json().await.unwrap();
    assert!(again.get("access_token").is_some(), "{again}");
    let second = me(&setup.app, again["access_token"].as_str().unwrap()).await;
    assert_eq!(
        second["id"], profile["id"],
        "the identity signs in to the same account"
    );

    let (users, identities, registered): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users WHERE email = 'carol@example.com'), \
                (SELECT count(*) FROM user_identities WHERE subject = 'carol' AND issuer = $1), \
                (SELECT count(*) FROM tienda_outbox WHERE subject LIKE 'tienda.user.registered%')",
    )
    .bind(&setup.issuer)
    .fetch_one(&setup.app.db)
    .await
    .unwrap();
    assert_eq!((users, identities, registered), (1, 1, 1));
    // No password: the account cannot sign in with one.
    let login = setup.app.login("carol@example.com", "").await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
}

/// Enrols TOTP for the holder of `token` and turns it on with a current code.
async fn turn_on_totp(app: &TestApp, token: &str) {
    let enrolled = app
        .http
        .post(app.url("/v1/auth/mfa/totp"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(enrolled.status(), StatusCode::OK);
    let enrolment: Value = enrolled.json().await.unwrap();
    let secret = totp_rs::Secret::try_from_base32(enrolment["secret"].as_str().unwrap()).unwrap();
    let code = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .unwrap()
        .generate_current()
        .to_string();
    let on = app
        .http
        .post(app.url("/v1/auth/mfa/totp/verify"))
        .bearer_auth(token)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(on.status(), StatusCode::OK);
}

/// The id of the account `email` signs in to with the test password.
async fn account_id(app: &TestApp, email: &str) -> Value {
    let pair: Value = app.login(email, PASSWORD).await.json().await.unwrap();
    me(app, pair["access_token"].as_str().unwrap()).await["id"].clone()
}

#[tokio::test]
async fn a_verified_email_links_to_the_existing_verified_account() {
    let setup = setup().await;
    setup.app.register("alice@example.com").await;
    setup.app.verify_email("alice@example.com").await;
    let registered = account_id(&setup.app, "alice@example.com").await;
    let pair: Value = sign_in(&setup, "alice").await.json().await.unwrap();
    let profile = me(&setup.app, pair["access_token"].as_str().unwrap()).await;
    assert_eq!(profile["id"], registered);
    assert_eq!(
        profile["name"], "Ada",
        "linking keeps the account as it was"
    );
    let password_login = setup.app.login("alice@example.com", PASSWORD).await;
    assert_eq!(
        password_login.status(),
        StatusCode::OK,
        "the password still works"
    );
}

/// Pre-registration takeover: an attacker registers the victim's address first, with a
/// password of their own (and a session, and TOTP), and waits for the victim to sign in with
/// a provider. The provider's verified address wins: the account is the victim's, and nothing
/// the attacker set up still works.
#[tokio::test]
async fn a_verified_identity_takes_an_unverified_account_from_whoever_registered_it() {
    let setup = setup().await;
    let app = &setup.app;
    app.register("alice@example.com").await;
    let attacker: Value = app
        .login("alice@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let attackers_token = attacker["access_token"].as_str().unwrap();
    turn_on_totp(app, attackers_token).await;

    let victim = sign_in(&setup, "alice").await;
    assert_eq!(victim.status(), StatusCode::OK);
    let victim: Value = victim.json().await.unwrap();
    assert!(
        victim.get("access_token").is_some(),
        "the attacker's TOTP is gone, not asked of the victim: {victim}"
    );
    let profile = me(app, victim["access_token"].as_str().unwrap()).await;
    assert_eq!(profile["email_verified"], true);
    assert_eq!(profile["mfa_enabled"], false);
    assert_eq!(
        app.login("alice@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED,
        "the attacker's password no longer works"
    );
    let refresh = app
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": attacker["refresh_token"]}),
        )
        .await;
    assert_eq!(
        refresh.status(),
        StatusCode::UNAUTHORIZED,
        "the attacker's session is revoked"
    );
}

/// A staff account is never linked to a provider identity automatically, even a verified one:
/// controlling an address at a provider must not make anyone an admin here.
#[tokio::test]
async fn a_staff_account_is_never_linked_automatically() {
    let setup = setup().await;
    setup.app.register("alice@example.com").await;
    setup.app.verify_email("alice@example.com").await;
    sqlx::query("UPDATE users SET roles = '{admin}' WHERE email = 'alice@example.com'")
        .execute(&setup.app.db)
        .await
        .unwrap();
    let response = sign_in(&setup, "alice").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("oidc-link-refused"),
        "{problem}"
    );
    let identities: i64 = sqlx::query_scalar("SELECT count(*) FROM user_identities")
        .fetch_one(&setup.app.db)
        .await
        .unwrap();
    assert_eq!(identities, 0);
    assert_eq!(
        setup
            .app
            .login("alice@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unverified_email_neither_links_nor_creates() {
    let setup = setup().await;
    setup.app.register("bob@example.com").await;
    let response = sign_in(&setup, "bob").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("oidc-email-unverified")
    );
    let identities: i64 = sqlx::query_scalar("SELECT count(*) FROM user_identities")
        .fetch_one(&setup.app.db)
        .await
        .unwrap();
    assert_eq!(identities, 0);
}

#[tokio::test]
async fn the_state_is_bound_to_its_browser_and_works_once() {
    let setup = setup().await;
    let victim = browser();
    let callback = sign_in_at_provider(&setup, &victim, "carol").await;

    // Another browser (an attacker planting their own callback) is refused and changes nothing.
    let elsewhere = browser().get(callback.clone()).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = elsewhere.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("oidc-state-mismatch")
    );

    let state = callback
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(
        victim.get(callback.clone()).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Replayed with the cookie it had: the state was used.
    let replay = setup
        .app
        .http
        .get(callback)
        .header(header::COOKIE, format!("tienda_oidc_state={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = replay.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("oidc-state-unknown")
    );
}

#[tokio::test]
async fn a_forged_code_and_a_refusal_are_rejected() {
    let setup = setup().await;
    let browser = browser();
    let callback = sign_in_at_provider(&setup, &browser, "carol").await;
    let mut forged = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "code" {
                (k, "forged".into())
            } else {
                (k, v)
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let response = browser.get(forged).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("oidc-code-rejected"),
        "{problem}"
    );

    // The user says no at the provider: the provider's error comes back as a problem.
    let browser = self::browser();
    let start = browser
        .get(setup.app.url("/v1/auth/oidc/test/start"))
        .send()
        .await
        .unwrap();
    let state = location(&start)
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let refused = browser
        .get(setup.app.url("/v1/auth/oidc/test/callback"))
        .query(&[("error", "access_denied"), ("state", &state)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("access_denied")
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email <> $1")
        .bind(crate::helpers::ADMIN_EMAIL)
        .fetch_one(&setup.app.db)
        .await
        .unwrap();
    assert_eq!(users, 0, "nothing was created");
}

#[tokio::test]
async fn totp_is_still_asked_after_the_provider() {
    let setup = setup().await;
    setup.app.register("dave@example.com").await;
    setup.app.verify_email("dave@example.com").await;
    let pair: Value = setup
        .app
        .login("dave@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let token = pair["access_token"].as_str().unwrap();
    turn_on_totp(&setup.app, token).await;

    let answer: Value = sign_in(&setup, "dave").await.json().await.unwrap();
    assert_eq!(answer["mfa_required"], true, "{answer}");
    assert!(answer.get("access_token").is_none());
}

#[tokio::test]
async fn unknown_and_unreachable_providers_are_problems() {
    let setup = setup().await;
    let unknown = setup
        .app
        .http
        .get(setup.app.url("/v1/auth/oidc/nope/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let down = setup
        .app
        .http
        .get(setup.app.url("/v1/auth/oidc/down/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        down.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
}

/// Calls to a provider go through the kit's outbound client: a CircuitPolicy on `{kind:
/// External, name: <provider>}` applies to them, and an open circuit spares the provider.
#[tokio::test]
async fn a_circuit_policy_on_a_provider_applies_to_its_calls() {
    let dir = std::env::temp_dir().join(format!("tienda-auth-policy-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policies.yaml"),
        "apiVersion: tienda.dev/v1alpha1\nkind: CircuitPolicy\nmetadata: {name: down}\n\
         spec:\n  targetRef: {kind: External, name: down}\n  timeout: 2s\n  \
         circuitBreaker: {consecutiveFailures: 2, openFor: 1m}\n",
    )
    .unwrap();
    let providers = json!([
        {"name": "down", "issuer": format!("http://127.0.0.1:{}", free_port()), "client_id": "x"},
    ]);
    let app = spawn_app_with(
        "127.0.0.1:0",
        &[
            format!("--oidc-providers={providers}"),
            format!("--policy-path={}", dir.display()),
        ],
    )
    .await;
    for _ in 0..3 {
        let down = app
            .http
            .get(app.url("/v1/auth/oidc/down/start"))
            .send()
            .await
            .unwrap();
        assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    }
    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("outbound_requests_total")
                    && l.contains(r#"target="external:down""#)
                    && l.contains(&format!(r#"outcome="{outcome}""#))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count("connect"),
        2,
        "two calls reached for the provider\n{metrics}"
    );
    assert_eq!(
        count("circuit_open"),
        1,
        "the third was refused unsent\n{metrics}"
    );
    assert!(
        metrics.contains(r#"auth_policy_applied_generation{kind="CircuitPolicy",name="down""#),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
