//! Failed sign-ins per key (`sign_in_failures`): a count that decays by half every half-life,
//! a sliding window kept in one row, and the wait it earns.

use std::time::Duration;

use sqlx::PgConnection;

use crate::error::Result;

/// How a key's failures turn into a wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Failures from which each further attempt waits. The decayed count is rounded: five
    /// failures in a few seconds are 4.999…, and five.
    pub threshold: f64,
    /// The first wait; it doubles with each failure over the threshold.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// The time in which a count halves.
    pub half_life: Duration,
}

/// The wait a key with `f.score` failures (at its last attempt) owes, in SQL, with the rule's
/// threshold, base and cap (seconds) in the parameters named.
macro_rules! wait_sql {
    ($threshold:literal, $base:literal, $cap:literal) => {
        concat!(
            "make_interval(secs => least(",
            $cap,
            "::float8, ",
            $base,
            "::float8 * ",
            "power(2::float8, least(round(f.score) - ",
            $threshold,
            "::float8, 20::float8))))"
        )
    };
}

/// Counts an attempt under `key` before its outcome is known, so parallel guesses cannot all
/// pass one check: `Ok(Some(score))` with the key's new count, or `Ok(None)` while the key
/// still owes a wait (the attempt is then not counted).
pub async fn count_attempt(conn: &mut PgConnection, key: &str, rule: Rule) -> Result<Option<f64>> {
    const SQL: &str = concat!(
        "INSERT INTO sign_in_failures AS f (key, score, last_at) VALUES ($1, 1, now()) \
         ON CONFLICT (key) DO UPDATE \
           SET score = f.score * power(0.5::float8, \
                   extract(epoch FROM now() - f.last_at)::float8 / $2::float8) + 1, \
               last_at = now() \
           WHERE NOT (round(f.score) >= $3::float8 AND now() < f.last_at + ",
        wait_sql!("$3", "$4", "$5"),
        ") RETURNING score"
    );
    Ok(sqlx::query_scalar(SQL)
        .bind(key)
        .bind(rule.half_life.as_secs_f64())
        .bind(rule.threshold)
        .bind(rule.base.as_secs_f64())
        .bind(rule.cap.as_secs_f64())
        .fetch_optional(conn)
        .await?)
}

/// How long `key` still waits (zero when it does not).
pub async fn wait_of(conn: &mut PgConnection, key: &str, rule: Rule) -> Result<Duration> {
    const SQL: &str = concat!(
        "SELECT greatest(extract(epoch FROM f.last_at + ",
        wait_sql!("$2", "$3", "$4"),
        " - now())::float8, 0) FROM sign_in_failures f WHERE f.key = $1 AND round(f.score) >= $2::float8"
    );
    let seconds: Option<f64> = sqlx::query_scalar(SQL)
        .bind(key)
        .bind(rule.threshold)
        .bind(rule.base.as_secs_f64())
        .bind(rule.cap.as_secs_f64())
        .fetch_optional(conn)
        .await?;
    Ok(Duration::from_secs_f64(seconds.unwrap_or(0.0)))
}

/// Takes back one counted attempt of `key` that turned out not to be a failure.
pub async fn uncount(conn: &mut PgConnection, key: &str) -> Result<()> {
    sqlx::query("UPDATE sign_in_failures SET score = greatest(score - 1, 0) WHERE key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets `key`'s failures.
pub async fn forget(conn: &mut PgConnection, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM sign_in_failures WHERE key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Drops keys untouched for a day (their counts have decayed to nothing), so made-up emails
/// and many client addresses do not grow the table without bound.
pub async fn prune(conn: &mut PgConnection) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM sign_in_failures WHERE last_at < now() - interval '1 day'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
