//! The gateway over real HTTP in front of real upstream HTTP servers started by the test.

mod body_limits;
mod circuits;
mod cluster;
mod edge;
mod helpers;
mod rate_limits;
mod reload;
mod routing;
