//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step) and recovery codes.

use ring::rand::{SecureRandom, SystemRandom};
use totp_rs::{Builder, Totp};

/// Recovery codes issued per enrolment.
pub const RECOVERY_CODES: usize = 10;

/// The TOTP of a secret, labelled for authenticator apps.
pub fn totp(secret: &[u8], account: &str) -> Totp {
    Builder::new()
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some("Tienda"))
        .build()
        .expect("a 160-bit secret builds a valid TOTP")
}

/// A new 160-bit secret.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    SystemRandom::new()
        .fill(&mut secret)
        .expect("the OS has randomness");
    secret
}

/// Ten new recovery codes, `xxxxx-xxxxx` from an unambiguous alphabet.
pub fn recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let rng = SystemRandom::new();
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            rng.fill(&mut bytes).expect("the OS has randomness");
            let chars: String = bytes
                .iter()
                .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// What a recovery code is stored as: SHA-256 of its normalised form.
pub fn hash_code(code: &str) -> Vec<u8> {
    let normal: String = code
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| *c != ' ')
        .collect();
    ring::digest::digest(&ring::digest::SHA256, normal.as_bytes())
        .as_ref()
        .to_vec()
}

/// Whether `code` is six digits (a TOTP) rather than a recovery code.
pub fn is_totp_code(code: &str) -> bool {
    let code = code.trim();
    code.len() == 6 && code.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_code_checks_and_a_wrong_one_does_not() {
        let totp = totp(&new_secret(), "ada@example.com");
        let code = totp.generate_current().to_string();
        assert!(totp.check_current(&code).is_some());
        assert!(
            totp.to_url()
                .unwrap()
                .starts_with("otpauth://totp/Tienda:ada%40example.com?")
        );
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert!(totp.check_current(wrong).is_none() || wrong == code);
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_the_same_however_typed() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(
            codes
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            10
        );
        assert_eq!(
            hash_code(&codes[0]),
            hash_code(&format!(" {} ", codes[0].to_uppercase()))
        );
        assert!(is_totp_code("123456") && !is_totp_code(&codes[0]));
    }
}
