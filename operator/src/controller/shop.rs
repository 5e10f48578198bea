//! The Shop controller: one Service resource per listed component (server-side apply), those
//! no longer listed deleted, readiness aggregated into the Shop's status. On deletion it
//! deletes its Services and waits until their own cleanup (reclaim policy) is done, so they
//! still find the Shop's admin Secret while they clean up.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{core::v1::Secret, networking::v1::Ingress},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use tienda_crds::{
    Component, Service, Shop, ShopStatus, service::ReclaimPolicy, shop::ComponentStatus,
    status::condition,
};
use tienda_provision::database::legacy_database_name;

use super::{
    apply_child, apply_full, apply_status, apply_uncached, backoff_on_error,
    context::{Ctx, periodic_requeue},
    error::{Error, Result},
    with_finalizer, without_finalizer,
};
use crate::{
    conditions::{self, Status},
    exposure,
    shop::{desired_services, labels, service_name},
    workload,
};

/// The finalizer that keeps a Shop until its Services have cleaned up.
pub const FINALIZER: &str = "tienda.dev/services";

/// Reconciles one Shop: metrics, then the finalizer helper (deletion first) when its Services
/// have data to delete (`reclaimPolicy: Delete`); under `Retain` there is nothing to wait for,
/// garbage collection removes the Services, and the Shop carries no finalizer.
pub async fn reconcile(shop: Arc<Shop>, ctx: Ctx) -> Result<Action> {
    ctx.caches.ensure_synced()?;
    if shop.spec.reclaim_policy == ReclaimPolicy::Delete {
        with_finalizer(
            "Shop",
            FINALIZER,
            shop,
            &ctx,
            |s| apply(s, &ctx),
            |s| cleanup(s, &ctx),
        )
        .await
    } else {
        without_finalizer(
            "Shop",
            FINALIZER,
            shop,
            &ctx,
            |s| apply(s, &ctx),
            |_| async {},
        )
        .await
    }
}

/// Error policy: a wait for Services retries in 2 s; failures back off per object.
pub fn error_policy(shop: Arc<Shop>, error: &Error, ctx: Ctx) -> Action {
    backoff_on_error("Shop", &*shop, error, &ctx)
}

/// The Shop's Services as cached.
fn services_of(shop: &Shop, ctx: &Ctx) -> Vec<Arc<Service>> {
    ctx.caches.labelled::<Service>(
        &shop.namespace().unwrap_or_default(),
        labels::SHOP,
        &shop.name_any(),
    )
}

/// Where the gateway answers.
pub fn gateway_address(shop: &Shop) -> Option<String> {
    if !shop
        .spec
        .components
        .iter()
        .any(|c| c.name == Component::Gateway)
    {
        return None;
    }
    let exposure = shop.spec.gateway.as_ref();
    if let Some(ingress) = exposure.and_then(|g| g.ingress.as_ref()) {
        let scheme = if ingress.tls_secret_name.is_some() {
            "https"
        } else {
            "http"
        };
        return Some(format!("{scheme}://{}", ingress.host));
    }
    if let Some(host) = exposure
        .and_then(|g| g.http_route.as_ref())
        .and_then(|r| r.hostnames.first())
    {
        return Some(format!("http://{host}"));
    }
    Some(format!(
        "http://{}.{}.svc",
        service_name(&shop.name_any(), Component::Gateway),
        shop.namespace().unwrap_or_default()
    ))
}

/// A database made under the earlier naming scheme keeps its name: the Service (or, under
/// `Retain`, the credentials Secret that outlived it) records the name, and moving to the
/// collision-free one would open an empty database beside the kept data. Only the name that
/// scheme gave is kept; any other recorded name is drift and is applied over.
fn keep_legacy_database_name(service: &mut Service, ctx: &Ctx, namespace: &str) {
    let secret = workload::credentials_secret_name(service);
    let name = service.name_any();
    let Some(database) = service.spec.database.as_mut() else {
        return;
    };
    let legacy = legacy_database_name(namespace, &service.spec.shop, service.spec.component);
    if legacy == database.name {
        return;
    }
    let recorded_by_service = ctx
        .caches
        .get::<Service>(namespace, &name)
        .and_then(|s| s.spec.database.as_ref().map(|d| d.name == legacy))
        .unwrap_or(false);
    let recorded_by_secret = || {
        ctx.caches
            .get::<Secret>(namespace, &secret)
            .and_then(|s| super::service::secret_text(&s, "username"))
            .is_some_and(|user| user == legacy)
    };
    if recorded_by_service || recorded_by_secret() {
        database.name = legacy;
    }
}

async fn apply(shop: Arc<Shop>, ctx: &Ctx) -> Result<Action> {
    let namespace = shop.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut desired = desired_services(&shop);
    for service in &mut desired {
        keep_legacy_database_name(service, ctx, &namespace);
    }
    let mut current = Vec::new();
    for service in desired.iter().cloned() {
        current.push(apply_full(ctx, &services, service).await?);
    }
    // Prune Services of components no longer listed.
    let wanted: Vec<String> = desired.iter().map(|s| s.name_any()).collect();
    for existing in services_of(&shop, ctx) {
        if !wanted.contains(&existing.name_any()) && existing.metadata.deletion_timestamp.is_none()
        {
            // A component taken out of the list keeps its data whatever the Shop's reclaim
            // policy: an edited list is not a request to drop a database. `Delete` applies
            // when the whole Shop is deleted.
            let kept = existing.spec.database.as_ref().map(|db| db.name.clone());
            if super::service::needs_cleanup(&existing) {
                services
                    .patch(
                        &existing.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({
                            "spec": {"database": {"reclaimPolicy": "Retain"}}
                        })),
                    )
                    .await?;
            }
            services
                .delete(&existing.name_any(), &DeleteParams::default())
                .await?;
            let note = match kept {
                Some(db) => format!(
                    "{} is no longer listed; its database {db} and streams are kept (drop \
                     them by hand, or list the component again to use them)",
                    existing.name_any()
                ),
                None => format!("{} is no longer listed", existing.name_any()),
            };
            ctx.event(&*shop, EventType::Normal, "ServiceRemoved", note)
                .await;
        }
    }

    let generation = shop.metadata.generation;
    let now = Timestamp::now();
    let old = shop.status.clone().unwrap_or_default();
    let mut status = ShopStatus {
        observed_generation: generation,
        ..old.clone()
    };
    status.exposed_by = expose(&shop, ctx, &namespace, &old.exposed_by).await?;
    status.components = current
        .iter()
        .map(|s| {
            let ready_condition = s
                .status
                .as_ref()
                .and_then(|st| st.conditions.iter().find(|c| c.type_ == condition::READY));
            ComponentStatus {
                name: s.spec.component,
                service: s.name_any(),
                ready: ready_condition.is_some_and(|c| c.status == "True"),
                message: ready_condition
                    .filter(|c| c.status != "True")
                    .map(|c| c.message.clone()),
            }
        })
        .collect();
    let ready = status.components.iter().filter(|c| c.ready).count();
    let total = status.components.len();
    status.services_ready = Some(format!("{ready}/{total}"));
    status.gateway_address = gateway_address(&shop);
    let not_ready: Vec<String> = status
        .components
        .iter()
        .filter(|c| !c.ready)
        .map(|c| {
            format!(
                "{}: {}",
                c.name,
                c.message.clone().unwrap_or_else(|| "not ready yet".into())
            )
        })
        .collect();
    if not_ready.is_empty() {
        conditions::set(
            &mut status.conditions,
            condition::READY,
            Status::True,
            "AllServicesReady",
            format!("{total} services ready"),
            generation,
            now,
        );
        conditions::set(
            &mut status.conditions,
            condition::PROGRESSING,
            Status::False,
            "Done",
            String::new(),
            generation,
            now,
        );
        if !conditions::is_true(&old.conditions, condition::READY) {
            ctx.event(
                &*shop,
                EventType::Normal,
                "Ready",
                format!("all {total} services are ready"),
            )
            .await;
        }
    } else {
        conditions::set(
            &mut status.conditions,
            condition::READY,
            Status::False,
            "ServicesNotReady",
            not_ready.join("; "),
            generation,
            now,
        );
        conditions::set(
            &mut status.conditions,
            condition::PROGRESSING,
            Status::True,
            "Reconciling",
            format!("{ready}/{total} services ready"),
            generation,
            now,
        );
    }
    if status != old || shop.status.is_none() {
        let api: Api<Shop> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(
            &api,
            &shop.name_any(),
            serde_json::to_value(&status).expect("status serializes"),
        )
        .await?;
    }
    if ready < total {
        Ok(Action::requeue(Duration::from_secs(15)))
    } else {
        Ok(periodic_requeue())
    }
}

/// Applies the Ingress and HTTPRoute `spec.gateway` asks for, deletes the ones it asked for
/// before (`before`, from the status) and no longer does; returns what now exposes the gateway.
/// A Shop that never asked for either costs no request.
async fn expose(shop: &Shop, ctx: &Ctx, namespace: &str, before: &[String]) -> Result<Vec<String>> {
    let name = exposure::name(shop);
    let mut now = Vec::new();
    let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), namespace);
    match exposure::ingress(shop) {
        Some(desired) => {
            apply_child(ctx, &ingresses, desired).await?;
            now.push(exposure::INGRESS.to_owned());
        }
        None if before.iter().any(|k| k == exposure::INGRESS) => {
            delete_if_present(&ingresses, &name).await?;
        }
        None => {}
    }
    let routes: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        namespace,
        &exposure::http_route_resource(),
    );
    match exposure::http_route(shop) {
        Some(desired) => {
            if let Err(err) = apply_uncached(ctx, &routes, desired).await {
                if let Error::Kube(kube::Error::Api(e)) = &err
                    && e.code == 404
                {
                    ctx.event(
                        shop,
                        EventType::Warning,
                        "GatewayApiMissing",
                        "spec.gateway.httpRoute: the cluster has no HTTPRoute resource; install \
                         the Gateway API CRDs (gateway.networking.k8s.io/v1)"
                            .into(),
                    )
                    .await;
                }
                return Err(err);
            }
            now.push(exposure::HTTP_ROUTE.to_owned());
        }
        None if before.iter().any(|k| k == exposure::HTTP_ROUTE) => {
            delete_if_present(&routes, &name).await?;
        }
        None => {}
    }
    Ok(now)
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn cleanup(shop: Arc<Shop>, ctx: &Ctx) -> Result<Action> {
    let services: Api<Service> =
        Api::namespaced(ctx.client.clone(), &shop.namespace().unwrap_or_default());
    let remaining = services_of(&shop, ctx);
    if remaining.is_empty() {
        return Ok(Action::await_change());
    }
    for service in &remaining {
        if service.metadata.deletion_timestamp.is_none() {
            services
                .delete(&service.name_any(), &DeleteParams::default())
                .await?;
        }
    }
    // Keep the finalizer (and so the Shop its Services read their admin Secret from) until
    // every Service has finished its own cleanup.
    Err(Error::Waiting(format!(
        "{} services are still cleaning up",
        remaining.len()
    )))
}
