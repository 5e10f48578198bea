use std::sync::Arc;

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{ResourceExt, runtime::controller::Action};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tienda_crds::{Component, Service, Shop};
use tienda_kit::testing::NatsServer;
use tienda_operator::{
    controller::service::{FINALIZER, SKIP_CLEANUP, needs_cleanup, reconcile},
    shop::desired_services,
};

use crate::verifier::{
    Answer, ApiServer, apply, apply_status, cached_context, context, event, get, get_missing,
    patch, post, serve,
};
use tienda_operator::controller::{
    Context,
    cache::{Slim, Writers},
};

/// A child as stored: the body the operator sent, in the test's namespace.
fn stored(body: &Value) -> Value {
    let mut body = body.clone();
    body["metadata"]["namespace"] = json!(NS);
    body
}

/// Calls `$then` with `$body` read as its kind (a child the operator applies).
macro_rules! typed {
    ($body:expr, |$object:ident| $then:expr) => {{
        use k8s_openapi::api::{
            apps::v1::Deployment,
            core::v1::{Service as KubeService, ServiceAccount},
            networking::v1::NetworkPolicy,
            policy::v1::PodDisruptionBudget,
            rbac::v1::{Role, RoleBinding},
        };
        let body = stored($body);
        match body["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                let $object: ServiceAccount = serde_json::from_value(body).unwrap();
                $then
            }
            "Service" => {
                let $object: KubeService = serde_json::from_value(body).unwrap();
                $then
            }
            "Deployment" => {
                let $object: Deployment = serde_json::from_value(body).unwrap();
                $then
            }
            "PodDisruptionBudget" => {
                let $object: PodDisruptionBudget = serde_json::from_value(body).unwrap();
                $then
            }
            "Role" => {
                let $object: Role = serde_json::from_value(body).unwrap();
                $then
            }
            "RoleBinding" => {
                let $object: RoleBinding = serde_json::from_value(body).unwrap();
                $then
            }
            "NetworkPolicy" => {
                let $object: NetworkPolicy = serde_json::from_value(body).unwrap();
                $then
            }
            other => panic!("{other}"),
        }
    }};
}

/// Puts a child as the operator applied it into its cache, as its watch would.
fn put(writers: &mut Writers, body: &Value) {
    typed!(body, |object| writers.put(Slim::of(&object)))
}

/// Records a child as the operator's last apply of it (what `ctx` would know had it applied
/// the child itself).
fn remember(ctx: &Context, body: &Value) {
    typed!(body, |object| ctx.remember(&object))
}

/// A context whose caches hold `shop`, and their writers.
fn shop_context(shop: &Shop) -> (Arc<Context>, ApiServer, Writers) {
    let (ctx, handle, mut writers) = cached_context();
    writers.put(shop.clone());
    (ctx, handle, writers)
}

const NS: &str = "shops";

/// The test PostgreSQL server as the Shop names it: host, port, admin user and password.
struct Pg {
    host: String,
    port: u16,
    user: String,
    password: String,
}

fn pg() -> Pg {
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests with tests/run");
    let options: PgConnectOptions = url.parse().unwrap();
    let rest = url.split("://").nth(1).unwrap();
    let (userinfo, _) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Pg {
        host: options.get_host().to_owned(),
        port: options.get_port(),
        user: user.into(),
        password: password.into(),
    }
}

/// A unique shop name per test, so databases do not collide on the shared server.
fn shop_name() -> String {
    format!("s{}", &uuid::Uuid::now_v7().simple().to_string()[22..])
}

fn shop(name: &str, pg: &Pg, nats: &NatsServer) -> Shop {
    let mut shop: Shop = serde_json::from_value(json!({
        "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": name, "namespace": NS, "uid": "shop-uid", "generation": 1},
        "spec": {"version": "0.1.0",
                 "postgres": {"host": pg.host, "port": pg.port, "adminSecretRef": {"name": "pg-admin"}, "sslMode": "Disable"},
                 "nats": {"url": nats.url()},
                 "components": [{"name": "auth"}]}
    }))
    .unwrap();
    shop.metadata.uid = Some("shop-uid".into());
    shop
}

fn admin_secret(pg: &Pg) -> Value {
    serde_json::to_value(Secret {
        metadata: ObjectMeta {
            name: Some("pg-admin".into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [("username", &pg.user), ("password", &pg.password)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    })
    .unwrap()
}

fn auth_service(shop: &Shop) -> Service {
    let mut service = desired_services(shop)
        .into_iter()
        .find(|s| s.spec.component == Component::Auth)
        .unwrap();
    service.metadata.uid = Some("svc-uid".into());
    service.metadata.generation = Some(1);
    service.metadata.resource_version = Some("1".into());
    service
}

/// The Service as the API server holds it after its first reconcile: with the finalizer when
/// its deletion has something to delete (`reclaimPolicy: Delete`), without under `Retain`.
fn finalized(mut service: Service) -> Service {
    if needs_cleanup(&service) {
        service.finalizers_mut().push(FINALIZER.into());
    }
    service
}

fn base(kind: &str, shop: &str) -> String {
    match kind {
        "shop" => format!("/apis/tienda.dev/v1alpha1/namespaces/{NS}/shops/{shop}"),
        "service" => {
            format!("/apis/tienda.dev/v1alpha1/namespaces/{NS}/tiendaservices/{shop}-auth")
        }
        "secret" => format!("/api/v1/namespaces/{NS}/secrets/{shop}-auth-db"),
        "admin" => format!("/api/v1/namespaces/{NS}/secrets/pg-admin"),
        "sa" => format!("/api/v1/namespaces/{NS}/serviceaccounts/{shop}-auth"),
        "svc" => format!("/api/v1/namespaces/{NS}/services/{shop}-auth"),
        "deploy" => format!("/apis/apps/v1/namespaces/{NS}/deployments/{shop}-auth"),
        "pdb" => format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{shop}-auth"),
        "role" => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/{shop}-auth"),
        "binding" => {
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/{shop}-auth")
        }
        "netpol" => {
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{shop}-auth")
        }
        other => panic!("{other}"),
    }
}

async fn database_exists(pg: &Pg, name: &str) -> bool {
    let url = std::env::var("DATABASE_URL").unwrap();
    let _ = pg;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_service_gets_its_finalizer_first() {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let mut shop = shop(&name, &pg, &nats);
    shop.spec.reclaim_policy = tienda_crds::service::ReclaimPolicy::Delete;
    let service = auth_service(&shop);
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![patch(
            &format!("{}?", base("service", &name)),
            Answer::Json(serde_json::to_value(finalized(service.clone())).unwrap()),
        )],
    );

    let action = reconcile(Arc::new(service), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(
        seen[0].body[1],
        json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
    );
}

/// The script of a first full reconcile of `<shop>-auth`, the Shop in the caches: every read
/// but the admin Secret's comes from there, and nothing else is cached yet.
fn first_reconcile_script(
    name: &str,
    shop: &Shop,
    pg: &Pg,
    stored: &Service,
) -> Vec<crate::verifier::Exchange> {
    let _ = shop;
    let secrets = format!("/api/v1/namespaces/{NS}/secrets?fieldManager=tienda-operator");
    vec![
        // The Shop's keys (auth seals account links with them), then the credentials.
        post(&secrets),
        post(&secrets),
        get(&base("admin", name), admin_secret(pg)),
        event(NS),
        event(NS),
        apply(&base("sa", name)),
        apply(&base("svc", name)),
        apply(&base("deploy", name)),
        apply(&base("pdb", name)),
        apply(&base("role", name)),
        apply(&base("binding", name)),
        apply(&base("netpol", name)),
        apply_status(
            &format!("{}/status", base("service", name)),
            Answer::MergeInto(serde_json::to_value(stored).unwrap()),
        ),
    ]
}

/// What a first full reconcile of `<shop>-auth` left: every request it sent, and the seven
/// children as applied (ServiceAccount, Service, Deployment, PDB, Role, RoleBinding,
/// NetworkPolicy).
struct FirstPass {
    name: String,
    seen: Vec<crate::verifier::Recorded>,
    children: [Value; 7],
}

impl FirstPass {
    fn new(name: &str, seen: Vec<crate::verifier::Recorded>) -> Self {
        let children = [5, 6, 7, 8, 9, 10, 11].map(|i| seen[i].body.clone());
        Self {
            name: name.to_owned(),
            seen,
            children,
        }
    }

    /// The status the first reconcile wrote.
    fn status(&self) -> Value {
        self.seen[12].body["status"].clone()
    }

    /// Fills the caches as the watches would after the first reconcile: `shop`, the
    /// credentials Secret, and each child as applied, the Deployment being `deployment`.
    fn seed(&self, writers: &mut Writers, shop: &Shop, deployment: Value) {
        writers.put(shop.clone());
        for secret in &self.seen[..2] {
            writers.put::<Secret>(serde_json::from_value(stored(&secret.body)).unwrap());
        }
        let mut children = self.children.clone();
        children[2] = deployment;
        for child in &children {
            put(writers, child);
        }
    }

    /// A later reconcile's context — its caches seeded (see [`FirstPass::seed`]), and the
    /// children as it applied them remembered — and the one read it sends: the admin Secret
    /// when the database is verified (`admin`).
    fn later(
        &self,
        shop: &Shop,
        admin: Option<&Pg>,
        deployment: Value,
    ) -> (Arc<Context>, ApiServer, Vec<crate::verifier::Exchange>) {
        let (ctx, handle, mut writers) = cached_context();
        self.seed(&mut writers, shop, deployment);
        // The same operator applied them before.
        for child in &self.children {
            remember(&ctx, child);
        }
        let script = admin
            .map(|pg| get(&base("admin", &self.name), admin_secret(pg)))
            .into_iter()
            .collect();
        (ctx, handle, script)
    }
}

/// Runs the first full reconcile of `service` against its own mocked API server.
async fn first_pass(name: &str, shop: &Shop, pg: &Pg, service: &Service) -> FirstPass {
    let (ctx, handle, _writers) = shop_context(shop);
    let server = serve(handle, first_reconcile_script(name, shop, pg, service));
    reconcile(Arc::new(service.clone()), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    FirstPass::new(name, server.await.unwrap())
}

#[tokio::test]
async fn a_new_service_gets_its_secret_database_streams_workload_and_status_and_a_second_reconcile_applies_nothing()
 {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let mut shop = shop(&name, &pg, &nats);
    // A user entry named like one the operator sets replaces it (a repeated name is a 422).
    shop.spec.components[0]
        .env
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "NATS_URL".into(),
            value: Some("nats://nats.elsewhere:4222".into()),
            value_from: None,
        });
    let service = finalized(auth_service(&shop));
    let (ctx, handle, _writers) = shop_context(&shop);
    let server = serve(handle, first_reconcile_script(&name, &shop, &pg, &service));
    reconcile(Arc::new(service.clone()), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let seen = server.await.unwrap();

    // The Shop's keys: made once, owned by the Shop, a 32-byte event-sealing key.
    let keys: Secret = serde_json::from_value(seen[0].body.clone()).unwrap();
    assert_eq!(keys.name_any(), format!("{name}-keys"));
    assert_eq!(keys.owner_references()[0].kind, "Shop");
    let sealing =
        String::from_utf8(keys.data.clone().unwrap()["EVENT_SEALING_KEYS"].0.clone()).unwrap();
    tienda_kit::seal::Sealer::from_config(&sealing).expect("a usable sealing key");

    // The credentials Secret: created once, with a DATABASE_URL for the component's role.
    let secret: Secret = serde_json::from_value(seen[1].body.clone()).unwrap();
    let data = secret.data.clone().unwrap();
    let database = format!("shops_{name}_auth");
    let password = String::from_utf8(data["password"].0.clone()).unwrap();
    let url = String::from_utf8(data["DATABASE_URL"].0.clone()).unwrap();
    assert_eq!(
        url,
        format!(
            "postgres://{database}:{password}@{}:{}/{database}?sslmode=disable",
            pg.host, pg.port
        )
    );
    assert!(
        secret.owner_references().is_empty(),
        "under Retain the Secret outlives the Shop with the database it opens"
    );

    // The database exists and the Secret's credentials open it; the stream exists.
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("the Secret's DATABASE_URL works");
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .get_stream("USER")
        .await
        .expect("the USER stream exists");

    // Server-side apply of each child, owned by the Service, with the applied hash.
    for (i, kind) in [
        (5, "ServiceAccount"),
        (6, "Service"),
        (7, "Deployment"),
        (8, "PodDisruptionBudget"),
        (9, "Role"),
        (10, "RoleBinding"),
        (11, "NetworkPolicy"),
    ] {
        assert_eq!(seen[i].body["kind"], kind);
        assert_eq!(
            seen[i].body["metadata"]["ownerReferences"][0]["uid"],
            "svc-uid"
        );
        assert!(
            seen[i].body["metadata"]["annotations"]["tienda.dev/applied-hash"].is_string(),
            "{kind}"
        );
    }
    let container = &seen[7].body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/tienda-dev/tienda-auth:0.1.0");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"DATABASE_URL") && env.contains(&"NATS_URL"),
        "{env:?}"
    );
    let nats_url: Vec<&Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "NATS_URL")
        .collect();
    assert_eq!(nats_url.len(), 1, "{env:?}");
    assert_eq!(nats_url[0]["value"], "nats://nats.elsewhere:4222");
    let sealing_env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "EVENT_SEALING_KEYS")
        .expect("auth gets the sealing keys");
    assert_eq!(
        sealing_env["valueFrom"]["secretKeyRef"]["name"],
        format!("{name}-keys")
    );

    // Status: observedGeneration and the conditions.
    let role = &seen[9].body;
    assert_eq!(
        role["rules"][0]["resources"],
        json!(["ratelimitpolicies", "circuitpolicies"]),
        "it reads the policies of what it calls"
    );
    assert!(
        role["rules"][2].is_null(),
        "no EndpointSlices but for gateways"
    );
    // Who may reach auth: its callers on the public port, the operator and Prometheus on the
    // admin port.
    let policy = &seen[11].body["spec"];
    assert_eq!(
        policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "auth"
    );
    assert_eq!(policy["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["ingress"][0]["ports"],
        json!([{"port": "http", "protocol": "TCP"}])
    );
    let callers = &policy["ingress"][0]["from"][0]["podSelector"];
    assert_eq!(
        callers["matchLabels"],
        json!({"app.kubernetes.io/instance": name})
    );
    assert_eq!(
        callers["matchExpressions"][0]["values"],
        json!(["products", "orders", "payments", "notifications", "gateway"])
    );
    assert_eq!(
        policy["ingress"][1]["ports"],
        json!([{"port": "admin", "protocol": "TCP"}])
    );
    assert_eq!(
        policy["ingress"][1]["from"][0]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "tienda-operator"})
    );
    assert_eq!(
        policy["ingress"][1]["from"][1]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "prometheus"})
    );

    let status = &seen[12].body["status"];
    assert_eq!(status["observedGeneration"], 1);
    let condition = |t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t}"))
            .clone()
    };
    assert_eq!(condition("DatabaseReady")["status"], "True");
    assert_eq!(condition("StreamsReady")["status"], "True");
    assert_eq!(
        condition("Available")["status"],
        "False",
        "no pod is ready in a mocked cluster"
    );
    assert_eq!(condition("Ready")["status"], "False");
    assert_eq!(status["credentialsSecret"], format!("{name}-auth-db"));

    // Second reconcile of the unchanged Service, by an operator that just started (so it
    // verifies the database again): the children come from the caches, nothing is applied,
    // no status is written; the one request is the admin Secret's read.
    let mut stored = service.clone();
    stored.status = Some(serde_json::from_value(status.clone()).unwrap());
    let first = FirstPass::new(&name, seen.clone());
    let (ctx, handle, script) = first.later(&shop, Some(&pg), first.children[2].clone());
    let server = serve(handle, script);
    reconcile(Arc::new(stored), ctx.clone()).await.unwrap();
    drop(ctx);
    let again = server.await.unwrap();
    assert_eq!(again.len(), 1, "only the admin Secret's read: {again:#?}");
    assert!(database_exists(&pg, &database).await);
}

/// The API server as it really behaves after the first reconcile: the Deployment's pods came up
/// (its status says so), and someone `kubectl edit`ed it (another image, five replicas) — our
/// applied-hash annotation untouched. The next reconcile must put the Deployment back, and
/// report the Service Ready only once the Deployment's rollout of what it put back is done.
#[tokio::test]
async fn a_ready_deployment_makes_the_service_ready_and_a_hand_edited_one_is_put_back() {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let shop = shop(&name, &pg, &nats);
    let service = finalized(auth_service(&shop));
    let first = first_pass(&name, &shop, &pg, &service).await;
    let first_status = first.status();
    assert_eq!(
        first_status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["status"],
        "False"
    );
    let mut stored = service.clone();
    stored.status = Some(serde_json::from_value(first_status).unwrap());

    let mut edited = first.children[2].clone();
    let official = edited["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    edited["spec"]["replicas"] = json!(5);
    edited["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("evil.example/auth:latest");
    edited["metadata"]["resourceVersion"] = json!("41");
    edited["metadata"]["generation"] = json!(7);
    edited["status"] = json!({"observedGeneration": 7, "replicas": 5, "updatedReplicas": 5,
                              "readyReplicas": 1, "availableReplicas": 1});
    // What the server holds after the operator's apply: the spec put back (a new generation
    // the Deployment controller has not acted on yet) and the status as it was.
    let mut put_back = edited.clone();
    put_back["metadata"]["generation"] = json!(8);

    let (ctx, handle, mut script) = first.later(&shop, Some(&pg), edited);
    // After the admin Secret's read, the Deployment's apply, answered as the server would: the
    // stored object with the applied fields (lists replaced whole) and its status kept.
    script.insert(
        1,
        crate::verifier::Exchange {
            answer: Answer::MergeInto(put_back),
            ..apply(&base("deploy", &name))
        },
    );
    script.push(apply_status(
        &format!("{}/status", base("service", &name)),
        Answer::MergeInto(serde_json::to_value(&stored).unwrap()),
    ));
    let server = serve(handle, script);
    reconcile(Arc::new(stored.clone()), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let again = server.await.unwrap();

    let applied = &again[1].body;
    assert_eq!(applied["spec"]["replicas"], 1, "the replica count put back");
    let containers = applied["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["image"], official);
    let status = again[2].body["status"].clone();
    let condition = |status: &Value, t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t}"))
            .clone()
    };
    assert_eq!(condition(&status, "Available")["status"], "True");
    assert_eq!(
        condition(&status, "Ready")["status"],
        "False",
        "one pod of the hand-edited spec is up, but what was put back is not rolled out yet"
    );
    assert_eq!(condition(&status, "Progressing")["status"], "True");
    assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");

    // The Deployment controller rolls it out: one pod, of the current spec, available.
    let mut done = again[1].body.clone();
    done["metadata"]["generation"] = json!(8);
    done["metadata"]["annotations"] = first.children[2]["metadata"]["annotations"].clone();
    done["status"] = json!({"observedGeneration": 8, "replicas": 1, "updatedReplicas": 1,
                            "readyReplicas": 1, "availableReplicas": 1});
    stored.status = Some(serde_json::from_value(status).unwrap());
    let (ctx, handle, mut script) = first.later(&shop, Some(&pg), done);
    script.push(event(NS));
    script.push(apply_status(
        &format!("{}/status", base("service", &name)),
        Answer::MergeInto(serde_json::to_value(&stored).unwrap()),
    ));
    let server = serve(handle, script);
    reconcile(Arc::new(stored), ctx.clone()).await.unwrap();
    drop(ctx);
    let last = server.await.unwrap();
    assert_eq!(last[1].body["reason"], "Ready");
    let status = &last[2].body["status"];
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(
        condition(status, "Progressing")["reason"],
        "RolloutComplete"
    );
    assert_eq!(condition(status, "Degraded")["status"], "False");
}

fn deleting(mut service: Service) -> Service {
    service.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    service
}

async fn provision_first(name: &str, shop: &Shop, pg: &Pg) -> Service {
    let service = finalized(auth_service(shop));
    let (ctx, handle, _writers) = shop_context(shop);
    let server = serve(handle, first_reconcile_script(name, shop, pg, &service));
    reconcile(Arc::new(service.clone()), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.await.unwrap();
    service
}

#[tokio::test]
async fn deleting_a_service_with_retain_keeps_its_database_and_streams() {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let shop = shop(&name, &pg, &nats);
    let service = provision_first(&name, &shop, &pg).await;
    assert!(
        service.finalizers().is_empty(),
        "under Retain deletion has nothing to do: no finalizer holds the Service"
    );

    // One left from an older operator (or from when the policy was Delete) is removed.
    let mut leftover = service.clone();
    leftover.finalizers_mut().push(FINALIZER.into());
    let (ctx, handle) = context();
    let server = serve(
        handle,
        vec![
            event(NS),
            patch(
                &format!("{}?", base("service", &name)),
                Answer::Json(serde_json::to_value(&service).unwrap()),
            ),
        ],
    );
    reconcile(Arc::new(deleting(leftover)), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(seen[0].body["reason"], "Retained");
    assert_eq!(
        seen[1].body,
        json!({"metadata": {"finalizers": [], "resourceVersion": "1"}}),
        "the finalizer is removed, guarded by the resource version"
    );
    assert!(
        database_exists(&pg, &format!("shops_{name}_auth")).await,
        "Retain keeps the database"
    );
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.get_stream("USER")
        .await
        .expect("Retain keeps the stream");
}

#[tokio::test]
async fn deleting_a_service_with_delete_drops_its_database_and_streams() {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let mut shop = shop(&name, &pg, &nats);
    shop.spec.reclaim_policy = tienda_crds::service::ReclaimPolicy::Delete;
    let service = provision_first(&name, &shop, &pg).await;
    assert!(database_exists(&pg, &format!("shops_{name}_auth")).await);

    let (ctx, handle, _writers) = shop_context(&shop);
    let mut released = service.clone();
    released.finalizers_mut().clear();
    let server = serve(
        handle,
        vec![
            get(&base("admin", &name), admin_secret(&pg)),
            event(NS),
            patch(
                &format!("{}?", base("service", &name)),
                Answer::Json(serde_json::to_value(&released).unwrap()),
            ),
        ],
    );
    reconcile(Arc::new(deleting(service)), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(seen[1].body["reason"], "Deleted");
    assert!(
        !database_exists(&pg, &format!("shops_{name}_auth")).await,
        "Delete drops the database"
    );
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    assert!(
        js.get_stream("USER").await.is_err(),
        "Delete drops the stream"
    );
}

#[tokio::test]
async fn a_gateway_gets_a_role_and_binding_to_read_policies_and_endpoint_slices() {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let mut shop = shop(&name, &pg, &nats);
    shop.spec = serde_json::from_value(json!({
        "version": "0.1.0",
        "postgres": {"host": pg.host, "port": pg.port, "adminSecretRef": {"name": "pg-admin"}, "sslMode": "Disable"},
        "nats": {"url": nats.url()},
        "components": [{"name": "gateway", "replicas": 2}]
    }))
    .unwrap();
    let mut gateway = desired_services(&shop)
        .into_iter()
        .find(|s| s.spec.component == Component::Gateway)
        .unwrap();
    gateway.metadata.uid = Some("gw-uid".into());
    gateway.metadata.generation = Some(1);
    gateway.metadata.resource_version = Some("1".into());
    let gateway = finalized(gateway);
    let at = |kind: &str| match kind {
        "role" => {
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/{name}-gateway")
        }
        "binding" => format!(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/{name}-gateway"
        ),
        other => base(other, &name).replace("-auth", "-gateway"),
    };
    let (ctx, handle, _writers) = shop_context(&shop);
    let server = serve(
        handle,
        vec![
            apply(&at("sa")),
            apply(&at("svc")),
            apply(&at("deploy")),
            apply(&at("pdb")),
            apply(&at("role")),
            apply(&at("binding")),
            apply(&at("netpol")),
            apply_status(
                &format!("{}/status", at("service")),
                Answer::MergeInto(serde_json::to_value(&gateway).unwrap()),
            ),
        ],
    );
    reconcile(Arc::new(gateway.clone()), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let seen = server.await.unwrap();

    let role = &seen[4].body;
    assert_eq!(role["kind"], "Role");
    assert_eq!(role["metadata"]["ownerReferences"][0]["uid"], "gw-uid");
    assert_eq!(
        role["rules"][0]["resources"],
        json!(["ratelimitpolicies", "circuitpolicies"])
    );
    assert_eq!(role["rules"][2]["resources"], json!(["endpointslices"]));
    let binding = &seen[5].body;
    assert_eq!(binding["kind"], "RoleBinding");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": format!("{name}-gateway"), "namespace": NS})
    );
    let container = &seen[2].body["spec"]["template"]["spec"]["containers"][0];
    let replicas = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "GATEWAY_REPLICAS")
        .unwrap();
    assert_eq!(replicas["value"], "2");
    assert_eq!(
        seen[2].body["spec"]["template"]["spec"]["serviceAccountName"],
        format!("{name}-gateway")
    );
    // The front door: its public port from anywhere, its admin port not.
    let policy = &seen[6].body["spec"];
    assert_eq!(seen[6].body["kind"], "NetworkPolicy");
    assert_eq!(policy["ingress"][0]["ports"][0]["port"], "http");
    assert!(policy["ingress"][0].get("from").is_none(), "{policy}");
    assert_eq!(policy["ingress"][1]["ports"][0]["port"], "admin");
    assert_eq!(policy["ingress"][1]["from"].as_array().unwrap().len(), 2);
}

/// A Service with `reclaimPolicy: Delete` whose cleanup cannot run: its deletion must not wait
/// forever (a namespace being deleted removes the admin Secret in any order).
async fn deletion_lets_go_keeping_the_data(prepare: fn(&mut Service), script_head: usize) {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let mut shop = shop(&name, &pg, &nats);
    shop.spec.reclaim_policy = tienda_crds::service::ReclaimPolicy::Delete;
    let mut service = provision_first(&name, &shop, &pg).await;
    assert_eq!(service.finalizers(), [FINALIZER]);
    prepare(&mut service);
    let mut released = service.clone();
    released.finalizers_mut().clear();
    let mut script = vec![get_missing(&base("admin", &name))];
    script.truncate(script_head);
    script.extend([
        event(NS),
        patch(
            &format!("{}?", base("service", &name)),
            Answer::Json(serde_json::to_value(&released).unwrap()),
        ),
    ]);
    let (ctx, handle, _writers) = shop_context(&shop);
    let server = serve(handle, script);
    reconcile(Arc::new(deleting(service)), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let seen = server.await.unwrap();
    let event = &seen[script_head].body;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("Retained"))
    );
    assert_eq!(
        seen[script_head + 1].body[1]["op"],
        "remove",
        "the finalizer goes"
    );
    assert!(
        database_exists(&pg, &format!("shops_{name}_auth")).await,
        "the data is kept: {}",
        event["note"]
    );
}

#[tokio::test]
async fn a_deletion_whose_admin_secret_is_gone_lets_go_and_keeps_the_data() {
    deletion_lets_go_keeping_the_data(|_| {}, 1).await;
}

#[tokio::test]
async fn the_skip_cleanup_annotation_lets_a_deletion_go_and_keeps_the_data() {
    deletion_lets_go_keeping_the_data(
        |service| {
            service
                .annotations_mut()
                .insert(SKIP_CLEANUP.into(), "true".into());
        },
        0,
    )
    .await;
}

/// The operator loses PostgreSQL (a restart, a network blip) while the workload runs: the
/// Service is not "not Ready" for it. Children are still applied, `Degraded` says what the
/// operator cannot verify, and the reconcile returns an error so it is retried with backoff.
#[tokio::test]
async fn a_postgres_blip_degrades_a_running_service_without_making_it_not_ready() {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let shop = shop(&name, &pg, &nats);
    let service = finalized(auth_service(&shop));
    let first = first_pass(&name, &shop, &pg, &service).await;
    let mut status = first.status();
    // Ready before the blip: the conditions of a finished rollout.
    for c in status["conditions"].as_array_mut().unwrap() {
        c["status"] = json!(if c["type"] == "Progressing" || c["type"] == "Degraded" {
            "False"
        } else {
            "True"
        });
    }
    let mut stored = service.clone();
    stored.status = Some(serde_json::from_value(status).unwrap());
    let mut running = first.children[2].clone();
    running["status"] = json!({"observedGeneration": 0, "replicas": 1, "updatedReplicas": 1,
                               "readyReplicas": 1, "availableReplicas": 1});

    // PostgreSQL stops answering: the Shop's server is now a port nobody listens on.
    let mut gone = shop.clone();
    gone.spec.postgres.port = i32::from(tienda_local::infra::free_port().unwrap());
    let (ctx, handle, mut script) = first.later(&gone, Some(&pg), running);
    script.push(apply_status(
        &format!("{}/status", base("service", &name)),
        Answer::MergeInto(serde_json::to_value(&stored).unwrap()),
    ));
    let server = serve(handle, script);
    let err = reconcile(Arc::new(stored.clone()), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "PostgresUnreachable", "{err}");
    let action =
        tienda_operator::controller::service::error_policy(Arc::new(stored), &err, ctx.clone());
    assert!(
        action != Action::requeue(std::time::Duration::from_secs(300)),
        "retried with backoff, not the 5-minute resync"
    );
    drop(ctx);
    let seen = server.await.unwrap();
    let status = &seen[1].body["status"];
    let condition = |t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t}"))
            .clone()
    };
    assert_eq!(condition("Ready")["status"], "True", "{status}");
    assert_eq!(condition("DatabaseReady")["status"], "True");
    assert_eq!(condition("Degraded")["status"], "True");
    assert!(
        condition("Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("cannot verify the database"),
        "{status}"
    );
}

/// External state is verified when what shapes it changes, not on every resync: the second
/// reconcile of an unchanged Service by the same operator sends no request at all: it reads
/// the Kubernetes objects from its caches, and does not log in to PostgreSQL (it does not
/// even read the admin Secret) or ask NATS.
#[tokio::test]
async fn an_unchanged_service_does_not_touch_postgres_or_nats_again_until_something_changes() {
    let (pg, nats, name) = (pg(), NatsServer::start(), shop_name());
    let shop = shop(&name, &pg, &nats);
    let service = finalized(auth_service(&shop));
    let (ctx, handle, mut writers) = shop_context(&shop);
    let first = crate::verifier::turn(handle, first_reconcile_script(&name, &shop, &pg, &service));
    reconcile(Arc::new(service.clone()), ctx.clone())
        .await
        .unwrap();
    let (handle, seen) = first.await.unwrap();
    let first = FirstPass::new(&name, seen);
    let mut stored = service.clone();
    stored.status = Some(serde_json::from_value(first.status()).unwrap());
    let deployment = first.children[2].clone();

    // Unchanged: no admin Secret, no login, no status write, no request.
    first.seed(&mut writers, &shop, deployment.clone());
    let second = crate::verifier::turn(handle, Vec::new());
    reconcile(Arc::new(stored.clone()), ctx.clone())
        .await
        .unwrap();
    let (handle, _) = second.await.unwrap();

    // The Shop's PostgreSQL settings change (here: its TLS mode): verified again at once.
    let mut moved = shop.clone();
    moved.spec.postgres.ssl_mode = tienda_crds::shop::SslMode::Prefer;
    first.seed(&mut writers, &moved, deployment);
    let third = crate::verifier::turn(handle, vec![get(&base("admin", &name), admin_secret(&pg))]);
    reconcile(Arc::new(stored), ctx.clone()).await.unwrap();
    let (handle, _) = third.await.unwrap();
    drop(ctx);
    crate::verifier::no_more(handle).await;
}
