//! The `paypal` provider: PayPal's Orders v2 and Payments v2 REST APIs, with OAuth 2.0 client
//! credentials.
//!
//! | Ours | PayPal |
//! |---|---|
//! | authorize | `POST /v2/checkout/orders` with `intent: AUTHORIZE` and the customer's saved PayPal (`payment_source.paypal.vault_id`: the payment method token) — completed server-side, no buyer redirect |
//! | capture (part or all) | `POST /v2/payments/authorizations/{id}/capture` with `final_capture: true` (the rest is released) |
//! | void | `POST /v2/payments/authorizations/{id}/void` |
//! | refund | `POST /v2/payments/captures/{capture_id}/refund` |
//! | retrieve (reconciliation) | `GET /v2/payments/authorizations/{id}` |
//!
//! Every request carries our idempotency key as `PayPal-Request-Id` (PayPal answers a repeat
//! with the first result) and a bearer token from `POST /v1/oauth2/token` (client id and secret
//! as HTTP Basic), fetched once and reused until a minute before it expires; a `401` drops it
//! and the call is answered as unavailable, so the retry fetches a new one. Calls go through the
//! kit's outbound client under the CircuitPolicy for `{kind: External, name: paypal}`.
//!
//! An order answered `COMPLETED` is not yet an authorization: only
//! `purchase_units[0].payments.authorizations[0].status` says whether it is held (`CREATED`),
//! refused (`DENIED`) or still `PENDING` (answered as unavailable: the same key asks again).
//! Likewise a capture or refund counts only once its own `status` is `COMPLETED`. Amounts
//! are decimal strings at the currency's exponent (`"12.34"`, JPY `"1234"`).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tienda_kit::outbound::Outbound;

use super::{
    AuthorizeOutcome, AuthorizeRequest, FollowUpRequest, Intent, IntentState, Provider,
    ProviderError, ProviderResult, Receipt, RefundState,
};
use crate::domain::money::Amount;

/// The provider's name on payments and in CircuitPolicy targets.
pub const NAME: &str = "paypal";

/// PayPal's sandbox (live: `https://api-m.paypal.com`).
pub const DEFAULT_API_BASE: &str = "https://api-m.sandbox.paypal.com";

/// PayPal over HTTP.
pub struct PayPal {
    outbound: Outbound,
    api_base: String,
    client_id: String,
    client_secret: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for PayPal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials stay out of logs.
        f.debug_struct("PayPal")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// `{"currency_code": "EUR", "value": "12.34"}`.
fn money(amount: Amount) -> Value {
    json!({"currency_code": amount.currency().as_str(), "value": amount.decimal()})
}

#[derive(Debug, Deserialize)]
struct Token {
    access_token: String,
    expires_in: u64,
}

/// PayPal's error document.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    issue: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl ErrorBody {
    /// The first detail's issue (`INSTRUMENT_DECLINED`), else the error's name.
    fn issue(&self) -> String {
        self.details
            .first()
            .and_then(|d| d.issue.clone())
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| "UNKNOWN".into())
    }

    fn describe(&self) -> String {
        let detail = self.details.first().and_then(|d| d.description.clone());
        format!(
            "{}: {}",
            self.issue(),
            detail
                .or_else(|| self.message.clone())
                .unwrap_or_else(|| "no detail".into())
        )
    }
}

/// Issues that mean the payment method was refused (a decline, not a fault of ours).
const DECLINES: &[&str] = &[
    "INSTRUMENT_DECLINED",
    "PAYER_ACTION_REQUIRED",
    "PAYER_CANNOT_PAY",
    "TRANSACTION_REFUSED",
    "PAYEE_BLOCKED_TRANSACTION",
    "COMPLIANCE_VIOLATION",
];

/// How PayPal answered one request.
enum Answer {
    Ok(Value),
    /// 422 with an issue that is a decline.
    Declined(ErrorBody),
}

impl PayPal {
    /// PayPal at `api_base` with the app's credentials, calling through `outbound`.
    pub fn new(
        outbound: Outbound,
        api_base: &str,
        client_id: String,
        client_secret: String,
    ) -> Self {
        Self {
            outbound,
            api_base: api_base.trim_end_matches('/').to_owned(),
            client_id,
            client_secret,
            token: Mutex::new(None),
        }
    }

    /// A bearer token, cached until a minute before it expires.
    async fn token(&self, deadline: DateTime<Utc>) -> ProviderResult<String> {
        if let Some((token, until)) = self.token.lock().expect("not poisoned").as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let request = self
            .outbound
            .client()
            .post(format!("{}/v1/oauth2/token", self.api_base))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials");
        let (status, body) = super::send(&self.outbound, NAME, request, deadline).await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(ProviderError::Rejected(
                "PayPal refused the client id and secret (PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET)"
                    .into(),
            ));
        }
        if !status.is_success() {
            return Err(ProviderError::Unavailable(format!(
                "PayPal's token endpoint answered {status}"
            )));
        }
        let token: Token = serde_json::from_slice(&body).map_err(|e| {
            ProviderError::Unavailable(format!("PayPal's token did not parse: {e}"))
        })?;
        let lifetime = Duration::from_secs(token.expires_in.saturating_sub(60));
        *self.token.lock().expect("not poisoned") =
            Some((token.access_token.clone(), Instant::now() + lifetime));
        Ok(token.access_token)
    }

    async fn send(
        &self,
        path: &str,
        body: Option<Value>,
        request_id: &str,
        deadline: DateTime<Utc>,
    ) -> ProviderResult<Answer> {
        self.request(Method::POST, path, body, Some(request_id), deadline)
            .await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        request_id: Option<&str>,
        deadline: DateTime<Utc>,
    ) -> ProviderResult<Answer> {
        let token = self.token(deadline).await?;
        let is_post = method == Method::POST;
        let mut builder = self
            .outbound
            .client()
            .request(method, format!("{}{path}", self.api_base))
            .bearer_auth(token)
            .header("Prefer", "return=representation");
        if let Some(request_id) = request_id {
            builder = builder.header("PayPal-Request-Id", request_id);
        }
        if let Some(body) = body {
            builder = builder.json(&body);
        } else if is_post {
            builder = builder.header("content-type", "application/json");
        }
        let (status, bytes) = super::send(&self.outbound, NAME, builder, deadline).await?;
        if status.is_success() {
            // A void answers 204 with no body.
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|e| {
                    ProviderError::Unavailable(format!("PayPal's answer did not parse: {e}"))
                })?
            };
            return Ok(Answer::Ok(value));
        }
        let error: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        match status {
            StatusCode::UNAUTHORIZED => {
                // The token expired or was revoked early: the next call fetches another.
                *self.token.lock().expect("not poisoned") = None;
                Err(ProviderError::Unavailable(format!(
                    "PayPal refused the access token: {}",
                    error.describe()
                )))
            }
            StatusCode::UNPROCESSABLE_ENTITY if DECLINES.contains(&error.issue().as_str()) => {
                Ok(Answer::Declined(error))
            }
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => Err(
                ProviderError::Unavailable(format!("PayPal {status}: {}", error.describe())),
            ),
            s if s.is_server_error() => Err(ProviderError::Unavailable(format!(
                "PayPal {status}: {}",
                error.describe()
            ))),
            _ => Err(ProviderError::Rejected(format!(
                "PayPal {status}: {}",
                error.describe()
            ))),
        }
    }

    /// A capture's or refund's own status decides: `COMPLETED` is done; a `PENDING` capture
    /// is asked again (same request id); a `PENDING` refund is followed up
    /// ([`Provider::refund_status`]); anything else is refused.
    fn completed(what: &str, answer: Answer) -> ProviderResult<Receipt> {
        let value = match answer {
            Answer::Ok(value) => value,
            Answer::Declined(error) => return Err(ProviderError::Rejected(error.describe())),
        };
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        match value["status"].as_str() {
            Some("COMPLETED") => Ok(Receipt::done(id)),
            Some("PENDING") if what == "refund" => Ok(Receipt::pending(id)),
            Some("PENDING") => Err(ProviderError::Unavailable(format!(
                "PayPal has the {what} {id} pending; asking again"
            ))),
            other => Err(ProviderError::Rejected(format!(
                "PayPal answered the {what} with status {other:?}"
            ))),
        }
    }
}

impl Provider for PayPal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn keeps_records(&self) -> bool {
        true
    }

    fn refund_status<'a>(
        &'a self,
        reference: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<RefundState>> {
        Box::pin(async move {
            let path = format!("/v2/payments/refunds/{reference}");
            let refund = match self
                .request(Method::GET, &path, None, None, deadline)
                .await?
            {
                Answer::Ok(value) => value,
                Answer::Declined(error) => return Err(ProviderError::Rejected(error.describe())),
            };
            Ok(match refund["status"].as_str() {
                Some("COMPLETED") => RefundState::Succeeded,
                Some("PENDING") => RefundState::Pending,
                other => RefundState::Failed {
                    reason: refund["status_details"]["reason"]
                        .as_str()
                        .map_or_else(|| format!("{other:?}"), str::to_owned),
                },
            })
        })
    }

    fn retrieve<'a>(
        &'a self,
        reference: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<Intent>> {
        Box::pin(async move {
            let path = format!("/v2/payments/authorizations/{reference}");
            let authorization = match self
                .request(Method::GET, &path, None, None, deadline)
                .await?
            {
                Answer::Ok(value) => value,
                Answer::Declined(error) => return Err(ProviderError::Rejected(error.describe())),
            };
            let state = match authorization["status"].as_str() {
                Some("CREATED") => IntentState::Authorized,
                Some("CAPTURED" | "PARTIALLY_CAPTURED") => IntentState::Captured,
                Some("VOIDED" | "EXPIRED") => IntentState::Canceled,
                Some("DENIED") => IntentState::Declined {
                    code: "authorization_denied".into(),
                    message: "PayPal declined the payment.".into(),
                },
                Some("PENDING") => IntentState::Processing,
                other => {
                    return Err(ProviderError::Rejected(format!(
                        "PayPal answered authorization {reference} with status {other:?}"
                    )));
                }
            };
            Ok(Intent {
                state,
                client_secret: None,
            })
        })
    }

    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, ProviderResult<AuthorizeOutcome>> {
        Box::pin(async move {
            let body = json!({
                "intent": "AUTHORIZE",
                "purchase_units": [{
                    "reference_id": request.payment_id,
                    "custom_id": request.payment_id,
                    "amount": money(request.amount),
                }],
                "payment_source": {"paypal": {"vault_id": request.payment_method}},
            });
            let order = match self
                .send(
                    "/v2/checkout/orders",
                    Some(body),
                    &request.idempotency_key,
                    request.deadline,
                )
                .await?
            {
                Answer::Ok(order) => order,
                Answer::Declined(error) => {
                    return Ok(AuthorizeOutcome::Declined {
                        reference: String::new(),
                        code: error.issue().to_ascii_lowercase(),
                        message: "PayPal declined the payment; use another payment method.".into(),
                    });
                }
            };
            let order_id = order["id"].as_str().unwrap_or_default().to_owned();
            if order["status"] != "COMPLETED" {
                return Err(ProviderError::Unavailable(format!(
                    "PayPal order {order_id} is {}; asking again",
                    order["status"]
                )));
            }
            let authorization = &order["purchase_units"][0]["payments"]["authorizations"][0];
            let id = authorization["id"].as_str().unwrap_or_default().to_owned();
            match authorization["status"].as_str() {
                Some("CREATED") if !id.is_empty() => {
                    Ok(AuthorizeOutcome::Authorized { reference: id })
                }
                Some("DENIED") => Ok(AuthorizeOutcome::Declined {
                    reference: id,
                    code: "authorization_denied".into(),
                    message: "PayPal declined the payment; use another payment method.".into(),
                }),
                Some("PENDING") => Err(ProviderError::Unavailable(format!(
                    "PayPal has authorization {id} of order {order_id} pending; asking again"
                ))),
                other => Err(ProviderError::Rejected(format!(
                    "PayPal completed order {order_id} without a usable authorization ({other:?})"
                ))),
            }
        })
    }

    fn capture<'a>(
        &'a self,
        request: &'a FollowUpRequest,
    ) -> BoxFuture<'a, ProviderResult<Receipt>> {
        Box::pin(async move {
            let mut body = json!({"final_capture": true});
            if let Some(amount) = request.amount {
                body["amount"] = money(amount);
            }
            let path = format!("/v2/payments/authorizations/{}/capture", request.reference);
            let answer = self
                .send(
                    &path,
                    Some(body),
                    &request.idempotency_key,
                    request.deadline,
                )
                .await?;
            Self::completed("capture", answer)
        })
    }

    fn void<'a>(&'a self, request: &'a FollowUpRequest) -> BoxFuture<'a, ProviderResult<Receipt>> {
        Box::pin(async move {
            let path = format!("/v2/payments/authorizations/{}/void", request.reference);
            match self
                .send(&path, None, &request.idempotency_key, request.deadline)
                .await?
            {
                Answer::Ok(_) => Ok(Receipt::done(request.reference.clone())),
                Answer::Declined(error) => Err(ProviderError::Rejected(error.describe())),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        request: &'a FollowUpRequest,
    ) -> BoxFuture<'a, ProviderResult<Receipt>> {
        Box::pin(async move {
            // Refunds are of a capture, not of the authorization.
            let Some(capture) = &request.capture_reference else {
                return Err(ProviderError::Rejected(
                    "no capture of this payment is known to refund".into(),
                ));
            };
            let mut body = json!({});
            if let Some(amount) = request.amount {
                body["amount"] = money(amount);
            }
            if let Some(reason) = &request.reason {
                body["note_to_payer"] = json!(reason.chars().take(255).collect::<String>());
            }
            let path = format!("/v2/payments/captures/{capture}/refund");
            let answer = self
                .send(
                    &path,
                    Some(body),
                    &request.idempotency_key,
                    request.deadline,
                )
                .await?;
            Self::completed("refund", answer)
        })
    }
}
