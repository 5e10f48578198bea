//! What `tienda up` runs and where: the Shop's path, the data directory, the servers to use,
//! and the ports every component listens on.

use std::path::{Path, PathBuf};

use tienda_crds::Component;

use crate::supervisor::Logs;

/// How far above a component's public port its admin port is (gateway 3000 → admin 3100).
pub const ADMIN_PORT_OFFSET: u16 = 100;

/// How far above the base port the operations console listens (3000 → 3110).
pub const CONSOLE_PORT_OFFSET: u16 = 110;

/// What `tienda up` runs and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// A Shop file, or a directory of YAML files holding a Shop and its policies.
    pub path: PathBuf,
    /// Where data, secrets and logs live (`.tienda/`).
    pub data_dir: PathBuf,
    /// An admin connection to an existing PostgreSQL; `None`: the private one.
    pub database_url: Option<String>,
    /// An existing NATS; `None`: the private one.
    pub nats_url: Option<String>,
    /// The first port: the gateway listens on it, the other components on the next ones in
    /// the order gateway, auth, products, orders, payments, notifications (3000-3005); their
    /// admin listeners [`ADMIN_PORT_OFFSET`] higher (3100-3105).
    pub base_port: u16,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// Where service logs go.
    pub logs: Logs,
    /// The first admin account.
    pub admin_email: String,
    /// Its password; `None`: generated once and kept in the data directory.
    pub admin_password: Option<String>,
    /// Load the demo catalog and customer once the shop is ready (`--demo`, `TIENDA_DEMO=1`);
    /// see [`crate::demo`].
    pub demo: bool,
    /// Run the console's own trace viewer and send every component's traces to it
    /// (`--traces`, `TIENDA_TRACES=1`), unless `telemetry` names an endpoint already.
    pub traces: bool,
    /// OpenTelemetry's variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`, …)
    /// handed to every component: by default those of `tienda up`'s own environment, but
    /// `OTEL_SERVICE_NAME` (each component names itself).
    pub telemetry: std::collections::BTreeMap<String, String>,
}

impl Options {
    /// Defaults for `path` (data in `.tienda/`, ports 3000-3005, binaries next to this one).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            data_dir: PathBuf::from(".tienda"),
            database_url: std::env::var("DATABASE_URL").ok(),
            nats_url: std::env::var("NATS_URL").ok(),
            base_port: 3000,
            bin_dir: default_bin_dir(),
            logs: Logs::Terminal,
            admin_email: std::env::var("TIENDA_ADMIN_EMAIL")
                .unwrap_or_else(|_| "admin@tienda.local".into()),
            admin_password: std::env::var("TIENDA_ADMIN_PASSWORD").ok(),
            demo: false,
            traces: false,
            telemetry: telemetry_from_env(),
        }
    }
}

/// The `OTEL_*` variables of this process, but `OTEL_SERVICE_NAME`.
pub fn telemetry_from_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("OTEL_") && name != "OTEL_SERVICE_NAME")
        .collect()
}

impl Options {
    /// The component's public port: `base_port + index`, gateway first.
    pub fn port(&self, component: Component) -> u16 {
        self.base_port + index(component)
    }

    /// The component's admin port: `base_port + 100 + index` (gateway 3100, auth 3101, ...).
    pub fn admin_port(&self, component: Component) -> u16 {
        self.base_port + ADMIN_PORT_OFFSET + index(component)
    }

    /// The operations console's port: `base_port + 110` (3110).
    pub fn console_port(&self) -> u16 {
        self.base_port + CONSOLE_PORT_OFFSET
    }

    /// Every port `tienda up` would listen on: public, admin, the console.
    pub fn ports(&self) -> Vec<u16> {
        Component::ALL
            .into_iter()
            .flat_map(|c| [self.port(c), self.admin_port(c)])
            .chain([self.console_port()])
            .collect()
    }
}

/// The component's place in port order: gateway, auth, products, orders, payments,
/// notifications.
fn index(component: Component) -> u16 {
    match component {
        Component::Gateway => 0,
        Component::Auth => 1,
        Component::Products => 2,
        Component::Orders => 3,
        Component::Payments => 4,
        Component::Notifications => 5,
    }
}

/// Where this executable is (service binaries are built next to it), or, for test binaries
/// under `target/<profile>/deps`, the profile directory.
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_listen_on_consecutive_ports_with_admin_ports_a_hundred_higher() {
        let mut options = Options::new(PathBuf::from("shop"));
        options.base_port = 3000;
        let public: Vec<u16> = Component::ALL.map(|c| options.port(c)).to_vec();
        let admin: Vec<u16> = Component::ALL.map(|c| options.admin_port(c)).to_vec();
        // `Component::ALL` is start order (gateway last); ports are gateway-first.
        assert_eq!(options.port(Component::Gateway), 3000);
        assert_eq!(options.admin_port(Component::Gateway), 3100);
        assert_eq!(options.port(Component::Auth), 3001);
        assert_eq!(options.admin_port(Component::Auth), 3101);
        let mut all = options.ports();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 13, "no two listeners share a port");
        assert_eq!(options.console_port(), 3110, "the operations console");
        assert!(public.iter().zip(&admin).all(|(p, a)| a - p == 100));
    }
}
