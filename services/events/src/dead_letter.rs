//! Where dead letters go: one stream per component, one subject per consumer. Provisioning
//! creates the stream; the consumer runtime publishes to it; the admin API reads it.

/// The dead-letter stream of a component: `DLQ_<COMPONENT>`.
pub fn stream(component: &str) -> String {
    format!("DLQ_{}", component.to_ascii_uppercase().replace('-', "_"))
}

/// The subject a consumer's dead letters are published on: `tienda.dlq.<component>.<consumer>`.
pub fn subject(component: &str, consumer: &str) -> String {
    format!("tienda.dlq.{component}.{consumer}")
}

/// Every dead-letter subject of a component: `tienda.dlq.<component>.>`.
pub fn all_subjects(component: &str) -> String {
    format!("tienda.dlq.{component}.>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_have_their_own_stream_per_component() {
        assert_eq!(stream("orders"), "DLQ_ORDERS");
        assert_eq!(
            subject("orders", "orders-payments"),
            "tienda.dlq.orders.orders-payments"
        );
        assert_eq!(all_subjects("orders"), "tienda.dlq.orders.>");
    }
}
