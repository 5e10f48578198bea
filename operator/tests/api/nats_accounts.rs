//! Shops on one NATS server with their own accounts: the operator's NATS clients are keyed by
//! URL and credentials, so each Shop provisions in its own account, and a rotated credentials
//! Secret gets a new client. Against a real nats-server started with two accounts.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_crds::Shop;

use crate::verifier::{context, get, serve};

/// A nats-server with JetStream and two accounts, stopped when dropped.
struct AccountsServer {
    child: std::process::Child,
    url: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for AccountsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn accounts_server() -> AccountsServer {
    let binary = tienda_local::tools::find_nats_server()
        .expect("nats-server ≥ 2.10 ($NATS_SERVER, set by tests/run)");
    let port = tienda_local::infra::free_port().unwrap();
    let dir = std::env::temp_dir().join(format!("tienda-nats-accounts-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        r#"listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
accounts {{
  SHOP_A: {{ jetstream: enabled, users: [{{user: "a", password: "a-secret"}}] }}
  SHOP_B: {{ jetstream: enabled, users: [{{user: "b", password: "b-secret"}}, {{user: "b2", password: "b2-secret"}}] }}
}}
"#,
        store = dir.join("js").display()
    );
    let file = dir.join("nats.conf");
    std::fs::write(&file, config).unwrap();
    let child = std::process::Command::new(binary)
        .arg("-c")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let server = AccountsServer {
        child,
        url: url.clone(),
        _dir: tempdir::Dir(dir),
    };
    for _ in 0..200 {
        if async_nats::ConnectOptions::with_user_and_password("a".into(), "a-secret".into())
            .connect(&url)
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the nats-server with accounts did not start at {url}");
}

fn shop(name: &str, url: &str, secret: &str) -> Shop {
    let mut shop: Shop = serde_json::from_value(json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": name, "namespace": "shops"},
        "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg-admin"}},
                 "nats": {"url": url, "credentialsSecretRef": {"name": secret}}}
    }))
    .unwrap();
    shop.metadata.uid = Some(format!("{name}-uid"));
    shop
}

fn secret(name: &str, user: &str, password: &str) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "shops"},
           "data": {"username": b64(user), "password": b64(password)}})
}

#[tokio::test]
async fn shops_on_one_nats_use_their_own_accounts_and_a_rotated_secret_gets_a_new_client() {
    let nats = accounts_server().await;
    let at = |name: &str| format!("/api/v1/namespaces/shops/secrets/{name}");
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![
            get(&at("nats-a"), secret("nats-a", "a", "a-secret")),
            get(&at("nats-b"), secret("nats-b", "b", "b-secret")),
            get(&at("nats-a"), secret("nats-a", "a", "a-secret")),
            get(&at("nats-b"), secret("nats-b", "b2", "b2-secret")),
        ],
    );
    let (acme, globex) = (
        shop("acme", &nats.url, "nats-a"),
        shop("globex", &nats.url, "nats-b"),
    );

    let js_a = ctx.jetstream(&acme, "shops").await.unwrap();
    js_a.create_stream(async_nats::jetstream::stream::Config {
        name: "PRODUCT".into(),
        subjects: vec!["product.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let js_b = ctx.jetstream(&globex, "shops").await.unwrap();
    assert!(
        js_b.get_stream("PRODUCT").await.is_err(),
        "globex's context is in its own account: acme's stream is not there (a client keyed \
         by URL alone would be acme's)"
    );
    js_b.create_stream(async_nats::jetstream::stream::Config {
        name: "PRODUCT".into(),
        subjects: vec!["product.>".into()],
        ..Default::default()
    })
    .await
    .expect("the same stream name in another account does not collide");
    assert_eq!(ctx.nats_clients(), 2);

    let again = ctx.jetstream(&acme, "shops").await.unwrap();
    again.get_stream("PRODUCT").await.unwrap();
    assert_eq!(ctx.nats_clients(), 2, "same credentials, same client");

    // globex's Secret is rotated to another user of its account.
    let rotated = ctx.jetstream(&globex, "shops").await.unwrap();
    rotated.get_stream("PRODUCT").await.unwrap();
    assert_eq!(ctx.nats_clients(), 3, "new credentials, a new client");

    // Unused for the idle period, every client is let go: an idle operator holds no NATS
    // connection per Shop, and the rotated credentials' old client does not linger.
    tokio::time::pause();
    tokio::time::advance(tienda_operator::controller::context::NATS_IDLE).await;
    ctx.forget_idle_nats_clients();
    assert_eq!(ctx.nats_clients(), 0);
    tokio::time::resume();

    drop((js_a, js_b, again, rotated));
    drop(ctx);
    server.await.unwrap();
}

#[tokio::test]
async fn two_shops_on_one_account_cannot_share_or_delete_each_others_streams() {
    use tienda_provision::{
        ProvisionError,
        streams::{OWNER, delete_service, provision_service},
    };
    let nats = accounts_server().await;
    let client = async_nats::ConnectOptions::with_user_and_password("a".into(), "a-secret".into())
        .connect(&nats.url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let spec: tienda_crds::ServiceSpec = serde_json::from_value(json!({
        "shop": "acme", "component": "orders", "image": "x",
        "streams": [{"name": "ORDER", "subjects": ["order.>"]}],
        "consumers": [{"name": "orders-self", "stream": "ORDER", "filterSubjects": ["order.placed"]}]
    }))
    .unwrap();

    // A stream made before owners were recorded is adopted by the first Shop.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ORDER".into(),
        subjects: vec!["order.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for item in provision_service(&js, &spec, 1, Some("shops/acme")).await {
        item.result.unwrap_or_else(|e| panic!("{}: {e}", item.name));
    }
    let owner = |name: &'static str| {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(name).await.ok()?;
            stream
                .info()
                .await
                .unwrap()
                .config
                .metadata
                .get(OWNER)
                .cloned()
        }
    };
    assert_eq!(owner("ORDER").await.as_deref(), Some("shops/acme"));

    // Another Shop on the same account is refused every item, with what to do.
    let report = provision_service(&js, &spec, 1, Some("shops/globex")).await;
    assert_eq!(report.len(), 3);
    for item in &report {
        match &item.result {
            Err(err @ ProvisionError::Owned { owner, .. }) => {
                assert_eq!(owner, "shops/acme");
                assert_eq!(err.reason(), "StreamOwnedByAnotherShop");
                assert!(err.to_string().contains("its own NATS account"), "{err}");
            }
            other => panic!("{}: {other:?}", item.name),
        }
    }

    // globex's reclaimPolicy Delete deletes nothing of acme's.
    assert_eq!(
        delete_service(&js, &spec, "shops/globex").await.unwrap(),
        Vec::<String>::new()
    );
    assert!(owner("ORDER").await.is_some());
    let dead_letters = tienda_events::dead_letter::stream("orders");
    assert!(js.get_stream(&dead_letters).await.is_ok());

    // acme's deletes its stream, its consumer and its dead-letter stream.
    let deleted = delete_service(&js, &spec, "shops/acme").await.unwrap();
    assert_eq!(
        deleted,
        vec![
            "ORDER/orders-self".to_owned(),
            "ORDER".into(),
            dead_letters.clone()
        ]
    );
    assert!(js.get_stream("ORDER").await.is_err());
    assert!(js.get_stream(&dead_letters).await.is_err());
}

/// A thousand Shops converging at once must not hold a NATS connection each: the cache keeps
/// at most `NATS_MAX_CLIENTS`, letting the least recently used go.
#[tokio::test]
async fn the_nats_client_cache_is_bounded_and_lets_the_least_recently_used_go() {
    use tienda_operator::controller::context::NATS_MAX_CLIENTS;
    let nats = tienda_kit::testing::NatsServer::start();
    let shops = NATS_MAX_CLIENTS + 8;
    let at = |i: usize| format!("/api/v1/namespaces/shops/secrets/nats-{i}");
    let token = |i: usize| {
        use base64::Engine as _;
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": format!("nats-{i}"), "namespace": "shops"},
               "data": {"token": base64::engine::general_purpose::STANDARD.encode(format!("t{i}"))}})
    };
    let mut script: Vec<_> = (0..shops).map(|i| get(&at(i), token(i))).collect();
    script.push(get(&at(shops - 1), token(shops - 1)));
    script.push(get(&at(0), token(0)));
    let (ctx, handle) = context();
    let server = serve(handle, script);
    for i in 0..shops {
        let shop = shop(&format!("s{i}"), &nats.url(), &format!("nats-{i}"));
        ctx.jetstream(&shop, "shops").await.unwrap();
        assert!(
            ctx.nats_clients() <= NATS_MAX_CLIENTS,
            "{}",
            ctx.nats_clients()
        );
    }
    assert_eq!(ctx.nats_clients(), NATS_MAX_CLIENTS);
    // The newest is kept (no new client), the oldest went (a new one, the cache still full).
    let newest = shop(
        &format!("s{}", shops - 1),
        &nats.url(),
        &format!("nats-{}", shops - 1),
    );
    ctx.jetstream(&newest, "shops").await.unwrap();
    let oldest = shop("s0", &nats.url(), "nats-0");
    let js = ctx.jetstream(&oldest, "shops").await.unwrap();
    js.query_account().await.expect("the new client works");
    assert_eq!(ctx.nats_clients(), NATS_MAX_CLIENTS);
    drop(ctx);
    server.await.unwrap();
}
