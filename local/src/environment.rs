//! A component's environment under `tienda up`: the one
//! [`component_environment`](tienda_provision::environment::component_environment) the
//! operator's Deployments get, with this machine's placement filled in — loopback ports, the
//! NATS that runs, secrets from `secrets.json` — and the few settings only a machine without a
//! cluster needs (policy files, the first admin).

use std::collections::BTreeMap;

use tienda_crds::{Component, Shop};
use tienda_provision::environment::{LOCAL_NAMESPACE, Placed, Value, component_environment, var};

use crate::Options;

/// Where things are on this machine, for one component.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    /// Ports.
    pub options: &'a Options,
    /// The NATS the components use.
    pub nats_url: &'a str,
    /// The component's NATS identity (`.creds`), when `tienda up` runs its own nats-server.
    pub nats_creds: Option<std::path::PathBuf>,
    /// The components already running and their base URLs (the gateway's upstreams).
    pub running: &'a BTreeMap<Component, String>,
    /// The component's credentials by key (`DATABASE_URL`, `AUTH_KEY_ENCRYPTION_KEY`), as the
    /// `<service>-db` Secret holds them in a cluster, and the Shop's shared keys
    /// (`EVENT_SEALING_KEYS`), as the `<shop>-keys` Secret does.
    pub credentials: BTreeMap<&'static str, String>,
    /// The first admin's email and password (given to auth, which creates the account).
    pub admin: (&'a str, &'a str),
}

/// The process environment of `component` of `shop`.
///
/// The user's `env` from the Shop comes last, as in a Deployment; entries taken from a Secret
/// or ConfigMap (`valueFrom`) have no meaning here and are left out.
pub fn environment(
    shop: &Shop,
    component: Component,
    placement: &Placement<'_>,
) -> BTreeMap<String, String> {
    let shop_name = shop.metadata.name.clone().unwrap_or_default();
    let mut env: BTreeMap<String, String> = component_environment(shop, component)
        .into_iter()
        .filter_map(|(name, value)| {
            let value = match value {
                Value::Literal(text) => Some(text),
                Value::Secret { key } | Value::ShopKey { key } => {
                    placement.credentials.get(key).cloned()
                }
                // A Secret the user keeps (Stripe's keys): no cluster here, so the variable of
                // the same name in `tienda up`'s own environment.
                Value::ShopSecret { .. } => std::env::var(name).ok().filter(|v| !v.is_empty()),
                Value::Field { path } => match path {
                    "metadata.namespace" => Some(LOCAL_NAMESPACE.to_owned()),
                    _ => Some(format!("{shop_name}-{component}")),
                },
                Value::Placed(placed) => on_this_machine(placed, component, placement),
            };
            value.map(|v| (name.to_owned(), v))
        })
        .collect();
    // Traces go where `tienda up` was told (its own OTEL_* variables); the Shop's `env`
    // below may still say otherwise per component.
    env.extend(placement.options.telemetry.clone());
    if let Some(creds) = &placement.nats_creds {
        env.insert(var::NATS_CREDS_FILE.into(), creds.display().to_string());
    }
    // One runtime worker each: on one machine the components, PostgreSQL and NATS share the
    // cores, and a second worker only adds wakeups between threads (a checkout at 50/s:
    // p95 67-91 ms with one, 100-110 ms with one per core; docs/benchmarks.md). The Shop's
    // `env` below may set another count per component.
    env.insert(var::TOKIO_WORKER_THREADS.into(), "1".into());
    env.insert(
        var::TIENDA_POLICY_PATH.into(),
        placement.options.path.display().to_string(),
    );
    if component == Component::Notifications {
        // Without an SMTP server mail is written as .eml files: into the shop's data
        // directory, not wherever `tienda up` was started.
        let outbox = placement
            .options
            .data_dir
            .join("notifications")
            .join("outbox");
        let outbox = std::path::absolute(&outbox).unwrap_or(outbox);
        env.insert(
            var::NOTIFICATIONS_OUTBOX_DIR.into(),
            outbox.display().to_string(),
        );
    }
    if component == Component::Auth {
        env.insert(var::TIENDA_ADMIN_EMAIL.into(), placement.admin.0.to_owned());
        env.insert(
            var::TIENDA_ADMIN_PASSWORD.into(),
            placement.admin.1.to_owned(),
        );
    }
    let user = shop
        .spec
        .components
        .iter()
        .filter(|c| c.name == component)
        .flat_map(|c| &c.env);
    for var in user {
        if let Some(value) = &var.value {
            env.insert(var.name.clone(), value.clone());
        }
    }
    env
}

/// What a placement-dependent value is on this machine (`None`: nothing to set).
fn on_this_machine(
    placed: Placed,
    component: Component,
    placement: &Placement<'_>,
) -> Option<String> {
    let options = placement.options;
    Some(match placed {
        Placed::ListenAddr => format!("127.0.0.1:{}", options.port(component)),
        Placed::AdminAddr => format!("127.0.0.1:{}", options.admin_port(component)),
        Placed::NatsUrl => placement.nats_url.to_owned(),
        // The NATS `tienda up` runs (or was given) is used without credentials.
        Placed::NatsCredsFile => return None,
        Placed::Url { component, path } => {
            format!("http://127.0.0.1:{}{path}", options.port(component))
        }
        Placed::Upstreams => placement
            .running
            .iter()
            .map(|(c, url)| format!("{c}={url}"))
            .collect::<Vec<_>>()
            .join(","),
        Placed::PolicySource => "file".into(),
        Placed::LogFormat => "pretty".into(),
        // One process per component here, whatever the Shop asks of a cluster.
        Placed::Replicas => "1".into(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn shop() -> Shop {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "local"},
            "spec": {"version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
                     "nats": {"url": "nats://cluster-nats:4222", "credentialsSecretRef": {"name": "creds"}},
                     "components": [
                        {"name": "auth"},
                        {"name": "gateway", "replicas": 3, "env": [
                            {"name": "GATEWAY_CORS_ORIGINS", "value": "*"},
                            {"name": "TOKIO_WORKER_THREADS", "value": "4"},
                            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}
        }))
        .unwrap()
    }

    fn options() -> Options {
        let mut options = Options::new(PathBuf::from("/shop"));
        options.base_port = 4000;
        options
    }

    #[test]
    fn the_gateway_listens_on_loopback_routes_to_what_runs_and_counts_itself_once() {
        let options = options();
        let running = [
            (Component::Auth, "http://127.0.0.1:4001".to_owned()),
            (Component::Products, "http://127.0.0.1:4002".to_owned()),
        ]
        .into();
        let placement = Placement {
            options: &options,
            nats_url: "nats://127.0.0.1:4222",
            nats_creds: None,
            running: &running,
            credentials: BTreeMap::new(),
            admin: ("admin@tienda.local", "pw"),
        };
        let env = environment(&shop(), Component::Gateway, &placement);
        let get = |name: &str| env.get(name).map(String::as_str);
        assert_eq!(get(var::LISTEN_ADDR), Some("127.0.0.1:4000"));
        assert_eq!(get(var::ADMIN_ADDR), Some("127.0.0.1:4100"));
        assert_eq!(
            get(var::GATEWAY_UPSTREAMS),
            Some("auth=http://127.0.0.1:4001,products=http://127.0.0.1:4002")
        );
        assert_eq!(get(var::GATEWAY_REPLICAS), Some("1"));
        assert_eq!(get(var::NATS_URL), None, "the gateway never uses NATS");
        assert_eq!(get(var::NATS_CREDS_FILE), None, "and has no NATS identity");
        assert_eq!(get(var::TIENDA_POLICY_SOURCE), Some("file"));
        assert_eq!(get(var::TIENDA_POLICY_PATH), Some("/shop"));
        assert_eq!(
            get(var::AUTH_JWKS_URL),
            Some("http://127.0.0.1:4001/.well-known/jwks.json")
        );
        assert_eq!(
            get("GATEWAY_CORS_ORIGINS"),
            Some("*"),
            "the user's env applies"
        );
        assert_eq!(get("FROM_SECRET"), None, "valueFrom has no meaning here");
        assert_eq!(
            get(var::TOKIO_WORKER_THREADS),
            Some("4"),
            "the user's count replaces the local default"
        );
        assert_eq!(
            get(var::TIENDA_ADMIN_PASSWORD),
            None,
            "only auth makes the admin"
        );
    }

    #[test]
    fn auth_gets_its_credentials_and_the_first_admin() {
        let options = options();
        let running = BTreeMap::new();
        let placement = Placement {
            options: &options,
            nats_url: "nats://127.0.0.1:4222",
            nats_creds: None,
            running: &running,
            credentials: [
                (var::DATABASE_URL, "postgres://auth@127.0.0.1/db".to_owned()),
                (var::AUTH_KEY_ENCRYPTION_KEY, "a2V5".to_owned()),
            ]
            .into(),
            admin: ("admin@tienda.local", "pw"),
        };
        let env = environment(&shop(), Component::Auth, &placement);
        let get = |name: &str| env.get(name).map(String::as_str);
        assert_eq!(get(var::LISTEN_ADDR), Some("127.0.0.1:4001"));
        assert_eq!(get(var::ADMIN_ADDR), Some("127.0.0.1:4101"));
        assert_eq!(get(var::DATABASE_URL), Some("postgres://auth@127.0.0.1/db"));
        assert_eq!(get(var::AUTH_KEY_ENCRYPTION_KEY), Some("a2V5"));
        assert_eq!(get(var::TIENDA_ADMIN_EMAIL), Some("admin@tienda.local"));
        assert_eq!(get(var::TIENDA_ADMIN_PASSWORD), Some("pw"));
        assert_eq!(get(var::POD_NAMESPACE), Some(LOCAL_NAMESPACE));
        assert_eq!(
            get(var::TOKIO_WORKER_THREADS),
            Some("1"),
            "one runtime worker on a shared machine"
        );
    }

    #[test]
    fn every_component_gets_tienda_ups_opentelemetry_variables() {
        let mut options = options();
        options.telemetry = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let running = BTreeMap::new();
        let placement = Placement {
            options: &options,
            nats_url: "nats://127.0.0.1:4222",
            nats_creds: None,
            running: &running,
            credentials: BTreeMap::new(),
            admin: ("admin@tienda.local", "pw"),
        };
        for component in Component::ALL {
            let env = environment(&shop(), component, &placement);
            for (name, value) in &options.telemetry {
                assert_eq!(env.get(name), Some(value), "{component} {name}");
            }
        }
    }
}
