//! PostgreSQL: a component's database and the login role that owns it.
//!
//! Run with an administrative connection (the Shop's admin Secret). Idempotent: a second run
//! against the same spec and password changes nothing. The password comes from the Service's
//! credentials Secret (created once by the caller, never regenerated); a role whose password
//! drifted is set back to it.

use sqlx::{Connection, PgConnection, PgPool, Row, postgres::PgConnectOptions};
use tienda_crds::{Component, service::DatabaseSpec};

use crate::Outcome;

/// Why a database could not be provisioned or dropped.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The name is not a safe PostgreSQL identifier (the CRD pattern forbids this; a
    /// hand-made object might not).
    #[error(
        "{0:?} is not a valid database or role name: use lower-case letters, digits and _ (at most 63)"
    )]
    InvalidName(String),
    /// The role exists and another owner made it: it is never re-passworded or dropped.
    #[error(
        "role {name} belongs to {holder}, not {owner}: the operator never changes or drops a role \
         it did not create; give the Shop another name (or namespace), or remove the role"
    )]
    NotOurs {
        /// The role (and database) name.
        name: String,
        /// Who made it, from its comment.
        holder: String,
        /// Who asked.
        owner: String,
    },
    /// PostgreSQL refused.
    #[error("{what}: {source}")]
    Postgres {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl DatabaseError {
    /// A short reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DatabaseError::InvalidName(_) => "InvalidName",
            DatabaseError::NotOurs { .. } => "DatabaseOwnedByAnother",
            DatabaseError::Postgres { .. } => "PostgresError",
        }
    }
}

fn pg(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DatabaseError {
    let what = what.into();
    move |source| DatabaseError::Postgres { what, source }
}

/// `name` if it is a plain lower-case identifier, quoted for SQL.
fn ident(name: &str) -> Result<String, DatabaseError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(format!("\"{name}\""))
    } else {
        Err(DatabaseError::InvalidName(name.to_owned()))
    }
}

/// A SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The database (and role) name of a component, in PostgreSQL identifier form.
///
/// Readable when that is unambiguous: `<namespace>_<shop>_<component>` for a namespace of
/// letters and digits (`tienda up` passes [`crate::environment::LOCAL_NAMESPACE`], so its
/// databases are `tienda_<shop>_<component>`). A namespace holding `-` (or starting with a digit)
/// makes that form ambiguous — `a-b`/`c` and `a`/`b-c` both read `a_b_c` — so such names carry
/// a 64-bit hash of `<namespace>/<shop>/<component>`: `a_b_c_orders_<16 hex>`. Names longer
/// than 63 bytes are cut and suffixed with a hash of the full name.
///
/// Databases made under the earlier, always-readable scheme keep their names: the operator
/// keeps the name a Service (or a kept credentials Secret) already records.
pub fn database_name(namespace: &str, shop: &str, component: Component) -> String {
    let ambiguous = namespace.contains(|c: char| !c.is_ascii_alphanumeric())
        || namespace.starts_with(|c: char| c.is_ascii_digit());
    if !ambiguous {
        return legacy_database_name(namespace, shop, component);
    }
    let full = readable_name(namespace, shop, component);
    let hash = crate::stable_hash::fnv1a(format!("{namespace}/{shop}/{component}").bytes());
    let keep = full.len().min(63 - 17);
    format!("{}_{hash:016x}", &full[..keep])
}

/// The name [`database_name`] gave before it hashed ambiguous names: the readable form, cut
/// and hashed past 63 bytes. The operator keeps it for databases made under it.
pub fn legacy_database_name(namespace: &str, shop: &str, component: Component) -> String {
    let full = readable_name(namespace, shop, component);
    if full.len() <= 63 {
        return full;
    }
    let hash = crate::stable_hash::fnv1a(full.bytes());
    format!("{}_{:08x}", &full[..54], hash as u32)
}

/// `<namespace>_<shop>_<component>` with every other character `_`, lower case, and `t_` in
/// front of a leading digit: the name every database had before [`database_name`] hashed the
/// ambiguous ones.
pub fn readable_name(namespace: &str, shop: &str, component: Component) -> String {
    let full: String = format!("{namespace}_{shop}_{component}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if full.starts_with(|c: char| c.is_ascii_digit()) {
        format!("t_{full}")
    } else {
        full
    }
}

/// A new random password: 64 hex characters (244 bits) from the OS's randomness.
pub fn generate_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A 32-byte secret key, base64 (standard): what `AUTH_KEY_ENCRYPTION_KEY` takes. Drawn from
/// the OS generator (two v4 UUIDs: 244 random bits).
pub fn generate_key() -> String {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(key)
}

async fn exec(admin: &PgPool, sql: String, what: &str) -> Result<(), DatabaseError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(admin)
        .await
        .map_err(pg(what))?;
    Ok(())
}

/// Creates (or repairs) the role and the database, grants, and extensions. The role is named
/// after the database, may log in with `password`, owns the database and its `public` schema,
/// and no other role may connect to it.
pub async fn ensure_database(
    admin: &PgPool,
    admin_options: &PgConnectOptions,
    spec: &DatabaseSpec,
    password: &str,
    owner: &str,
) -> Result<Outcome, DatabaseError> {
    let name = ident(&spec.name)?;
    let mut changed = Vec::new();
    let marked = check_owner(admin, &spec.name, owner).await?;

    let role = sqlx::query("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
        .bind(&spec.name)
        .fetch_optional(admin)
        .await
        .map_err(pg("looking up the role"))?;
    let limit = spec.connection_limit.unwrap_or(-1);
    match role {
        None => {
            exec(
                admin,
                format!(
                    "CREATE ROLE {name} LOGIN PASSWORD {} CONNECTION LIMIT {limit}",
                    literal(password)
                ),
                "creating the role",
            )
            .await?;
            changed.push("role".to_owned());
        }
        Some(row) => {
            if !password_matches(admin_options, &spec.name, password).await {
                exec(
                    admin,
                    format!("ALTER ROLE {name} LOGIN PASSWORD {}", literal(password)),
                    "resetting the role's password",
                )
                .await?;
                changed.push("password".to_owned());
            }
            if row.get::<i32, _>("rolconnlimit") != limit {
                exec(
                    admin,
                    format!("ALTER ROLE {name} CONNECTION LIMIT {limit}"),
                    "setting the connection limit",
                )
                .await?;
                changed.push("connectionLimit".to_owned());
            }
        }
    }

    if !marked {
        exec(
            admin,
            format!(
                "COMMENT ON ROLE {name} IS {}",
                literal(&format!("{OWNER_MARK}{owner}"))
            ),
            "recording the role's owner",
        )
        .await?;
    }

    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&spec.name)
            .fetch_one(admin)
            .await
            .map_err(pg("looking up the database"))?;
    if !exists {
        // One statement per call: CREATE DATABASE cannot run in a transaction block.
        exec(
            admin,
            format!("CREATE DATABASE {name} OWNER {name}"),
            "creating the database",
        )
        .await?;
        exec(
            admin,
            format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"),
            "revoking public access",
        )
        .await?;
        exec(
            admin,
            format!("GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {name}"),
            "granting access",
        )
        .await?;
        changed.push("database".to_owned());
    }

    // Inside the database: the role owns the public schema; extensions exist.
    let mut conn = PgConnection::connect_with(&admin_options.clone().database(&spec.name))
        .await
        .map_err(pg("connecting to the new database"))?;
    let schema_owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(pg("reading the public schema"))?;
    if schema_owner != spec.name {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER SCHEMA public OWNER TO {name}"
        )))
        .execute(&mut conn)
        .await
        .map_err(pg("handing the public schema to the role"))?;
        if exists {
            changed.push("schemaOwner".to_owned());
        }
    }
    for extension in &spec.extensions {
        let installed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1)")
                .bind(extension)
                .fetch_one(&mut conn)
                .await
                .map_err(pg("looking up extensions"))?;
        if !installed {
            let quoted = format!("\"{}\"", extension.replace('"', ""));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE EXTENSION IF NOT EXISTS {quoted}"
            )))
            .execute(&mut conn)
            .await
            .map_err(pg(format!(
                "creating extension {extension} (is postgresql-contrib installed?)"
            )))?;
            changed.push(format!("extension {extension}"));
        }
    }
    conn.close().await.ok();

    Ok(match (role_is_new(&changed), exists) {
        (true, false) => Outcome::Created,
        _ if changed.is_empty() => Outcome::Unchanged,
        _ => Outcome::Updated(changed),
    })
}

/// The comment on a role that names who made it: `tienda.dev/owner=<owner>` (a Shop's
/// `<namespace>/<name>`, or `tienda up`'s shop). Two Shops whose names map to one role name
/// (`a-b`/`c` and `a`/`b-c` both give `a_b_c_<component>`) must not share, re-password or drop
/// each other's role and database.
pub const OWNER_MARK: &str = "tienda.dev/owner=";

/// Refuses a role another owner made; returns whether it already carries `owner`'s mark. A
/// role without a comment (made before owners were recorded) is adopted.
async fn check_owner(admin: &PgPool, role: &str, owner: &str) -> Result<bool, DatabaseError> {
    let comment: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(admin)
    .await
    .map_err(pg("reading the role's owner"))?;
    match comment.flatten() {
        None => Ok(false),
        Some(mark) if mark.strip_prefix(OWNER_MARK) == Some(owner) => Ok(true),
        Some(mark) => Err(DatabaseError::NotOurs {
            name: role.to_owned(),
            holder: mark.strip_prefix(OWNER_MARK).map_or_else(
                || format!("whoever wrote the comment {mark:?}"),
                str::to_owned,
            ),
            owner: owner.to_owned(),
        }),
    }
}

fn role_is_new(changed: &[String]) -> bool {
    changed.first().is_some_and(|c| c == "role")
}

/// Whether the role can log in with `password` (checked by logging in: PostgreSQL keeps only
/// a SCRAM verifier).
async fn password_matches(admin_options: &PgConnectOptions, role: &str, password: &str) -> bool {
    let options = admin_options
        .clone()
        .username(role)
        .password(password)
        .database("postgres");
    match PgConnection::connect_with(&options).await {
        Ok(conn) => {
            conn.close().await.ok();
            true
        }
        Err(sqlx::Error::Database(err)) => {
            // 28P01: wrong password. Anything else (e.g. no CONNECT on `postgres`) means the
            // password itself was accepted.
            err.code().as_deref() != Some("28P01")
        }
        Err(_) => false,
    }
}

/// Whether the database exists.
pub async fn database_exists(admin: &PgPool, name: &str) -> Result<bool, DatabaseError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .map_err(pg("looking up the database"))
}

/// Drops the database (terminating its connections first) and its role. For reclaim policy
/// `Delete` only; a missing database or role is not an error.
pub async fn drop_database(admin: &PgPool, name: &str, owner: &str) -> Result<(), DatabaseError> {
    let quoted = ident(name)?;
    check_owner(admin, name, owner).await?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(name)
        .fetch_all(admin)
        .await
        .map_err(pg("terminating connections"))?;
    exec(
        admin,
        format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"),
        "dropping the database",
    )
    .await?;
    exec(
        admin,
        format!("DROP ROLE IF EXISTS {quoted}"),
        "dropping the role",
    )
    .await?;
    tracing::info!(database = name, "database and role dropped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_safe_identifiers_and_stay_unique_when_cut() {
        assert_eq!(
            database_name("shop", "my-shop", Component::Orders),
            "shop_my_shop_orders"
        );
        let hashed = database_name("my-ns", "shop-1", Component::Orders);
        assert!(hashed.starts_with("my_ns_shop_1_orders_"), "{hashed}");
        assert_eq!(hashed.len(), "my_ns_shop_1_orders_".len() + 16);
        assert!(database_name("1ns", "s", Component::Auth).starts_with("t_1ns_s_auth_"));
        let long_ns = "n".repeat(60);
        let a = database_name(&long_ns, "alpha", Component::Notifications);
        let b = database_name(&long_ns, "bravo", Component::Notifications);
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert!(ident(&a).is_ok() && ident(&b).is_ok());
    }

    #[test]
    fn names_from_different_namespaces_never_collide() {
        // Each pair reads the same in the readable form.
        for ((ns_a, shop_a), (ns_b, shop_b)) in [
            (("a-b", "c"), ("a", "b-c")),
            (("a--b", "c"), ("a-", "b-c")),
            (("1ns", "s"), ("t", "1ns-s")),
            (("team-x", "shop"), ("team", "x-shop")),
        ] {
            assert_eq!(
                readable_name(ns_a, shop_a, Component::Orders),
                readable_name(ns_b, shop_b, Component::Orders)
            );
            let a = database_name(ns_a, shop_a, Component::Orders);
            let b = database_name(ns_b, shop_b, Component::Orders);
            assert_ne!(a, b, "{ns_a}/{shop_a} and {ns_b}/{shop_b}");
            assert!(ident(&a).is_ok() && ident(&b).is_ok(), "{a} {b}");
        }
        // Long hyphenated names stay valid identifiers.
        let long = database_name(&"n-".repeat(30), &"s".repeat(49), Component::Notifications);
        assert_eq!(long.len(), 63);
        assert!(ident(&long).is_ok());
    }

    #[test]
    fn tienda_up_names_databases_after_its_shop_and_component() {
        assert_eq!(
            database_name(
                crate::environment::LOCAL_NAMESPACE,
                "my-shop",
                Component::Products
            ),
            "tienda_my_shop_products"
        );
    }

    #[test]
    fn only_plain_lower_case_identifiers_are_accepted() {
        assert_eq!(ident("orders").unwrap(), "\"orders\"");
        assert_eq!(ident("shop_1_orders").unwrap(), "\"shop_1_orders\"");
        for bad in [
            "",
            "Orders",
            "1orders",
            "orders;drop",
            "o\"x",
            &"a".repeat(64),
        ] {
            assert!(ident(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn literals_escape_quotes_and_passwords_are_long_and_random() {
        assert_eq!(literal("it's"), "'it''s'");
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
