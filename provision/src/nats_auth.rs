//! One NATS identity per component, allowed only the subjects it publishes and consumes.
//!
//! NATS's own decentralized authorization: an operator key signs the shop's account, an
//! account signing key signs one user per component, and the user's JWT carries its
//! permissions. The server holds only the operator's and the account's JWTs, so users are
//! minted without touching it: `tienda up` mints them for the nats-server it starts, the
//! Kubernetes operator for a Shop whose NATS is run this way (`spec.nats.accountSigningKeySecretRef`).
//! The gateway gets none: it never uses NATS.
//!
//! What a component may do ([`permissions`]) follows from the topology: publish its own events
//! and the commands it sends, read the streams it consumes (and replay their dead letters,
//! which republishes on the original subject), keep its dead letters, follow session
//! revocations, and receive replies on its own inbox prefix (`_INBOX_<component>`), so it
//! cannot read another component's replies.
//!
//! The JWT encoding is written here (a header, claims and an Ed25519 signature by an nkey,
//! as nats-io/jwt v2 and `nsc` produce): the Rust crates that do it cover users and accounts
//! but not operators, and the whole format is a few lines.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use tienda_crds::Component;

use crate::topology;

/// What a component may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The inbox prefix of a component's connection (its replies arrive under it).
pub fn inbox_prefix(component: Component) -> String {
    format!("_INBOX_{component}")
}

/// The events a component publishes and the commands it sends.
fn published(component: Component) -> Vec<String> {
    let events = |domain: &str| format!("tienda.{domain}.*");
    match component {
        Component::Gateway => vec![],
        Component::Auth => vec![events("user")],
        Component::Products => vec![events("product"), events("inventory")],
        Component::Orders => vec![
            events("order"),
            "tienda.inventory.cmd.>".into(),
            "tienda.payment.cmd.>".into(),
        ],
        Component::Payments => vec![events("payment")],
        Component::Notifications => vec![events("notification")],
    }
}

/// The JetStream API a component may call on `stream`, to read it with `durable` (or with
/// ordered consumers when `durable` is None).
fn reads(stream: &str, durable: Option<&str>) -> Vec<String> {
    let consumer = durable.unwrap_or("*");
    let mut subjects = vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ];
    if durable.is_none() {
        // Ordered consumers are ephemeral: made, and remade after a gap, by the reader.
        subjects.extend([
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        ]);
    }
    subjects
}

/// What `component` may do. Empty for the gateway.
pub fn permissions(component: Component) -> Permissions {
    if component == Component::Gateway {
        return Permissions {
            publish: vec![],
            subscribe: vec![],
        };
    }
    let name = component.to_string();
    let mut publish = published(component);
    let mut subscribe = vec![format!("{}.>", inbox_prefix(component))];
    // Its own streams: publishing (acks come back on the inbox) and reading them back.
    for stream in topology::streams(component) {
        publish.push(format!("$JS.API.STREAM.INFO.{}", stream.name));
    }
    // Every service follows session revocations on USER (kit::revocation).
    publish.extend(reads("USER", None));
    // Products keeps its catalog cache fresh from its own PRODUCT stream.
    if component == Component::Products {
        publish.extend(reads("PRODUCT", None));
    }
    let consumers = topology::consumers(component);
    for consumer in &consumers {
        publish.extend(reads(&consumer.stream, Some(&consumer.name)));
        // Replaying a dead letter republishes it on its original subject.
        publish.extend(consumer.filter_subjects.iter().cloned());
        subscribe.push(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            consumer.stream, consumer.name
        ));
    }
    if !consumers.is_empty() {
        let dlq = tienda_events::dead_letter::stream(&name);
        publish.push(tienda_events::dead_letter::all_subjects(&name));
        publish.extend([
            format!("$JS.API.STREAM.INFO.{dlq}"),
            format!("$JS.API.STREAM.MSG.GET.{dlq}"),
            format!("$JS.API.STREAM.MSG.DELETE.{dlq}"),
            format!("$JS.API.DIRECT.GET.{dlq}"),
            format!("$JS.API.DIRECT.GET.{dlq}.>"),
        ]);
    }
    publish.sort();
    publish.dedup();
    subscribe.sort();
    subscribe.dedup();
    Permissions { publish, subscribe }
}

/// The keys of a shop's NATS account: the operator that vouches for it, the account, and the
/// signing key users are minted with. Seeds, as `nsc` writes them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AccountKeys {
    /// The operator's seed (`SO…`).
    pub operator_seed: String,
    /// The account's seed (`SA…`).
    pub account_seed: String,
    /// The account signing key's seed (`SA…`).
    pub signing_seed: String,
    /// The server's system account's seed (`SA…`): JetStream needs one; no client uses it.
    #[serde(default = "new_account_seed")]
    pub system_seed: String,
}

fn new_account_seed() -> String {
    KeyPair::new_account().seed().expect("a new key has a seed")
}

/// Why a key or token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("NATS keys: {0}")]
pub struct KeyError(String);

fn pair(seed: &str, what: &str) -> Result<KeyPair, KeyError> {
    KeyPair::from_seed(seed.trim()).map_err(|e| KeyError(format!("{what} seed: {e}")))
}

impl AccountKeys {
    /// New random keys.
    pub fn generate() -> Self {
        let seed = |kp: KeyPair| kp.seed().expect("a new key has a seed");
        Self {
            operator_seed: seed(KeyPair::new_operator()),
            account_seed: seed(KeyPair::new_account()),
            signing_seed: seed(KeyPair::new_account()),
            system_seed: seed(KeyPair::new_account()),
        }
    }

    /// The system account's JWT, signed by the operator (no JetStream, no users).
    pub fn system_jwt(&self) -> Result<String, KeyError> {
        let operator = pair(&self.operator_seed, "operator")?;
        let system = pair(&self.system_seed, "system")?;
        encode(
            &operator,
            &system.public_key(),
            "SYS",
            json!({"type": "account", "version": 2,
                   "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                              "exports": -1, "wildcards": true, "conn": -1, "leaf": -1}}),
        )
    }

    /// The account's public key (`A…`).
    pub fn account_public_key(&self) -> Result<String, KeyError> {
        Ok(pair(&self.account_seed, "account")?.public_key())
    }

    /// The operator's JWT (self-signed).
    pub fn operator_jwt(&self) -> Result<String, KeyError> {
        let operator = pair(&self.operator_seed, "operator")?;
        let public = operator.public_key();
        encode(
            &operator,
            &public,
            "tienda",
            json!({"type": "operator", "version": 2}),
        )
    }

    /// The account's JWT, signed by the operator: JetStream enabled without limits, users
    /// signed by the signing key.
    pub fn account_jwt(&self) -> Result<String, KeyError> {
        let operator = pair(&self.operator_seed, "operator")?;
        let signing = pair(&self.signing_seed, "signing")?;
        encode(
            &operator,
            &self.account_public_key()?,
            "tienda-shop",
            json!({
                "type": "account", "version": 2,
                "signing_keys": [signing.public_key()],
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
                },
                "default_permissions": {"pub": {}, "sub": {}},
            }),
        )
    }

    /// A user of the account with `permissions` (everything, when None: the provisioner),
    /// as the text of a `.creds` file.
    pub fn user_creds(
        &self,
        name: &str,
        permissions: Option<&Permissions>,
    ) -> Result<String, KeyError> {
        user_creds(
            &self.signing_seed,
            &self.account_public_key()?,
            name,
            permissions,
        )
    }
}

/// A user of `account` (a public key, `A…`) signed by the account signing key `signing_seed`,
/// with `permissions` (everything, when None), as the text of a `.creds` file.
pub fn user_creds(
    signing_seed: &str,
    account: &str,
    name: &str,
    permissions: Option<&Permissions>,
) -> Result<String, KeyError> {
    let signing = pair(signing_seed, "signing")?;
    if !account.trim().starts_with('A') {
        return Err(KeyError(format!(
            "account {account:?} is not an account public key (A…)"
        )));
    }
    let user = KeyPair::new_user();
    let mut nats = json!({
        "type": "user", "version": 2,
        "issuer_account": account.trim(),
        "subs": -1, "data": -1, "payload": -1,
    });
    if let Some(p) = permissions {
        nats["pub"] = json!({"allow": p.publish});
        nats["sub"] = json!({"allow": p.subscribe});
    }
    let jwt = encode(&signing, &user.public_key(), name, nats)?;
    let seed = user.seed().map_err(|e| KeyError(e.to_string()))?;
    Ok(format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
    ))
}

/// A NATS JWT: `{"typ":"JWT","alg":"ed25519-nkey"}`, the claims, signed by `issuer`.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> Result<String, KeyError> {
    let claims = json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let head = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{head}.{body}");
    let signature = issuer
        .sign(input.as_bytes())
        .map_err(|e| KeyError(format!("signing: {e}")))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The nats-server configuration lines that trust `keys`' operator and preload its account
/// (for a server `tienda up` or a test starts; a cluster's NATS is configured by its chart).
pub fn server_config(keys: &AccountKeys) -> Result<String, KeyError> {
    let account = keys.account_public_key()?;
    let system = pair(&keys.system_seed, "system")?.public_key();
    Ok(format!(
        "operator: {operator}\nsystem_account: {system}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {account}: {jwt}\n  {system}: {system_jwt}\n}}\n",
        operator = keys.operator_jwt()?,
        jwt = keys.account_jwt()?,
        system_jwt = keys.system_jwt()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_gets_nothing_and_each_component_only_its_own_subjects() {
        let gateway = permissions(Component::Gateway);
        assert!(gateway.publish.is_empty() && gateway.subscribe.is_empty());
        let products = permissions(Component::Products);
        assert!(products.publish.contains(&"tienda.product.*".to_owned()));
        assert!(
            !products
                .publish
                .iter()
                .any(|s| s.starts_with("tienda.user"))
        );
        assert!(
            !products
                .publish
                .iter()
                .any(|s| s == ">" || s == "$JS.API.>")
        );
        let payments = permissions(Component::Payments);
        assert!(
            !payments
                .publish
                .iter()
                .any(|s| s.starts_with("tienda.order") || s.starts_with("tienda.inventory")),
            "payments can neither announce orders nor move stock: {payments:?}"
        );
        assert!(
            !products
                .publish
                .contains(&"tienda.payment.cmd.>".to_owned()),
            "only orders sends payment commands (and payments replays its own)"
        );
        assert!(
            permissions(Component::Orders)
                .publish
                .contains(&"tienda.payment.cmd.>".to_owned())
        );
        assert_eq!(
            permissions(Component::Auth).subscribe,
            ["_INBOX_auth.>"],
            "auth reads no stream but through its inbox"
        );
    }

    #[test]
    fn tokens_are_signed_by_the_keys_they_name() {
        let keys = AccountKeys::generate();
        let creds = keys
            .user_creds("products", Some(&permissions(Component::Products)))
            .unwrap();
        let jwt = creds.lines().nth(1).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let signing = KeyPair::from_seed(&keys.signing_seed).unwrap();
        assert_eq!(claims["iss"], signing.public_key());
        assert_eq!(
            claims["nats"]["issuer_account"],
            keys.account_public_key().unwrap()
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signing
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("a valid signature");
        assert!(creds.contains("-----BEGIN USER NKEY SEED-----\nSU"));
    }
}
