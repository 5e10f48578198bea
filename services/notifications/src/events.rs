//! The consumer handler for user, order and payment events: each event we notify about
//! becomes a delivery row in the consumer's transaction (with its inbox row), rendered in the
//! recipient's locale; the [`crate::worker`] sends it after commit. Idempotent twice over:
//! the inbox skips a redelivered message, and one delivery per (event, recipient, channel)
//! covers the same event published again under another message id. Events we do not notify
//! about (`user.locked`, `payment.voided`, ...) are acknowledged and ignored.

use std::sync::Arc;

use sqlx::PgConnection;
use tienda_events::{
    Envelope, Message,
    order::{
        OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderRefunded, OrderShipped,
    },
    payment::{PaymentCaptured, PaymentDeclined, PaymentRequiresAction},
    user::{
        UserEmailVerificationRequested, UserPasswordResetRequested, UserPasswordResetRequestedV2,
        UserRegistered, UserRegistrationAttempted,
    },
};
use tienda_kit::consumer::{Delivery, Handler, HandlerError};
use uuid::Uuid;

use crate::{
    channel::{Channel, Outgoing},
    contacts,
    deliveries::{self, NewDelivery, Status},
    locale::Locale,
    preferences, template_store,
    templates::Templates,
    trigger::{AccountLink, Contact, Links, Trigger},
    unsubscribe::Signer,
    webhooks,
};

/// The handler shared by the three consumers.
#[derive(Debug, Clone)]
pub struct Notify {
    /// Opens the tokens of account links (absent: those events are dead-lettered).
    pub sealer: Option<Arc<tienda_kit::seal::Sealer>>,
    /// The compiled templates.
    pub templates: Arc<Templates>,
    /// Where links point.
    pub links: Links,
    /// Signs unsubscribe links.
    pub signer: Signer,
    /// The language for people who chose none.
    pub default_locale: Locale,
    /// The time zone of people who chose none (their quiet hours).
    pub default_timezone: chrono_tz::Tz,
}

/// The parts of an envelope webhooks need.
#[derive(serde::Deserialize)]
struct EnvelopeHead {
    id: Uuid,
    #[serde(rename = "type")]
    message_type: String,
}

/// Decodes `T` and wraps it with its event id and type.
fn decode<T: Message>(delivery: &Delivery) -> Result<(Uuid, String, T), HandlerError> {
    let envelope: Envelope<T> = delivery.envelope()?;
    Ok((envelope.id, envelope.message_type, envelope.data))
}

/// The envelope's contract version (0 when it has none: decoding then says what is wrong).
fn version(delivery: &Delivery) -> u16 {
    #[derive(serde::Deserialize)]
    struct Head {
        version: u16,
    }
    serde_json::from_slice::<Head>(&delivery.payload).map_or(0, |h| h.version)
}

impl Notify {
    /// The account link of an event whose token is sealed for `context`.
    fn opened(
        &self,
        context: &str,
        user_id: Uuid,
        email: String,
        sealed: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<AccountLink, HandlerError> {
        Ok(AccountLink {
            user_id,
            email,
            token: self.open(context, sealed)?,
            expires_at,
        })
    }

    /// Opens a sealed token; a token that does not open never will (permanent: dead letter,
    /// with the reason an operator can act on).
    fn open(&self, context: &str, sealed: &str) -> Result<String, HandlerError> {
        let sealer = self.sealer.as_ref().ok_or_else(|| {
            HandlerError::Permanent(anyhow::anyhow!(
                "EVENT_SEALING_KEYS is not set: give notifications the same keys as auth, then \
                 replay this dead letter"
            ))
        })?;
        sealer.open(context, sealed).map_err(|e| {
            HandlerError::Permanent(anyhow::anyhow!(
                "{e}: is EVENT_SEALING_KEYS the same as auth's? Fix it, then replay this dead letter"
            ))
        })
    }

    /// The trigger an event is, if we notify about it; order events also remember the
    /// order's contact for later payment events.
    async fn trigger(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<Option<(Uuid, String, Trigger)>, HandlerError> {
        let mut parts = delivery.subject.splitn(3, '.');
        let (_, domain, name) = (parts.next(), parts.next(), parts.next());
        let found = match (domain, name) {
            (Some("user"), Some("registered")) => {
                let (id, ty, e) = decode::<UserRegistered>(delivery)?;
                crate::campaigns::remember(conn, e.user_id, &e.email, &e.name).await?;
                (id, ty, Trigger::Welcome(e))
            }
            (Some("user"), Some("password_reset_requested")) if version(delivery) == 1 => {
                // Published before tokens were sealed; read so none is lost while the stream
                // still holds them.
                let (id, ty, e) = decode::<UserPasswordResetRequested>(delivery)?;
                let link = AccountLink {
                    user_id: e.user_id,
                    email: e.email,
                    token: e.token,
                    expires_at: e.expires_at,
                };
                (id, ty, Trigger::PasswordReset(link))
            }
            (Some("user"), Some("password_reset_requested")) => {
                let (id, ty, e) = decode::<UserPasswordResetRequestedV2>(delivery)?;
                let context = UserPasswordResetRequestedV2::seal_context(e.user_id);
                let link =
                    self.opened(&context, e.user_id, e.email, &e.sealed_token, e.expires_at)?;
                (id, ty, Trigger::PasswordReset(link))
            }
            (Some("user"), Some("email_verification_requested")) => {
                let (id, ty, e) = decode::<UserEmailVerificationRequested>(delivery)?;
                let context = UserEmailVerificationRequested::seal_context(e.user_id);
                let link =
                    self.opened(&context, e.user_id, e.email, &e.sealed_token, e.expires_at)?;
                (id, ty, Trigger::EmailVerification(link))
            }
            (Some("user"), Some("registration_attempted")) => {
                let (id, ty, e) = decode::<UserRegistrationAttempted>(delivery)?;
                (id, ty, Trigger::RegistrationAttempted(e))
            }
            (Some("order"), Some("placed")) => {
                let (id, ty, e) = decode::<OrderPlaced>(delivery)?;
                (id, ty, Trigger::OrderPlaced(e))
            }
            (Some("order"), Some("confirmed")) => {
                let (id, ty, e) = decode::<OrderConfirmed>(delivery)?;
                (id, ty, Trigger::OrderConfirmed(e))
            }
            (Some("order"), Some("cancelled")) => {
                let (id, ty, e) = decode::<OrderCancelled>(delivery)?;
                (id, ty, Trigger::OrderCancelled(e))
            }
            (Some("order"), Some("shipped")) => {
                let (id, ty, e) = decode::<OrderShipped>(delivery)?;
                (id, ty, Trigger::OrderShipped(e))
            }
            (Some("order"), Some("delivered")) => {
                let (id, ty, e) = decode::<OrderDelivered>(delivery)?;
                (id, ty, Trigger::OrderDelivered(e))
            }
            (Some("order"), Some("refunded")) => {
                let (id, ty, e) = decode::<OrderRefunded>(delivery)?;
                (id, ty, Trigger::OrderRefunded(e))
            }
            (Some("payment"), Some("declined")) => {
                let (id, ty, e) = decode::<PaymentDeclined>(delivery)?;
                let contact = order_contact(conn, e.order_id).await?;
                (id, ty, Trigger::PaymentDeclined(e, contact))
            }
            (Some("payment"), Some("requires_action")) => {
                let (id, ty, e) = decode::<PaymentRequiresAction>(delivery)?;
                let contact = order_contact(conn, e.order_id).await?;
                (id, ty, Trigger::PaymentRequiresAction(e, contact))
            }
            (Some("payment"), Some("captured")) => {
                let (id, ty, e) = decode::<PaymentCaptured>(delivery)?;
                let contact = order_contact(conn, e.order_id).await?;
                (id, ty, Trigger::InvoiceReady(e, contact))
            }
            _ => return Ok(None),
        };
        if let Some(order_id) = order_of(&found.2) {
            contacts::remember(conn, order_id, &found.2.recipient()).await?;
        }
        Ok(Some(found))
    }
}

/// The order an order event is about.
fn order_of(trigger: &Trigger) -> Option<Uuid> {
    match trigger {
        Trigger::OrderPlaced(e) => Some(e.order_id),
        Trigger::OrderConfirmed(e) => Some(e.order_id),
        Trigger::OrderCancelled(e) => Some(e.order_id),
        Trigger::OrderShipped(e) => Some(e.order_id),
        Trigger::OrderDelivered(e) => Some(e.order_id),
        Trigger::OrderRefunded(e) => Some(e.order_id),
        _ => None,
    }
}

/// Who to write to about a payment's order. Unknown yet (its `order.placed` still on the way
/// on another stream) is transient: the message comes back after a delay.
async fn order_contact(conn: &mut PgConnection, order_id: Uuid) -> Result<Contact, HandlerError> {
    contacts::find(conn, order_id).await?.ok_or_else(|| {
        HandlerError::Transient(anyhow::anyhow!(
            "no order event seen yet for order {order_id}"
        ))
    })
}

impl Handler for Notify {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        // Integrations' webhooks first: every event of a subscribed type, mailed or not.
        if let Ok(head) = serde_json::from_slice::<EnvelopeHead>(&delivery.payload) {
            webhooks::fan_out(conn, head.id, &head.message_type, &delivery.payload).await?;
        }
        let Some((event_id, event_type, trigger)) = self.trigger(conn, delivery).await? else {
            return Ok(());
        };
        let recipient = trigger.recipient();
        let kind = trigger.kind();
        let category = kind.category();
        let mut subjects = vec![preferences::email_subject(&recipient.email)];
        if let Some(user_id) = recipient.user_id {
            subjects.insert(0, preferences::user_subject(user_id));
        }
        let reach = preferences::reach(conn, event_id, &recipient, &subjects).await?;
        if reach.delivered {
            return Ok(());
        }
        let locale = reach.locale.unwrap_or(self.default_locale);
        let digest = match recipient.user_id {
            Some(_) if !category.critical() => reach
                .digests
                .iter()
                .find(|(c, _)| *c == category)
                .map(|&(_, window)| window),
            _ => None,
        };
        let zone = match digest {
            Some(_) => reach
                .timezone
                .as_deref()
                .and_then(crate::quiet::zone)
                .unwrap_or(self.default_timezone),
            None => self.default_timezone,
        };
        let mut not_before = None;
        if !category.critical()
            && let Some(quiet) = &reach.quiet_hours
        {
            let zone = reach
                .timezone
                .as_deref()
                .and_then(crate::quiet::zone)
                .unwrap_or(self.default_timezone);
            not_before = quiet.release_at(zone, chrono::Utc::now());
        }
        let unsubscribe_url = (!category.critical()).then(|| {
            format!(
                "{}/v1/notifications/unsubscribe?token={}",
                self.links.public_url,
                self.signer.sign(&subjects[0], category)
            )
        });
        let context = trigger.context(locale, &self.links, unsubscribe_url.as_deref());
        // The newest edited version, else the shipped one. An edit that passed its check
        // but fails on a real event (a value only some events lack) falls back to the
        // shipped version rather than lose the message.
        let edited = match template_store::latest(conn, kind, locale).await? {
            Some(edited) => self
                .templates
                .render_version(kind, locale, edited.version, &edited.draft(), &context)
                .inspect_err(|e| {
                    tracing::error!(kind = kind.as_str(), %locale, version = edited.version,
                        error = %crate::templates::describe(e),
                        "an edited template failed; the shipped one is used");
                })
                .ok(),
            None => None,
        };
        let rendered = match edited {
            Some(rendered) => Ok(rendered),
            None => self.templates.render(kind, locale, &context),
        }
        .map_err(|e| {
            HandlerError::Permanent(anyhow::anyhow!("rendering {}: {e:#}", kind.as_str()))
        })?;
        // One delivery per channel the kind goes out on and the person can be reached by.
        for &channel in kind.channels() {
            let address = match (channel, recipient.user_id) {
                (Channel::Email, _) => Some(recipient.email.clone()),
                (Channel::Sms, Some(_)) => reach.phone.clone(),
                (Channel::Push, Some(user_id)) if reach.has_device => {
                    Some(preferences::user_subject(user_id))
                }
                _ => None,
            };
            let Some(address) = address else { continue };
            let status = match reach.suppression(channel, &address) {
                Some(reason) => Status::Suppressed(match reason {
                    "complaint" => "complaint",
                    "unsubscribed" => "unsubscribed",
                    _ => "hard_bounce",
                }),
                None if !category.is_sent_despite(&reach.opted_out) => {
                    Status::Suppressed("opted_out")
                }
                None if !preferences::enabled(&reach.chosen, category, channel) => {
                    Status::Suppressed("channel_off")
                }
                None => Status::Queued,
            };
            let status = match (channel, status, digest, recipient.user_id) {
                (Channel::Email, Status::Queued, Some(window), Some(user_id)) => {
                    let link = context["order_url"].as_str();
                    crate::digests::add(
                        conn,
                        &crate::digests::Item {
                            user_id,
                            category,
                            event_id,
                            kind: kind.as_str(),
                            line: &rendered.subject,
                            link,
                            recipient: &address,
                            locale,
                        },
                        window,
                        zone,
                    )
                    .await?;
                    Status::Digested
                }
                _ => status,
            };
            let short = rendered.short.clone().unwrap_or_default();
            let (subject, text, html, unsubscribe) = match channel {
                Channel::Email => (
                    rendered.subject.clone(),
                    rendered.text.clone(),
                    rendered.html.clone(),
                    unsubscribe_url.clone(),
                ),
                Channel::Sms => (String::new(), short, String::new(), None),
                Channel::Push => (rendered.subject.clone(), short, String::new(), None),
            };
            deliveries::record(
                conn,
                &NewDelivery {
                    event_id,
                    event_type: event_type.clone(),
                    kind: kind.as_str(),
                    category: category.as_str(),
                    critical: category.critical(),
                    sensitive: kind.sensitive(),
                    user_id: recipient.user_id,
                    channel,
                    outgoing: Outgoing {
                        id: Uuid::now_v7(),
                        to: address,
                        subject,
                        text,
                        html,
                        unsubscribe_url: unsubscribe,
                    },
                    locale: locale.as_str(),
                    template_version: rendered.version,
                    status,
                    not_before: not_before.filter(|_| status == Status::Queued),
                },
            )
            .await?;
        }
        Ok(())
    }
}
