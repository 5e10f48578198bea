//! Access tokens (RFC 9068 profile, EdDSA, `kid`) and opaque refresh tokens.

use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{Algorithm, Header};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use uuid::Uuid;

use crate::{keys::SigningKey, role::Role, store::accounts::User};

/// The permissions a set of roles grants, as the `scope` claim.
pub fn scope(roles: &[Role]) -> String {
    let mut scopes: Vec<&str> = roles
        .iter()
        .flat_map(|role| role.scopes())
        .copied()
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes.join(" ")
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    /// The session (refresh-token family) it belongs to.
    sid: String,
    roles: &'a [Role],
    scope: String,
}

/// Signs an access token for `user` in `session`; returns it with its lifetime in seconds.
pub fn access_token(
    key: &SigningKey,
    issuer: &str,
    audience: &str,
    ttl: u32,
    user: &User,
    session: Uuid,
) -> (String, u32) {
    let now = Utc::now().timestamp();
    let claims = AccessClaims {
        iss: issuer,
        sub: user.id.to_string(),
        aud: audience,
        exp: now + i64::from(ttl),
        nbf: now,
        iat: now,
        jti: Uuid::now_v7().to_string(),
        sid: session.to_string(),
        roles: &user.roles,
        scope: scope(&user.roles),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    (
        jsonwebtoken::encode(&header, &claims, &key.encoding).expect("EdDSA signing cannot fail"),
        ttl,
    )
}

/// A new opaque token (256 random bits) and the hash that is stored: refresh tokens, password
/// reset tokens and MFA challenges.
pub fn opaque_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS has randomness");
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_opaque_token(&token);
    (token, hash)
}

/// SHA-256 of an opaque token, as stored.
pub fn hash_opaque_token(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_their_scopes() {
        assert_eq!(scope(&[Role::Customer]), "orders profile");
        assert!(scope(&[Role::Admin]).contains("admin"));
        assert_eq!(
            scope(&[Role::Customer, Role::Support]),
            "orders orders:read profile users:read"
        );
        assert_eq!(scope(&[]), "");
    }

    #[test]
    fn refresh_tokens_are_random_and_only_their_hash_is_kept() {
        let (a, hash) = opaque_token();
        let (b, hash_b) = opaque_token();
        assert_ne!(a, b);
        assert_ne!(hash, hash_b);
        // 256 random bits, URL-safe: 43 base64 characters with no padding.
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .expect("URL-safe base64");
        assert_eq!(bytes.len(), 32);
        assert_ne!(bytes, [0u8; 32]);
        // What is kept is SHA-256 of the token's text: checked against FIPS 180-2's vector
        // for "abc", not against the function itself.
        assert_eq!(
            hex(&hash_opaque_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash.len(), 32);
        assert_ne!(hash, bytes, "the token itself is never what is stored");
        assert_eq!(
            hash,
            hash_opaque_token(&a),
            "the stored hash finds the token"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
