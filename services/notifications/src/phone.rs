//! Phone numbers are used for texts only once verified: a number set in the preferences
//! waits in `phone_pending` and a six-digit code is texted to it; the person types the code
//! back (`POST /v1/notifications/phone/verify`) and the number becomes theirs. Otherwise any
//! customer could make the shop text numbers they do not hold — a stranger's, or premium
//! numbers that pay the attacker per message (SMS pumping).
//!
//! Codes are kept as an HMAC-SHA256 keyed by the verification's id, expire after ten
//! minutes, allow five tries, and are sent at most three times an hour per person and five
//! times a day per number. `NOTIFICATIONS_SMS_COUNTRIES` limits numbers to calling codes.

use std::time::Duration;

use chrono::Utc;
use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    channel::{Channel, Outgoing},
    deliveries::{self, NewDelivery, Status},
    error::Error,
    locale::Locale,
};

/// How long a code is good for.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// Wrong codes before a new one is needed.
pub const MAX_TRIES: i32 = 5;
/// Codes a person may be sent per hour.
pub const PER_PERSON_HOUR: i64 = 3;
/// Codes a number may be sent per day.
pub const PER_NUMBER_DAY: i64 = 5;

fn key(id: Uuid) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, id.as_bytes())
}

fn hash(id: Uuid, code: &str) -> Vec<u8> {
    hmac::sign(&key(id), code.as_bytes()).as_ref().to_vec()
}

/// A verification's row: id, number, code hash, wrong tries, expiry.
type Pending = (Uuid, String, Vec<u8>, i32, chrono::DateTime<Utc>);

fn new_code() -> String {
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    format!("{:06}", u32::from_le_bytes(bytes) % 1_000_000)
}

/// Whether `number` may be texted given the allowed calling codes (none: any).
pub fn country_allowed(allowed: &[String], number: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|prefix| number.starts_with(prefix.trim()))
}

/// The text carrying a code.
fn message(locale: Locale, shop: &str, code: &str) -> String {
    match locale {
        Locale::Es => format!(
            "{shop}: tu código es {code}. Caduca en 10 minutos. Si no lo pediste, ignora este mensaje."
        ),
        Locale::En => format!(
            "{shop}: your code is {code}. It expires in 10 minutes. If you did not ask for it, ignore this message."
        ),
    }
}

/// Starts verifying `number` for `user_id`: it becomes their pending number and a code is
/// texted to it (in `conn`'s transaction). The same number asked again within a minute sends
/// nothing more.
pub async fn request(
    conn: &mut PgConnection,
    user_id: Uuid,
    number: &str,
    locale: Locale,
    shop: &str,
    allowed: &[String],
) -> Result<(), Error> {
    if !country_allowed(allowed, number) {
        return Err(Error::Invalid(vec![(
            "phone".into(),
            format!(
                "this shop texts only numbers starting with {}",
                allowed.join(", ")
            ),
        )]));
    }
    sqlx::query(
        "INSERT INTO preferences (user_id, phone_pending) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET phone_pending = EXCLUDED.phone_pending,
             updated_at = now()",
    )
    .bind(user_id)
    .bind(number)
    .execute(&mut *conn)
    .await?;
    let recent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM phone_verifications
                        WHERE user_id = $1 AND phone = $2 AND verified_at IS NULL
                          AND created_at > now() - interval '1 minute')",
    )
    .bind(user_id)
    .bind(number)
    .fetch_one(&mut *conn)
    .await?;
    if recent {
        return Ok(());
    }
    let (by_person, by_number): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE user_id = $1 AND created_at > now() - interval '1 hour'),
                count(*) FILTER (WHERE phone = $2 AND created_at > now() - interval '1 day')
         FROM phone_verifications
         WHERE (user_id = $1 OR phone = $2) AND created_at > now() - interval '1 day'",
    )
    .bind(user_id)
    .bind(number)
    .fetch_one(&mut *conn)
    .await?;
    if by_person >= PER_PERSON_HOUR {
        return Err(Error::TooMany(
            Duration::from_secs(3_600),
            format!("{PER_PERSON_HOUR} codes were sent in the last hour; try again later"),
        ));
    }
    if by_number >= PER_NUMBER_DAY {
        return Err(Error::TooMany(
            Duration::from_secs(86_400),
            format!("{PER_NUMBER_DAY} codes were sent to this number today; try again tomorrow"),
        ));
    }
    let id = Uuid::now_v7();
    let code = new_code();
    sqlx::query(
        "INSERT INTO phone_verifications (id, user_id, phone, code_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user_id)
    .bind(number)
    .bind(hash(id, &code))
    .bind(Utc::now() + chrono::Duration::from_std(CODE_TTL).unwrap_or_default())
    .execute(&mut *conn)
    .await?;
    deliveries::record(
        conn,
        &NewDelivery {
            event_id: id,
            event_type: "phone.verification_requested".into(),
            kind: "phone_verification",
            category: "security",
            critical: true,
            sensitive: true,
            user_id: Some(user_id),
            channel: Channel::Sms,
            outgoing: Outgoing {
                id: Uuid::now_v7(),
                to: number.to_owned(),
                subject: String::new(),
                text: message(locale, shop, &code),
                html: String::new(),
                unsubscribe_url: None,
            },
            locale: locale.as_str(),
            template_version: crate::templates::BUILTIN_VERSION,
            status: Status::Queued,
            not_before: None,
        },
    )
    .await?;
    Ok(())
}

/// What checking a code found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// The pending number is now theirs.
    Verified,
    /// Wrong; this many tries are left.
    Wrong(i32),
}

/// Checks `code` against `user_id`'s pending number. A wrong code counts (commit it even
/// though the request fails).
pub async fn verify(conn: &mut PgConnection, user_id: Uuid, code: &str) -> Result<Checked, Error> {
    let pending: Option<Pending> = sqlx::query_as(
        "SELECT v.id, v.phone, v.code_hash, v.attempts, v.expires_at
         FROM phone_verifications v JOIN preferences p ON p.user_id = v.user_id
         WHERE v.user_id = $1 AND v.phone = p.phone_pending AND v.verified_at IS NULL
         ORDER BY v.created_at DESC LIMIT 1 FOR UPDATE OF v",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, phone, code_hash, attempts, expires_at)) = pending else {
        return Err(Error::Conflict(
            "No number is waiting for a code: set `phone` in the preferences first.".into(),
        ));
    };
    if expires_at < Utc::now() {
        return Err(Error::Conflict(
            "The code expired: set `phone` in the preferences again for a new one.".into(),
        ));
    }
    if attempts >= MAX_TRIES {
        return Err(Error::Conflict(
            "Too many wrong codes: set `phone` in the preferences again for a new one.".into(),
        ));
    }
    // Compared in constant time.
    if hmac::verify(&key(id), code.trim().as_bytes(), &code_hash).is_err() {
        sqlx::query("UPDATE phone_verifications SET attempts = attempts + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        return Ok(Checked::Wrong(MAX_TRIES - attempts - 1));
    }
    sqlx::query("UPDATE phone_verifications SET verified_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE preferences SET phone = $2, phone_pending = NULL, updated_at = now()
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(&phone)
    .execute(conn)
    .await?;
    Ok(Checked::Verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_hashed_with_their_verification() {
        let code = new_code();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_ne!(
            hash(a, &code),
            hash(b, &code),
            "a code is bound to its verification"
        );
    }

    #[test]
    fn calling_codes_limit_numbers_when_given() {
        assert!(country_allowed(&[], "+882123456789"));
        let allowed = vec!["+34".to_owned(), "+1".to_owned()];
        assert!(country_allowed(&allowed, "+34600111222"));
        assert!(!country_allowed(&allowed, "+882123456789"));
    }
}
