//! The `stripe` provider: PaymentIntents over Stripe's REST API.
//!
//! | Ours | Stripe |
//! |---|---|
//! | authorize | `POST /v1/payment_intents` with `confirm=true`, `capture_method=manual` |
//! | capture (part or all) | `POST /v1/payment_intents/{id}/capture` with `amount_to_capture`; Stripe releases the rest |
//! | void | `POST /v1/payment_intents/{id}/cancel` |
//! | refund | `POST /v1/refunds` with `payment_intent` and `amount` |
//! | retrieve | `GET /v1/payment_intents/{id}` |
//!
//! Every request carries our idempotency key as `Idempotency-Key` (Stripe answers a repeat
//! with the first result), the secret key as a bearer token, and goes through the kit's
//! outbound client under the CircuitPolicy for `{kind: External, name: stripe}`, bounded by
//! the command's deadline. The base URL is configurable (`STRIPE_API_BASE`), which is how the
//! tests point it at an emulator.
//!
//! How answers map: a PaymentIntent in `requires_capture` is authorized, `requires_action` is
//! a challenge the customer completes with Stripe.js (the intent's `client_secret`), a `402`
//! card error is a decline carrying Stripe's `decline_code` (or `code`); any other `4xx`
//! is a refusal (repeating cannot help), while `409` (the same key in flight), `429`, `5xx`,
//! timeouts and an open circuit are [`ProviderError::Unavailable`].

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use tienda_kit::outbound::Outbound;

use super::{
    AuthorizeOutcome, AuthorizeRequest, CardFacts, FollowUpRequest, Intent, IntentState, Provider,
    ProviderError, ProviderResult, Receipt, RefundState,
};

/// The provider's name on payments and in CircuitPolicy targets.
pub const NAME: &str = "stripe";

/// Stripe's API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// Stripe over HTTP.
#[derive(Clone)]
pub struct Stripe {
    outbound: Outbound,
    api_base: String,
    secret_key: String,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret key stays out of logs.
        f.debug_struct("Stripe")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// A PaymentIntent, as far as we read it.
#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    last_payment_error: Option<StripeError>,
}

/// A refund.
#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
}

impl Refund {
    /// Where the refund is; a refund object without a status (old API versions) is made.
    fn state(&self) -> RefundState {
        match self.status.as_deref() {
            None | Some("succeeded") => RefundState::Succeeded,
            Some("pending" | "requires_action") => RefundState::Pending,
            Some(other) => RefundState::Failed {
                reason: self
                    .failure_reason
                    .clone()
                    .unwrap_or_else(|| other.to_owned()),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: StripeError,
}

/// Stripe's error object.
#[derive(Debug, Default, Deserialize)]
struct StripeError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    /// The intent the failed confirmation belongs to (Stripe sends the whole object).
    #[serde(default)]
    payment_intent: Option<serde_json::Value>,
    /// The failed charge (the emulator names only this).
    #[serde(default)]
    charge: Option<String>,
}

impl StripeError {
    fn code(&self) -> String {
        self.decline_code
            .clone()
            .or_else(|| self.code.clone())
            .unwrap_or_else(|| "card_declined".to_owned())
    }

    fn message(&self) -> String {
        self.message
            .clone()
            .unwrap_or_else(|| "Your card was declined.".to_owned())
    }

    fn describe(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (None, Some(message)) => message.clone(),
            (Some(code), None) => code.clone(),
            (None, None) => "no detail".to_owned(),
        }
    }
}

/// How Stripe answered one request.
enum Answer {
    /// 2xx, with the body.
    Ok(bytes::Bytes),
    /// 402: a card error.
    Card(StripeError),
}

impl Stripe {
    /// Stripe at `api_base` with `secret_key`, calling through `outbound`.
    pub fn new(outbound: Outbound, api_base: &str, secret_key: String) -> Self {
        Self {
            outbound,
            api_base: api_base.trim_end_matches('/').to_owned(),
            secret_key,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        form: Option<String>,
        idempotency_key: Option<&str>,
        deadline: DateTime<Utc>,
    ) -> ProviderResult<Answer> {
        let mut builder = self
            .outbound
            .client()
            .request(method, format!("{}{path}", self.api_base))
            .bearer_auth(&self.secret_key);
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(form) = form {
            builder = builder
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form);
        }
        let (status, body) = super::send(&self.outbound, NAME, builder, deadline).await?;
        if status.is_success() {
            return Ok(Answer::Ok(body));
        }
        let error = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_default();
        match status {
            StatusCode::PAYMENT_REQUIRED => Ok(Answer::Card(error)),
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => Err(
                ProviderError::Unavailable(format!("Stripe {status}: {}", error.describe())),
            ),
            s if s.is_server_error() => Err(ProviderError::Unavailable(format!(
                "Stripe {status}: {}",
                error.describe()
            ))),
            _ => Err(ProviderError::Rejected(format!(
                "Stripe {status}: {}",
                error.describe()
            ))),
        }
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
        deadline: DateTime<Utc>,
    ) -> ProviderResult<Result<T, StripeError>> {
        let body = {
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                body.append_pair(k, v);
            }
            body.finish()
        };
        match self
            .send(
                Method::POST,
                path,
                Some(body),
                Some(idempotency_key),
                deadline,
            )
            .await?
        {
            Answer::Ok(bytes) => parse(&bytes).map(Ok),
            Answer::Card(error) => Ok(Err(error)),
        }
    }

    async fn follow_up(
        &self,
        path: &str,
        form: &[(&str, String)],
        request: &FollowUpRequest,
    ) -> ProviderResult<String> {
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        match self
            .post::<Id>(path, form, &request.idempotency_key, request.deadline)
            .await?
        {
            Ok(object) => Ok(object.id),
            Err(error) => Err(ProviderError::Rejected(error.describe())),
        }
    }
}

/// A charge, as far as reconciliation reads it.
#[derive(Debug, Deserialize)]
struct Charge {
    status: String,
    #[serde(default)]
    captured: bool,
    #[serde(default)]
    failure_code: Option<String>,
    #[serde(default)]
    failure_message: Option<String>,
}

impl Stripe {
    async fn retrieve_charge(&self, id: &str, deadline: DateTime<Utc>) -> ProviderResult<Intent> {
        let path = format!("/v1/charges/{id}");
        let charge: Charge = match self.send(Method::GET, &path, None, None, deadline).await? {
            Answer::Ok(bytes) => parse(&bytes)?,
            Answer::Card(error) => return Err(ProviderError::Rejected(error.describe())),
        };
        let state = match (charge.status.as_str(), charge.captured) {
            ("succeeded", true) => IntentState::Captured,
            ("succeeded", false) => IntentState::Authorized,
            ("pending", _) => IntentState::Processing,
            _ => IntentState::Declined {
                code: charge
                    .failure_code
                    .unwrap_or_else(|| "card_declined".into()),
                message: charge
                    .failure_message
                    .unwrap_or_else(|| "Your card was declined.".into()),
            },
        };
        Ok(Intent {
            state,
            client_secret: None,
        })
    }
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> ProviderResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ProviderError::Unavailable(format!("Stripe's answer did not parse: {e}")))
}

/// Where an intent with Stripe status `status` is.
fn state_of(intent: &PaymentIntent) -> IntentState {
    match intent.status.as_str() {
        "requires_action" | "requires_confirmation" => IntentState::RequiresAction,
        "processing" => IntentState::Processing,
        "requires_capture" => IntentState::Authorized,
        "succeeded" => IntentState::Captured,
        "canceled" => IntentState::Canceled,
        // `requires_payment_method`: the attempt failed (a decline or failed authentication).
        _ => {
            let error = intent.last_payment_error.as_ref();
            IntentState::Declined {
                code: error.map_or_else(|| "card_declined".to_owned(), StripeError::code),
                message: error.map_or_else(
                    || "The payment was not completed.".to_owned(),
                    StripeError::message,
                ),
            }
        }
    }
}

impl Provider for Stripe {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, ProviderResult<AuthorizeOutcome>> {
        Box::pin(async move {
            let form = [
                ("amount", request.amount.minor().to_string()),
                (
                    "currency",
                    request.amount.currency().as_str().to_ascii_lowercase(),
                ),
                ("payment_method", request.payment_method.clone()),
                ("confirm", "true".to_owned()),
                ("capture_method", "manual".to_owned()),
                ("metadata[payment_id]", request.payment_id.to_string()),
            ];
            let answer = self
                .post::<PaymentIntent>(
                    "/v1/payment_intents",
                    &form,
                    &request.idempotency_key,
                    request.deadline,
                )
                .await?;
            let intent = match answer {
                Ok(intent) => intent,
                Err(error) => {
                    let reference = error
                        .payment_intent
                        .as_ref()
                        .and_then(|pi| pi.get("id"))
                        .and_then(|id| id.as_str())
                        .map(str::to_owned)
                        .or_else(|| error.charge.clone())
                        .unwrap_or_default();
                    return Ok(AuthorizeOutcome::Declined {
                        reference,
                        code: error.code(),
                        message: error.message(),
                    });
                }
            };
            Ok(match state_of(&intent) {
                IntentState::Authorized => AuthorizeOutcome::Authorized {
                    reference: intent.id,
                },
                IntentState::RequiresAction => AuthorizeOutcome::RequiresAction {
                    reference: intent.id,
                },
                IntentState::Declined { code, message } => AuthorizeOutcome::Declined {
                    reference: intent.id,
                    code,
                    message,
                },
                // Captured at once, processing or canceled: not what a manual-capture
                // confirmation answers; the request was not understood as ours.
                other => {
                    return Err(ProviderError::Rejected(format!(
                        "Stripe answered the authorization of {} with {other:?} ({})",
                        request.payment_id, intent.status
                    )));
                }
            })
        })
    }

    fn capture<'a>(
        &'a self,
        request: &'a FollowUpRequest,
    ) -> BoxFuture<'a, ProviderResult<Receipt>> {
        Box::pin(async move {
            let mut form = Vec::new();
            if let Some(amount) = request.amount {
                form.push(("amount_to_capture", amount.minor().to_string()));
            }
            let path = format!("/v1/payment_intents/{}/capture", request.reference);
            let reference = self.follow_up(&path, &form, request).await?;
            Ok(Receipt::done(reference))
        })
    }

    fn void<'a>(&'a self, request: &'a FollowUpRequest) -> BoxFuture<'a, ProviderResult<Receipt>> {
        Box::pin(async move {
            let path = format!("/v1/payment_intents/{}/cancel", request.reference);
            let reference = self.follow_up(&path, &[], request).await?;
            Ok(Receipt::done(reference))
        })
    }

    fn refund<'a>(
        &'a self,
        request: &'a FollowUpRequest,
    ) -> BoxFuture<'a, ProviderResult<Receipt>> {
        Box::pin(async move {
            let mut form = vec![("payment_intent", request.reference.clone())];
            if let Some(amount) = request.amount {
                form.push(("amount", amount.minor().to_string()));
            }
            // Stripe's `reason` takes three fixed values; ours is free text, kept as metadata.
            if let Some(reason) = &request.reason {
                form.push(("metadata[reason]", reason.clone()));
            }
            let refund = match self
                .post::<Refund>(
                    "/v1/refunds",
                    &form,
                    &request.idempotency_key,
                    request.deadline,
                )
                .await?
            {
                Ok(refund) => refund,
                Err(error) => return Err(ProviderError::Rejected(error.describe())),
            };
            match refund.state() {
                RefundState::Succeeded => Ok(Receipt::done(refund.id)),
                RefundState::Pending => Ok(Receipt::pending(refund.id)),
                RefundState::Failed { reason } => Err(ProviderError::Rejected(format!(
                    "Stripe failed refund {}: {reason}",
                    refund.id
                ))),
            }
        })
    }

    fn describe<'a>(
        &'a self,
        payment_method: &'a str,
        _customer: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<Option<CardFacts>>> {
        #[derive(Deserialize)]
        struct PaymentMethod {
            #[serde(default)]
            card: Option<Card>,
        }
        #[derive(Deserialize)]
        struct Card {
            #[serde(default)]
            fingerprint: Option<String>,
            #[serde(default)]
            country: Option<String>,
        }
        Box::pin(async move {
            // Only ids go into the path: a token with anything else is no PaymentMethod.
            if !payment_method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Ok(None);
            }
            let path = format!("/v1/payment_methods/{payment_method}");
            let method: PaymentMethod =
                match self.send(Method::GET, &path, None, None, deadline).await? {
                    Answer::Ok(bytes) => parse(&bytes)?,
                    Answer::Card(error) => return Err(ProviderError::Rejected(error.describe())),
                };
            Ok(method.card.and_then(|card| {
                Some(CardFacts {
                    fingerprint: card.fingerprint?,
                    country: card
                        .country
                        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())),
                })
            }))
        })
    }

    fn refund_status<'a>(
        &'a self,
        reference: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<RefundState>> {
        Box::pin(async move {
            let path = format!("/v1/refunds/{reference}");
            match self.send(Method::GET, &path, None, None, deadline).await? {
                Answer::Ok(bytes) => parse::<Refund>(&bytes).map(|r| r.state()),
                Answer::Card(error) => Err(ProviderError::Rejected(error.describe())),
            }
        })
    }

    fn challenges_at_provider(&self) -> bool {
        true
    }

    fn keeps_records(&self) -> bool {
        true
    }

    fn retrieve<'a>(
        &'a self,
        reference: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<Intent>> {
        Box::pin(async move {
            // A decline answered before an intent existed names the failed charge.
            if reference.starts_with("ch_") {
                return self.retrieve_charge(reference, deadline).await;
            }
            let path = format!("/v1/payment_intents/{reference}");
            let intent: PaymentIntent =
                match self.send(Method::GET, &path, None, None, deadline).await? {
                    Answer::Ok(bytes) => parse(&bytes)?,
                    Answer::Card(error) => return Err(ProviderError::Rejected(error.describe())),
                };
            let state = state_of(&intent);
            Ok(Intent {
                client_secret: (state == IntentState::RequiresAction)
                    .then_some(intent.client_secret)
                    .flatten(),
                state,
            })
        })
    }
}
