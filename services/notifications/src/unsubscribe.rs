//! One-click unsubscribe tokens: who (`user:<uuid>` or `email:<address>`) leaves which
//! category, signed with HMAC-SHA256 under the database's own key, so the link works without
//! signing in and cannot be forged or pointed at someone else. They do not expire: a link in
//! an old message must still work (RFC 8058 asks that it keep working for a long time).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::hmac;
use sqlx::PgConnection;

use crate::category::Category;

/// Signs and checks tokens.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// `user:<uuid>` or `email:<address>`.
    pub subject: String,
    /// The category to leave.
    pub category: Category,
}

impl Signer {
    /// A signer over `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Loads the database's key (created by the migration).
    pub async fn load(conn: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let secret: Vec<u8> =
            sqlx::query_scalar("SELECT secret FROM signing_keys WHERE name = 'unsubscribe'")
                .fetch_one(conn)
                .await?;
        Ok(Self::new(&secret))
    }

    /// The token for `subject` leaving `category`.
    pub fn sign(&self, subject: &str, category: Category) -> String {
        let payload = format!("{}|{subject}", category.as_str());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// What `token` says, if this key signed it.
    pub fn verify(&self, token: &str) -> Option<Unsubscribe> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, &payload, &tag).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let (category, subject) = payload.split_once('|')?;
        Some(Unsubscribe {
            subject: subject.to_owned(),
            category: Category::parse(category)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_says_who_leaves_what() {
        let signer = Signer::new(b"k1");
        let token = signer.sign("user:0190", Category::Shipping);
        assert_eq!(
            signer.verify(&token),
            Some(Unsubscribe {
                subject: "user:0190".into(),
                category: Category::Shipping
            })
        );
    }

    #[test]
    fn a_token_from_another_key_or_edited_is_refused() {
        let token = Signer::new(b"k1").sign("email:a@example.com", Category::Account);
        assert_eq!(Signer::new(b"k2").verify(&token), None);
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode("account|email:b@example.com")
        );
        assert_eq!(Signer::new(b"k1").verify(&forged), None);
        assert_eq!(Signer::new(b"k1").verify("garbage"), None);
    }
}
