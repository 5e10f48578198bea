//! In a cluster whose NATS runs decentralized JWT authorization (operator mode), the operator
//! mints each component its own NATS user from the Shop's account signing key: allowed only
//! the subjects it publishes and consumes. Against the in-memory API server, the real
//! PostgreSQL and a real nats-server in operator mode.

use std::time::Duration;

use serde_json::json;
use tienda_kit::testing::apiserver::ApiServer;
use tienda_provision::nats_auth::{self, AccountKeys};

use crate::verifier::{OPERATOR_USER, operator_rules};

const NS: &str = "shops";

/// A nats-server trusting only `keys`' operator and account, stopped when dropped.
struct OperatorModeNats {
    child: std::process::Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Drop for OperatorModeNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn operator_mode_nats(keys: &AccountKeys) -> OperatorModeNats {
    let binary = tienda_local::tools::find_nats_server()
        .expect("nats-server ≥ 2.10 ($NATS_SERVER, set by tests/run)");
    let port = tienda_local::infra::free_port().unwrap();
    let dir = std::env::temp_dir().join(format!("tienda-nats-jwt-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n{}",
        dir.join("js").display(),
        nats_auth::server_config(keys).unwrap()
    );
    std::fs::write(dir.join("nats.conf"), config).unwrap();
    let child = std::process::Command::new(binary)
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    OperatorModeNats {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        dir,
    }
}

#[tokio::test]
async fn each_component_gets_its_own_nats_user_allowed_only_its_subjects() {
    tienda_kit::install_crypto_provider();
    let keys = AccountKeys::generate();
    let nats = operator_mode_nats(&keys);
    let server =
        std::sync::Arc::new(ApiServer::with_rules(operator_rules().clone(), OPERATOR_USER).await);
    let options = crate::whole_operator::store_pg_admin(&server);
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // The operator's own user (it provisions streams), and the account signing key, as an
    // administrator would store them from `nsc`.
    server.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "nats-admin", "namespace": NS},
        "data": {"nats.creds": b64(&keys.user_creds("tienda-operator", None).unwrap())}}));
    server.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "nats-signing", "namespace": NS},
        "data": {"account": b64(&keys.account_public_key().unwrap()),
                 "signingKey": b64(&keys.signing_seed)}}));
    let shop = format!("j{}", &uuid::Uuid::now_v7().simple().to_string()[23..]);
    server.create(json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": shop, "namespace": NS},
        "spec": {"version": "0.1.0",
                 "postgres": {"host": options.get_host(), "port": options.get_port(),
                              "adminSecretRef": {"name": "pg-admin"}, "sslMode": "Disable"},
                 "nats": {"url": nats.url, "credentialsSecretRef": {"name": "nats-admin"},
                          "accountSigningKeySecretRef": {"name": "nats-signing"}}}}));

    let rollouts = server.roll_out_deployments(Duration::from_millis(50));
    let port = tienda_local::infra::free_port().unwrap();
    let operator = tokio::spawn(tienda_operator::run::run_with(
        server.client("tienda-system"),
        ([127, 0, 0, 1], port).into(),
    ));
    let ready = || {
        server
            .get("tienda.dev/v1alpha1", "Shop", NS, &shop)
            .and_then(|s| s["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    };
    for _ in 0..600 {
        if ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready(),
        "the Shop is not Ready within a minute: {}",
        [
            "auth",
            "products",
            "orders",
            "payments",
            "notifications",
            "gateway"
        ]
        .map(|c| server
            .get("tienda.dev/v1alpha1", "Service", NS, &format!("{shop}-{c}"))
            .map(|s| s["status"].to_string())
            .unwrap_or_default())
        .join("\n")
    );

    // Products' pods mount its own identity; the gateway's mount none.
    let volumes = |component: &str| {
        server
            .get("apps/v1", "Deployment", NS, &format!("{shop}-{component}"))
            .unwrap()["spec"]["template"]["spec"]["volumes"]
            .clone()
    };
    assert!(
        volumes("products")
            .to_string()
            .contains(&format!("{shop}-products-nats")),
        "{}",
        volumes("products")
    );
    assert!(!volumes("gateway").to_string().contains("nats"));
    assert!(
        server
            .get("v1", "Secret", NS, &format!("{shop}-gateway-nats"))
            .is_none()
    );
    let stored = server
        .get("v1", "Secret", NS, &format!("{shop}-products-nats"))
        .expect("products' NATS identity");
    let creds = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(stored["data"]["nats.creds"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let file = nats.dir.join("products.creds");
    std::fs::write(&file, creds).unwrap();

    // As products: its own events are stored, auth's are refused.
    let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_credentials_file(&file)
        .await
        .unwrap()
        .custom_inbox_prefix("_INBOX_products")
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(&nats.url)
        .await
        .expect("products' identity is let in");
    let js = async_nats::jetstream::new(client.clone());
    js.publish("tienda.product.probe", "{}".into())
        .await
        .unwrap()
        .await
        .expect("the PRODUCT stream the operator provisioned takes products' events");
    client
        .publish("tienda.user.registered", "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("publishing a user event as products was not refused")
        .unwrap();
    assert!(refused.contains("tienda.user.registered"), "{refused}");

    operator.abort();
    rollouts.abort();
}
