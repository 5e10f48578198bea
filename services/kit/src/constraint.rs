//! Database constraint violations as client errors. The schema enforces uniqueness, references
//! and checks; when a write breaks one, the constraint's name says which rule the client broke
//! (`users_email_key`: the email is taken). A service lists the constraints its clients can
//! break and the error each means; any other database error stays a database error (a 500 that
//! is logged, never shown).

/// Which kind of constraint a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `UNIQUE` or a primary key (SQLSTATE 23505).
    Unique,
    /// A foreign key (23503).
    ForeignKey,
    /// A `CHECK` (23514).
    Check,
    /// `NOT NULL` (23502).
    NotNull,
}

/// A constraint a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Its name, as in the migration (`categories_slug_key`).
    pub constraint: &'a str,
}

/// The constraint `err` reports broken, if it is a constraint violation that names one.
pub fn violation(err: &sqlx::Error) -> Option<Violation<'_>> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let kind = match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation => Kind::Unique,
        sqlx::error::ErrorKind::ForeignKeyViolation => Kind::ForeignKey,
        sqlx::error::ErrorKind::CheckViolation => Kind::Check,
        sqlx::error::ErrorKind::NotNullViolation => Kind::NotNull,
        _ => return None,
    };
    Some(Violation {
        kind,
        constraint: db.constraint()?,
    })
}

/// A constraint's name and the error its violation means.
pub type Meaning<'a, E> = (&'a str, fn() -> E);

/// Translates `err`: a violation of a constraint named in `meanings` becomes the error paired
/// with it; anything else becomes `E` as a database error.
///
/// ```ignore
/// .map_err(|e| constraint::translate(e, &[("users_email_key", || Error::EmailTaken)]))
/// ```
pub fn translate<E: From<sqlx::Error>>(err: sqlx::Error, meanings: &[Meaning<'_, E>]) -> E {
    let meaning = violation(&err).and_then(|violated| {
        meanings
            .iter()
            .find(|(name, _)| *name == violated.constraint)
            .map(|(_, meaning)| meaning)
    });
    match meaning {
        Some(meaning) => meaning(),
        None => E::from(err),
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, PgConnection};

    use super::*;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Taken,
        NoParent,
        Database(String),
    }

    impl From<sqlx::Error> for TestError {
        fn from(err: sqlx::Error) -> Self {
            Self::Database(err.to_string())
        }
    }

    const MEANINGS: &[Meaning<'_, TestError>] = &[
        ("things_slug_key", || TestError::Taken),
        ("things_parent_fkey", || TestError::NoParent),
    ];

    /// A session with temporary tables (gone with the session) on the test server.
    async fn session() -> PgConnection {
        let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (source /work/infra/env)");
        let mut conn = PgConnection::connect(&url).await.expect("test PostgreSQL");
        sqlx::raw_sql(
            "CREATE TEMP TABLE things (id int PRIMARY KEY, \
               slug text NOT NULL CONSTRAINT things_slug_key UNIQUE, \
               parent int CONSTRAINT things_parent_fkey REFERENCES things (id), \
               stock int CONSTRAINT things_stock_check CHECK (stock >= 0)); \
             INSERT INTO things (id, slug) VALUES (1, 'one')",
        )
        .execute(&mut conn)
        .await
        .expect("temporary table");
        conn
    }

    async fn insert(conn: &mut PgConnection, sql: &'static str) -> sqlx::Error {
        sqlx::query(sql)
            .execute(conn)
            .await
            .expect_err("the write breaks a constraint")
    }

    #[tokio::test]
    async fn each_kind_of_violation_is_told_with_its_constraint() {
        let mut conn = session().await;

        let unique = insert(&mut conn, "INSERT INTO things (id, slug) VALUES (2, 'one')").await;
        let foreign = insert(
            &mut conn,
            "INSERT INTO things (id, slug, parent) VALUES (2, 'b', 9)",
        )
        .await;
        let check = insert(
            &mut conn,
            "INSERT INTO things (id, slug, stock) VALUES (2, 'b', -1)",
        )
        .await;

        assert_eq!(
            violation(&unique),
            Some(Violation {
                kind: Kind::Unique,
                constraint: "things_slug_key"
            })
        );
        assert_eq!(
            violation(&foreign),
            Some(Violation {
                kind: Kind::ForeignKey,
                constraint: "things_parent_fkey"
            })
        );
        assert_eq!(
            violation(&check),
            Some(Violation {
                kind: Kind::Check,
                constraint: "things_stock_check"
            })
        );
    }

    #[tokio::test]
    async fn a_listed_constraint_becomes_its_error_and_anything_else_a_database_error() {
        let mut conn = session().await;

        let taken = insert(&mut conn, "INSERT INTO things (id, slug) VALUES (2, 'one')").await;
        let orphan = insert(
            &mut conn,
            "INSERT INTO things (id, slug, parent) VALUES (2, 'b', 9)",
        )
        .await;
        let unlisted = insert(
            &mut conn,
            "INSERT INTO things (id, slug, stock) VALUES (2, 'b', -1)",
        )
        .await;
        let syntax = insert(&mut conn, "INSERT INTO nowhere VALUES (1)").await;

        assert_eq!(translate(taken, MEANINGS), TestError::Taken);
        assert_eq!(translate(orphan, MEANINGS), TestError::NoParent);
        assert!(matches!(
            translate(unlisted, MEANINGS),
            TestError::Database(m) if m.contains("things_stock_check")
        ));
        assert!(matches!(
            translate(syntax, MEANINGS),
            TestError::Database(m) if m.contains("nowhere")
        ));
    }

    #[test]
    fn an_error_from_elsewhere_is_no_violation() {
        assert_eq!(violation(&sqlx::Error::RowNotFound), None);
    }
}
