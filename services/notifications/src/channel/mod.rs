//! Where messages go: email, SMS ([`sms`]) and push ([`push`]) behind provider traits with
//! failover ([`provider`]), and shops' webhooks ([`crate::webhooks`]). For email, [`compose`] builds the RFC 5322
//! message (multipart/alternative, text then HTML; `List-Unsubscribe` + `List-Unsubscribe-Post`
//! per RFC 8058 on non-critical messages), and a [`Transport`] hands it over — to an SMTP
//! server ([`smtp::Smtp`]) or, with none configured, to an `.eml` file ([`eml::EmlOutbox`]).
//! Nothing is ever dropped silently: a transport answers where the message went or why not.

pub mod eml;
pub mod provider;
pub mod push;
pub mod sms;
pub mod smtp;

use serde::{Deserialize, Serialize};

use crate::category::Category;

/// A way to reach someone.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Mail over SMTP.
    Email,
    /// A text message to the phone number in their preferences.
    Sms,
    /// A notification on their registered devices.
    Push,
}

impl Channel {
    /// Every channel, in the order preferences list them.
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Push];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }

    /// The channel a stored name stands for.
    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether someone who said nothing gets `category` on this channel. Marketing by SMS or
    /// push needs their explicit yes (consent rules for texts: TCPA, ePrivacy); everything
    /// else is on, since giving a phone number or registering a device is already a choice.
    pub fn on_by_default(self, category: Category) -> bool {
        self == Channel::Email || category != Category::Marketing
    }
}

use std::future::Future;

use lettre::{
    Message,
    message::{
        Mailbox, MultiPart,
        header::{HeaderName, HeaderValue},
    },
};
use uuid::Uuid;

/// A message ready to be composed.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The delivery's id: the `Message-ID`'s local part and the `.eml` file's name.
    pub id: Uuid,
    /// The recipient's address.
    pub to: String,
    /// One line.
    pub subject: String,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part.
    pub html: String,
    /// The one-click unsubscribe link (non-critical messages).
    pub unsubscribe_url: Option<String>,
}

/// Why a message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt later (server down, disk full).
    #[error("{0}")]
    Transient(String),
    /// Another attempt would fail the same way (a malformed address, a 5xx rejection).
    #[error("{0}")]
    Permanent(String),
    /// The receiver asks to wait this long (429 `Retry-After`): tried again then, without
    /// counting the attempt.
    #[error("{1}")]
    Throttled(std::time::Duration, String),
}

/// Hands a composed message over; answers where it went (the server's reply, a file path).
pub trait Transport: Send + Sync {
    /// Sends one message.
    fn send(&self, message: &Message) -> impl Future<Output = Result<String, SendError>> + Send;
}

/// The transport this process uses, chosen at start.
#[derive(Debug, Clone)]
pub enum Mailer {
    /// An SMTP server (`TIENDA_SMTP_URL`).
    Smtp(smtp::Smtp),
    /// `.eml` files in a directory.
    Outbox(eml::EmlOutbox),
}

impl Transport for Mailer {
    async fn send(&self, message: &Message) -> Result<String, SendError> {
        match self {
            Mailer::Smtp(smtp) => smtp.send(message).await,
            Mailer::Outbox(outbox) => outbox.send(message).await,
        }
    }
}

/// Builds the RFC 5322 message for `outgoing` from `from`. A bad address is permanent.
pub fn compose(from: &Mailbox, outgoing: &Outgoing) -> Result<Message, SendError> {
    let to: Mailbox = outgoing
        .to
        .parse()
        .map_err(|e| SendError::Permanent(format!("recipient {:?}: {e}", outgoing.to)))?;
    let domain = from.email.domain().to_owned();
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(outgoing.subject.clone())
        .message_id(Some(format!("<{}@{domain}>", outgoing.id)));
    if let Some(url) = &outgoing.unsubscribe_url {
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{url}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_owned(),
            ));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            outgoing.text.clone(),
            outgoing.html.clone(),
        ))
        .map_err(|e| SendError::Permanent(format!("composing: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(unsubscribe_url: Option<&str>) -> Outgoing {
        Outgoing {
            id: Uuid::now_v7(),
            to: "ana@example.com".into(),
            subject: "Pedido enviado".into(),
            text: "Texto".into(),
            html: "<p>HTML</p>".into(),
            unsubscribe_url: unsubscribe_url.map(str::to_owned),
        }
    }

    #[test]
    fn a_non_critical_message_carries_one_click_unsubscribe_headers() {
        let from: Mailbox = "Tienda <no-reply@tienda.test>".parse().unwrap();
        let message = compose(&from, &outgoing(Some("https://s/u?token=abc"))).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(
            raw.contains("List-Unsubscribe: <https://s/u?token=abc>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("@tienda.test>"));
    }

    #[test]
    fn a_critical_message_has_no_unsubscribe_headers() {
        let from: Mailbox = "no-reply@tienda.test".parse().unwrap();
        let raw = String::from_utf8(compose(&from, &outgoing(None)).unwrap().formatted()).unwrap();
        assert!(!raw.contains("List-Unsubscribe"));
    }

    #[test]
    fn a_malformed_recipient_is_a_permanent_failure() {
        let from: Mailbox = "no-reply@tienda.test".parse().unwrap();
        let mut bad = outgoing(None);
        bad.to = "not an address".into();
        assert!(matches!(compose(&from, &bad), Err(SendError::Permanent(_))));
    }
}
