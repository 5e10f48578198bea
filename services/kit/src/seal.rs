//! Sealed fields: a secret an event must carry (a password-reset or email-verification token)
//! travels and rests in its stream encrypted, readable only by the components given the shop's
//! event-sealing keys (auth, which seals, and notifications, which opens).
//!
//! A stream keeps events for days and anyone who can read it — a consumer with broad
//! permissions, a backup, an operator running `nats stream view` — would otherwise hold working
//! account-recovery links. AES-256-GCM (ring) with a random 96-bit nonce per value; the
//! additional data binds the value to its event (`<type>|<subject id>`), so a sealed token
//! copied into another event, or another account's, does not open.
//!
//! Sealed text: `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`, `kid` being the first
//! 8 hex digits of the key's SHA-256. Keys are configured as `EVENT_SEALING_KEYS`: base64 of
//! 32 random bytes each, comma-separated; the first seals, every one opens (rotate by putting
//! a new key first and dropping the old one once the stream has aged out).

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom, SystemRandom},
};

/// The environment variable holding the keys.
pub const KEYS_VAR: &str = "EVENT_SEALING_KEYS";

/// Why a value did not seal or open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The configuration is wrong.
    #[error(
        "{KEYS_VAR} must be base64 of 32 random bytes, comma-separated (make one: head -c32 /dev/urandom | base64): {0}"
    )]
    BadKey(String),
    /// No key is configured.
    #[error("{KEYS_VAR} is not set: this component cannot seal or open event secrets")]
    NoKey,
    /// The text is not a sealed value.
    #[error("not a sealed value")]
    Malformed,
    /// Sealed under a key not configured here.
    #[error("sealed under key {0}, which is not among {KEYS_VAR}")]
    UnknownKey(String),
    /// The key is right but the value was altered or belongs to another event.
    #[error("the sealed value does not open: altered, or moved from another event")]
    Forged,
}

struct Key {
    kid: String,
    key: LessSafeKey,
}

/// The shop's event-sealing keys.
pub struct Sealer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Sealer {
    /// Keys from `EVENT_SEALING_KEYS`' text: base64 keys, comma-separated, the first sealing.
    pub fn from_config(text: &str) -> Result<Self, SealError> {
        let keys = text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|encoded| {
                let raw = STANDARD
                    .decode(encoded)
                    .map_err(|_| SealError::BadKey("a key is not base64".into()))?;
                let unbound = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| {
                    SealError::BadKey(format!("a key is {} bytes, not 32", raw.len()))
                })?;
                let kid = hex::encode(&digest::digest(&digest::SHA256, &raw).as_ref()[..4]);
                Ok(Key {
                    kid,
                    key: LessSafeKey::new(unbound),
                })
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        if keys.is_empty() {
            return Err(SealError::NoKey);
        }
        Ok(Self { keys })
    }

    /// A new random key, base64 (what `tienda up` and the operator generate).
    pub fn generate_key() -> String {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .expect("the system's random source works");
        STANDARD.encode(raw)
    }

    /// Seals `plain` for the event `context` names (`<type>|<subject id>`).
    pub fn seal(&self, context: &str, plain: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut buffer = plain.as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .expect("AES-GCM seals any value shorter than 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        format!("v1.{}.{}", key.kid, URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens what [`Self::seal`] sealed for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| SealError::UnknownKey(kid.to_owned()))?;
        let mut raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let mut buffer = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| SealError::Malformed)?;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Forged)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_config(&Sealer::generate_key()).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_event_and_hides_its_text() {
        let s = sealer();
        let sealed = s.seal("user.password_reset_requested|u1", "the-token");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("the-token"));
        assert_eq!(
            s.open("user.password_reset_requested|u1", &sealed).unwrap(),
            "the-token"
        );
        // Moved to another account's event, or another kind of event: refused.
        assert_eq!(
            s.open("user.password_reset_requested|u2", &sealed),
            Err(SealError::Forged)
        );
        assert_eq!(
            s.open("user.email_verification_requested|u1", &sealed),
            Err(SealError::Forged)
        );
        // Two seals of one value differ (fresh nonce).
        assert_ne!(
            sealed,
            s.seal("user.password_reset_requested|u1", "the-token")
        );
    }

    #[test]
    fn an_altered_or_foreign_value_is_refused() {
        let s = sealer();
        let sealed = s.seal("c", "secret");
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            s.open("c", std::str::from_utf8(&altered).unwrap()),
            Err(SealError::Forged)
        );
        assert_eq!(s.open("c", "the-token"), Err(SealError::Malformed));
        let kid = sealed.split('.').nth(1).unwrap();
        assert_eq!(
            s.open("c", &format!("v1.{kid}.%%%")),
            Err(SealError::Malformed)
        );
        assert_eq!(
            s.open("c", &format!("v1.{kid}.AAAA")),
            Err(SealError::Malformed),
            "shorter than a nonce"
        );
        assert!(matches!(
            sealer().open("c", &sealed),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn a_rotated_key_still_opens_what_it_sealed() {
        let (old, new) = (Sealer::generate_key(), Sealer::generate_key());
        let before = Sealer::from_config(&old).unwrap().seal("c", "x");
        let rotated = Sealer::from_config(&format!("{new}, {old}")).unwrap();
        assert_eq!(rotated.open("c", &before).unwrap(), "x");
        let after = rotated.seal("c", "y");
        assert!(
            Sealer::from_config(&old)
                .unwrap()
                .open("c", &after)
                .is_err()
        );
    }

    #[test]
    fn bad_keys_say_how_to_make_one() {
        assert_eq!(Sealer::from_config(" , ").unwrap_err(), SealError::NoKey);
        let short = Sealer::from_config("a2V5").unwrap_err();
        assert!(short.to_string().contains("head -c32 /dev/urandom"));
        assert!(Sealer::from_config("not base64!").is_err());
    }
}
