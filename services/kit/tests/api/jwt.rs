//! Access-token verification: a real Ed25519 key, a real JWKS over HTTP, and the attacks of
//! RFC 8725 — every one refused.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use serde_json::json;
use tienda_kit::{
    jwt::TokenError,
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
    assert_eq!(AUDIENCE, "tienda");
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

#[tokio::test]
async fn a_rotated_key_is_picked_up_from_the_jwks() {
    let old = TokenIssuer::start().await;
    let new = TokenIssuer::start().await;
    let verifier = old.verifier();
    verifier.verify(&old.token("u", &[])).await.unwrap();
    // auth publishes the new key beside the old one; the verifier has not fetched since, so a
    // zero refresh interval stands in for the interval having passed.
    let new_key = new.jwks.lock().unwrap()["keys"][0].clone();
    old.jwks.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(new_key);
    let fresh = tienda_kit::jwt::Verifier::new(tienda_kit::jwt::VerifierConfig {
        jwks_url: old.jwks_url.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        min_refresh_interval: std::time::Duration::ZERO,
        leeway_seconds: 0,
    });
    fresh
        .verify(&old.token("u", &[]))
        .await
        .expect("old keys stay valid");
    fresh
        .verify(&new.token("u", &[]))
        .await
        .expect("the new key is accepted");
}
