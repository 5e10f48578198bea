//! The whole operator (`tienda run`'s controllers, watches, caches and leader election)
//! against the in-memory API server (`tienda_kit::testing::apiserver`, which keeps state,
//! merges server-side applies, records managedFields and enforces the chart's RBAC), with the
//! real PostgreSQL and nats-server: a Shop converges, a converged Shop costs no request when
//! its objects are reconciled again, and a hand edit comes back.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use tienda_kit::testing::{NatsServer, apiserver::ApiServer};

use crate::verifier::{OPERATOR_USER, operator_rules};

const NS: &str = "shops";

/// The operator's counter of reconciles of `kind`, from its /metrics.
async fn reconciles(metrics: &str, kind: &str) -> u64 {
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    let prefix = format!("tienda_operator_reconciles_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Requests since `before`, leader election's aside.
fn since(before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .filter(|(k, _)| !k.ends_with(" leases"))
        .filter_map(|(k, v)| {
            let delta = v - before.get(k).copied().unwrap_or(0);
            (delta > 0).then(|| (k.clone(), delta))
        })
        .collect()
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within a minute");
}

/// Stores the `pg-admin` Secret of the test PostgreSQL (`DATABASE_URL`) in `server`; returns
/// where that PostgreSQL is.
pub(crate) fn store_pg_admin(server: &ApiServer) -> sqlx::postgres::PgConnectOptions {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run the tests with tests/run");
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let userinfo = url.split("://").nth(1).unwrap().split_once('@').unwrap().0;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    server.create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "pg-admin", "namespace": NS},
        "data": {"username": b64(user), "password": b64(password)}}));
    options
}

#[tokio::test]
async fn a_converged_shop_costs_no_request_and_a_hand_edit_comes_back() {
    tienda_kit::install_crypto_provider();
    let server =
        std::sync::Arc::new(ApiServer::with_rules(operator_rules().clone(), OPERATOR_USER).await);
    let nats = NatsServer::start();
    let options = store_pg_admin(&server);
    let shop = format!("w{}", &uuid::Uuid::now_v7().simple().to_string()[23..]);
    server.create(json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": shop, "namespace": NS},
        "spec": {"version": "0.1.0",
                 "postgres": {"host": options.get_host(), "port": options.get_port(),
                              "adminSecretRef": {"name": "pg-admin"}, "sslMode": "Disable"},
                 "nats": {"url": nats.url()},
                 "components": [{"name": "auth"}, {"name": "gateway"}]}}));

    let rollouts = server.roll_out_deployments(Duration::from_millis(50));
    let port = tienda_local::infra::free_port().unwrap();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let operator = tokio::spawn(tienda_operator::run::run_with(
        server.client("tienda-system"),
        ([127, 0, 0, 1], port).into(),
    ));

    let ready = |server: &ApiServer| {
        server
            .get("tienda.dev/v1alpha1", "Shop", NS, &shop)
            .and_then(|s| s["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    };
    until("the Shop becoming Ready", || ready(&server)).await;
    let stored = server
        .get("apps/v1", "Deployment", NS, &format!("{shop}-auth"))
        .unwrap();
    assert!(
        stored["metadata"]["managedFields"][0]["manager"] == "tienda-operator",
        "the server records who applied what: {}",
        stored["metadata"]["managedFields"]
    );

    // Converged. Touch the Shop (an annotation) and the auth Deployment's status (as its
    // controller does all day) so the Shop and the Service are reconciled again, as a resync
    // would: nothing is sent.
    let before = server.requests();
    let (shops, services) = (
        reconciles(&metrics, "Shop").await,
        reconciles(&metrics, "Service").await,
    );
    server.edit("tienda.dev/v1alpha1", "Shop", NS, &shop, |s| {
        s["metadata"]["annotations"] = json!({"touched": "1"});
    });
    server.edit("apps/v1", "Deployment", NS, &format!("{shop}-auth"), |d| {
        d["status"]["conditions"] = json!([{"type": "Available", "status": "True"}]);
    });
    for _ in 0..600 {
        if reconciles(&metrics, "Shop").await > shops
            && reconciles(&metrics, "Service").await > services
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reconciles(&metrics, "Shop").await > shops,
        "the Shop was reconciled"
    );
    assert!(
        reconciles(&metrics, "Service").await > services,
        "the Service was reconciled"
    );
    let idle = since(&before, &server.requests());
    assert_eq!(
        idle,
        BTreeMap::new(),
        "a reconcile of converged objects reads its caches and writes nothing"
    );

    // A hand edit of the Deployment (another image) is a watch event; the operator puts it
    // back with one apply.
    let before = server.requests();
    let name = format!("{shop}-auth");
    let official = stored["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    server.edit("apps/v1", "Deployment", NS, &name, |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil.example/auth:1");
    });
    until("the image being put back", || {
        server.get("apps/v1", "Deployment", NS, &name).unwrap()["spec"]["template"]["spec"]
            ["containers"][0]["image"]
            == official
    })
    .await;
    let fixed = since(&before, &server.requests());
    // One apply puts it back; a reconcile that reads the cache before the watch has brought
    // that apply's own event may send a second one, which changes nothing.
    let applies = fixed.get("apply deployments").copied().unwrap_or(0);
    assert!((1..=2).contains(&applies), "{fixed:?}");
    let unexpected: Vec<&String> = fixed
        .keys()
        .filter(|k| {
            // The rollout of what was put back may flip Ready and back: status and events.
            !k.starts_with("apply deployments") && !k.ends_with("/status") && *k != "create events"
        })
        .collect();
    assert!(unexpected.is_empty(), "nothing else: {fixed:?}");

    // A Service resource deleted by hand is a deletion the Shop controller hears (the Service
    // watch feeds both controllers): it comes back.
    let gateway = format!("{shop}-gateway");
    let uid = server
        .get("tienda.dev/v1alpha1", "Service", NS, &gateway)
        .unwrap()["metadata"]["uid"]
        .clone();
    server.delete("tienda.dev/v1alpha1", "Service", NS, &gateway);
    until("the deleted Service coming back", || {
        server
            .get("tienda.dev/v1alpha1", "Service", NS, &gateway)
            .is_some_and(|s| s["metadata"]["uid"] != uid)
    })
    .await;

    // Who may reach what: a NetworkPolicy per component, and the Shop's keys, made once.
    let policy = |component: &str| {
        server.get(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            NS,
            &format!("{shop}-{component}"),
        )
    };
    assert!(policy("auth").is_some(), "{:?}", server.requests());
    until("the re-created gateway's NetworkPolicy", || {
        policy("gateway").is_some()
    })
    .await;
    let keys = server
        .get("v1", "Secret", NS, &format!("{shop}-keys"))
        .expect("the Shop's keys");
    assert!(keys["data"]["EVENT_SEALING_KEYS"].is_string());

    // Turned off, the operator deletes the policies it made (at the Service's next reconcile:
    // touch the Deployment's status, as its controller does all day).
    server.edit("tienda.dev/v1alpha1", "Shop", NS, &shop, |s| {
        s["spec"]["networkPolicy"] = json!({"enabled": false});
    });
    server.edit("apps/v1", "Deployment", NS, &format!("{shop}-auth"), |d| {
        d["status"]["observedGeneration"] = json!(99);
    });
    until("the auth NetworkPolicy being deleted", || {
        policy("auth").is_none()
    })
    .await;

    operator.abort();
    rollouts.abort();
}
