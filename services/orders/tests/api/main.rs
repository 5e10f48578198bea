//! The orders service against real PostgreSQL, nats-server and a real products service.

mod aftersale;
mod cart;
mod checkout;
mod fulfilment;
mod helpers;
mod orders;
mod saga;
mod timeline;
