//! Whole-system tests: the shop as `tienda up` runs it — every service its own process over
//! real PostgreSQL and NATS — driven the way users drive it. The gateway is not built yet, so
//! journeys call the services at their own ports; they move behind the gateway when it comes.

mod journeys;
