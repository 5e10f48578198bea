//! Carts in PostgreSQL: one per signed-in customer, or a guest's, found by the SHA-256 of the
//! token it was created with (the token itself is never stored, so a leaked database does not
//! hand out carts). Lines keep the unit price the customer last saw.

use chrono::{DateTime, Utc};
use ring::digest::{SHA256, digest};
use sqlx::PgConnection;
use tienda_events::Money;
use uuid::Uuid;

use crate::error::Error;

/// The request header that carries a guest cart's token.
pub const TOKEN_HEADER: &str = "cart-token";
/// Guest carts untouched this long are deleted.
pub const GUEST_IDLE_DAYS: i32 = 30;
/// Most idle guest carts deleted per new guest cart (the sweep rides on creation).
const SWEEP_BATCH: i64 = 100;

/// A cart and the version its lines were read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct CartRef {
    /// The cart.
    pub id: Uuid,
    /// Moves on every change.
    pub version: i64,
}

/// A stored line.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Line {
    /// The variant.
    pub sku: String,
    /// Its product.
    pub product_id: Uuid,
    /// The product's name when added.
    pub name: String,
    /// Units.
    pub quantity: i32,
    /// The unit price the customer last saw (minor units).
    pub seen_amount: i64,
    /// Its currency.
    pub seen_currency: String,
    /// When it was added.
    pub added_at: DateTime<Utc>,
}

impl Line {
    /// The unit price the customer last saw.
    pub fn seen(&self) -> Result<Money, Error> {
        Ok(Money {
            amount: self.seen_amount,
            currency: self.seen_currency.parse().map_err(|_| {
                Error::Database(sqlx::Error::Decode(
                    format!(
                        "cart line {} has currency {:?}",
                        self.sku, self.seen_currency
                    )
                    .into(),
                ))
            })?,
        })
    }
}

/// A new guest token: `ct_` and 128 random bits (the prefix lets secret scanners spot one).
pub fn new_token() -> String {
    format!(
        "ct_{}{}",
        Uuid::new_v4().simple(),
        &Uuid::new_v4().simple().to_string()[..6]
    )
}

/// What is stored for a token.
pub fn token_digest(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

/// The guest cart of `token`, if it exists.
pub async fn guest(conn: &mut PgConnection, token: &str) -> Result<Option<CartRef>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, version FROM carts WHERE token_hash = $1 AND customer_id IS NULL",
    )
    .bind(token_digest(token))
    .fetch_optional(&mut *conn)
    .await?)
}

/// Creates a guest cart; returns it and its token. Deletes a batch of guest carts idle for
/// [`GUEST_IDLE_DAYS`] on the way, so abandoned carts do not pile up.
pub async fn create_guest(conn: &mut PgConnection) -> Result<(CartRef, String), Error> {
    sqlx::query(
        "DELETE FROM carts WHERE id IN (
             SELECT id FROM carts
              WHERE customer_id IS NULL AND updated_at < now() - make_interval(days => $1)
              LIMIT $2)",
    )
    .bind(GUEST_IDLE_DAYS)
    .bind(SWEEP_BATCH)
    .execute(&mut *conn)
    .await?;
    let token = new_token();
    let cart =
        sqlx::query_as("INSERT INTO carts (id, token_hash) VALUES ($1, $2) RETURNING id, version")
            .bind(Uuid::now_v7())
            .bind(token_digest(&token))
            .fetch_one(&mut *conn)
            .await?;
    Ok((cart, token))
}

/// The customer's cart, created empty when they have none.
pub async fn of_customer(conn: &mut PgConnection, customer: Uuid) -> Result<CartRef, Error> {
    Ok(sqlx::query_as(
        "INSERT INTO carts (id, customer_id) VALUES ($1, $2)
         ON CONFLICT (customer_id) DO UPDATE SET customer_id = EXCLUDED.customer_id
         RETURNING id, version",
    )
    .bind(Uuid::now_v7())
    .bind(customer)
    .fetch_one(&mut *conn)
    .await?)
}

/// Locks the cart against changes until the transaction ends; its version now, or `None`
/// when it is gone.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<i64>, Error> {
    Ok(
        sqlx::query_scalar("SELECT version FROM carts WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The cart's version now (without locking), or `None` when it is gone.
pub async fn version(conn: &mut PgConnection, id: Uuid) -> Result<Option<i64>, Error> {
    Ok(
        sqlx::query_scalar("SELECT version FROM carts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The cart's lines, oldest first.
pub async fn lines(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Line>, Error> {
    Ok(sqlx::query_as(
        "SELECT sku, product_id, name, quantity, seen_amount, seen_currency, added_at
           FROM cart_lines WHERE cart_id = $1 ORDER BY added_at, sku",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Records a change: moves the version on.
pub async fn touch(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query("UPDATE carts SET version = version + 1, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes a line (added, or its quantity or seen price changed).
pub async fn put_line(conn: &mut PgConnection, id: Uuid, line: &Line) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cart_lines (cart_id, sku, product_id, name, quantity, seen_amount,
                                 seen_currency, added_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (cart_id, sku) DO UPDATE
            SET product_id = EXCLUDED.product_id, name = EXCLUDED.name,
                quantity = EXCLUDED.quantity, seen_amount = EXCLUDED.seen_amount,
                seen_currency = EXCLUDED.seen_currency",
    )
    .bind(id)
    .bind(&line.sku)
    .bind(line.product_id)
    .bind(&line.name)
    .bind(line.quantity)
    .bind(line.seen_amount)
    .bind(&line.seen_currency)
    .bind(line.added_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes a line; whether there was one.
pub async fn remove_line(conn: &mut PgConnection, id: Uuid, sku: &str) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM cart_lines WHERE cart_id = $1 AND sku = $2")
        .bind(id)
        .bind(sku)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes every line.
pub async fn clear(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query("DELETE FROM cart_lines WHERE cart_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes the cart and its lines.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query("DELETE FROM carts WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Puts an order's lines back into its customer's cart (after the payment was refused, so the
/// customer can try another card without filling the cart again): units are added to lines
/// already there (up to `max`), new lines keep the price the order was placed at as the price
/// the customer saw.
pub async fn restore(
    conn: &mut PgConnection,
    customer: Uuid,
    lines: &[crate::domain::checkout::PricedLine],
    max: u32,
) -> Result<(), Error> {
    let cart = of_customer(conn, customer).await?;
    lock(conn, cart.id).await?;
    let mine = self::lines(conn, cart.id).await?;
    for line in lines {
        let existing = mine.iter().find(|m| m.sku == line.sku);
        let have = existing.map_or(0, |m| u32::try_from(m.quantity).unwrap_or(0));
        let restored = Line {
            sku: line.sku.clone(),
            product_id: line.product_id,
            name: line.name.clone(),
            quantity: i32::try_from((have + line.quantity).min(max)).unwrap_or(i32::MAX),
            seen_amount: existing.map_or(line.unit_price.amount, |m| m.seen_amount),
            seen_currency: existing.map_or_else(
                || line.unit_price.currency.to_string(),
                |m| m.seen_currency.clone(),
            ),
            added_at: existing.map_or_else(Utc::now, |m| m.added_at),
        };
        put_line(conn, cart.id, &restored).await?;
    }
    touch(conn, cart.id).await
}

/// The quantity a merged line gets: the sum of both carts' units, capped by the stock that
/// can be reserved (`available`, when known) and by `max` — but never below what the
/// customer's own cart already held. `0` means the line is not added.
pub fn merged_quantity(mine: u32, guest: u32, available: Option<i64>, max: u32) -> u32 {
    let sum = (mine + guest).min(max);
    let capped = match available {
        Some(units) => sum.min(u32::try_from(units.max(0)).unwrap_or(u32::MAX)),
        None => sum,
    };
    capped.max(mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_quantities_are_capped_by_stock_but_never_take_from_the_customer() {
        assert_eq!(merged_quantity(0, 3, Some(10), 100), 3);
        assert_eq!(merged_quantity(2, 3, Some(10), 100), 5);
        assert_eq!(merged_quantity(2, 3, Some(4), 100), 4);
        assert_eq!(merged_quantity(0, 3, Some(0), 100), 0);
        assert_eq!(merged_quantity(5, 3, Some(2), 100), 5);
        assert_eq!(merged_quantity(60, 60, None, 100), 100);
        assert_eq!(merged_quantity(0, 3, Some(-1), 100), 0);
    }

    #[test]
    fn tokens_are_unguessable_and_only_their_digest_is_kept() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("ct_") && a.len() == 3 + 32 + 6, "{a}");
        assert_eq!(token_digest(&a), token_digest(&a));
        assert_ne!(token_digest(&a), token_digest(&b));
        assert_eq!(token_digest(&a).len(), 32);
    }
}
