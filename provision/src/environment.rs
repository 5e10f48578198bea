//! A component's environment, once for every placement: the operator turns it into a
//! Deployment's `env` (Secret and field references, cluster addresses), `tienda up` into a
//! process's environment (its kept secrets, loopback ports). Only what depends on where the
//! component runs is left open ([`Value`]); names and every other value are decided here, so a
//! shop that works on a laptop gets the same settings in a cluster.
//!
//! The names in [`var`] are contracts with the services (their `clap` `env` attributes) and
//! with users' Shop `env` overrides: never rename one.

use tienda_crds::{
    Component, Shop,
    shop::{PaymentProvider, ShopNotifications, ShopPayments, SmtpTls},
};

/// Environment variable names a component is given.
pub mod var {
    /// The public HTTP listener (`host:port`).
    pub const LISTEN_ADDR: &str = "LISTEN_ADDR";
    /// The admin listener (`/metrics`, `/policies`, dead-letter admin), its own port.
    pub const ADMIN_ADDR: &str = "ADMIN_ADDR";
    /// `json` or `pretty`.
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    /// The component's own database (also the credentials Secret's key holding it).
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// NATS server(s).
    pub const NATS_URL: &str = "NATS_URL";
    /// NATS credentials file (when the Shop names a credentials Secret).
    pub const NATS_CREDS_FILE: &str = "NATS_CREDS_FILE";
    /// The Shop's name.
    pub const TIENDA_SHOP: &str = "TIENDA_SHOP";
    /// The component's name.
    pub const TIENDA_COMPONENT: &str = "TIENDA_COMPONENT";
    /// Where policies come from: `kubernetes` or `file`.
    pub const TIENDA_POLICY_SOURCE: &str = "TIENDA_POLICY_SOURCE";
    /// The policy YAML file or directory, for the `file` source (`tienda up` only).
    pub const TIENDA_POLICY_PATH: &str = "TIENDA_POLICY_PATH";
    /// Where notifications writes mail as `.eml` files when no SMTP server is configured
    /// (`tienda up`: under its data directory).
    pub const NOTIFICATIONS_OUTBOX_DIR: &str = "NOTIFICATIONS_OUTBOX_DIR";
    /// tokio's runtime worker count (`tienda up`: 1, as every process shares the machine).
    pub const TOKIO_WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";
    /// Where orders reaches products (checkout prices lines from the catalog).
    pub const PRODUCTS_URL: &str = "PRODUCTS_URL";
    /// The pod's name (the gateway reports applied policy generations under it).
    pub const POD_NAME: &str = "POD_NAME";
    /// The pod's namespace (where the gateway watches policies and EndpointSlices).
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The `iss` of auth's tokens: auth's base URL.
    pub const AUTH_ISSUER: &str = "AUTH_ISSUER";
    /// The `aud` tokens must include.
    pub const AUTH_AUDIENCE: &str = "AUTH_AUDIENCE";
    /// auth's JWKS.
    pub const AUTH_JWKS_URL: &str = "AUTH_JWKS_URL";
    /// The key that encrypts auth's signing keys at rest (also the credentials Secret's key).
    pub const AUTH_KEY_ENCRYPTION_KEY: &str = "AUTH_KEY_ENCRYPTION_KEY";
    /// The shop's event-sealing keys (auth seals account links, notifications opens them).
    pub const EVENT_SEALING_KEYS: &str = "EVENT_SEALING_KEYS";
    /// The first admin's email (`tienda up` only: auth creates the account at start).
    pub const TIENDA_ADMIN_EMAIL: &str = "TIENDA_ADMIN_EMAIL";
    /// The first admin's password (`tienda up` only).
    pub const TIENDA_ADMIN_PASSWORD: &str = "TIENDA_ADMIN_PASSWORD";
    /// Gateway replicas sharing each rate limit.
    pub const GATEWAY_REPLICAS: &str = "GATEWAY_REPLICAS";
    /// The gateway's static upstream table (`tienda up`; empty in a cluster).
    pub const GATEWAY_UPSTREAMS: &str = "GATEWAY_UPSTREAMS";
    /// Where traces go (OTLP), when the Shop sets telemetry.
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// The service name traces carry: `tienda-<component>`.
    pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    /// The provider new payments go to: `sandbox` or `stripe` (the Shop's `payments.provider`).
    pub const PAYMENTS_PROVIDER: &str = "PAYMENTS_PROVIDER";
    /// Stripe's API base URL (the Shop's `payments.stripe.apiBase`).
    pub const STRIPE_API_BASE: &str = "STRIPE_API_BASE";
    /// Stripe's secret key (the Shop's Stripe Secret, key `secretKey`).
    pub const STRIPE_SECRET_KEY: &str = "STRIPE_SECRET_KEY";
    /// Stripe's webhook signing secrets, comma-separated (key `webhookSecrets`, optional).
    pub const STRIPE_WEBHOOK_SECRETS: &str = "STRIPE_WEBHOOK_SECRETS";
    /// PayPal's API base URL (the Shop's `payments.paypal.apiBase`).
    pub const PAYPAL_API_BASE: &str = "PAYPAL_API_BASE";
    /// The PayPal REST app's client id (the Shop's PayPal Secret, key `clientId`).
    pub const PAYPAL_CLIENT_ID: &str = "PAYPAL_CLIENT_ID";
    /// The PayPal REST app's secret (key `clientSecret`).
    pub const PAYPAL_CLIENT_SECRET: &str = "PAYPAL_CLIENT_SECRET";
    /// The mail server's host (the Shop's `notifications.smtp.host`).
    pub const TIENDA_SMTP_HOST: &str = "TIENDA_SMTP_HOST";
    /// Its port.
    pub const TIENDA_SMTP_PORT: &str = "TIENDA_SMTP_PORT";
    /// `starttls`, `tls` or `none`.
    pub const TIENDA_SMTP_TLS: &str = "TIENDA_SMTP_TLS";
    /// The SMTP user (key `username`).
    pub const TIENDA_SMTP_USERNAME: &str = "TIENDA_SMTP_USERNAME";
    /// Its password (key `password`).
    pub const TIENDA_SMTP_PASSWORD: &str = "TIENDA_SMTP_PASSWORD";
    /// The `From` of every message.
    pub const NOTIFICATIONS_MAIL_FROM: &str = "NOTIFICATIONS_MAIL_FROM";
    /// Whether webhooks may reach private addresses.
    pub const NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE: &str = "NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE";
    /// Twilio's account SID.
    pub const TWILIO_ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
    /// Twilio's auth token (key `authToken`).
    pub const TWILIO_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
    /// Twilio's sender.
    pub const TWILIO_FROM: &str = "TWILIO_FROM";
    /// Vonage's API key.
    pub const VONAGE_API_KEY: &str = "VONAGE_API_KEY";
    /// Vonage's API secret (key `apiSecret`).
    pub const VONAGE_API_SECRET: &str = "VONAGE_API_SECRET";
    /// Vonage's sender.
    pub const VONAGE_FROM: &str = "VONAGE_FROM";
    /// FCM's service account key file's contents (key `credentials.json`).
    pub const FCM_CREDENTIALS_JSON: &str = "FCM_CREDENTIALS_JSON";
    /// The VAPID private key (key `vapidPrivateKey`).
    pub const WEBPUSH_VAPID_PRIVATE_KEY: &str = "WEBPUSH_VAPID_PRIVATE_KEY";
    /// The VAPID subject.
    pub const WEBPUSH_VAPID_SUBJECT: &str = "WEBPUSH_VAPID_SUBJECT";
}

/// Keys of the Secrets a Shop's `notifications.sms` and `notifications.push` name.
pub mod provider_secret {
    /// Twilio's auth token.
    pub const TWILIO_AUTH_TOKEN: &str = "authToken";
    /// Vonage's API secret.
    pub const VONAGE_API_SECRET: &str = "apiSecret";
    /// FCM's service account key file.
    pub const FCM_CREDENTIALS: &str = "credentials.json";
    /// The VAPID private key.
    pub const VAPID_PRIVATE_KEY: &str = "vapidPrivateKey";
}

/// Keys of the Secret a Shop's `notifications.smtp.secretRef` names.
pub mod smtp_secret {
    /// The SMTP user.
    pub const USERNAME: &str = "username";
    /// Its password.
    pub const PASSWORD: &str = "password";
}

/// Keys of the Secret a Shop's `payments.paypal.secretRef` names.
pub mod paypal_secret {
    /// The REST app's client id.
    pub const CLIENT_ID: &str = "clientId";
    /// The REST app's secret.
    pub const CLIENT_SECRET: &str = "clientSecret";
}

/// Keys of the Secret a Shop's `payments.stripe.secretRef` names.
pub mod stripe_secret {
    /// The API secret key (required).
    pub const SECRET_KEY: &str = "secretKey";
    /// Webhook signing secrets, comma-separated (optional).
    pub const WEBHOOK_SECRETS: &str = "webhookSecrets";
}

/// The admin listener's port in a pod (the container port named `admin`).
pub const ADMIN_PORT: u16 = 9090;

/// Where a mounted NATS credentials Secret is in a pod.
pub const NATS_CREDS_DIR: &str = "/var/run/tienda/nats";

/// The namespace `tienda up` stands in for: the first part of its database names
/// (`tienda_<shop>_<component>`, see [`crate::database::database_name`]) and its components'
/// `POD_NAMESPACE`.
pub const LOCAL_NAMESPACE: &str = "tienda";

/// One variable's value, or what the placement must decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The same text wherever the component runs.
    Literal(String),
    /// A key of the component's credentials: the `<service>-db` Secret in a cluster,
    /// `secrets.json` under `tienda up`.
    Secret {
        /// The key (also the variable's name).
        key: &'static str,
    },
    /// A key of a Secret the Shop names (the user's, e.g. Stripe's keys): a `secretKeyRef` in a
    /// cluster; under `tienda up`, the variable of the same name in its own environment.
    ShopSecret {
        /// The Secret's name, in the Shop's namespace.
        name: String,
        /// The key.
        key: &'static str,
        /// Whether the pod starts without it.
        optional: bool,
    },
    /// A key the whole Shop shares, made once (random) and never regenerated: in a cluster
    /// the `<shop>-keys` Secret the operator creates ([`shop_keys_secret_name`]), under
    /// `tienda up` its `secrets.json`.
    ShopKey {
        /// The key (also the variable's name).
        key: &'static str,
    },
    /// A fact about the running instance: the downward API (`fieldRef`) in a cluster.
    Field {
        /// `metadata.name` or `metadata.namespace`.
        path: &'static str,
    },
    /// Something that depends on where the component runs.
    Placed(Placed),
}

/// The Secret holding a Shop's shared keys ([`Value::ShopKey`]): `<shop>-keys`.
pub fn shop_keys_secret_name(shop: &str) -> String {
    format!("{shop}-keys")
}

/// The components that get the event-sealing keys: auth seals, notifications opens. No other
/// component can read an account link from the streams.
pub fn seals_events(component: Component) -> bool {
    matches!(component, Component::Auth | Component::Notifications)
}

/// The components of `shop` that call `target` directly (its URL is in their environment:
/// everyone reads auth's JWKS, orders prices from products), and the gateway, which routes
/// the public's requests to every component. What a NetworkPolicy must let through.
pub fn callers(shop: &Shop, target: Component) -> Vec<Component> {
    Component::ALL
        .into_iter()
        .filter(|&caller| caller != target)
        .filter(|&caller| {
            caller == Component::Gateway
                || component_environment(shop, caller).iter().any(|(_, value)| {
                    matches!(value, Value::Placed(Placed::Url { component, .. }) if *component == target)
                })
        })
        .collect()
}

/// What a placement decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The public listener: `0.0.0.0:<port>` in a pod, a loopback port under `tienda up`.
    ListenAddr,
    /// The admin listener: `0.0.0.0:9090` in a pod, a loopback port under `tienda up`.
    AdminAddr,
    /// NATS: the Shop's URL in a cluster, the one `tienda up` runs or was given.
    NatsUrl,
    /// The mounted NATS credentials file (a cluster; `tienda up`'s NATS needs none).
    NatsCredsFile,
    /// Another component's base URL followed by `path`: its Kubernetes Service in a cluster,
    /// its loopback port under `tienda up`.
    Url {
        /// The component reached.
        component: Component,
        /// Appended to the base URL (`""` for the base itself).
        path: &'static str,
    },
    /// The gateway's upstreams: empty in a cluster (EndpointSlices), the running components
    /// under `tienda up`.
    Upstreams,
    /// Where policies come from: `kubernetes` in a cluster, `file` under `tienda up`.
    PolicySource,
    /// `json` in a cluster (collectors), `pretty` under `tienda up` (a terminal).
    LogFormat,
    /// The gateway's replica count: the Service's in a cluster, 1 under `tienda up`.
    Replicas,
}

/// A component's environment (the user's `env` from the Shop comes after it).
pub fn component_environment(shop: &Shop, component: Component) -> Vec<(&'static str, Value)> {
    let literal = |s: &str| Value::Literal(s.to_owned());
    let placed = Value::Placed;
    let shop_name = shop.metadata.name.clone().unwrap_or_default();
    let mut vars = vec![
        (var::LISTEN_ADDR, placed(Placed::ListenAddr)),
        (var::ADMIN_ADDR, placed(Placed::AdminAddr)),
        (var::LOG_FORMAT, placed(Placed::LogFormat)),
        (var::TIENDA_SHOP, Value::Literal(shop_name)),
        (var::TIENDA_COMPONENT, Value::Literal(component.to_string())),
        (var::TIENDA_POLICY_SOURCE, placed(Placed::PolicySource)),
        (
            var::POD_NAME,
            Value::Field {
                path: "metadata.name",
            },
        ),
        (
            var::POD_NAMESPACE,
            Value::Field {
                path: "metadata.namespace",
            },
        ),
    ];
    // The gateway never uses NATS (and has no NATS identity).
    if component != Component::Gateway {
        vars.push((var::NATS_URL, placed(Placed::NatsUrl)));
    }
    if component == Component::Gateway {
        // Rate limits are stated for the whole shop; each replica enforces its share (the
        // gateway corrects the count from its EndpointSlice while it runs).
        vars.push((var::GATEWAY_REPLICAS, placed(Placed::Replicas)));
        vars.push((var::GATEWAY_UPSTREAMS, placed(Placed::Upstreams)));
    }
    if component.has_database() {
        vars.push((
            var::DATABASE_URL,
            Value::Secret {
                key: var::DATABASE_URL,
            },
        ));
    }
    // Tokens are checked against auth's JWKS.
    vars.push((
        var::AUTH_ISSUER,
        placed(Placed::Url {
            component: Component::Auth,
            path: "",
        }),
    ));
    vars.push((var::AUTH_AUDIENCE, literal("tienda")));
    vars.push((
        var::AUTH_JWKS_URL,
        placed(Placed::Url {
            component: Component::Auth,
            path: "/.well-known/jwks.json",
        }),
    ));
    if component == Component::Orders {
        // Checkout prices lines from the catalog.
        vars.push((
            var::PRODUCTS_URL,
            placed(Placed::Url {
                component: Component::Products,
                path: "",
            }),
        ));
    }
    if component == Component::Auth {
        vars.push((
            var::AUTH_KEY_ENCRYPTION_KEY,
            Value::Secret {
                key: var::AUTH_KEY_ENCRYPTION_KEY,
            },
        ));
    }
    if seals_events(component) {
        vars.push((
            var::EVENT_SEALING_KEYS,
            Value::ShopKey {
                key: var::EVENT_SEALING_KEYS,
            },
        ));
    }
    if component == Component::Payments
        && let Some(payments) = &shop.spec.payments
    {
        vars.extend(payments_environment(payments));
    }
    if component == Component::Notifications
        && let Some(notifications) = &shop.spec.notifications
    {
        vars.extend(notifications_environment(notifications));
    }
    let nats = &shop.spec.nats;
    if (nats.credentials_secret_ref.is_some() || nats.account_signing_key_secret_ref.is_some())
        && component != Component::Gateway
    {
        vars.push((var::NATS_CREDS_FILE, placed(Placed::NatsCredsFile)));
    }
    if let Some(telemetry) = &shop.spec.telemetry {
        vars.push((
            var::OTEL_EXPORTER_OTLP_ENDPOINT,
            literal(&telemetry.otlp_endpoint),
        ));
    }
    vars.push((
        var::OTEL_SERVICE_NAME,
        Value::Literal(format!("tienda-{component}")),
    ));
    vars
}

/// What the notifications component is told of the Shop's `notifications`.
fn notifications_environment(n: &ShopNotifications) -> Vec<(&'static str, Value)> {
    let mut vars = Vec::new();
    if let Some(smtp) = &n.smtp {
        let (tls, port) = match smtp.tls {
            SmtpTls::Starttls => ("starttls", 587),
            SmtpTls::Tls => ("tls", 465),
            SmtpTls::None => ("none", 25),
        };
        vars.push((var::TIENDA_SMTP_HOST, Value::Literal(smtp.host.clone())));
        vars.push((
            var::TIENDA_SMTP_PORT,
            Value::Literal(smtp.port.unwrap_or(port).to_string()),
        ));
        vars.push((var::TIENDA_SMTP_TLS, Value::Literal(tls.to_owned())));
        if let Some(secret) = &smtp.secret_ref {
            for (name, key) in [
                (var::TIENDA_SMTP_USERNAME, smtp_secret::USERNAME),
                (var::TIENDA_SMTP_PASSWORD, smtp_secret::PASSWORD),
            ] {
                vars.push((
                    name,
                    Value::ShopSecret {
                        name: secret.name.clone(),
                        key,
                        optional: false,
                    },
                ));
            }
        }
    }
    if let Some(from) = &n.mail_from {
        vars.push((var::NOTIFICATIONS_MAIL_FROM, Value::Literal(from.clone())));
    }
    if n.allow_private_webhooks {
        vars.push((
            var::NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE,
            Value::Literal("true".into()),
        ));
    }
    let secret = |name: &str, key: &'static str| Value::ShopSecret {
        name: name.to_owned(),
        key,
        optional: false,
    };
    if let Some(sms) = &n.sms {
        if let Some(twilio) = &sms.twilio {
            vars.push((
                var::TWILIO_ACCOUNT_SID,
                Value::Literal(twilio.account_sid.clone()),
            ));
            vars.push((var::TWILIO_FROM, Value::Literal(twilio.from.clone())));
            vars.push((
                var::TWILIO_AUTH_TOKEN,
                secret(&twilio.secret_ref.name, provider_secret::TWILIO_AUTH_TOKEN),
            ));
        }
        if let Some(vonage) = &sms.vonage {
            vars.push((var::VONAGE_API_KEY, Value::Literal(vonage.api_key.clone())));
            vars.push((var::VONAGE_FROM, Value::Literal(vonage.from.clone())));
            vars.push((
                var::VONAGE_API_SECRET,
                secret(&vonage.secret_ref.name, provider_secret::VONAGE_API_SECRET),
            ));
        }
    }
    if let Some(push) = &n.push {
        if let Some(fcm) = &push.fcm {
            vars.push((
                var::FCM_CREDENTIALS_JSON,
                secret(&fcm.secret_ref.name, provider_secret::FCM_CREDENTIALS),
            ));
        }
        if let Some(webpush) = &push.webpush {
            vars.push((
                var::WEBPUSH_VAPID_SUBJECT,
                Value::Literal(webpush.subject.clone()),
            ));
            vars.push((
                var::WEBPUSH_VAPID_PRIVATE_KEY,
                secret(&webpush.secret_ref.name, provider_secret::VAPID_PRIVATE_KEY),
            ));
        }
    }
    vars
}

/// What the payments component is told of the Shop's `payments`.
fn payments_environment(payments: &ShopPayments) -> Vec<(&'static str, Value)> {
    let provider = match payments.provider {
        PaymentProvider::Sandbox => "sandbox",
        PaymentProvider::Stripe => "stripe",
        PaymentProvider::Paypal => "paypal",
    };
    let mut vars = vec![(var::PAYMENTS_PROVIDER, Value::Literal(provider.to_owned()))];
    // A provider's keys are given whenever they are configured, so payments made with it can
    // still be captured and refunded after the shop moves to another provider.
    if let Some(stripe) = &payments.stripe {
        if let Some(base) = &stripe.api_base {
            vars.push((var::STRIPE_API_BASE, Value::Literal(base.clone())));
        }
        vars.push((
            var::STRIPE_SECRET_KEY,
            Value::ShopSecret {
                name: stripe.secret_ref.name.clone(),
                key: stripe_secret::SECRET_KEY,
                optional: false,
            },
        ));
        vars.push((
            var::STRIPE_WEBHOOK_SECRETS,
            Value::ShopSecret {
                name: stripe.secret_ref.name.clone(),
                key: stripe_secret::WEBHOOK_SECRETS,
                optional: true,
            },
        ));
    }
    if let Some(paypal) = &payments.paypal {
        if let Some(base) = &paypal.api_base {
            vars.push((var::PAYPAL_API_BASE, Value::Literal(base.clone())));
        }
        for (name, key) in [
            (var::PAYPAL_CLIENT_ID, paypal_secret::CLIENT_ID),
            (var::PAYPAL_CLIENT_SECRET, paypal_secret::CLIENT_SECRET),
        ] {
            vars.push((
                name,
                Value::ShopSecret {
                    name: paypal.secret_ref.name.clone(),
                    key,
                    optional: false,
                },
            ));
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(spec: serde_json::Value) -> Shop {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "demo", "namespace": "shops"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn plain() -> Shop {
        shop(serde_json::json!({
            "version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
            "nats": {"url": "nats://nats:4222"}
        }))
    }

    fn names(vars: &[(&'static str, Value)]) -> Vec<&'static str> {
        vars.iter().map(|(name, _)| *name).collect()
    }

    #[test]
    fn a_component_is_called_by_the_gateway_and_by_whoever_has_its_url() {
        use Component::*;
        let callers = |c| callers(&plain(), c);
        assert_eq!(
            callers(Auth),
            [Products, Orders, Payments, Notifications, Gateway],
            "everyone reads auth's JWKS"
        );
        assert_eq!(callers(Products), [Orders, Gateway]);
        assert_eq!(callers(Orders), [Gateway]);
        assert_eq!(
            callers(Gateway),
            [] as [Component; 0],
            "no one inside calls the gateway"
        );
    }

    #[test]
    fn only_auth_and_notifications_get_the_event_sealing_keys() {
        for component in Component::ALL {
            let has = component_environment(&plain(), component).contains(&(
                var::EVENT_SEALING_KEYS,
                Value::ShopKey {
                    key: var::EVENT_SEALING_KEYS,
                },
            ));
            assert_eq!(has, seals_events(component), "{component}");
        }
        assert!(seals_events(Component::Auth) && seals_events(Component::Notifications));
    }

    #[test]
    fn only_components_with_a_database_get_a_database_url_from_their_credentials() {
        let products = component_environment(&plain(), Component::Products);
        let gateway = component_environment(&plain(), Component::Gateway);
        assert!(products.contains(&(
            var::DATABASE_URL,
            Value::Secret {
                key: var::DATABASE_URL
            }
        )));
        assert!(!names(&gateway).contains(&var::DATABASE_URL));
    }

    #[test]
    fn only_auth_gets_the_key_encryption_key_and_only_the_gateway_its_replicas_and_upstreams() {
        for component in Component::ALL {
            let names = names(&component_environment(&plain(), component));
            assert_eq!(
                names.contains(&var::AUTH_KEY_ENCRYPTION_KEY),
                component == Component::Auth,
                "{component}"
            );
            assert_eq!(
                names.contains(&var::GATEWAY_REPLICAS) && names.contains(&var::GATEWAY_UPSTREAMS),
                component == Component::Gateway,
                "{component}"
            );
            assert!(names.contains(&var::ADMIN_ADDR), "{component}");
        }
    }

    #[test]
    fn nats_credentials_and_telemetry_appear_only_when_the_shop_sets_them() {
        let with = shop(serde_json::json!({
            "version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
            "nats": {"url": "nats://nats:4222", "credentialsSecretRef": {"name": "creds"}},
            "telemetry": {"otlpEndpoint": "http://otel:4317"}
        }));
        let env = component_environment(&with, Component::Orders);
        assert!(env.contains(&(var::NATS_CREDS_FILE, Value::Placed(Placed::NatsCredsFile))));
        assert!(env.contains(&(
            var::OTEL_EXPORTER_OTLP_ENDPOINT,
            Value::Literal("http://otel:4317".into())
        )));
        let names = names(&component_environment(&plain(), Component::Orders));
        assert!(!names.contains(&var::NATS_CREDS_FILE));
        assert!(!names.contains(&var::OTEL_EXPORTER_OTLP_ENDPOINT));
    }

    #[test]
    fn sms_and_push_providers_reach_notifications_with_secrets_by_reference() {
        let with = shop(serde_json::json!({
            "version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
            "nats": {"url": "nats://nats:4222"},
            "notifications": {
                "sms": {"twilio": {"accountSid": "AC0123456789abcdef0123456789abcdef",
                                   "from": "+15005550006", "secretRef": {"name": "twilio"}},
                        "vonage": {"apiKey": "k", "from": "Acme", "secretRef": {"name": "vonage"}}},
                "push": {"fcm": {"secretRef": {"name": "fcm"}},
                         "webpush": {"subject": "mailto:ops@acme.example", "secretRef": {"name": "vapid"}}}}
        }));
        let vars = component_environment(&with, Component::Notifications);
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let by_ref = |name: &str, key: &'static str| {
            Some(Value::ShopSecret {
                name: name.into(),
                key,
                optional: false,
            })
        };
        assert_eq!(
            get(var::TWILIO_AUTH_TOKEN),
            by_ref("twilio", provider_secret::TWILIO_AUTH_TOKEN)
        );
        assert_eq!(
            get(var::TWILIO_FROM),
            Some(Value::Literal("+15005550006".into()))
        );
        assert_eq!(
            get(var::VONAGE_API_SECRET),
            by_ref("vonage", provider_secret::VONAGE_API_SECRET)
        );
        assert_eq!(
            get(var::FCM_CREDENTIALS_JSON),
            by_ref("fcm", provider_secret::FCM_CREDENTIALS)
        );
        assert_eq!(
            get(var::WEBPUSH_VAPID_PRIVATE_KEY),
            by_ref("vapid", provider_secret::VAPID_PRIVATE_KEY)
        );
        assert_eq!(
            get(var::WEBPUSH_VAPID_SUBJECT),
            Some(Value::Literal("mailto:ops@acme.example".into()))
        );
        for other in Component::ALL
            .into_iter()
            .filter(|c| *c != Component::Notifications)
        {
            let names = names(&component_environment(&with, other));
            assert!(!names.contains(&var::TWILIO_AUTH_TOKEN), "{other}");
        }
    }

    #[test]
    fn no_variable_is_given_twice() {
        for component in Component::ALL {
            let mut names = names(&component_environment(&plain(), component));
            let count = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), count, "{component}");
        }
    }

    #[test]
    fn notifications_gets_the_shops_mail_server_and_its_credentials_by_reference() {
        let plain_vars = component_environment(&plain(), Component::Notifications);
        assert!(!names(&plain_vars).contains(&var::TIENDA_SMTP_HOST));
        let with_mail = shop(serde_json::json!({
            "version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
            "nats": {"url": "nats://nats:4222"},
            "notifications": {"smtp": {"host": "smtp.example.com", "secretRef": {"name": "smtp"}},
                              "mailFrom": "Acme <no-reply@acme.example>",
                              "allowPrivateWebhooks": true}
        }));
        let vars = component_environment(&with_mail, Component::Notifications);
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let literal = |v: &str| Some(Value::Literal(v.into()));
        assert_eq!(get(var::TIENDA_SMTP_HOST), literal("smtp.example.com"));
        assert_eq!(
            get(var::TIENDA_SMTP_PORT),
            literal("587"),
            "STARTTLS's port"
        );
        assert_eq!(get(var::TIENDA_SMTP_TLS), literal("starttls"));
        assert_eq!(
            get(var::TIENDA_SMTP_PASSWORD),
            Some(Value::ShopSecret {
                name: "smtp".into(),
                key: smtp_secret::PASSWORD,
                optional: false
            })
        );
        assert_eq!(
            get(var::NOTIFICATIONS_MAIL_FROM),
            literal("Acme <no-reply@acme.example>")
        );
        assert_eq!(
            get(var::NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE),
            literal("true")
        );
        for other in Component::ALL
            .into_iter()
            .filter(|c| *c != Component::Notifications)
        {
            let names = names(&component_environment(&with_mail, other));
            assert!(
                !names.contains(&var::TIENDA_SMTP_PASSWORD),
                "{other} never sees the mail password"
            );
        }
        assert!(!names(&plain_vars).contains(&var::TWILIO_AUTH_TOKEN));
    }

    #[test]
    fn payments_gets_the_shops_provider_and_stripes_keys_by_reference() {
        let sandbox = component_environment(&plain(), Component::Payments);
        assert!(
            !names(&sandbox).contains(&var::PAYMENTS_PROVIDER),
            "default: the service's own"
        );
        let stripe = shop(serde_json::json!({
            "version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
            "nats": {"url": "nats://nats:4222"},
            "payments": {"provider": "stripe",
                         "stripe": {"apiBase": "http://stripe-mock:12111", "secretRef": {"name": "stripe-keys"}}}
        }));
        let vars = component_environment(&stripe, Component::Payments);
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(var::PAYMENTS_PROVIDER),
            Some(Value::Literal("stripe".into()))
        );
        assert_eq!(
            get(var::STRIPE_API_BASE),
            Some(Value::Literal("http://stripe-mock:12111".into()))
        );
        assert_eq!(
            get(var::STRIPE_SECRET_KEY),
            Some(Value::ShopSecret {
                name: "stripe-keys".into(),
                key: stripe_secret::SECRET_KEY,
                optional: false
            })
        );
        assert_eq!(
            get(var::STRIPE_WEBHOOK_SECRETS),
            Some(Value::ShopSecret {
                name: "stripe-keys".into(),
                key: stripe_secret::WEBHOOK_SECRETS,
                optional: true
            })
        );
        let paypal = shop(serde_json::json!({
            "version": "0.1.0", "postgres": {"host": "pg", "adminSecretRef": {"name": "pg"}},
            "nats": {"url": "nats://nats:4222"},
            "payments": {"provider": "paypal", "paypal": {"secretRef": {"name": "paypal-app"}}}
        }));
        let paypal_vars = component_environment(&paypal, Component::Payments);
        let get = |name: &str| {
            paypal_vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(var::PAYMENTS_PROVIDER),
            Some(Value::Literal("paypal".into()))
        );
        assert_eq!(
            get(var::PAYPAL_CLIENT_SECRET),
            Some(Value::ShopSecret {
                name: "paypal-app".into(),
                key: paypal_secret::CLIENT_SECRET,
                optional: false
            })
        );
        assert_eq!(get(var::PAYPAL_API_BASE), None, "PayPal's own default");
        for other in Component::ALL
            .into_iter()
            .filter(|c| *c != Component::Payments)
        {
            let names = names(&component_environment(&stripe, other));
            assert!(
                !names.contains(&var::STRIPE_SECRET_KEY),
                "{other} never sees Stripe's key"
            );
        }
    }
}
