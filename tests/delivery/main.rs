//! Delivery: the Helm chart, the plain manifests, the examples, the Tiltfile and the
//! Dockerfile, checked the way a cluster, Helm, Tilt and Docker would read them — without a
//! cluster: `helm lint --strict`, `helm template` (default and every optional block) through
//! `kubernetes-validate --strict`, the values schema, custom resources against our CRD schemas
//! and CEL rules, the Tiltfile evaluated as Starlark.
//!
//! Helm, kubernetes-validate and promtool come from `tests/tools/install` (`HELM`,
//! `KUBERNETES_VALIDATE`, `PROMTOOL`;
//! `tests/run` exports them). The Tiltfile is evaluated by `tests/tiltfile`, a workspace of its
//! own (see there why).

mod alerts;
mod chart;
mod dashboards;
mod dockerfile;
mod examples;
mod tools;
