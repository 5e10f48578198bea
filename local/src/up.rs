//! `tienda up` in the foreground: start the shop, print where everything is, apply edits of
//! the Shop file, stop on Ctrl-C.

use std::time::Duration;

use tienda_crds::Component;

use crate::{Options, System, demo};

/// Runs the shop until Ctrl-C.
pub async fn up(options: Options) -> anyhow::Result<()> {
    eprintln!("tienda: starting the shop from {}", options.path.display());
    let mut system = System::start(options.clone()).await?;
    for component in &system.missing {
        eprintln!(
            "tienda: {component} is listed, but there is no tienda-{component} in {} (not built \
             — run `cargo build --workspace --bins` — or not part of this version yet); skipped",
            options.bin_dir.display()
        );
    }
    print_summary(&system, &options);
    eprintln!(
        "tienda: watching {}: policy edits apply at once, Shop edits restart the components",
        options.path.display()
    );
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut last_error = String::new();
    loop {
        tokio::select! {
            result = &mut stop => {
                result?;
                break;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                match system.reload(&options).await {
                    Ok(true) => {
                        last_error.clear();
                        eprintln!(
                            "tienda: the Shop changed; components restarted: {}",
                            system.urls.keys().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                        );
                    }
                    Ok(false) => last_error.clear(),
                    // Said once, not every second while the file stays broken.
                    Err(e) if format!("{e:#}") != last_error => {
                        last_error = format!("{e:#}");
                        eprintln!("tienda: {last_error}\ntienda: keeping what runs; fix the file and save again");
                    }
                    Err(_) => {}
                }
            }
        }
    }
    eprintln!("tienda: stopping");
    system.stop().await;
    eprintln!(
        "tienda: stopped; data kept in {}",
        options.data_dir.display()
    );
    Ok(())
}

fn print_summary(system: &System, options: &Options) {
    eprintln!();
    eprintln!("  {:<14} {:<24} admin", "", "public");
    for (component, url) in &system.urls {
        let admin = system.admin_urls.get(component).map_or("", String::as_str);
        eprintln!("  {:<14} {url:<24} {admin}", component.as_str());
    }
    let entry = system
        .urls
        .get(&Component::Gateway)
        .or_else(|| system.urls.get(&Component::Products))
        .cloned()
        .unwrap_or_default();
    let admin = system
        .admin_urls
        .get(&Component::Gateway)
        .cloned()
        .unwrap_or_default();
    eprintln!();
    eprintln!("  admin account  {} / {}", system.admin.0, system.admin.1);
    eprintln!(
        "                 (password {})",
        system.admin_password_source
    );
    let customer = system.demo.as_ref().and_then(|_| demo::customer().ok());
    if let (Some(report), Some(customer)) = (&system.demo, &customer) {
        eprintln!("  demo data      {}", demo_summary(report));
        eprintln!(
            "  demo customer  {} / {}",
            customer.email, customer.password
        );
    }
    eprintln!("  data           {}", options.data_dir.display());
    eprintln!("  PostgreSQL     {}", redact(&system.database_url));
    eprintln!("  NATS           {}", system.nats_url);
    if let Some(creds) = &system.nats_creds {
        eprintln!(
            "                 one identity per component, allowed only its subjects \
             (the gateway none); all-allowed: {}",
            creds.admin().display()
        );
    }
    if let Some(console) = &system.console_url {
        eprintln!("  console        {console}   (sign in as the admin account)");
    }
    eprintln!("  metrics        <admin>/metrics of each component (the admin column above)");
    match (&system.trace_store, &system.console_url) {
        (Some(_), Some(console)) => {
            eprintln!("  traces         the console's trace viewer, {console} (--traces)")
        }
        _ => eprintln!("  traces         {}", traces_summary(&options.telemetry)),
    }
    eprintln!();
    eprintln!("  try:  curl {entry}/v1/products");
    if let Some(customer) = &customer {
        eprintln!("        curl '{entry}/v1/products?q=camiseta&in_stock=true'");
        eprintln!("        curl {entry}/v1/categories");
        eprintln!(
            "        curl {entry}/v1/auth/login -H 'content-type: application/json' \\\n             \
             -d '{{\"email\": \"{}\", \"password\": \"{}\"}}'",
            customer.email, customer.password
        );
    }
    if !admin.is_empty() {
        eprintln!("        curl {admin}/metrics   (admin port: metrics, policies)");
    }
    eprintln!("  stop: Ctrl-C");
    eprintln!();
}

/// Where traces go, from the OTEL_* variables handed to the components.
fn traces_summary(telemetry: &std::collections::BTreeMap<String, String>) -> String {
    let lookup = |name: &str| {
        telemetry
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    };
    match tienda_kit::telemetry::TraceExport::from_lookup(lookup) {
        Ok(Some(export)) => format!("{} over OTLP ({})", export.endpoint, export.protocol),
        Ok(None) => "off (run with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 and a \
                     collector, Jaeger or Tempo listening there)"
            .into(),
        Err(error) => format!("off: {error:#}"),
    }
}

/// One line on what `--demo` did.
fn demo_summary(report: &demo::Report) -> String {
    match report {
        demo::Report::AlreadyLoaded { marker } => {
            format!(
                "loaded at an earlier start ({}); nothing sent",
                marker.display()
            )
        }
        demo::Report::Loaded {
            categories,
            products,
            existing,
            stocked,
            customer_registered,
        } => format!(
            "loaded: {products} products{}, {categories} categories, stock of {stocked} \
             variants{}",
            if *existing > 0 {
                format!(" ({existing} were there already)")
            } else {
                String::new()
            },
            if *customer_registered {
                ", the demo customer"
            } else {
                ""
            }
        ),
    }
}

/// The URL with its password replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_printed_urls_are_hidden() {
        assert_eq!(
            redact("postgres://postgres:s3cret@127.0.0.1:5432/postgres"),
            "postgres://postgres:***@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
