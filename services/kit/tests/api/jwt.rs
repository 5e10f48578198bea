//! Access-token verification: a real Ed25519 key, a real JWKS over HTTP, and the attacks of
//! RFC 8725 — every one refused.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use futures::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;
use serde_json::json;
use tienda_kit::{
    jwt::{JwksSource, TokenError, Verifier, VerifierConfig},
    testing::{AUDIENCE, ISSUER, TokenIssuer},
};

fn b64(value: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn a_valid_token_is_accepted_with_its_claims() {
    let issuer = TokenIssuer::start().await;
    let claims = issuer
        .verifier()
        .verify(&issuer.token("user-1", &["customer", "admin"]))
        .await
        .unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.iss, ISSUER);
    assert!(claims.has_role("admin") && !claims.has_role("support"));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let issuer = TokenIssuer::start().await;
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": issuer.kid});
    let token = format!("{}.{}.", b64(&header), b64(&issuer.claims("u", &["admin"])));
    assert!(matches!(
        issuer.verifier().verify(&token).await,
        Err(TokenError::Malformed(_))
    ));
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let issuer = TokenIssuer::start().await;
    let jwks = issuer.jwks.lock().unwrap().clone();
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(issuer.kid.clone());
    header.typ = Some("at+jwt".into());
    let token = jsonwebtoken::encode(
        &header,
        &issuer.claims("u", &["admin"]),
        &jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    let err = issuer.verifier().verify(&token).await.unwrap_err();
    assert!(
        matches!(err, TokenError::Malformed(ref m) if m.contains("HS256")),
        "{err}"
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let issuer = TokenIssuer::start().await;
    let verifier = issuer.verifier();
    let now = chrono::Utc::now().timestamp();
    let mut expired = issuer.claims("u", &[]);
    expired["exp"] = json!(now - 60);
    let mut early = issuer.claims("u", &[]);
    early["nbf"] = json!(now + 600);
    for claims in [expired, early] {
        let token = issuer.sign(&claims, Some(&issuer.kid), Some("at+jwt"));
        assert!(
            matches!(verifier.verify(&token).await, Err(TokenError::Rejected(_))),
            "{claims}"
        );
    }
}

#[tokio::test]
async fn a_wrong_audience_or_issuer_is_refused() {
    let issuer = TokenIssuer::start().await;
    let verifier = issuer.verifier();
    let mut other_audience = issuer.claims("u", &[]);
    other_audience["aud"] = json!("someone-else");
    let mut other_issuer = issuer.claims("u", &[]);
    other_issuer["iss"] = json!("https://evil.example");
    for claims in [other_audience, other_issuer] {
        let token = issuer.sign(&claims, Some(&issuer.kid), Some("at+jwt"));
        assert!(
            matches!(verifier.verify(&token).await, Err(TokenError::Rejected(_))),
            "{claims}"
        );
    }
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let issuer = TokenIssuer::start().await;
    let token = issuer.token("user-1", &["customer"]);
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = issuer.claims("user-1", &["customer"]);
    claims["roles"] = json!(["admin"]);
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert!(matches!(
        issuer.verifier().verify(&forged).await,
        Err(TokenError::Rejected(_))
    ));
}

#[tokio::test]
async fn a_token_without_the_access_token_type_or_kid_is_refused() {
    let issuer = TokenIssuer::start().await;
    let verifier = issuer.verifier();
    let claims = issuer.claims("u", &[]);
    let untyped = issuer.sign(&claims, Some(&issuer.kid), Some("JWT"));
    assert!(matches!(
        verifier.verify(&untyped).await,
        Err(TokenError::Malformed(_))
    ));
    let no_kid = issuer.sign(&claims, None, Some("at+jwt"));
    assert!(matches!(
        verifier.verify(&no_kid).await,
        Err(TokenError::Malformed(_))
    ));
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_at_a_bounded_rate() {
    let issuer = TokenIssuer::start().await;
    let verifier = issuer.verifier();
    verifier.verify(&issuer.token("u", &[])).await.unwrap();
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1);
    let stranger = issuer.sign(
        &issuer.claims("u", &[]),
        Some("no-such-key"),
        Some("at+jwt"),
    );
    for _ in 0..5 {
        assert!(matches!(
            verifier.verify(&stranger).await,
            Err(TokenError::UnknownKey(_))
        ));
    }
    assert_eq!(
        issuer.fetches.load(Ordering::SeqCst),
        1,
        "no refetch within the minimum interval"
    );
}

/// The key set served from memory (no sockets, so a paused clock cannot time out a fetch),
/// counting fetches.
struct CountingJwks {
    jwks: Arc<Mutex<serde_json::Value>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksSource for CountingJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let set = serde_json::from_value(self.jwks.lock().unwrap().clone());
        Box::pin(async move { set.map_err(|e| e.to_string()) })
    }
}

/// A verifier's settings for keys served from memory: a minute between refreshes.
fn in_memory_config() -> VerifierConfig {
    VerifierConfig {
        jwks_url: String::new(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        min_refresh_interval: Duration::from_secs(60),
        leeway_seconds: 0,
    }
}

/// Auth down, then back: fetches fail while `down` is set.
struct FlakyJwks {
    jwks: Arc<Mutex<serde_json::Value>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl JwksSource for FlakyJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<JwkSet, String>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let result = if self.down.load(Ordering::SeqCst) {
            Err("connection refused".to_owned())
        } else {
            serde_json::from_value(self.jwks.lock().unwrap().clone()).map_err(|e| e.to_string())
        };
        Box::pin(async move { result })
    }
}

#[tokio::test(start_paused = true)]
async fn while_auth_is_down_a_good_token_is_unverifiable_not_invalid_and_accepted_soon_after() {
    let issuer = TokenIssuer::start().await;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fetches = Arc::new(AtomicUsize::new(0));
    let verifier = Verifier::with_source(
        in_memory_config(),
        Arc::new(FlakyJwks {
            jwks: issuer.jwks.clone(),
            down: down.clone(),
            fetches: fetches.clone(),
        }),
    );
    let token = issuer.token("u", &[]);
    for _ in 0..10 {
        // The first asks auth; the rest, inside the retry interval, do not. None of them
        // calls the token invalid (a 401 would send the user to sign in again for nothing).
        assert!(matches!(
            verifier.verify(&token).await,
            Err(TokenError::KeysUnavailable(why)) if why.contains("connection refused")
        ));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Auth is back: within a second, not the minute between refreshes, the token is good.
    down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(600)).await;
    verifier
        .verify(&token)
        .await
        .expect("verified once auth answers");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);

    // And the refused answer is a 503 asking for a retry, not a 401.
    let response = tienda_kit::jwt::refusal(&TokenError::KeysUnavailable("down".into()));
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(!response.headers().contains_key("www-authenticate"));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_refetches_at_most_once_per_interval_on_a_paused_clock() {
    let old = TokenIssuer::start().await;
    let new = TokenIssuer::start().await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let verifier = Verifier::with_source(
        in_memory_config(),
        Arc::new(CountingJwks {
            jwks: old.jwks.clone(),
            fetches: fetches.clone(),
        }),
    );
    verifier.verify(&old.token("u", &[])).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Rotation: auth now serves the new key beside the old one.
    let new_key = new.jwks.lock().unwrap()["keys"][0].clone();
    old.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(new_key);
    let rotated = new.token("u", &[]);

    // A flood of tokens naming the new kid inside the interval costs no fetch.
    for _ in 0..20 {
        assert!(matches!(
            verifier.verify(&rotated).await,
            Err(TokenError::UnknownKey(_))
        ));
    }
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(matches!(
        verifier.verify(&rotated).await,
        Err(TokenError::UnknownKey(_))
    ));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "still inside the interval"
    );

    // Once the interval has passed, the same verifier refetches once and takes the new key.
    tokio::time::advance(Duration::from_secs(2)).await;
    verifier
        .verify(&rotated)
        .await
        .expect("the rotated key is fetched");
    verifier
        .verify(&old.token("u", &[]))
        .await
        .expect("old keys stay valid");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    for _ in 0..5 {
        verifier.verify(&rotated).await.unwrap();
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "a known kid costs no fetch"
    );
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_from_the_jwks_by_the_same_verifier() {
    let old = TokenIssuer::start().await;
    let new = TokenIssuer::start().await;
    // The verifier every service keeps for its life: built once, before the rotation.
    let verifier = tienda_kit::jwt::Verifier::new(tienda_kit::jwt::VerifierConfig {
        jwks_url: old.jwks_url.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        min_refresh_interval: Duration::ZERO,
        leeway_seconds: 0,
    });
    verifier.verify(&old.token("u", &[])).await.unwrap();
    assert_eq!(old.fetches.load(Ordering::SeqCst), 1);
    let new_key = new.jwks.lock().unwrap()["keys"][0].clone();
    old.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(new_key);
    verifier
        .verify(&new.token("u", &[]))
        .await
        .expect("the new key is fetched over HTTP and accepted");
    assert_eq!(old.fetches.load(Ordering::SeqCst), 2, "one refetch");
    verifier
        .verify(&old.token("u", &[]))
        .await
        .expect("old keys stay valid");
    assert_eq!(old.fetches.load(Ordering::SeqCst), 2);
}

/// Property: a valid token altered in any one character — header, claims or signature — is
/// refused, and no string whatever makes the verifier panic. 256 cases each (proptest's
/// default; `PROPTEST_CASES` raises it).
#[test]
fn a_token_altered_anywhere_is_refused_and_no_input_panics() {
    use proptest::{
        prelude::*,
        test_runner::{Config, TestRunner},
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let issuer = runtime.block_on(TokenIssuer::start());
    let verifier = issuer.verifier();
    let token = issuer.token("user-1", &["customer"]);
    runtime
        .block_on(verifier.verify(&token))
        .expect("the original is valid");
    let alphabet: Vec<char> =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
            .chars()
            .collect();
    let original: Vec<char> = token.chars().collect();
    let mut runner = TestRunner::new(Config::default());
    runner
        .run(
            &(0..original.len(), proptest::sample::select(alphabet)),
            |(at, c)| {
                let mut altered = original.clone();
                altered[at] = c;
                let altered: String = altered.into_iter().collect();
                if altered != token {
                    prop_assert!(
                        runtime.block_on(verifier.verify(&altered)).is_err(),
                        "accepted with character {at} changed to {c:?}: {altered}"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    runner
        .run(&"\\PC{0,400}", |text| {
            let _ = runtime.block_on(verifier.verify(&text));
            Ok(())
        })
        .unwrap();
    // Three segments of base64 noise: the shape of a token, none of its content.
    runner
        .run(
            &proptest::collection::vec("[A-Za-z0-9_-]{0,120}", 3),
            |parts| {
                let text = parts.join(".");
                prop_assert!(runtime.block_on(verifier.verify(&text)).is_err());
                Ok(())
            },
        )
        .unwrap();
}
