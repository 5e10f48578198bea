//! The shop's event topology: which streams each component owns and which durable consumers
//! it reads with. One stream per domain; events are `tienda.<domain>.<event>` (matched by
//! `tienda.<domain>.*`), saga commands `tienda.<domain>.cmd.<command>` (matched by
//! `tienda.<domain>.cmd.>`), so event and command consumers never see each other's messages.
//!
//! One shop per NATS account: subjects are not prefixed per shop (they are a contract), so two
//! shops on one account would fight over them. Give each shop its own NATS account.

use serde_json::json;
use tienda_crds::{
    Component,
    service::{ConsumerSpec, StreamSpec},
};

/// How long events stay in a domain stream (14 days): long enough for a consumer that was
/// down over a long weekend to catch up.
const EVENT_RETENTION: &str = "336h";

fn stream(name: &str, domain: &str) -> StreamSpec {
    serde_json::from_value(json!({
        "name": name,
        "subjects": [format!("tienda.{domain}.>")],
        "maxAge": EVENT_RETENTION,
    }))
    .expect("a valid stream spec")
}

fn consumer(name: &str, stream: &str, filters: &[&str]) -> ConsumerSpec {
    serde_json::from_value(json!({
        "name": name,
        "stream": stream,
        "filterSubjects": filters,
        "ackWait": "30s",
        "maxDeliver": 5,
        "backoff": ["1s", "5s", "30s", "2m"],
    }))
    .expect("a valid consumer spec")
}

/// The streams a component owns.
pub fn streams(component: Component) -> Vec<StreamSpec> {
    match component {
        Component::Gateway => vec![],
        Component::Auth => vec![stream("USER", "user")],
        Component::Products => vec![
            stream("PRODUCT", "product"),
            stream("INVENTORY", "inventory"),
        ],
        Component::Orders => vec![stream("ORDER", "order")],
        Component::Payments => vec![stream("PAYMENT", "payment")],
        Component::Notifications => vec![stream("NOTIFICATION", "notification")],
    }
}

/// The durable consumers a component reads with.
pub fn consumers(component: Component) -> Vec<ConsumerSpec> {
    match component {
        Component::Gateway | Component::Auth => vec![],
        Component::Products => vec![
            consumer(
                "products-inventory-commands",
                "INVENTORY",
                &["tienda.inventory.cmd.>"],
            ),
            consumer("products-order-events", "ORDER", &["tienda.order.*"]),
        ],
        Component::Orders => vec![
            consumer(
                "orders-inventory-events",
                "INVENTORY",
                &["tienda.inventory.*"],
            ),
            consumer("orders-payment-events", "PAYMENT", &["tienda.payment.*"]),
        ],
        Component::Payments => vec![consumer(
            "payments-commands",
            "PAYMENT",
            &["tienda.payment.cmd.>"],
        )],
        Component::Notifications => vec![
            consumer("notifications-user-events", "USER", &["tienda.user.*"]),
            consumer("notifications-order-events", "ORDER", &["tienda.order.*"]),
            consumer(
                "notifications-payment-events",
                "PAYMENT",
                &["tienda.payment.*"],
            ),
        ],
    }
}

/// PostgreSQL extensions a component's database needs.
pub fn extensions(component: Component) -> Vec<String> {
    match component {
        Component::Products => vec!["pg_trgm".into()],
        _ => vec![],
    }
}

/// A component's provisioning as a `Service` spec (streams, consumers, its database with
/// extensions) for callers without a cluster: `tienda up` and tests. `image` is only a label.
pub fn service_spec(shop: &str, component: Component, database: &str) -> tienda_crds::ServiceSpec {
    serde_json::from_value(json!({
        "shop": shop,
        "component": component,
        "image": format!("tienda-{component}"),
        "streams": streams(component),
        "consumers": consumers(component),
        "database": {"name": database, "extensions": extensions(component)},
    }))
    .expect("a valid service spec")
}

/// Provisions the whole shop's topology without a cluster (`tienda up`, tests): every
/// component's streams first, then the consumers, which read streams other components own.
pub async fn provision_all(js: &async_nats::jetstream::Context) -> Vec<crate::streams::ItemReport> {
    let mut report = Vec::new();
    for with_consumers in [false, true] {
        for component in Component::ALL {
            let mut spec = service_spec("local", component, "unused");
            if !with_consumers {
                spec.consumers.clear();
            }
            report.extend(crate::streams::provision_service(js, &spec, 1, None).await);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_consumer_reads_a_stream_some_component_owns() {
        let owned: BTreeSet<String> = Component::ALL
            .iter()
            .flat_map(|c| streams(*c))
            .map(|s| s.name)
            .collect();
        for component in Component::ALL {
            for c in consumers(component) {
                assert!(
                    owned.contains(&c.stream),
                    "{} reads {} which nobody owns",
                    c.name,
                    c.stream
                );
            }
        }
    }

    #[test]
    fn stream_and_consumer_names_are_unique_across_the_shop() {
        let streams: Vec<_> = Component::ALL
            .iter()
            .flat_map(|c| streams(*c))
            .map(|s| s.name)
            .collect();
        assert_eq!(streams.len(), streams.iter().collect::<BTreeSet<_>>().len());
        let consumers: Vec<_> = Component::ALL
            .iter()
            .flat_map(|c| consumers(*c))
            .map(|c| c.name)
            .collect();
        assert_eq!(
            consumers.len(),
            consumers.iter().collect::<BTreeSet<_>>().len()
        );
    }

    #[test]
    fn event_filters_do_not_match_commands() {
        // `*` is one token: `tienda.inventory.*` matches `tienda.inventory.reserved`, not
        // `tienda.inventory.cmd.reserve`.
        let orders = consumers(Component::Orders);
        assert!(orders[0].filter_subjects.iter().all(|f| f.ends_with(".*")));
    }
}
