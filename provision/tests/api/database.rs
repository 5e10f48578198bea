use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tienda_crds::service::DatabaseSpec;
use tienda_provision::{
    Outcome,
    database::{database_exists, drop_database, ensure_database, generate_password},
};

fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL is not set: run the tests with tests/run")
}

async fn admin() -> (PgPool, PgConnectOptions) {
    let options: PgConnectOptions = admin_url().parse().unwrap();
    (
        PgPool::connect_with(options.clone()).await.unwrap(),
        options,
    )
}

fn spec(extensions: &[&str]) -> DatabaseSpec {
    let name = format!("svc_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    serde_json::from_value(serde_json::json!({"name": name, "extensions": extensions})).unwrap()
}

async fn login(
    options: &PgConnectOptions,
    database: &str,
    user: &str,
    password: &str,
) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect_with(
        &options
            .clone()
            .database(database)
            .username(user)
            .password(password),
    )
    .await
}

/// The owner every test's databases are made for.
const OWNER: &str = "tests/provision";

#[tokio::test]
async fn a_database_and_role_are_created_once_and_usable_with_the_credentials() {
    let (admin, options) = admin().await;
    let spec = spec(&["pg_trgm"]);
    let password = generate_password();
    assert_eq!(
        ensure_database(&admin, &options, &spec, &password, OWNER)
            .await
            .unwrap(),
        Outcome::Created
    );
    assert_eq!(
        ensure_database(&admin, &options, &spec, &password, OWNER)
            .await
            .unwrap(),
        Outcome::Unchanged
    );

    let mut conn = login(&options, &spec.name, &spec.name, &password)
        .await
        .expect("the role logs in");
    sqlx::raw_sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await
        .expect("the role owns its schema");
    let similarity: f32 = sqlx::query_scalar("SELECT similarity('tienda', 'tineda')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(similarity > 0.0, "pg_trgm is installed");
    conn.close().await.unwrap();

    assert!(
        login(&options, &spec.name, &spec.name, "wrong")
            .await
            .is_err()
    );
    drop_database(&admin, &spec.name, OWNER).await.unwrap();
}

#[tokio::test]
async fn another_role_cannot_connect_to_a_components_database() {
    let (admin, options) = admin().await;
    let (mine, theirs) = (spec(&[]), spec(&[]));
    let (p1, p2) = (generate_password(), generate_password());
    ensure_database(&admin, &options, &mine, &p1, OWNER)
        .await
        .unwrap();
    ensure_database(&admin, &options, &theirs, &p2, OWNER)
        .await
        .unwrap();

    let err = login(&options, &mine.name, &theirs.name, &p2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop_database(&admin, &mine.name, OWNER).await.unwrap();
    drop_database(&admin, &theirs.name, OWNER).await.unwrap();
}

#[tokio::test]
async fn a_drifted_password_is_set_back_to_the_secrets() {
    let (admin, options) = admin().await;
    let spec = spec(&[]);
    let password = generate_password();
    ensure_database(&admin, &options, &spec, &password, OWNER)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE \"{}\" PASSWORD 'changed-by-hand'",
        spec.name
    )))
    .execute(&admin)
    .await
    .unwrap();
    let outcome = ensure_database(&admin, &options, &spec, &password, OWNER)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Updated(vec!["password".into()]));
    login(&options, &spec.name, &spec.name, &password)
        .await
        .expect("the Secret's password works again");
    drop_database(&admin, &spec.name, OWNER).await.unwrap();
}

#[tokio::test]
async fn a_database_dropped_out_of_band_is_recreated_and_delete_terminates_connections() {
    let (admin, options) = admin().await;
    let spec = spec(&[]);
    let password = generate_password();
    ensure_database(&admin, &options, &spec, &password, OWNER)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{}\"",
        spec.name
    )))
    .execute(&admin)
    .await
    .unwrap();
    assert!(!database_exists(&admin, &spec.name).await.unwrap());

    let outcome = ensure_database(&admin, &options, &spec, &password, OWNER)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Updated(vec!["database".into()]));
    assert!(database_exists(&admin, &spec.name).await.unwrap());

    // An open session does not stop a Delete.
    let open = login(&options, &spec.name, &spec.name, &password)
        .await
        .unwrap();
    drop_database(&admin, &spec.name, OWNER).await.unwrap();
    assert!(!database_exists(&admin, &spec.name).await.unwrap());
    let role: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&spec.name)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!role, "the role went with the database");
    drop(open);
    drop_database(&admin, &spec.name, OWNER)
        .await
        .expect("dropping twice is fine");
}

#[tokio::test]
async fn a_role_made_for_another_owner_is_never_repassworded_or_dropped() {
    let (admin, options) = admin().await;
    let spec = spec(&[]);
    let theirs = generate_password();
    ensure_database(&admin, &options, &spec, &theirs, "shops-a/b")
        .await
        .unwrap();

    // Another Shop whose name maps to the same role (`shops/a-b` and `shops-a/b`).
    let err = ensure_database(&admin, &options, &spec, &generate_password(), "shops/a-b")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "DatabaseOwnedByAnother");
    assert!(err.to_string().contains("belongs to shops-a/b"), "{err}");
    login(&options, &spec.name, &spec.name, &theirs)
        .await
        .expect("the first owner's password still works");
    let err = drop_database(&admin, &spec.name, "shops/a-b")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "DatabaseOwnedByAnother");
    assert!(
        tienda_provision::database::database_exists(&admin, &spec.name)
            .await
            .unwrap(),
        "not dropped"
    );

    // A role made before owners were recorded is adopted by the first to ask.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "COMMENT ON ROLE {} IS NULL",
        spec.name
    )))
    .execute(&admin)
    .await
    .unwrap();
    ensure_database(&admin, &options, &spec, &theirs, OWNER)
        .await
        .unwrap();
    drop_database(&admin, &spec.name, OWNER).await.unwrap();
}

/// `x-<id>`/`c` and `x`/`<id>-c` read the same in the readable form; with the collision-free
/// names both Shops get a database of their own, each opened only by its own role.
#[tokio::test]
async fn shops_whose_readable_names_collide_each_get_their_own_database() {
    let (admin, options) = admin().await;
    let id = &uuid::Uuid::now_v7().simple().to_string()[20..];
    let pairs = [
        (format!("x-{id}"), "c".to_owned()),
        ("x".to_owned(), format!("{id}-c")),
    ];
    let mut made = Vec::new();
    for (namespace, shop) in &pairs {
        let name = tienda_provision::database::database_name(
            namespace,
            shop,
            tienda_crds::Component::Orders,
        );
        let spec: DatabaseSpec = serde_json::from_value(serde_json::json!({"name": name})).unwrap();
        let password = generate_password();
        let owner = format!("{namespace}/{shop}");
        assert_eq!(
            ensure_database(&admin, &options, &spec, &password, &owner)
                .await
                .unwrap(),
            Outcome::Created,
            "{owner} gets a database of its own"
        );
        made.push((name, password, owner));
    }
    assert_ne!(made[0].0, made[1].0);
    login(&options, &made[1].0, &made[0].0, &made[0].1)
        .await
        .expect_err("one Shop's role cannot open the other's database");
    for (name, password, owner) in &made {
        login(&options, name, name, password).await.unwrap();
        drop_database(&admin, name, owner).await.unwrap();
    }
}
