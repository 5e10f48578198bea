//! SMS: a text to the phone number in someone's preferences (E.164), by the first provider
//! that can be tried ([`super::provider::Failover`]):
//! - [`Twilio`]: `POST /2010-04-01/Accounts/{sid}/Messages.json`, form-encoded `To`, `From`,
//!   `Body`, HTTP Basic with the account SID and auth token; `201` with the message's `sid`.
//!   Error `21610` (the recipient replied STOP) suppresses the number.
//! - [`Vonage`]: `POST /sms/json`, form-encoded `api_key`, `api_secret`, `from`, `to` (digits
//!   without `+`), `text`, `client-ref`; `200` with a status per message part (`"0"` sent).
//!
//! With no provider configured (a laptop under `tienda up`), each text is written as a
//! `.sms.json` file next to the `.eml` files, and its path logged: never dropped silently.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use tienda_kit::outbound::{Outbound, Target};
use uuid::Uuid;

use super::{
    SendError,
    provider::{Failover, Failure, Provider, Sending, Sent, excerpt, form, retry_after},
};

/// A text to send.
#[derive(Debug, Clone, Serialize)]
pub struct SmsMessage {
    /// The delivery's id.
    pub id: Uuid,
    /// The number, E.164 (`+34600111222`).
    pub to: String,
    /// The text.
    pub body: String,
}

/// The error a provider's refusal to deliver to a number that opted out carries: the number is
/// put on the suppression list.
pub const UNSUBSCRIBED: &str = "the recipient unsubscribed (replied STOP)";

/// Whether `number` is an E.164 phone number: `+`, a country code not starting with 0, and
/// 7 to 15 digits in all.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Twilio's Programmable Messaging API.
#[derive(Debug, Clone)]
pub struct Twilio {
    /// `https://api.twilio.com` (or a test server).
    pub base_url: String,
    /// The account SID (`AC…`).
    pub account_sid: String,
    /// The auth token.
    pub auth_token: String,
    /// The sender: a number, or a Messaging Service SID (`MG…`).
    pub from: String,
}

impl Provider<SmsMessage> for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn send<'a>(&'a self, outbound: &'a Outbound, message: &'a SmsMessage) -> Sending<'a> {
        Box::pin(async move {
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                self.base_url.trim_end_matches('/'),
                self.account_sid
            );
            let sender = if self.from.starts_with("MG") {
                "MessagingServiceSid"
            } else {
                "From"
            };
            let request = outbound
                .client()
                .post(url)
                .basic_auth(&self.account_sid, Some(&self.auth_token))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form(&[
                    ("To", message.to.as_str()),
                    (sender, self.from.as_str()),
                    ("Body", message.body.as_str()),
                ]))
                .build()
                .map_err(|e| SendError::Permanent(format!("building the request: {e}")))?;
            let response = outbound.call(Target::External("twilio"), request).await?;
            let status = response.status();
            if status.is_success() {
                let body: Value = response
                    .json()
                    .await
                    .map_err(|e| SendError::Transient(format!("reading the answer: {e}")))?;
                let sid = body["sid"].as_str().unwrap_or_default().to_owned();
                return Ok(Sent { reference: sid });
            }
            let wait = retry_after(response.headers());
            let text = excerpt(response).await;
            let code = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["code"].as_i64());
            Err(Failure::Send(match (status.as_u16(), code) {
                (429, _) => SendError::Throttled(wait, format!("HTTP 429: {text}")),
                (_, Some(21610)) => SendError::Permanent(UNSUBSCRIBED.to_owned()),
                // Credentials or the account: every message fails the same way until an
                // operator fixes it, then retries go through.
                (401 | 403, _) => SendError::Transient(format!(
                    "HTTP {status}: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN: {text}"
                )),
                (400..=499, _) => SendError::Permanent(format!("HTTP {status}: {text}")),
                _ => SendError::Transient(format!("HTTP {status}: {text}")),
            }))
        })
    }
}

/// Vonage's SMS API.
#[derive(Debug, Clone)]
pub struct Vonage {
    /// `https://rest.nexmo.com` (or a test server).
    pub base_url: String,
    /// The API key.
    pub api_key: String,
    /// The API secret.
    pub api_secret: String,
    /// The sender (a number or an alphanumeric id).
    pub from: String,
}

impl Provider<SmsMessage> for Vonage {
    fn name(&self) -> &'static str {
        "vonage"
    }

    fn send<'a>(&'a self, outbound: &'a Outbound, message: &'a SmsMessage) -> Sending<'a> {
        Box::pin(async move {
            let url = format!("{}/sms/json", self.base_url.trim_end_matches('/'));
            let client_ref = message.id.to_string();
            let request = outbound
                .client()
                .post(url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form(&[
                    ("api_key", self.api_key.as_str()),
                    ("api_secret", self.api_secret.as_str()),
                    ("from", self.from.as_str()),
                    ("to", message.to.trim_start_matches('+')),
                    ("text", message.body.as_str()),
                    ("type", "unicode"),
                    ("client-ref", client_ref.as_str()),
                ]))
                .build()
                .map_err(|e| SendError::Permanent(format!("building the request: {e}")))?;
            let response = outbound.call(Target::External("vonage"), request).await?;
            let status = response.status();
            if !status.is_success() {
                let wait = retry_after(response.headers());
                let text = excerpt(response).await;
                return Err(Failure::Send(if status.as_u16() == 429 {
                    SendError::Throttled(wait, format!("HTTP 429: {text}"))
                } else {
                    SendError::Transient(format!("HTTP {status}: {text}"))
                }));
            }
            let body: Value = response
                .json()
                .await
                .map_err(|e| SendError::Transient(format!("reading the answer: {e}")))?;
            let parts = body["messages"].as_array().cloned().unwrap_or_default();
            // A long text is split into parts, each with its own status; the first failing
            // one decides.
            if let Some(failed) = parts.iter().find(|p| p["status"] != "0") {
                let code = failed["status"].as_str().unwrap_or("?");
                let text = failed["error-text"].as_str().unwrap_or("");
                return Err(Failure::Send(match code {
                    // Throttled.
                    "1" => SendError::Throttled(
                        std::time::Duration::from_secs(1),
                        format!("status 1: {text}"),
                    ),
                    // Internal error; credentials; account barred or out of credit: retried
                    // until an operator fixes it.
                    "5" | "4" | "8" | "9" => SendError::Transient(format!(
                        "status {code}: {text} (check VONAGE_API_KEY, VONAGE_API_SECRET and the account)"
                    )),
                    _ => SendError::Permanent(format!("status {code}: {text}")),
                }));
            }
            let ids: Vec<&str> = parts
                .iter()
                .filter_map(|p| p["message-id"].as_str())
                .collect();
            if ids.is_empty() {
                return Err(Failure::Send(SendError::Transient(format!(
                    "no message id in the answer: {body}"
                ))));
            }
            Ok(Sent {
                reference: ids.join(","),
            })
        })
    }
}

/// Sends SMS deliveries by the first provider that can; without providers, writes
/// `.sms.json` files. A number whose owner replied STOP is put on the suppression list.
#[derive(Debug)]
pub struct SmsSender {
    /// The database (the suppression list).
    pub db: sqlx::PgPool,
    /// The providers; none: files in `outbox`.
    pub providers: Failover<SmsMessage>,
    /// Where texts go without providers.
    pub outbox: PathBuf,
}

impl SmsSender {
    /// Sends delivery `id`: `body` to `to`.
    pub async fn send(&self, id: Uuid, to: &str, body: &str) -> Result<String, SendError> {
        let message = SmsMessage {
            id,
            to: to.to_owned(),
            body: body.to_owned(),
        };
        if self.providers.is_empty() {
            let bytes = serde_json::to_vec_pretty(&message).unwrap_or_default();
            return super::eml::write_file(&self.outbox, &format!("{id}.sms.json"), &bytes).await;
        }
        match self.providers.send(&message).await {
            Ok(sent) => Ok(sent.reference),
            Err(SendError::Permanent(reason)) if reason.contains(UNSUBSCRIBED) => {
                sqlx::query(
                    "INSERT INTO suppressions (channel, recipient, reason, delivery_id, detail)
                     VALUES ('sms', $1, 'unsubscribed', $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(to)
                .bind(id)
                .bind(&reason)
                .execute(&self.db)
                .await
                .map_err(|e| SendError::Transient(format!("suppressing the number: {e}")))?;
                tracing::warn!(delivery = %id, "the number replied STOP; suppressed");
                Err(SendError::Permanent(reason))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_e164() {
        for good in ["+34600111222", "+14155550100", "+4915112345678"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "34600111222",
            "+0600111222",
            "+34 600 111 222",
            "+123",
            "+1234567890123456",
            "+34600111222\n",
            "",
        ] {
            assert!(!is_e164(bad), "{bad:?}");
        }
    }
}
