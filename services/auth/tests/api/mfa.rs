use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

const PASSWORD: &str = "correct horse battery staple 42";

fn code_for(secret_base32: &str) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_base32).unwrap();
    totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .unwrap()
        .generate_current()
        .to_string()
}

/// Registers `email`, signs in and starts TOTP enrolment: the access token and the enrolment.
async fn enrol(app: &crate::helpers::TestApp, email: &str) -> (String, Value) {
    app.register(email).await;
    let pair: Value = app.login(email, PASSWORD).await.json().await.unwrap();
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let enrolment: Value = app
        .http
        .post(app.url("/v1/auth/mfa/totp"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (token, enrolment)
}

#[tokio::test]
async fn totp_enrolment_then_login_needs_a_code_and_recovery_codes_work_once() {
    let app = spawn_app().await;
    let (token, enrolment) = enrol(&app, "ada@example.com").await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    assert!(
        enrolment["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Tienda:")
    );
    let secret_at_rest: Vec<u8> = sqlx::query_scalar("SELECT secret FROM totp")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let raw = totp_rs::Secret::try_from_base32(&secret)
        .unwrap()
        .as_bytes()
        .to_vec();
    assert_eq!(raw.len(), 20, "160-bit secret");
    assert!(
        !secret_at_rest
            .windows(raw.len())
            .any(|w| w == raw.as_slice()),
        "the TOTP secret is stored encrypted"
    );

    let wrong = app
        .http
        .post(app.url("/v1/auth/mfa/totp/verify"))
        .bearer_auth(&token)
        .json(&json!({"code": "000000"}))
        .send()
        .await
        .unwrap();
    assert!(wrong.status() == StatusCode::UNPROCESSABLE_ENTITY || code_for(&secret) == "000000");
    let code = code_for(&secret);
    let verified = app
        .http
        .post(app.url("/v1/auth/mfa/totp/verify"))
        .bearer_auth(&token)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);
    let recovery: Vec<String> =
        serde_json::from_value(verified.json::<Value>().await.unwrap()["recovery_codes"].clone())
            .unwrap();
    assert_eq!(recovery.len(), 10);
    let me: Value = app
        .http
        .get(app.url("/v1/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfa_enabled"], true);

    // The password alone is not enough any more.
    let first: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["mfa_required"], true);
    assert!(first.get("access_token").is_none());

    // The code already used to confirm is refused (a code works once), and spends the challenge.
    let replay = app
        .post(
            "/v1/auth/login/mfa",
            json!({"mfa_token": first["mfa_token"], "code": code}),
        )
        .await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    let spent = app
        .post(
            "/v1/auth/login/mfa",
            json!({"mfa_token": first["mfa_token"], "code": recovery[0]}),
        )
        .await;
    assert_eq!(
        spent.status(),
        StatusCode::UNAUTHORIZED,
        "a challenge is single use"
    );

    // A recovery code signs in, once.
    let second: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let signed_in = app
        .post(
            "/v1/auth/login/mfa",
            json!({"mfa_token": second["mfa_token"], "code": recovery[0]}),
        )
        .await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let tokens: Value = signed_in.json().await.unwrap();
    assert!(
        app.verifier()
            .verify(tokens["access_token"].as_str().unwrap())
            .await
            .is_ok()
    );
    let third: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let reused = app
        .post(
            "/v1/auth/login/mfa",
            json!({"mfa_token": third["mfa_token"], "code": recovery[0]}),
        )
        .await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);

    // A real authenticator code signs in: the one an app shows 30 s from now (RFC 6238 allows
    // one step of skew), since this step's code was spent confirming the enrolment.
    let fourth: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fourth["mfa_required"], true);
    let next_step = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(&secret).unwrap())
        .build()
        .unwrap()
        .generate(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 30,
        )
        .to_string();
    let with_totp = app
        .post(
            "/v1/auth/login/mfa",
            json!({"mfa_token": fourth["mfa_token"], "code": next_step}),
        )
        .await;
    assert_eq!(with_totp.status(), StatusCode::OK);
    let tokens: Value = with_totp.json().await.unwrap();
    let claims = app
        .verifier()
        .verify(tokens["access_token"].as_str().unwrap())
        .await
        .expect("a TOTP sign-in issues a valid access token");
    assert_eq!(claims.sub, me["id"].as_str().unwrap());
    assert!(tokens["refresh_token"].is_string());
    // The same code again is refused: its step is spent.
    let fifth: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let same_code = app
        .post(
            "/v1/auth/login/mfa",
            json!({"mfa_token": fifth["mfa_token"], "code": next_step}),
        )
        .await;
    assert_eq!(same_code.status(), StatusCode::UNAUTHORIZED);

    // Turning MFA off needs a code and the password; then the password alone signs in again.
    let disable = |body: Value| {
        let app = &app;
        let token = &token;
        async move {
            let response = app
                .http
                .delete(app.url("/v1/auth/mfa/totp"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, _) = disable(json!({"code": "nope-nope", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, problem) = disable(json!({"code": recovery[1]})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a code alone is not enough"
    );
    assert_eq!(problem["errors"][0]["field"], "password");
    let (status, problem) =
        disable(json!({"code": recovery[1], "password": "not the password 77"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "password");
    let (status, _) = disable(json!({"code": recovery[1], "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let plain: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert!(plain["access_token"].is_string());
}

/// A stolen password used to be enough to guess the second factor at leisure: wrong codes were
/// not counted, and every correct password started afresh. Codes are now counted per account,
/// and a correct password does not reset the count.
#[tokio::test]
async fn wrong_second_factor_codes_are_counted_and_a_correct_password_does_not_reset_them() {
    let app = spawn_app().await;
    let (token, enrolment) = enrol(&app, "ada@example.com").await;
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let verified = app
        .http
        .post(app.url("/v1/auth/mfa/totp/verify"))
        .bearer_auth(&token)
        .json(&json!({"code": code_for(&secret)}))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);

    let wrong_code = |code: String| {
        let app = &app;
        async move {
            // The attacker knows the password: each round is a fresh, correct first step.
            let step: Value = app
                .login("ada@example.com", PASSWORD)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(step["mfa_required"], true, "{step}");
            app.post(
                "/v1/auth/login/mfa",
                json!({"mfa_token": step["mfa_token"], "code": code}),
            )
            .await
        }
    };
    let right = code_for(&secret);
    let not_right = |i: u32| {
        let guess = format!("{:06}", (right.parse::<u32>().unwrap() + 1 + i) % 1_000_000);
        guess
    };
    for i in 0..5 {
        assert_eq!(
            wrong_code(not_right(i)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let waiting = wrong_code(right.clone()).await;
    assert_eq!(
        waiting.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right code waits after five wrong ones"
    );
    assert!(waiting.headers().contains_key("retry-after"));
}
