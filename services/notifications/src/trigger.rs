//! What each event we react to becomes: the kind of message (which names its template and
//! category), who gets it, and the values its templates see. Pure: no I/O.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tienda_events::{
    money::Money,
    order::{
        OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderPlaced, OrderRefunded,
        OrderShipped,
    },
    payment::{PaymentCaptured, PaymentDeclined, PaymentRequiresAction},
    user::{UserRegistered, UserRegistrationAttempted},
};
use uuid::Uuid;

use crate::{category::Category, channel::Channel, locale::Locale};

/// A family of messages: one set of templates, one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `user.registered`.
    Welcome,
    /// `user.password_reset_requested`.
    PasswordReset,
    /// `user.email_verification_requested`.
    EmailVerification,
    /// `user.registration_attempted`: someone tried to register the address again.
    RegistrationAttempted,
    /// `order.placed`.
    OrderPlaced,
    /// `order.confirmed`.
    OrderConfirmed,
    /// `order.cancelled`.
    OrderCancelled,
    /// `order.shipped`.
    OrderShipped,
    /// `order.delivered`.
    OrderDelivered,
    /// `order.refunded`.
    OrderRefunded,
    /// `payment.declined`.
    PaymentDeclined,
    /// `payment.requires_action`.
    PaymentRequiresAction,
    /// `payment.captured`: the capture issued the order's invoice.
    InvoiceReady,
}

impl Kind {
    /// Every kind (each has templates in every locale).
    pub const ALL: [Kind; 13] = [
        Kind::Welcome,
        Kind::PasswordReset,
        Kind::EmailVerification,
        Kind::RegistrationAttempted,
        Kind::OrderPlaced,
        Kind::OrderConfirmed,
        Kind::OrderCancelled,
        Kind::OrderShipped,
        Kind::OrderDelivered,
        Kind::OrderRefunded,
        Kind::PaymentDeclined,
        Kind::PaymentRequiresAction,
        Kind::InvoiceReady,
    ];

    /// The template family's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::PasswordReset => "password_reset",
            Kind::EmailVerification => "email_verification",
            Kind::RegistrationAttempted => "registration_attempted",
            Kind::OrderPlaced => "order_placed",
            Kind::OrderConfirmed => "order_confirmed",
            Kind::OrderCancelled => "order_cancelled",
            Kind::OrderShipped => "order_shipped",
            Kind::OrderDelivered => "order_delivered",
            Kind::OrderRefunded => "order_refunded",
            Kind::PaymentDeclined => "payment_declined",
            Kind::PaymentRequiresAction => "payment_requires_action",
            Kind::InvoiceReady => "invoice_ready",
        }
    }

    /// The kind a template family's name stands for.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The category its messages belong to.
    pub fn category(self) -> Category {
        match self {
            Kind::Welcome => Category::Account,
            Kind::PasswordReset | Kind::EmailVerification | Kind::RegistrationAttempted => {
                Category::Security
            }
            Kind::OrderShipped | Kind::OrderDelivered => Category::Shipping,
            Kind::OrderPlaced
            | Kind::OrderConfirmed
            | Kind::OrderCancelled
            | Kind::OrderRefunded
            | Kind::PaymentDeclined
            | Kind::PaymentRequiresAction
            | Kind::InvoiceReady => Category::Orders,
        }
    }

    /// The channels its messages go out on: email always; the state of an order and its
    /// payment also by SMS and push (to people with a phone number or a device). A welcome,
    /// a password reset (its link is for a browser) and an order placed (confirmed moments
    /// later) stay in the mailbox.
    pub fn channels(self) -> &'static [Channel] {
        match self {
            Kind::Welcome
            | Kind::PasswordReset
            | Kind::EmailVerification
            | Kind::RegistrationAttempted
            | Kind::OrderPlaced
            | Kind::InvoiceReady => &[Channel::Email],
            _ => &[Channel::Email, Channel::Sms, Channel::Push],
        }
    }

    /// Whether the message grants access (its body is blanked once sent).
    pub fn sensitive(self) -> bool {
        matches!(self, Kind::PasswordReset | Kind::EmailVerification)
    }
}

/// Where messages point people to.
#[derive(Debug, Clone)]
pub struct Links {
    /// The shop's public address, without a trailing slash.
    pub public_url: String,
    /// The shop's name.
    pub shop: String,
}

/// Who an order-related message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The customer, absent for a guest.
    pub user_id: Option<Uuid>,
    /// The address.
    pub email: String,
}

/// A link that grants something (a password reset, an address verified), with its token
/// opened: it exists in clear only here, in memory, and in the message sent.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct AccountLink {
    /// The account.
    pub user_id: Uuid,
    /// Where the link goes.
    pub email: String,
    /// The token, opened.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// An event that becomes a message, with what its templates need.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// `user.registered`.
    Welcome(UserRegistered),
    /// `user.password_reset_requested`, its token opened.
    PasswordReset(AccountLink),
    /// `user.email_verification_requested`, its token opened.
    EmailVerification(AccountLink),
    /// `user.registration_attempted`.
    RegistrationAttempted(UserRegistrationAttempted),
    /// `order.placed`.
    OrderPlaced(OrderPlaced),
    /// `order.confirmed`.
    OrderConfirmed(OrderConfirmed),
    /// `order.cancelled`.
    OrderCancelled(OrderCancelled),
    /// `order.shipped`.
    OrderShipped(OrderShipped),
    /// `order.delivered`.
    OrderDelivered(OrderDelivered),
    /// `order.refunded`.
    OrderRefunded(OrderRefunded),
    /// `payment.declined`, with the order's contact (payment events name only the order).
    PaymentDeclined(PaymentDeclined, Contact),
    /// `payment.requires_action`, with the order's contact.
    PaymentRequiresAction(PaymentRequiresAction, Contact),
    /// `payment.captured`, with the order's contact: its invoice is issued.
    InvoiceReady(PaymentCaptured, Contact),
}

impl Trigger {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Trigger::Welcome(_) => Kind::Welcome,
            Trigger::PasswordReset(_) => Kind::PasswordReset,
            Trigger::EmailVerification(_) => Kind::EmailVerification,
            Trigger::RegistrationAttempted(_) => Kind::RegistrationAttempted,
            Trigger::OrderPlaced(_) => Kind::OrderPlaced,
            Trigger::OrderConfirmed(_) => Kind::OrderConfirmed,
            Trigger::OrderCancelled(_) => Kind::OrderCancelled,
            Trigger::OrderShipped(_) => Kind::OrderShipped,
            Trigger::OrderDelivered(_) => Kind::OrderDelivered,
            Trigger::OrderRefunded(_) => Kind::OrderRefunded,
            Trigger::PaymentDeclined(..) => Kind::PaymentDeclined,
            Trigger::PaymentRequiresAction(..) => Kind::PaymentRequiresAction,
            Trigger::InvoiceReady(..) => Kind::InvoiceReady,
        }
    }

    /// A made-up event of `kind`, for checking and previewing its templates.
    pub fn sample(kind: Kind) -> Trigger {
        let order = "01932c07-a5f0-7c3e-9a53-000000000005";
        let customer = "01932c07-a5f0-7c3e-9a53-000000000001";
        let items = json!([
            {"sku": "TEE-BLK-M", "name": "Camiseta negra", "quantity": 2,
             "unit_price": {"amount": 1999, "currency": "EUR"}},
            {"sku": "MUG-01", "name": "Taza", "quantity": 1,
             "unit_price": {"amount": 900, "currency": "EUR"}}
        ]);
        let total = json!({"amount": 4898, "currency": "EUR"});
        let contact = Contact {
            user_id: customer.parse().ok(),
            email: "ada@example.com".into(),
        };
        fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
            serde_json::from_value(value).expect("the samples match the contracts (tested)")
        }
        match kind {
            Kind::Welcome => Trigger::Welcome(from(json!({
                "user_id": customer, "email": "ada@example.com", "name": "Ada",
                "roles": ["customer"]}))),
            Kind::PasswordReset => Trigger::PasswordReset(from(json!({
                "user_id": customer, "email": "ada@example.com", "token": "sample-token",
                "expires_at": "2026-11-29T13:00:00Z"}))),
            Kind::EmailVerification => Trigger::EmailVerification(from(json!({
                "user_id": customer, "email": "ada@example.com", "token": "sample-token",
                "expires_at": "2026-12-01T12:00:00Z"}))),
            Kind::RegistrationAttempted => Trigger::RegistrationAttempted(from(json!({
                "user_id": customer, "email": "ada@example.com"}))),
            Kind::OrderPlaced => Trigger::OrderPlaced(from(json!({
                "order_id": order, "customer_id": customer, "email": "ada@example.com",
                "items": items, "total": total}))),
            Kind::OrderConfirmed => Trigger::OrderConfirmed(from(json!({
                "order_id": order, "customer_id": customer, "email": "ada@example.com",
                "payment_id": "01932c07-a5f0-7c3e-9a53-000000000006",
                "items": items, "total": total}))),
            Kind::OrderCancelled => Trigger::OrderCancelled(from(json!({
                "order_id": order, "customer_id": customer, "email": "ada@example.com",
                "reason": "out_of_stock", "detail": "MUG-01 is out of stock (1 asked, 0 left)."}))),
            Kind::OrderShipped => Trigger::OrderShipped(from(json!({
                "order_id": order, "customer_id": customer, "email": "ada@example.com",
                "carrier": "Correos", "tracking_number": "PQ4BA20123456"}))),
            Kind::OrderDelivered => Trigger::OrderDelivered(from(json!({
                "order_id": order, "customer_id": customer, "email": "ada@example.com",
                "delivered_at": "2026-11-29T15:00:00Z"}))),
            Kind::OrderRefunded => Trigger::OrderRefunded(from(json!({
                "order_id": order, "customer_id": customer, "email": "ada@example.com",
                "amount": {"amount": 900, "currency": "EUR"},
                "refunded_total": {"amount": 900, "currency": "EUR"}, "full": false}))),
            Kind::PaymentDeclined => Trigger::PaymentDeclined(
                from(json!({
                    "payment_id": "01932c07-a5f0-7c3e-9a53-000000000006", "order_id": order,
                    "code": "insufficient_funds", "message": "The card has insufficient funds."})),
                contact,
            ),
            Kind::PaymentRequiresAction => Trigger::PaymentRequiresAction(
                from(json!({
                    "payment_id": "01932c07-a5f0-7c3e-9a53-000000000006", "order_id": order,
                    "action_url": "https://shop.example/v1/payments/x/challenges/y",
                    "expires_at": "2026-11-29T13:00:00Z"})),
                contact,
            ),
            Kind::InvoiceReady => Trigger::InvoiceReady(
                from(json!({
                    "payment_id": "01932c07-a5f0-7c3e-9a53-000000000006", "order_id": order,
                    "amount": total})),
                contact,
            ),
        }
    }

    /// Who gets it.
    pub fn recipient(&self) -> Contact {
        let (user_id, email) = match self {
            Trigger::Welcome(e) => (Some(e.user_id), &e.email),
            Trigger::PasswordReset(e) | Trigger::EmailVerification(e) => {
                (Some(e.user_id), &e.email)
            }
            Trigger::RegistrationAttempted(e) => (Some(e.user_id), &e.email),
            Trigger::OrderPlaced(e) => (e.customer_id, &e.email),
            Trigger::OrderConfirmed(e) => (e.customer_id, &e.email),
            Trigger::OrderCancelled(e) => (e.customer_id, &e.email),
            Trigger::OrderShipped(e) => (e.customer_id, &e.email),
            Trigger::OrderDelivered(e) => (e.customer_id, &e.email),
            Trigger::OrderRefunded(e) => (e.customer_id, &e.email),
            Trigger::PaymentDeclined(_, c)
            | Trigger::PaymentRequiresAction(_, c)
            | Trigger::InvoiceReady(_, c) => {
                return c.clone();
            }
        };
        Contact {
            user_id,
            email: email.clone(),
        }
    }

    /// The values its templates see, written for `locale`. `unsubscribe_url` is the
    /// one-click link of non-critical messages (null for critical ones).
    pub fn context(&self, locale: Locale, links: &Links, unsubscribe_url: Option<&str>) -> Value {
        let money = |m: &Money| locale.money(m);
        let date = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        let items = |lines: &[OrderLine]| -> Value {
            lines
                .iter()
                .map(|l| {
                    json!({"sku": l.sku, "name": l.name, "quantity": l.quantity,
                           "unit_price": money(&l.unit_price)})
                })
                .collect()
        };
        let order_url = |id: &Uuid| format!("{}/orders/{id}", links.public_url);
        let mut values = match self {
            Trigger::Welcome(e) => json!({"name": e.name, "email": e.email}),
            Trigger::PasswordReset(e) => json!({
                "email": e.email,
                "reset_url": format!("{}/reset-password?token={}", links.public_url, e.token),
                "expires_at": date(&e.expires_at),
            }),
            Trigger::EmailVerification(e) => json!({
                "email": e.email,
                "verify_url": format!("{}/verify-email?token={}", links.public_url, e.token),
                "expires_at": date(&e.expires_at),
            }),
            Trigger::RegistrationAttempted(e) => json!({
                "email": e.email,
                "sign_in_url": format!("{}/sign-in", links.public_url),
                "reset_url": format!("{}/reset-password", links.public_url),
            }),
            Trigger::OrderPlaced(e) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "items": items(&e.items), "total": money(&e.total),
            }),
            Trigger::OrderConfirmed(e) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "items": items(&e.items), "total": money(&e.total),
            }),
            Trigger::OrderCancelled(e) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "reason": e.reason, "detail": e.detail,
            }),
            Trigger::OrderShipped(e) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "carrier": e.carrier, "tracking_number": e.tracking_number,
            }),
            Trigger::OrderDelivered(e) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "delivered_at": date(&e.delivered_at),
            }),
            Trigger::OrderRefunded(e) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "amount": money(&e.amount), "refunded_total": money(&e.refunded_total),
                "full": e.full,
            }),
            Trigger::PaymentDeclined(e, _) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "code": e.code, "message": e.message,
            }),
            Trigger::PaymentRequiresAction(e, _) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "action_url": e.action_url, "expires_at": date(&e.expires_at),
            }),
            Trigger::InvoiceReady(e, _) => json!({
                "order_id": e.order_id, "order_url": order_url(&e.order_id),
                "amount": money(&e.amount),
                "invoices_url": format!("{}/v1/invoices?order_id={}", links.public_url, e.order_id),
            }),
        };
        let object = values.as_object_mut().expect("built as an object");
        object.insert("shop".into(), json!(links.shop));
        object.insert("lang".into(), json!(locale.as_str()));
        object.insert("unsubscribe_url".into(), json!(unsubscribe_url));
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_sample_of_its_own_kind() {
        for kind in Kind::ALL {
            assert_eq!(Trigger::sample(kind).kind(), kind);
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn only_shipping_and_account_messages_are_optional() {
        let optional: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| !k.category().critical())
            .collect();
        assert_eq!(
            optional,
            [Kind::Welcome, Kind::OrderShipped, Kind::OrderDelivered]
        );
    }

    #[test]
    fn a_password_reset_links_to_the_shop_with_its_token() {
        let trigger = Trigger::PasswordReset(AccountLink {
            user_id: Uuid::now_v7(),
            email: "ana@example.com".into(),
            token: "tok123".into(),
            expires_at: Utc::now(),
        });
        let links = Links {
            public_url: "https://shop.example".into(),
            shop: "Tienda".into(),
        };
        let context = trigger.context(Locale::Es, &links, None);
        assert_eq!(
            context["reset_url"],
            "https://shop.example/reset-password?token=tok123"
        );
        assert_eq!(context["unsubscribe_url"], Value::Null);
        assert_eq!(trigger.recipient().email, "ana@example.com");
    }
}
