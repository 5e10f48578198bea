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
        Params::new(MEMORY_KIB, 2, 1, None).expect("valid parameters"),
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

/// Argon2id's memory per hash, in KiB (OWASP's m = 19456).
pub const MEMORY_KIB: u32 = 19_456;

/// Password hashing for requests: on the blocking pool, at most as many hashes at once as the
/// memory budget holds. A request that finds no room within the wait gets
/// [`crate::error::Error::Busy`] (503, `Retry-After`) instead of queueing without bound: an
/// unauthenticated burst must not be able to take the process's memory.
#[derive(Debug, Clone)]
pub struct Hasher {
    room: std::sync::Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
}

impl Hasher {
    /// Room for `memory_mib` MiB of hashing (at least one hash); requests wait up to `wait`.
    pub fn new(memory_mib: u32, wait: std::time::Duration) -> Self {
        let hashes = (u64::from(memory_mib) * 1024 / u64::from(MEMORY_KIB)).max(1) as usize;
        Self {
            room: std::sync::Arc::new(tokio::sync::Semaphore::new(hashes)),
            wait,
        }
    }

    /// How many more hashes may start now.
    pub fn room_left(&self) -> usize {
        self.room.available_permits()
    }

    async fn room(&self) -> Result<tokio::sync::OwnedSemaphorePermit, crate::error::Error> {
        match tokio::time::timeout(self.wait, self.room.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(crate::error::Error::Busy),
        }
    }

    /// [`hash`], bounded.
    pub async fn hash(&self, password: String) -> Result<String, crate::error::Error> {
        let permit = self.room().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash(&password)
        })
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))
    }

    /// [`verify`], bounded.
    pub async fn verify(
        &self,
        stored: String,
        password: String,
    ) -> Result<bool, crate::error::Error> {
        let permit = self.room().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify(&stored, &password)
        })
        .await
        .map_err(|e| crate::error::Error::Internal(e.to_string()))
    }
}

/// [`hash`] on the blocking pool, so the async workers keep serving (start-up work; requests
/// go through a [`Hasher`]).
pub async fn hash_off_thread(password: String) -> Result<String, crate::error::Error> {
    tokio::task::spawn_blocking(move || hash(&password))
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

    #[tokio::test]
    async fn hashing_beyond_the_memory_budget_is_refused_as_busy_until_room_frees() {
        let hasher = Hasher::new(40, std::time::Duration::ZERO);
        assert_eq!(hasher.room_left(), 2, "two 19 MiB hashes fit in 40 MiB");
        let one = hasher.room().await.unwrap();
        let two = hasher.room().await.unwrap();
        let busy = hasher.hash("correct horse battery staple 42".into()).await;
        assert!(matches!(busy, Err(crate::error::Error::Busy)), "{busy:?}");
        let busy = hasher.verify("x".into(), "y".into()).await;
        assert!(matches!(busy, Err(crate::error::Error::Busy)), "{busy:?}");
        drop(one);
        let hash = hasher
            .hash("correct horse battery staple 42".into())
            .await
            .unwrap();
        assert!(
            hasher
                .verify(hash, "correct horse battery staple 42".into())
                .await
                .unwrap()
        );
        drop(two);

        let problem = tienda_kit::Problem::from(crate::error::Error::Busy);
        assert_eq!(problem.status, 503);
        assert!(hasher.room_left() == 2, "every permit came back");
        let waiting = Hasher::new(19, std::time::Duration::from_millis(200));
        let held = waiting.room().await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(held);
        });
        assert!(
            waiting
                .hash("a longer passphrase here".into())
                .await
                .is_ok(),
            "waits for room"
        );
        release.await.unwrap();
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
