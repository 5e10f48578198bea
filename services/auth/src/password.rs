//! Passwords: the policy (length and strength by zxcvbn, not a regex; must not contain the
//! email) and Argon2id at OWASP's parameters (19 MiB memory, 2 iterations, 1 lane).

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// Shortest password accepted (characters).
pub const MIN_LENGTH: usize = 10;
/// Longest password accepted (characters); bounds hashing cost.
pub const MAX_LENGTH: usize = 128;

/// Argon2id with OWASP's recommended parameters: m = 19456 KiB, t = 2, p = 1.
pub fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19_456, 2, 1, None).expect("valid parameters"),
    )
}

/// What is wrong with a password, for the `errors` of a 422.
pub fn violations(password: &str, email: &str, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let length = password.chars().count();
    if length < MIN_LENGTH {
        problems.push(format!("must be at least {MIN_LENGTH} characters"));
    }
    if length > MAX_LENGTH {
        problems.push(format!("must be at most {MAX_LENGTH} characters"));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.chars().count() >= 3 && lower.contains(&local) {
        problems.push("must not contain your email address".into());
    }
    if problems.is_empty() {
        let strength = zxcvbn::zxcvbn(password, &[email, name, "tienda"]);
        if u8::from(strength.score()) < 3 {
            let hint = strength
                .feedback()
                .and_then(|f| f.warning().map(|w| w.to_string()))
                .unwrap_or_else(|| "it is too easy to guess".into());
            problems.push(format!("is too weak: {hint}; use a longer passphrase"));
        }
    }
    problems
}

/// Hashes a password (CPU-heavy: from async code use [`hash_off_thread`]).
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .expect("the OS has randomness");
    argon2()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .expect("hashing cannot fail with valid parameters")
        .to_string()
}

/// Checks a password against a stored hash in constant time (CPU-heavy).
pub fn verify(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// [`hash`] on the blocking pool, so the async workers keep serving.
pub async fn hash_off_thread(password: String) -> Result<String, crate::error::Error> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))
}

/// [`verify`] on the blocking pool.
pub async fn verify_off_thread(
    stored: String,
    password: String,
) -> Result<bool, crate::error::Error> {
    tokio::task::spawn_blocking(move || verify(&stored, &password))
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_weak_and_email_containing_passwords_are_refused() {
        assert!(!violations("short", "ada@example.com", "Ada").is_empty());
        assert!(
            !violations("password123", "ada@example.com", "Ada").is_empty(),
            "weak"
        );
        assert!(
            !violations("adalovelace-rules-1843!", "adalovelace@example.com", "Ada").is_empty()
        );
        assert!(violations("correct horse battery staple 42", "ada@example.com", "Ada").is_empty());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery staple 42");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&h, "correct horse battery staple 42"));
        assert!(!verify(&h, "correct horse battery staple 43"));
        assert!(!verify("not a hash", "x"));
    }
}
