//! The operations console of each Shop in the cluster, served on the operator's metrics
//! listener at `/shops/<namespace>/<shop>/console` (`kubectl port-forward` to it; never
//! exposed by a Shop).
//!
//! The operator is the one process a Shop's NetworkPolicies let reach every component's admin
//! port, and it already holds each Shop's NATS connection. The page and its API are the kit's
//! ([`tienda_kit::console`]); here they are pointed at the Shop: each component's first ready
//! endpoint from its EndpointSlices (the admin listener on the same address, port
//! [`ADMIN_PORT`] unless the slice names an `admin` port), auth's login and JWKS on auth's
//! endpoint, the issuer auth's Deployment was given (`AUTH_ISSUER`), and JetStream through the
//! operator's connection for the Shop. Rebuilt every 30 s, so endpoints follow rollouts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{
    Router,
    body::Body,
    extract::{Path, Request, State},
    http::Uri,
    response::{IntoResponse, Response},
};
use k8s_openapi::api::{apps::v1::Deployment, discovery::v1::EndpointSlice};
use kube::{Api, api::ListParams};
use tienda_crds::{Component, Shop};
use tienda_kit::{
    console::{Console, Watched},
    jwt::{Verifier, VerifierConfig},
    problem::Problem,
};
use tienda_provision::environment::{ADMIN_PORT, var};
use tower::ServiceExt as _;

use crate::{controller::context::Context, shop::service_name};

/// How long a Shop's console is kept before its endpoints are read again.
const REFRESH: Duration = Duration::from_secs(30);

/// The consoles of the Shops, built on first use.
pub struct Consoles {
    ctx: Arc<Context>,
    built: Mutex<HashMap<(String, String), (Instant, Router)>>,
}

impl Consoles {
    /// Consoles reading the cluster through `ctx`'s client.
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            built: Mutex::default(),
        })
    }

    /// `/shops/{namespace}/{shop}/console` and its API.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/shops/{namespace}/{shop}/{*rest}",
                axum::routing::any(serve),
            )
            .with_state(self)
    }

    async fn console(&self, namespace: &str, shop: &str) -> anyhow::Result<Router> {
        let key = (namespace.to_owned(), shop.to_owned());
        if let Some((at, router)) = self.built.lock().expect("not poisoned").get(&key)
            && at.elapsed() < REFRESH
        {
            return Ok(router.clone());
        }
        let router = build(&self.ctx, namespace, shop).await?;
        self.built
            .lock()
            .expect("not poisoned")
            .insert(key, (Instant::now(), router.clone()));
        Ok(router)
    }
}

/// A ready endpoint of a component: `(address, public port, admin port)`.
async fn endpoint(
    slices: &Api<EndpointSlice>,
    service: &str,
) -> anyhow::Result<Option<(String, u16, u16)>> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .with_context(|| format!("listing the EndpointSlices of {service}"))?;
    for slice in &list.items {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port_named = |name: &str| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
        };
        let http = port_named("http")
            .or_else(|| {
                ports
                    .first()
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok())
            })
            .unwrap_or(8080);
        let admin = port_named("admin").unwrap_or(ADMIN_PORT);
        let ready = slice
            .endpoints
            .iter()
            .flatten()
            .find(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
        if let Some(address) = ready.and_then(|e| e.addresses.first()) {
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            return Ok(Some((host, http, admin)));
        }
    }
    Ok(None)
}

async fn build(ctx: &Context, namespace: &str, name: &str) -> anyhow::Result<Router> {
    let shop: Shop = Api::namespaced(ctx.client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading Shop {namespace}/{name}"))?;
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let mut components = Vec::new();
    let mut auth = None;
    for component in Component::ALL {
        if !shop.spec.components.iter().any(|c| c.name == component) {
            continue;
        }
        let service = service_name(name, component);
        let Some((host, http, admin)) = endpoint(&slices, &service).await? else {
            continue;
        };
        if component == Component::Auth {
            auth = Some(format!("http://{host}:{http}"));
        }
        components.push(Watched {
            name: component.to_string(),
            admin_url: format!("http://{host}:{admin}"),
        });
    }
    let auth = auth.with_context(|| {
        format!("{namespace}/{name} has no ready auth endpoint to sign in with")
    })?;
    // The issuer auth puts in its tokens: what its Deployment was told.
    let auth_service = service_name(name, Component::Auth);
    let deployment: Deployment = Api::namespaced(ctx.client.clone(), namespace)
        .get(&auth_service)
        .await
        .with_context(|| format!("reading the Deployment {namespace}/{auth_service}"))?;
    let issuer = deployment
        .spec
        .template
        .spec
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.env)
        .and_then(|env| {
            env.into_iter()
                .find(|e| e.name == var::AUTH_ISSUER)
                .and_then(|e| e.value)
        })
        .with_context(|| format!("{auth_service} has no {}", var::AUTH_ISSUER))?;
    let verifier = Verifier::new(VerifierConfig {
        jwks_url: format!("{auth}/.well-known/jwks.json"),
        issuer,
        audience: "tienda".into(),
        min_refresh_interval: Duration::from_secs(5),
        leeway_seconds: 30,
    });
    let jetstream = match ctx.jetstream(&shop, namespace).await {
        Ok(js) => Some(js),
        Err(error) => {
            tracing::warn!(%error, shop = name, namespace, "the console shows no streams");
            None
        }
    };
    Ok(Console::new(
        components,
        format!("{auth}/v1/auth/login"),
        jetstream,
        verifier,
    )
    .router())
}

async fn serve(
    State(consoles): State<Arc<Consoles>>,
    Path((namespace, shop, rest)): Path<(String, String, String)>,
    mut request: Request,
) -> Response {
    let console = match consoles.console(&namespace, &shop).await {
        Ok(console) => console,
        Err(error) => {
            return Problem::unavailable(format!("{error:#}")).into_response();
        }
    };
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    match format!("/{rest}{query}").parse::<Uri>() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return Problem::bad_request("That path cannot be served.").into_response(),
    }
    match console.oneshot(request.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
