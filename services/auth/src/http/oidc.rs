//! Sign-in through an OpenID Connect provider: authorization code flow with PKCE (S256), a
//! nonce in the ID token and a `state` that is single use, expires in ten minutes and is bound
//! to the browser that started the flow by an HttpOnly cookie (login CSRF).
//!
//! An identity (issuer, subject) signs in to the account it is linked to. A new identity is
//! linked to the account with the same email — only when the provider says it verified that
//! email — or creates one. Accounts with TOTP still need their code.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use openidconnect::{
    AccessTokenHash, AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RequestTokenError, Scope, TokenResponse,
    core::{CoreAuthenticationFlow, CoreUserInfoClaims},
};
use serde::Deserialize;
use tienda_events::{Envelope, user::UserRegistered};
use tienda_kit::{Problem, json::Json, outbox};
use utoipa::IntoParams;
use uuid::Uuid;

use super::{
    AppState,
    accounts::{LoginResponse, sign_in},
};
use crate::{
    error::Error,
    oidc::error_chain,
    role::Role,
    store::{self, accounts::User},
    tokens,
};

/// The cookie binding a flow to its browser; its value is the `state`.
pub const STATE_COOKIE: &str = "tienda_oidc_state";
/// How long a started sign-in may take.
const FLOW_MINUTES: i64 = 10;

/// Starts a sign-in: redirects the browser to the provider.
#[utoipa::path(get, path = "/v1/auth/oidc/{provider}/start", tag = "oidc",
    params(("provider" = String, Path, description = "A provider name from AUTH_OIDC_PROVIDERS")),
    responses(
        (status = 303, description = "To the provider's authorization endpoint; sets the state cookie"),
        (status = 404, body = Problem), (status = 502, body = Problem)))]
pub async fn start(
    State(state): State<AppState>,
    Path(provider): Path<String>,
) -> Result<Response, Error> {
    if !state.oidc.has(&provider) {
        return Err(Error::UnknownProvider(provider));
    }
    let client = state
        .oidc
        .client(&provider, false)
        .await
        .map_err(|e| Error::ProviderUnavailable(e.to_string()))?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in state.oidc.scopes(&provider) {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, csrf, nonce) = request.set_pkce_challenge(challenge).url();

    let mut conn = state.db.acquire().await?;
    store::oidc::insert_oidc_flow(
        &mut conn,
        &tokens::hash_opaque_token(csrf.secret()),
        &provider,
        nonce.secret(),
        verifier.secret(),
        Utc::now() + chrono::Duration::minutes(FLOW_MINUTES),
    )
    .await?;

    let cookie = state_cookie(&state, csrf.secret(), FLOW_MINUTES * 60);
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(url.as_str()).map_err(|e| Error::Internal(e.to_string()))?,
    );
    headers.insert(header::SET_COOKIE, cookie);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What the provider sends the browser back with.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The state from `start`.
    pub state: Option<String>,
    /// The provider's issuer (RFC 9207), checked when present.
    pub iss: Option<String>,
    /// Set instead of `code` when the user or provider refused.
    pub error: Option<String>,
    /// The provider's words about `error`.
    pub error_description: Option<String>,
}

/// Finishes a sign-in: checks the state against its cookie, trades the code (with the PKCE
/// verifier) for an ID token, verifies it, links or creates the account and signs in.
#[utoipa::path(get, path = "/v1/auth/oidc/{provider}/callback", tag = "oidc",
    params(("provider" = String, Path, description = "A provider name from AUTH_OIDC_PROVIDERS"),
           CallbackQuery),
    responses(
        (status = 200, body = LoginResponse, description = "Tokens, or an MFA challenge"),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem, description = "The provider did not verify the email"),
        (status = 404, body = Problem), (status = 502, body = Problem)))]
pub async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, Error> {
    let Some(issuer) = state.oidc.issuer(&provider).map(str::to_owned) else {
        return Err(Error::UnknownProvider(provider));
    };
    let Some(flow_state) = query.state.as_deref() else {
        return Err(Error::Invalid(vec![("state".into(), "is missing".into())]));
    };
    // The state must come back to the browser that started the flow: otherwise an attacker
    // could finish their own sign-in in the victim's browser (login CSRF).
    let cookie = cookie_value(&headers, STATE_COOKIE);
    let bound = cookie
        .is_some_and(|c| tokens::hash_opaque_token(c) == tokens::hash_opaque_token(flow_state));
    if !bound {
        return Err(Error::OidcRejected(
            "oidc-state-mismatch",
            "This sign-in was not started in this browser (the state cookie is missing or \
             different); start again."
                .into(),
        ));
    }
    let flow = {
        let mut conn = state.db.acquire().await?;
        store::oidc::take_oidc_flow(&mut conn, &tokens::hash_opaque_token(flow_state), &provider)
            .await?
    };
    let Some(flow) = flow.filter(|f| f.expires_at > Utc::now()) else {
        return Err(Error::OidcRejected(
            "oidc-state-unknown",
            "This sign-in expired or was finished already; start again.".into(),
        ));
    };
    if let Some(error) = &query.error {
        let description = query
            .error_description
            .as_deref()
            .unwrap_or("no description");
        return Err(Error::OidcRejected(
            "oidc-denied",
            format!("The provider refused the sign-in: {error}: {description}"),
        ));
    }
    if query.iss.as_deref().is_some_and(|iss| iss != issuer) {
        return Err(Error::OidcRejected(
            "oidc-issuer-mismatch",
            "The response names another issuer than this provider's.".into(),
        ));
    }
    let Some(code) = query.code else {
        return Err(Error::Invalid(vec![("code".into(), "is missing".into())]));
    };

    let identity = verify(&state, &provider, code, flow.pkce_verifier, flow.nonce).await?;
    let key = state.keys.active().await?;
    let mut tx = state.db.begin().await?;
    let user = link(&mut tx, &issuer, &identity).await?;
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let answer = sign_in(&state, &mut tx, &key, &user, agent, &peer.ip().to_string()).await?;
    tx.commit().await?;

    let mut response = Json::<LoginResponse>(answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, state_cookie(&state, "", 0));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What a verified ID token says about its user.
struct Identity {
    subject: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
}

async fn verify(
    state: &AppState,
    provider: &str,
    code: String,
    pkce_verifier: String,
    nonce: String,
) -> Result<Identity, Error> {
    let unavailable = |e: &dyn std::error::Error| Error::ProviderUnavailable(error_chain(e));
    let client = state
        .oidc
        .client(provider, false)
        .await
        .map_err(|e| Error::ProviderUnavailable(e.to_string()))?;
    let http = state.oidc.http(provider);
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| unavailable(&e))?
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
        .request_async(&http)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => Error::OidcRejected(
                "oidc-code-rejected",
                format!(
                    "The provider would not trade the code for tokens ({}); start again.",
                    answer.error()
                ),
            ),
            other => unavailable(&other),
        })?;
    let id_token = response.id_token().ok_or_else(|| {
        Error::ProviderUnavailable(format!("{provider} answered without an ID token"))
    })?;
    let nonce = Nonce::new(nonce);
    // A token signed with a key we have not seen means the provider rotated its keys: read
    // them again once (rate-limited in `Providers::client`) before refusing.
    let first_try = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .cloned();
    let mut client = client;
    let claims = match first_try {
        Ok(claims) => claims,
        Err(first) => {
            client = state
                .oidc
                .client(provider, true)
                .await
                .map_err(|e| Error::ProviderUnavailable(e.to_string()))?;
            id_token
                .claims(&client.id_token_verifier(), &nonce)
                .map_err(|_| {
                    Error::OidcRejected(
                        "oidc-id-token-invalid",
                        format!("The ID token did not verify: {}", error_chain(&first)),
                    )
                })?
                .clone()
        }
    };
    if let Some(expected) = claims.access_token_hash() {
        let verifier = client.id_token_verifier();
        let invalid = |e: &dyn std::error::Error| {
            Error::OidcRejected("oidc-id-token-invalid", error_chain(e))
        };
        let alg = id_token.signing_alg().map_err(|e| invalid(&e))?;
        let key = id_token.signing_key(&verifier).map_err(|e| invalid(&e))?;
        let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
            .map_err(|e| invalid(&e))?;
        if actual != *expected {
            return Err(Error::OidcRejected(
                "oidc-id-token-invalid",
                "The access token does not match the ID token's at_hash.".into(),
            ));
        }
    }
    let mut identity = Identity {
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified() == Some(true),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string()),
    };
    // Providers that follow the spec to the letter put profile claims only in the UserInfo
    // response when an access token is issued; ask there, for the subject we verified.
    if identity.email.is_none()
        && let Ok(request) = client.user_info(
            response.access_token().clone(),
            Some(claims.subject().clone()),
        )
    {
        let info: CoreUserInfoClaims = request
            .request_async(&http)
            .await
            .map_err(|e| unavailable(&e))?;
        identity.email = info.email().map(|e| e.to_string());
        identity.email_verified = info.email_verified() == Some(true);
        if identity.name.is_none() {
            identity.name = info.name().and_then(|n| n.get(None)).map(|n| n.to_string());
        }
    }
    identity.email = identity.email.map(|e| e.trim().to_lowercase());
    Ok(identity)
}

/// The account of `identity`: the linked one, else the one with its email (now linked), else
/// a new one. Only an address the provider verified is matched, and:
/// - a staff account (admin, support) is never linked automatically: whoever controls an
///   address at a provider does not thereby become an admin here;
/// - an account whose address was never verified here is someone's claim on the address that
///   the provider now disproves (pre-registration takeover: an attacker registers the victim's
///   address first and waits). The verified identity wins, and everything the unverified
///   holder set up goes: the password, TOTP and recovery codes, every session, pending links.
async fn link(
    conn: &mut sqlx::PgConnection,
    issuer: &str,
    identity: &Identity,
) -> Result<User, Error> {
    if let Some(user) = store::oidc::user_by_identity(conn, issuer, &identity.subject).await? {
        store::oidc::touch_identity(conn, issuer, &identity.subject).await?;
        return Ok(user);
    }
    let email = match &identity.email {
        Some(email) if identity.email_verified => email.clone(),
        _ => return Err(Error::OidcEmailUnverified),
    };
    let user = match store::accounts::user_by_email(conn, &email).await? {
        Some(user) if user.roles.iter().any(|r| *r != Role::Customer) => {
            tracing::warn!(user = %user.id, issuer, "OIDC identity not linked to a staff account");
            return Err(Error::OidcLinkRefused);
        }
        Some(user) if !user.email_verified => {
            take_over(conn, &user).await?;
            tracing::warn!(user = %user.id, issuer,
                "OIDC identity verified an unverified account's address: its password, second \
                 factor and sessions were removed");
            User {
                password_hash: None,
                email_verified: true,
                ..user
            }
        }
        Some(user) => user,
        None => {
            let name = identity
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
            let user = User {
                id: Uuid::now_v7(),
                email,
                name: name.chars().take(100).collect(),
                password_hash: None,
                roles: vec![Role::Customer],
                // The provider verified it (checked above).
                email_verified: true,
            };
            store::accounts::create_user(conn, &user).await?;
            let event = UserRegistered {
                user_id: user.id,
                email: user.email.clone(),
                name: user.name.clone(),
                roles: Role::names(&user.roles),
            };
            outbox::enqueue(conn, Envelope::new("auth", event)).await?;
            user
        }
    };
    store::oidc::insert_identity(
        conn,
        issuer,
        &identity.subject,
        user.id,
        identity.email.as_deref(),
    )
    .await?;
    tracing::info!(user = %user.id, issuer, "OIDC identity linked");
    Ok(user)
}

/// Removes what the holder of an unverified account set up, and marks its address verified
/// (the provider vouched for it).
async fn take_over(conn: &mut sqlx::PgConnection, user: &User) -> Result<(), Error> {
    store::accounts::clear_password(conn, user.id).await?;
    store::mfa::delete_totp(conn, user.id).await?;
    store::sessions::revoke_other_sessions(conn, user.id, None, "address verified by a provider")
        .await?;
    store::password_resets::void_resets(conn, user.id).await?;
    store::email_verifications::void(conn, user.id).await?;
    store::accounts::mark_verified(conn, user.id, &user.email).await?;
    Ok(())
}

fn state_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    // SameSite=Lax: the provider's redirect back is a top-level cross-site navigation, which
    // Lax cookies accompany; Strict ones would not.
    let secure = if state.config.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={value}; Path=/v1/auth/oidc; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie characters are URL-safe base64")
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("_session=x; tienda_oidc_state=abc-_1"),
        );
        assert_eq!(cookie_value(&headers, STATE_COOKIE), Some("abc-_1"));
        assert_eq!(cookie_value(&headers, "missing"), None);
    }
}
