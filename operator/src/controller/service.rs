//! The Service controller: credentials Secret (once), database and role, streams and
//! consumers, then Deployment, Kubernetes Service, ServiceAccount, PodDisruptionBudget (and for
//! the gateway the Role and RoleBinding that let it read policies and EndpointSlices) by
//! server-side apply (skipped when unchanged), then status. Deletion honours the reclaim
//! policy.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Secret, Service as KubeService, ServiceAccount},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{controller::Action, events::EventType},
};
use tienda_crds::{
    Service, ServiceStatus, Shop,
    service::{ReclaimPolicy, StreamStatus},
    status::condition,
};
use tienda_provision::{Outcome, ProvisionError, database, streams};

use super::{
    FIELD_MANAGER, apply_child, apply_status, backoff_on_error,
    context::{Ctx, periodic_requeue},
    error::{Error, Result},
    with_finalizer, without_finalizer,
};
use crate::{
    conditions::{self, Status},
    workload,
};

/// The finalizer that guards external state (database, streams).
pub const FINALIZER: &str = "tienda.dev/external-state";

/// Annotation (`"true"`) that lets a Service with `reclaimPolicy: Delete` go without dropping
/// its database and streams, for when they cannot be reached any more (the PostgreSQL server
/// is gone): the escape from a deletion that would otherwise wait forever.
pub const SKIP_CLEANUP: &str = "tienda.dev/skip-cleanup";

/// Whether deleting `service` has external state to delete (its database under
/// `reclaimPolicy: Delete`), and so whether it carries the finalizer.
pub fn needs_cleanup(service: &Service) -> bool {
    service
        .spec
        .database
        .as_ref()
        .is_some_and(|db| db.reclaim_policy == ReclaimPolicy::Delete)
}

/// Reconciles one Service: metrics, then the finalizer helper (deletion first) when deletion
/// has something to delete; otherwise no finalizer at all.
pub async fn reconcile(service: Arc<Service>, ctx: Ctx) -> Result<Action> {
    ctx.caches.ensure_synced()?;
    if needs_cleanup(&service) {
        with_finalizer(
            "Service",
            FINALIZER,
            service,
            &ctx,
            |s| apply(s, &ctx),
            |s| cleanup(s, &ctx),
        )
        .await
    } else {
        let events = ctx.clone();
        without_finalizer(
            "Service",
            FINALIZER,
            service,
            &ctx,
            |s| apply(s, &ctx),
            move |s| async move {
                events
                    .event(
                        &*s,
                        EventType::Normal,
                        "Retained",
                        "reclaimPolicy Retain: database and streams kept".into(),
                    )
                    .await;
            },
        )
        .await
    }
}

/// Error policy: per-object exponential backoff with jitter.
pub fn error_policy(service: Arc<Service>, error: &Error, ctx: Ctx) -> Action {
    backoff_on_error("Service", &*service, error, &ctx)
}

pub(super) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

async fn apply(service: Arc<Service>, ctx: &Ctx) -> Result<Action> {
    let namespace = service.namespace().unwrap_or_default();
    let client = ctx.client.clone();
    let generation = service.metadata.generation;
    let now = Timestamp::now();
    let old_status = service.status.clone().unwrap_or_default();
    let mut status = ServiceStatus {
        observed_generation: generation,
        ..old_status.clone()
    };
    let set =
        |status: &mut ServiceStatus, type_: &str, s: Status, reason: &str, message: String| {
            conditions::set(
                &mut status.conditions,
                type_,
                s,
                reason,
                message,
                generation,
                now,
            );
        };

    let was = |type_: &str| conditions::is_true(&old_status.conditions, type_);
    // What the operator could not verify this time (its own view, not the workload's).
    let mut unverified: Vec<String> = Vec::new();
    // A failure to retry with backoff once the rest is done and the status written.
    let mut retry: Option<Error> = None;
    // Whether the database and streams were verified recently with the same inputs, and the
    // fingerprint of those inputs.
    let key = format!("{namespace}/{}", service.name_any());
    let mut fresh = false;
    let mut provisioned: Option<String> = None;

    let Some(shop) = ctx.caches.get::<Shop>(&namespace, &service.spec.shop) else {
        set(
            &mut status,
            condition::READY,
            Status::False,
            "ShopNotFound",
            format!("Shop {} does not exist", service.spec.shop),
        );
        patch_status(ctx, &service, &old_status, status).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };

    // 0. The Shop's shared keys, for the components that use them (created once).
    if tienda_provision::environment::seals_events(service.spec.component) {
        ensure_shop_keys(ctx, &shop, &namespace).await?;
    }

    // 0b. The component's own NATS identity, when the Shop's NATS is in operator mode.
    let mut nats_identity = None;
    if workload::has_own_nats_identity(&service, &shop) {
        let fingerprint = workload::nats_identity_fingerprint(&service, &shop);
        ensure_nats_identity(ctx, &shop, &service, &namespace, &fingerprint).await?;
        nats_identity = Some(fingerprint);
    }

    // 1. Credentials (created once, never regenerated) and the database.
    let mut config: Vec<Vec<u8>> = vec![serde_json::to_vec(&shop.spec.nats).unwrap_or_default()];
    // A new identity rolls the pods onto it.
    config.extend(nats_identity.map(String::into_bytes));
    if let Some(db) = &service.spec.database {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let name = workload::credentials_secret_name(&service);
        let credentials = match ctx.caches.get::<Secret>(&namespace, &name) {
            Some(secret) => secret,
            None => {
                let secret = workload::credentials_secret(
                    &service,
                    &shop,
                    &database::generate_password(),
                    &database::generate_key(),
                )
                .expect("a Service with a database has a credentials Secret");
                match secrets
                    .create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..PostParams::default()
                        },
                        &secret,
                    )
                    .await
                {
                    Ok(created) => Arc::new(created),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        Arc::new(secrets.get(&name).await?)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let password = secret_text(&credentials, "password").ok_or_else(|| Error::SecretKey {
            secret: name.clone(),
            key: "password".into(),
            hint: "the credentials Secret was edited by hand; restore `password` or delete the Secret to have a new one made",
        })?;
        config.push(
            secret_text(&credentials, "DATABASE_URL")
                .unwrap_or_default()
                .into_bytes(),
        );
        status.credentials_secret = Some(name);
        // External state is checked when something that shapes it changed (the spec, the
        // Shop's servers, the credentials) or after a slow timer, not on every resync: a
        // thousand Shops would otherwise log in to PostgreSQL many times a second.
        let fingerprint = workload::config_hash(&[
            &generation.unwrap_or(0).to_le_bytes(),
            &serde_json::to_vec(&shop.spec.postgres).unwrap_or_default(),
            &serde_json::to_vec(&shop.spec.nats).unwrap_or_default(),
            password.as_bytes(),
        ]);
        let has_streams = !service.spec.streams.is_empty() || !service.spec.consumers.is_empty();
        fresh = ctx.recently_provisioned(&key, &fingerprint)
            && was(condition::DATABASE_READY)
            && (!has_streams || was(condition::STREAMS_READY));
        provisioned = Some(fingerprint);
        let result = if fresh {
            None
        } else {
            Some(
                async {
                    let _slot = ctx.database_slot(&shop).await;
                    let (pool, options) = ctx.postgres_admin(&shop, &namespace).await?;
                    Ok::<_, Error>(
                        database::ensure_database(&pool, &options, db, &password, &owner(&shop))
                            .await?,
                    )
                }
                .await,
            )
        };
        match result {
            None => {}
            Some(Ok(outcome)) => {
                if outcome != Outcome::Unchanged {
                    ctx.event(
                        &*service,
                        EventType::Normal,
                        "DatabaseProvisioned",
                        format!("database {}: {outcome:?}", db.name),
                    )
                    .await;
                }
                set(
                    &mut status,
                    condition::DATABASE_READY,
                    Status::True,
                    "Provisioned",
                    format!("database {} is ready", db.name),
                );
            }
            // The operator cannot reach a database it provisioned before: the workload talks
            // to PostgreSQL on its own and may well be fine. `DatabaseReady` keeps what was
            // last verified, `Degraded` says what the operator cannot see, and the error
            // brings the reconcile back with backoff.
            Some(Err(err)) if is_unreachable(&err) && was(condition::DATABASE_READY) => {
                unverified.push(format!("cannot verify the database: {err}"));
                retry.get_or_insert(err);
            }
            Some(Err(err)) => {
                set(
                    &mut status,
                    condition::DATABASE_READY,
                    Status::False,
                    err.reason(),
                    err.to_string(),
                );
                set(
                    &mut status,
                    condition::READY,
                    Status::False,
                    err.reason(),
                    err.to_string(),
                );
                patch_status(ctx, &service, &old_status, status).await?;
                return Err(err);
            }
        }
    }

    // 2. Streams and consumers: every item is attempted and reported.
    if !fresh && (!service.spec.streams.is_empty() || !service.spec.consumers.is_empty()) {
        match ctx.jetstream(&shop, &namespace).await {
            Ok(js) => {
                let report = streams::provision_service(
                    &js,
                    &service.spec,
                    shop.spec.nats.stream_replicas,
                    Some(&owner(&shop)),
                )
                .await;
                status.streams = report
                    .iter()
                    .map(|item| StreamStatus {
                        name: item.name.clone(),
                        ready: item.result.is_ok(),
                        message: item.result.as_ref().err().map(|e| e.to_string()),
                    })
                    .collect();
                let failed: Vec<_> = report
                    .iter()
                    .filter_map(|i| i.result.as_ref().err())
                    .collect();
                if let Some(first) = failed.first() {
                    let message = failed
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    set(
                        &mut status,
                        condition::STREAMS_READY,
                        Status::False,
                        first.reason(),
                        message.clone(),
                    );
                    // NATS refusing or not answering is retried soon with backoff; a spec
                    // NATS cannot apply waits for the spec to change.
                    if failed
                        .iter()
                        .any(|e| matches!(e, ProvisionError::Nats { .. }))
                    {
                        retry.get_or_insert(Error::NatsConnect {
                            url: shop.spec.nats.url.clone(),
                            message,
                        });
                    }
                } else {
                    if report
                        .iter()
                        .any(|i| matches!(i.result, Ok(Outcome::Created | Outcome::Updated(_))))
                    {
                        ctx.event(
                            &*service,
                            EventType::Normal,
                            "StreamsProvisioned",
                            format!("{} streams and consumers in place", report.len()),
                        )
                        .await;
                    }
                    set(
                        &mut status,
                        condition::STREAMS_READY,
                        Status::True,
                        "Provisioned",
                        format!("{} streams and consumers ready", report.len()),
                    );
                }
            }
            Err(err) if is_unreachable(&err) && was(condition::STREAMS_READY) => {
                unverified.push(format!("cannot verify the streams: {err}"));
                retry.get_or_insert(err);
            }
            Err(err) => {
                set(
                    &mut status,
                    condition::STREAMS_READY,
                    Status::False,
                    err.reason(),
                    err.to_string(),
                );
                retry.get_or_insert(err);
            }
        }
    }

    // 3. Workload, by server-side apply.
    let hash = workload::config_hash(&config.iter().map(Vec::as_slice).collect::<Vec<_>>());
    apply_child(
        ctx,
        &Api::<ServiceAccount>::namespaced(client.clone(), &namespace),
        workload::service_account(&service),
    )
    .await?;
    apply_child(
        ctx,
        &Api::<KubeService>::namespaced(client.clone(), &namespace),
        workload::kube_service(&service, &shop),
    )
    .await?;
    let deployment = apply_child(
        ctx,
        &Api::<Deployment>::namespaced(client.clone(), &namespace),
        workload::deployment(&service, &shop, &hash),
    )
    .await?;
    apply_child(
        ctx,
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace),
        workload::pod_disruption_budget(&service),
    )
    .await?;
    apply_child(
        ctx,
        &Api::<Role>::namespaced(client.clone(), &namespace),
        workload::component_role(&service),
    )
    .await?;
    apply_child(
        ctx,
        &Api::<RoleBinding>::namespaced(client.clone(), &namespace),
        workload::component_role_binding(&service),
    )
    .await?;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &namespace);
    if workload::network_policies_enabled(&shop) {
        apply_child(ctx, &policies, workload::network_policy(&service, &shop)).await?;
    } else if ctx
        .caches
        .get::<super::cache::Slim<NetworkPolicy>>(&namespace, &service.name_any())
        .is_some()
    {
        match policies
            .delete(&service.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // 4. Status: Ready means the rollout is done and the database and streams are in place.
    let wanted = service.spec.replicas;
    let rollout = workload::rollout(
        &Deployment {
            metadata: deployment.metadata.clone(),
            status: deployment.status(),
            spec: Default::default(),
        },
        wanted,
    );
    status.ready_replicas = Some(rollout.ready);
    status.endpoint = Some(format!("http://{}.{namespace}.svc", service.name_any()));
    let available = rollout.available;
    if wanted == 0 || available >= 1 {
        set(
            &mut status,
            condition::AVAILABLE,
            Status::True,
            "MinimumReplicasAvailable",
            format!("{available}/{wanted} pods available"),
        );
    } else {
        set(
            &mut status,
            condition::AVAILABLE,
            Status::False,
            "NoPodAvailable",
            format!("0/{wanted} pods available"),
        );
    }
    let (progressing, reason, message) = if rollout.stalled {
        (
            Status::False,
            "ProgressDeadlineExceeded",
            format!("the rollout stopped making progress: {}", rollout.message),
        )
    } else if rollout.complete {
        (Status::False, "RolloutComplete", rollout.message.clone())
    } else {
        (Status::True, "RollingOut", rollout.message.clone())
    };
    set(
        &mut status,
        condition::PROGRESSING,
        progressing,
        reason,
        message,
    );
    let mut problems: Vec<String> = [condition::DATABASE_READY, condition::STREAMS_READY]
        .iter()
        .filter_map(|t| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == *t && c.status != "True")
        })
        .map(|c| format!("{}: {}", c.type_, c.message))
        .collect();
    // The database and streams as verified this time (the rollout is the workload's).
    let verified = problems.is_empty();
    if !rollout.complete {
        problems.push(format!("rollout: {}", rollout.message));
    }
    // Degraded: it serves, but not fully — some pods down, a stalled rollout, or parts the
    // operator cannot verify or provision.
    let mut degraded: Vec<String> = unverified;
    if available >= 1 {
        if available < wanted {
            degraded.push(format!("{available} of {wanted} pods available"));
        }
        if rollout.stalled {
            degraded.push("the rollout stopped making progress".into());
        }
        degraded.extend(
            problems
                .iter()
                .filter(|p| !p.starts_with("rollout"))
                .cloned(),
        );
    }
    if degraded.is_empty() {
        set(
            &mut status,
            condition::DEGRADED,
            Status::False,
            "AsExpected",
            String::new(),
        );
    } else {
        set(
            &mut status,
            condition::DEGRADED,
            Status::True,
            "PartlyAvailable",
            degraded.join("; "),
        );
    }
    let was_ready = conditions::is_true(&old_status.conditions, condition::READY);
    if problems.is_empty() {
        set(
            &mut status,
            condition::READY,
            Status::True,
            "Ready",
            "every part of the service is ready".into(),
        );
        if !was_ready {
            ctx.event(
                &*service,
                EventType::Normal,
                "Ready",
                "the service is ready".into(),
            )
            .await;
        }
    } else {
        set(
            &mut status,
            condition::READY,
            Status::False,
            "NotReady",
            problems.join("; "),
        );
        if was_ready {
            ctx.event(
                &*service,
                EventType::Warning,
                "NotReady",
                problems.join("; "),
            )
            .await;
        }
    }
    if let Some(fingerprint) = provisioned
        && !fresh
        && retry.is_none()
        && verified
    {
        ctx.provisioned(&key, &fingerprint);
    }
    patch_status(ctx, &service, &old_status, status).await?;
    match retry {
        Some(err) => Err(err),
        None => Ok(periodic_requeue()),
    }
}

/// Who a Shop's streams and database roles belong to: `<namespace>/<name>`.
fn owner(shop: &Shop) -> String {
    format!(
        "{}/{}",
        shop.namespace().unwrap_or_default(),
        shop.name_any()
    )
}

/// Mints the component's NATS user into `<service>-nats` unless the one there was minted for
/// the same permissions (`fingerprint`): reads the Shop's account signing key, signs a user
/// allowed only the component's subjects, applies the Secret.
async fn ensure_nats_identity(
    ctx: &Ctx,
    shop: &Shop,
    service: &Service,
    namespace: &str,
    fingerprint: &str,
) -> Result<()> {
    let name = workload::nats_secret_name(service);
    if ctx
        .caches
        .get::<Secret>(namespace, &name)
        .and_then(|s| secret_text(&s, "fingerprint"))
        .as_deref()
        == Some(fingerprint)
    {
        return Ok(());
    }
    let reference = shop
        .spec
        .nats
        .account_signing_key_secret_ref
        .as_ref()
        .expect("checked by has_own_nats_identity");
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let signing = secrets.get(&reference.name).await?;
    let key = |key: &str| {
        secret_text(&signing, key).ok_or_else(|| Error::SecretKey {
            secret: reference.name.clone(),
            key: key.into(),
            hint: "the account signing Secret needs `account` (the account's public key, A…) and `signingKey` (a signing key's seed, SA…), as `nsc` shows them",
        })
    };
    let (account, seed) = (key("account")?, key("signingKey")?);
    let component = service.spec.component;
    let creds = tienda_provision::nats_auth::user_creds(
        &seed,
        &account,
        &format!("{}-{component}", service.spec.shop),
        Some(&tienda_provision::nats_auth::permissions(component)),
    )
    .map_err(|e| {
        tracing::warn!(secret = %reference.name, error = %e, "cannot mint a NATS user");
        Error::SecretKey {
            secret: reference.name.clone(),
            key: "signingKey".into(),
            hint: "`signingKey` must be an account signing key's seed (SA…) and `account` the account's public key (A…)",
        }
    })?;
    let secret = workload::nats_secret(service, creds, fingerprint.to_owned());
    secrets
        .patch(
            &name,
            &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// Creates the Shop's `<shop>-keys` Secret unless it exists (another component's reconcile
/// may have made it a moment ago: a conflict is success). Never updated: events in the streams
/// are sealed with the keys it holds.
async fn ensure_shop_keys(ctx: &Ctx, shop: &Shop, namespace: &str) -> Result<()> {
    let name = tienda_provision::environment::shop_keys_secret_name(&shop.name_any());
    if ctx.caches.get::<Secret>(namespace, &name).is_some() {
        return Ok(());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match secrets
        .create(&params, &workload::shop_keys_secret(shop))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `err` is the operator failing to reach PostgreSQL or NATS (or the Secret that opens
/// them), rather than a provisioning the server refused.
fn is_unreachable(err: &Error) -> bool {
    matches!(
        err,
        Error::PostgresConnect { .. } | Error::NatsConnect { .. } | Error::Kube(_)
    )
}

/// Applies the status, unless nothing changed.
async fn patch_status(
    ctx: &Ctx,
    service: &Service,
    old: &ServiceStatus,
    new: ServiceStatus,
) -> Result<()> {
    if *old == new && service.status.is_some() {
        return Ok(());
    }
    let api: Api<Service> =
        Api::namespaced(ctx.client.clone(), &service.namespace().unwrap_or_default());
    apply_status(
        &api,
        &service.name_any(),
        serde_json::to_value(&new).expect("status serializes"),
    )
    .await
}

async fn cleanup(service: Arc<Service>, ctx: &Ctx) -> Result<Action> {
    let namespace = service.namespace().unwrap_or_default();
    let Some(db) = service.spec.database.as_ref() else {
        return Ok(Action::await_change());
    };
    let object: &Service = &service;
    let retained = |why: String| async move {
        ctx.event(
            object,
            EventType::Warning,
            "Retained",
            format!("{why}; database {} and streams were kept", db.name),
        )
        .await;
        Ok::<Action, Error>(Action::await_change())
    };
    if service.annotations().get(SKIP_CLEANUP).map(String::as_str) == Some("true") {
        return retained(format!("annotation {SKIP_CLEANUP}=true")).await;
    }
    // Without the Shop or its admin Secret (a namespace being deleted removes them in any
    // order) there are no credentials to reach the server: keep the data, the safe side,
    // and say so rather than hold the namespace forever.
    let Some(shop) = ctx.caches.get::<Shop>(&namespace, &service.spec.shop) else {
        return retained(format!("Shop {} is gone", service.spec.shop)).await;
    };
    let _slot = ctx.database_slot(&shop).await;
    let pool = match ctx.postgres_admin(&shop, &namespace).await {
        Ok((pool, _)) => pool,
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => {
            return retained(format!(
                "the Shop's admin Secret {} is gone",
                shop.spec.postgres.admin_secret_ref.name
            ))
            .await;
        }
        Err(err) => return Err(cleanup_blocked(ctx, &service, err).await),
    };
    if let Err(err) = database::drop_database(&pool, &db.name, &owner(&shop)).await {
        return Err(cleanup_blocked(ctx, &service, err.into()).await);
    }
    if !service.spec.streams.is_empty() || !service.spec.consumers.is_empty() {
        // Only what this Shop owns: its streams, its consumers and its dead-letter stream;
        // never another Shop's on the same account.
        let deleted = match ctx.jetstream(&shop, &namespace).await {
            Ok(js) => streams::delete_service(&js, &service.spec, &owner(&shop))
                .await
                .map_err(Error::from),
            Err(err) => Err(err),
        };
        if let Err(err) = deleted {
            return Err(cleanup_blocked(ctx, &service, err).await);
        }
    }
    ctx.event(
        &*service,
        EventType::Normal,
        "Deleted",
        format!(
            "database {} and streams dropped (reclaimPolicy Delete)",
            db.name
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// Says on the Service why its deletion waits, and how to let it go without the cleanup.
async fn cleanup_blocked(ctx: &Ctx, service: &Service, err: Error) -> Error {
    ctx.event(
        service,
        EventType::Warning,
        "CleanupFailed",
        format!(
            "{err}; deletion retries. To delete it and keep the data instead: kubectl annotate \
             tiendaservice {} {SKIP_CLEANUP}=true",
            service.name_any()
        ),
    )
    .await;
    err
}
