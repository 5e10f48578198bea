//! Who to write to about an order, remembered from order events: payment events name only
//! the order.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::trigger::Contact;

/// Remembers (or refreshes) an order's contact.
pub async fn remember(
    conn: &mut PgConnection,
    order_id: Uuid,
    contact: &Contact,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_contacts (order_id, customer_id, email) VALUES ($1, $2, $3)
         ON CONFLICT (order_id) DO UPDATE
         SET customer_id = EXCLUDED.customer_id, email = EXCLUDED.email, updated_at = now()",
    )
    .bind(order_id)
    .bind(contact.user_id)
    .bind(&contact.email)
    .execute(conn)
    .await?;
    Ok(())
}

/// An order's contact, if one of its events was seen.
pub async fn find(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Contact>, sqlx::Error> {
    let row: Option<(Option<Uuid>, String)> =
        sqlx::query_as("SELECT customer_id, email FROM order_contacts WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(user_id, email)| Contact { user_id, email }))
}
