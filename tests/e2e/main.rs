//! Whole-system tests: the shop as `tienda up` runs it — every service its own process over
//! real PostgreSQL and NATS — driven the way users drive it: through the gateway.

mod checkout;
mod console;
mod demo;
mod faults;
mod identities;
mod journeys;
mod metrics;
mod notifications;
mod operations;
mod policies;
mod shopfile;
mod traces;
