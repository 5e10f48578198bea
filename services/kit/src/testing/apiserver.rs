//! A Kubernetes API server in memory, over real HTTP on 127.0.0.1, for tests and benchmarks of
//! controllers: what a scripted mock cannot show (watches, caches, many objects, the cost of
//! an idle controller) needs a server that keeps state and answers the way a real one does
//! where it matters:
//!
//! - objects by kind, namespace and name, with `resourceVersion`, `uid`, `generation` (bumped
//!   when anything outside `metadata` and `status` changes) and `creationTimestamp`;
//! - get; list with label selectors and pages (`limit`, `continue`); watch from a resource
//!   version, `410 Gone` when it is older than the server's history, ended after
//!   `timeoutSeconds`;
//! - create (409 when it exists), replace (409 on a stale `resourceVersion`), merge and JSON
//!   patches (a `resourceVersion` in a merge patch is a precondition), and server-side apply:
//!   one set of fields per manager recorded in `metadata.managedFields` (FieldsV1), a field a
//!   manager stops applying removed unless another manager holds it, lists of objects merged
//!   by their key (`name`, `type`, `replica`) and other lists replaced whole, a conflict with
//!   another manager's field a 409 unless forced;
//! - the status subresource: writes to the object keep its status, writes to `/status` change
//!   only the status;
//! - deletion: an object with finalizers gets a `deletionTimestamp` and goes when the last
//!   finalizer is removed; objects it owns (`ownerReferences`) are then garbage-collected;
//! - 422 for a list that repeats a `name`; 403 for what the RBAC rules given do not allow
//!   (see [`super::rbac`]); 404 for a kind it was told the cluster lacks.
//!
//! It counts every request by verb and resource ([`ApiServer::requests`]). What it does not
//! model: defaults the real server adds (a stored Deployment is what was applied, plus
//! status), admission, field validation against schemas, and the finer list types of
//! server-side apply (sets, granular maps).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use super::rbac::Rules;

/// A kind the server knows.
#[derive(Debug, Clone, Copy)]
struct Kind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> Kind {
    Kind {
        group,
        version,
        plural,
        kind,
        namespaced,
        status,
    }
}

const KINDS: &[Kind] = &[
    kind("", "v1", "secrets", "Secret", true, false),
    kind("", "v1", "configmaps", "ConfigMap", true, false),
    kind("", "v1", "services", "Service", true, true),
    kind("", "v1", "serviceaccounts", "ServiceAccount", true, false),
    kind("", "v1", "pods", "Pod", true, true),
    kind("apps", "v1", "deployments", "Deployment", true, true),
    kind(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        true,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        false,
    ),
    kind(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        true,
    ),
    kind(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
    ),
    kind("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    kind("events.k8s.io", "v1", "events", "Event", true, false),
    kind(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    kind("tienda.dev", "v1alpha1", "shops", "Shop", true, true),
    kind(
        "tienda.dev",
        "v1alpha1",
        "tiendaservices",
        "Service",
        true,
        true,
    ),
    kind(
        "tienda.dev",
        "v1alpha1",
        "ratelimitpolicies",
        "RateLimitPolicy",
        true,
        true,
    ),
    kind(
        "tienda.dev",
        "v1alpha1",
        "circuitpolicies",
        "CircuitPolicy",
        true,
        true,
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        true,
        true,
    ),
];

/// How many changes the server remembers for watches that resume.
const HISTORY: usize = 100_000;

type Key = (String, String, String);

#[derive(Debug)]
struct Change {
    rv: u64,
    kind: String,
    namespace: String,
    type_: &'static str,
    object: Arc<Value>,
}

/// A manager's fields in one object (`""` the object, `"status"` the subresource).
type Owners = BTreeMap<(String, String), BTreeSet<String>>;

#[derive(Default)]
struct Db {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    owners: BTreeMap<Key, Owners>,
    history: VecDeque<Change>,
    /// Watches from before this resource version get 410 Gone.
    oldest: u64,
    requests: BTreeMap<String, u64>,
    missing: BTreeSet<String>,
}

struct Shared {
    db: Mutex<Db>,
    changed: tokio::sync::watch::Sender<u64>,
    rules: Option<(Rules, String)>,
}

/// The server; stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An API error as the server words it.
fn status(code: u16, reason: &str, message: String) -> Response {
    (
        StatusCode::from_u16(code).expect("a valid code"),
        [(header::CONTENT_TYPE, "application/json")],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code})
        .to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A request's target: the kind, the namespace (empty: all, or cluster-scoped), the name and
/// whether it addresses the status subresource.
struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
    status: bool,
}

fn parse(path: &str) -> Option<(String, String, Vec<String>)> {
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    match parts.first().map(String::as_str) {
        Some("api") if parts.len() >= 2 => {
            Some((String::new(), parts[1].clone(), parts[2..].to_vec()))
        }
        Some("apis") if parts.len() >= 3 => {
            Some((parts[1].clone(), parts[2].clone(), parts[3..].to_vec()))
        }
        _ => None,
    }
}

fn target(path: &str) -> Result<Target, Response> {
    let not_found = || {
        status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let (group, version, rest) = parse(path).ok_or_else(not_found)?;
    let (namespace, rest) =
        if rest.first().map(String::as_str) == Some("namespaces") && rest.len() >= 3 {
            (rest[1].clone(), rest[2..].to_vec())
        } else {
            (String::new(), rest)
        };
    let plural = rest.first().ok_or_else(not_found)?;
    let kind = *KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
        .ok_or_else(not_found)?;
    let name = rest.get(1).cloned();
    let status = match rest.get(2).map(String::as_str) {
        None => false,
        Some("status") if kind.status => true,
        Some(_) => return Err(not_found()),
    };
    Ok(Target {
        kind,
        namespace,
        name,
        status,
    })
}

fn query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Whether `labels` match a selector of `k=v`, `k==v`, `k!=v`, `k` and `!k` terms.
fn matches(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let label = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        if let Some((k, v)) = term.split_once("!=") {
            label(k) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            label(k) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            label(k).is_none()
        } else {
            label(term).is_some()
        }
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The key field of a list of objects merged item by item under server-side apply.
fn list_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() {
        return None;
    }
    ["name", "type", "replica"].into_iter().find(|key| {
        items
            .iter()
            .all(|i| i.get(*key).is_some_and(|v| !v.is_null()))
    })
}

fn item_key(key: &str, item: &Value) -> String {
    let value = &item[key];
    format!(
        "k:{{\"{key}\":{}}}",
        serde_json::to_string(value).expect("json")
    )
}

/// The leaf paths `value` sets, as FieldsV1 path segments joined by `\u{1}`.
fn leaves(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let join = |seg: &str| {
        if prefix.is_empty() {
            seg.to_owned()
        } else {
            format!("{prefix}\u{1}{seg}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                leaves(v, &join(&format!("f:{k}")), out);
            }
        }
        Value::Array(items) if list_key(items).is_some() && items.iter().all(Value::is_object) => {
            let key = list_key(items).expect("checked");
            for item in items {
                let at = join(&item_key(key, item));
                out.insert(at.clone());
                leaves(item, &at, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The fields of an applied body one manager owns: labels, annotations, owner references and
/// finalizers of its metadata, and everything else in `scope` (the status, or all but it).
fn owned_fields(body: &Value, kind: &Kind, status: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(map) = body.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if status {
                    continue;
                }
                for field in ["labels", "annotations", "ownerReferences", "finalizers"] {
                    if let Some(v) = v.get(field) {
                        leaves(v, &format!("f:metadata\u{1}f:{field}"), &mut out);
                    }
                }
            }
            "status" if kind.status && !status => {}
            other if status && other != "status" => {}
            other => leaves(v, &format!("f:{other}"), &mut out),
        }
    }
    out
}

/// Whether `path` names an item of a keyed list (rather than a field).
fn is_item(path: &str) -> bool {
    segments(path).last().is_some_and(|s| s.starts_with("k:"))
}

/// The segments of a FieldsV1 path.
fn segments(path: &str) -> Vec<&str> {
    path.split('\u{1}').collect()
}

fn child<'a>(value: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(field) = seg.strip_prefix("f:") {
        return value.get(field);
    }
    let key: Map<String, Value> = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    let (k, v) = key.into_iter().next()?;
    value
        .as_array()?
        .iter()
        .find(|item| item.get(&k) == Some(&v))
}

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path)
        .into_iter()
        .try_fold(value, |v, seg| child(v, seg))
}

/// Removes the field at `path` (an emptied parent object stays, as the server's does).
fn remove(value: &mut Value, path: &str) {
    let segs = segments(path);
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cursor = value;
    for seg in parents {
        let next = if let Some(field) = seg.strip_prefix("f:") {
            cursor.get_mut(field)
        } else {
            let Some(Ok(key)) = seg
                .strip_prefix("k:")
                .map(serde_json::from_str::<Map<String, Value>>)
            else {
                return;
            };
            let Some((k, v)) = key.into_iter().next() else {
                return;
            };
            cursor
                .as_array_mut()
                .and_then(|items| items.iter_mut().find(|i| i.get(&k) == Some(&v)))
        };
        match next {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = cursor.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(Ok(key)) = last
        .strip_prefix("k:")
        .map(serde_json::from_str::<Map<String, Value>>)
        && let Some((k, v)) = key.into_iter().next()
        && let Some(items) = cursor.as_array_mut()
    {
        items.retain(|i| i.get(&k) != Some(&v));
    }
}

/// Merges an applied `patch` into `target`: objects key by key, keyed lists item by item,
/// anything else replaced.
fn apply_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if !v.is_null() => apply_merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if list_key(p).is_some() && p.iter().all(Value::is_object) =>
        {
            let key = list_key(p).expect("checked");
            for item in p {
                match t.iter_mut().find(|e| e.get(key) == item.get(key)) {
                    Some(existing) => apply_merge(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// FieldsV1 of a set of paths.
fn fields_v1(paths: &BTreeSet<String>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in paths {
        let mut cursor = &mut root;
        for seg in segments(path) {
            cursor = cursor
                .as_object_mut()
                .expect("objects all the way")
                .entry(seg.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if let Some(map) = cursor.as_object_mut() {
            map.insert(".".into(), json!({}));
        }
    }
    root
}

/// The first list in `value` whose objects repeat a `name`, as the API server words it (the
/// 422 it answers to such a write).
pub fn duplicate_key(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| duplicate_key(v, &format!("{path}.{k}"))),
        Value::Array(items) => {
            let mut names = BTreeSet::new();
            for item in items {
                if let Some(name) = item.get("name").and_then(Value::as_str)
                    && !names.insert(name)
                {
                    return Some(format!(
                        "{path}: duplicate entries for key [name=\"{name}\"]"
                    ));
                }
            }
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| duplicate_key(v, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// What is not metadata or status: a change there bumps `generation`.
fn spec_of(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Some(map) = spec.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    spec
}

impl Db {
    fn record(&mut self, kind: &Kind, type_: &'static str, object: &Value) {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.history.push_back(Change {
            rv: self.rv,
            kind: kind.key(),
            namespace,
            type_,
            object: Arc::new(object.clone()),
        });
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.oldest = old.rv;
            }
        }
    }

    fn render_managed(&mut self, key: &Key, kind: &Kind) {
        let Some(owners) = self.owners.get(key) else {
            return;
        };
        let entries: Vec<Value> = owners
            .iter()
            .filter(|(_, paths)| !paths.is_empty())
            .map(|((manager, subresource), paths)| {
                let mut entry = json!({"manager": manager, "operation": "Apply",
                    "apiVersion": kind.api_version(), "time": now(), "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(paths)});
                if !subresource.is_empty() {
                    entry["subresource"] = json!(subresource);
                }
                entry
            })
            .collect();
        if let Some(object) = self.objects.get_mut(key) {
            object["metadata"]["managedFields"] = Value::Array(entries);
        }
    }

    /// Stores `object` (new or changed) under a new resource version and tells the watches;
    /// an object being deleted whose last finalizer went is removed instead.
    fn store(&mut self, kind: &Kind, key: Key, mut object: Value, created: bool) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let deleting = !object["metadata"]["deletionTimestamp"].is_null();
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        self.objects.insert(key.clone(), object);
        self.render_managed(&key, kind);
        let object = self.objects[&key].clone();
        if deleting && !finalizers {
            self.objects.remove(&key);
            self.owners.remove(&key);
            self.record(kind, "DELETED", &object);
            self.collect_garbage(&object);
        } else {
            self.record(kind, if created { "ADDED" } else { "MODIFIED" }, &object);
        }
        object
    }

    /// Deletes `key`: with finalizers it is only marked.
    fn delete(&mut self, kind: &Kind, key: &Key) -> Option<Value> {
        let mut object = self.objects.get(key)?.clone();
        if object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!(now());
                return Some(self.store(kind, key.clone(), object, false));
            }
            return Some(object);
        }
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.remove(key);
        self.owners.remove(key);
        self.record(kind, "DELETED", &object);
        self.collect_garbage(&object);
        Some(object)
    }

    /// Deletes what `owner` owned, as the garbage collector does (in the background).
    fn collect_garbage(&mut self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else {
            return;
        };
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in owned {
            if let Some(kind) = KINDS.iter().find(|k| k.key() == key.0) {
                self.delete(kind, &key);
            }
        }
    }
}

impl ApiServer {
    /// A server allowing everything.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// A server that answers 403 to what `rules` do not allow `user`.
    pub async fn with_rules(rules: Rules, user: &str) -> Self {
        Self::serve(Some((rules, user.to_owned()))).await
    }

    async fn serve(rules: Option<(Rules, String)>) -> Self {
        let shared = Arc::new(Shared {
            db: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
            rules,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let addr = listener.local_addr().expect("bound");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, addr, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server, for a process started with `KUBECONFIG`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// A kube client of this server.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("a valid URL"));
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("a client")
    }

    /// Makes the server answer 404 for `plural` (a CRD the cluster lacks).
    pub fn without(&self, plural: &str) {
        let mut db = self.shared.db.lock().expect("not poisoned");
        db.missing.insert(plural.to_owned());
    }

    fn kind_of(api_version: &str, kind: &str) -> Kind {
        *KINDS
            .iter()
            .find(|k| k.api_version() == api_version && k.kind == kind)
            .unwrap_or_else(|| panic!("the fake API server does not know {api_version} {kind}"))
    }

    /// Creates `object` as `kubectl create` would; returns it as stored.
    pub fn create(&self, object: Value) -> Value {
        let kind = Self::kind_of(
            object["apiVersion"].as_str().expect("apiVersion"),
            object["kind"].as_str().expect("kind"),
        );
        let mut db = self.shared.db.lock().expect("not poisoned");
        let stored = create(&mut db, &kind, object, None).expect("the object is new");
        drop(db);
        self.notify();
        stored
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = Self::kind_of(api_version, kind);
        let db = self.shared.db.lock().expect("not poisoned");
        db.objects
            .get(&(kind.key(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let kind = Self::kind_of(api_version, kind);
        let db = self.shared.db.lock().expect("not poisoned");
        db.objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind.key())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A hand edit (`kubectl edit`): `edit` changes the stored object, which is stored again
    /// with a new resource version (and generation, when its spec changed).
    pub fn edit(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Value {
        let kind = Self::kind_of(api_version, kind);
        let key = (kind.key(), namespace.to_owned(), name.to_owned());
        let mut db = self.shared.db.lock().expect("not poisoned");
        let mut object = db.objects.get(&key).cloned().expect("the object exists");
        let before = spec_of(&object);
        edit(&mut object);
        bump_generation(&mut object, &before);
        let stored = db.store(&kind, key, object, false);
        drop(db);
        self.notify();
        stored
    }

    /// Deletes an object as `kubectl delete` would.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let kind = Self::kind_of(api_version, kind);
        let key = (kind.key(), namespace.to_owned(), name.to_owned());
        let mut db = self.shared.db.lock().expect("not poisoned");
        db.delete(&kind, &key);
        drop(db);
        self.notify();
    }

    /// Plays the Deployment controller every `every`: a Deployment whose spec it has not seen
    /// is rolled out at once, all its replicas updated, ready and available. Stops with the
    /// returned task.
    pub fn roll_out_deployments(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                for deployment in server.list("apps/v1", "Deployment") {
                    let generation = deployment["metadata"]["generation"].clone();
                    if deployment["status"]["observedGeneration"] == generation {
                        continue;
                    }
                    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
                    server.edit(
                        "apps/v1",
                        "Deployment",
                        deployment["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default(),
                        deployment["metadata"]["name"].as_str().unwrap_or_default(),
                        |d| {
                            d["status"] = json!({"observedGeneration": generation,
                                "replicas": replicas, "updatedReplicas": replicas,
                                "readyReplicas": replicas, "availableReplicas": replicas});
                        },
                    );
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Requests so far by `verb resource` (`get deployments`, `apply tiendaservices/status`,
    /// `watch shops`, ...).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared
            .db
            .lock()
            .expect("not poisoned")
            .requests
            .clone()
    }

    /// Requests so far.
    pub fn total_requests(&self) -> u64 {
        self.requests().values().sum()
    }

    fn notify(&self) {
        let rv = self.shared.db.lock().expect("not poisoned").rv;
        self.shared.changed.send_replace(rv);
    }
}

fn bump_generation(object: &mut Value, before: &Value) {
    if spec_of(object) != *before {
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        object["metadata"]["generation"] = json!(generation);
    }
}

fn create(
    db: &mut Db,
    kind: &Kind,
    mut object: Value,
    manager: Option<&str>,
) -> Result<Value, Response> {
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = match object["metadata"]["name"].as_str() {
        Some(name) => name.to_owned(),
        None => match object["metadata"]["generateName"].as_str() {
            Some(prefix) => format!("{prefix}{:05x}", db.uid + 1),
            None => {
                return Err(status(
                    422,
                    "Invalid",
                    "metadata.name: Required value".into(),
                ));
            }
        },
    };
    let key = (kind.key(), namespace, name.clone());
    if db.objects.contains_key(&key) {
        return Err(status(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.plural),
        ));
    }
    db.uid += 1;
    let meta = &mut object["metadata"];
    meta["name"] = json!(name);
    meta["uid"] = json!(format!("uid-{:08}", db.uid));
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    object["apiVersion"] = json!(kind.api_version());
    object["kind"] = json!(kind.kind);
    if let Some(manager) = manager {
        db.owners.entry(key.clone()).or_default().insert(
            (manager.to_owned(), String::new()),
            owned_fields(&object, kind, false),
        );
    }
    Ok(db.store(kind, key, object, true))
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some((rules, user)) = &shared.rules
        && let Some(access) = rules.denies(
            &parts.method,
            &parts.uri.to_string(),
            content_type.as_deref(),
        )
    {
        return ok(
            StatusCode::FORBIDDEN,
            &super::rbac::forbidden(&access, user),
        );
    }
    let target = match target(parts.uri.path()) {
        Ok(t) => t,
        Err(response) => return response,
    };
    let params = query(&parts.uri);
    let resource = if target.status {
        format!("{}/status", target.kind.plural)
    } else {
        target.kind.plural.to_owned()
    };
    let verb = match (&parts.method, &target.name) {
        (&Method::GET, None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            "watch"
        }
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) if content_type.as_deref() == Some("application/apply-patch+yaml") => {
            "apply"
        }
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "other",
    };
    {
        let mut db = shared.db.lock().expect("not poisoned");
        *db.requests.entry(format!("{verb} {resource}")).or_default() += 1;
        if db.missing.contains(target.kind.plural) {
            return status(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource ({})",
                    parts.uri.path()
                ),
            );
        }
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return status(400, "BadRequest", format!("the body is not JSON: {e}")),
        }
    };
    if matches!(verb, "create" | "update" | "apply" | "patch")
        && let Some(duplicate) = duplicate_key(&body, "")
    {
        return status(422, "Invalid", duplicate);
    }
    let response = match verb {
        "watch" => return watch(shared, target, params),
        "list" => list(&shared, &target, &params),
        _ => write(
            &shared,
            &target,
            verb,
            &params,
            body,
            content_type.as_deref(),
        ),
    };
    if matches!(verb, "create" | "update" | "apply" | "patch" | "delete") {
        let rv = shared.db.lock().expect("not poisoned").rv;
        shared.changed.send_replace(rv);
    }
    response
}

fn list(shared: &Shared, target: &Target, params: &BTreeMap<String, String>) -> Response {
    let db = shared.db.lock().expect("not poisoned");
    let selector = params.get("labelSelector").cloned().unwrap_or_default();
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = params.get("continue").cloned().unwrap_or_default();
    let key = target.kind.key();
    let mut items: Vec<Value> = Vec::new();
    let mut more = false;
    for ((k, ns, name), object) in &db.objects {
        if *k != key
            || (!target.namespace.is_empty() && *ns != target.namespace)
            || (!after.is_empty() && format!("{ns}/{name}") <= after)
            || !matches(&selector, &object["metadata"]["labels"])
        {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(object.clone());
    }
    let next = if more {
        items
            .last()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    ok(
        StatusCode::OK,
        &json!({"apiVersion": target.kind.api_version(), "kind": format!("{}List", target.kind.kind),
                "metadata": {"resourceVersion": db.rv.to_string(), "continue": next},
                "items": items}),
    )
}

fn watch(shared: Arc<Shared>, target: Target, params: BTreeMap<String, String>) -> Response {
    let selector = params.get("labelSelector").cloned().unwrap_or_default();
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from: Option<u64> = params
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .filter(|rv| *rv > 0);
    let key = target.kind.key();
    let namespace = target.namespace;
    let line = |type_: &str, object: &Value| {
        let mut line = json!({"type": type_, "object": object}).to_string();
        line.push('\n');
        line
    };
    // Where the watch starts: after `from`, or (none given) with every current object added.
    let (last, first) = {
        let db = shared.db.lock().expect("not poisoned");
        match from {
            Some(rv) if rv < db.oldest => {
                let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {rv} ({})", db.oldest)});
                return (
                    [(header::CONTENT_TYPE, "application/json")],
                    line("ERROR", &gone),
                )
                    .into_response();
            }
            Some(rv) => (rv, String::new()),
            None => {
                let current: String = db
                    .objects
                    .iter()
                    .filter(|((k, ns, _), o)| {
                        *k == key
                            && (namespace.is_empty() || *ns == namespace)
                            && matches(&selector, &o["metadata"]["labels"])
                    })
                    .map(|(_, o)| line("ADDED", o))
                    .collect();
                (db.rv, current)
            }
        }
    };
    let changed = shared.changed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    let filter = Arc::new((key, namespace, selector));
    let stream = futures::stream::unfold(
        (Some(first), changed, last),
        move |(pending, mut changed, mut last)| {
            let (shared, filter) = (shared.clone(), filter.clone());
            async move {
                if let Some(first) = pending.filter(|f| !f.is_empty()) {
                    let chunk = Ok::<_, std::convert::Infallible>(Bytes::from(first));
                    return Some((chunk, (None, changed, last)));
                }
                let (key, namespace, selector) = &*filter;
                loop {
                    // Mark the current version seen before reading, so a change made while
                    // reading wakes the next wait.
                    changed.borrow_and_update();
                    let batch: String = {
                        let db = shared.db.lock().expect("not poisoned");
                        let start = db.history.partition_point(|c| c.rv <= last);
                        let lines: String = db
                            .history
                            .range(start..)
                            .filter(|c| {
                                c.kind == *key
                                    && (namespace.is_empty() || c.namespace == *namespace)
                                    && matches(selector, &c.object["metadata"]["labels"])
                            })
                            .map(|c| line(c.type_, &c.object))
                            .collect();
                        if let Some(newest) = db.history.back() {
                            last = last.max(newest.rv);
                        }
                        lines
                    };
                    if !batch.is_empty() {
                        return Some((Ok(Bytes::from(batch)), (None, changed, last)));
                    }
                    tokio::select! {
                        result = changed.changed() => if result.is_err() { return None },
                        () = tokio::time::sleep_until(deadline) => return None,
                    }
                }
            }
        },
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn write(
    shared: &Shared,
    target: &Target,
    verb: &str,
    params: &BTreeMap<String, String>,
    body: Value,
    content_type: Option<&str>,
) -> Response {
    let mut db = shared.db.lock().expect("not poisoned");
    let kind = target.kind;
    let manager = params.get("fieldManager").map(String::as_str);
    if verb == "create" {
        let mut object = body;
        if object["metadata"]["namespace"].is_null() && kind.namespaced {
            object["metadata"]["namespace"] = json!(target.namespace);
        }
        return match create(&mut db, &kind, object, manager) {
            Ok(stored) => ok(StatusCode::CREATED, &stored),
            Err(response) => response,
        };
    }
    let Some(name) = target.name.clone() else {
        return status(405, "MethodNotAllowed", format!("{verb} needs a name"));
    };
    let key = (kind.key(), target.namespace.clone(), name.clone());
    let not_found = || {
        status(
            404,
            "NotFound",
            format!("{}.{} \"{name}\" not found", kind.plural, kind.group),
        )
    };
    match verb {
        "get" => match db.objects.get(&key) {
            Some(object) => ok(StatusCode::OK, object),
            None => not_found(),
        },
        "delete" => match db.delete(&kind, &key) {
            Some(object) => ok(StatusCode::OK, &object),
            None => not_found(),
        },
        "update" => {
            let Some(old) = db.objects.get(&key).cloned() else {
                return not_found();
            };
            if body["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                return conflict(&kind, &name);
            }
            let mut object = body;
            keep_identity(&mut object, &old);
            scope(&mut object, &old, &kind, target.status);
            bump_generation(&mut object, &spec_of(&old));
            ok(StatusCode::OK, &db.store(&kind, key, object, false))
        }
        "patch" => {
            let Some(old) = db.objects.get(&key).cloned() else {
                return not_found();
            };
            let mut object = old.clone();
            if content_type == Some("application/json-patch+json") {
                let patch: json_patch::Patch = match serde_json::from_value(body) {
                    Ok(p) => p,
                    Err(e) => return status(400, "BadRequest", e.to_string()),
                };
                if let Err(e) = json_patch::patch(&mut object, &patch) {
                    return status(
                        422,
                        "Invalid",
                        format!("the JSON patch does not apply: {e}"),
                    );
                }
            } else {
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
                    && Some(rv) != old["metadata"]["resourceVersion"].as_str()
                {
                    return conflict(&kind, &name);
                }
                json_patch::merge(&mut object, &body);
            }
            keep_identity(&mut object, &old);
            scope(&mut object, &old, &kind, target.status);
            bump_generation(&mut object, &spec_of(&old));
            ok(StatusCode::OK, &db.store(&kind, key, object, false))
        }
        "apply" => {
            let Some(manager) = manager else {
                return status(
                    400,
                    "BadRequest",
                    "PATCH, application/apply-patch+yaml: fieldManager is required".into(),
                );
            };
            let force = params.get("force").is_some_and(|f| f == "true");
            let subresource = if target.status { "status" } else { "" };
            let old = db.objects.get(&key).cloned();
            let created = old.is_none();
            let mut object = match &old {
                Some(old) => old.clone(),
                None => {
                    db.uid += 1;
                    json!({"apiVersion": kind.api_version(), "kind": kind.kind,
                        "metadata": {"name": name, "namespace": target.namespace,
                                     "uid": format!("uid-{:08}", db.uid),
                                     "creationTimestamp": now(), "generation": 1}})
                }
            };
            let before = spec_of(&object);
            let fields = owned_fields(&body, &kind, target.status);
            let owners = db.owners.entry(key.clone()).or_default();
            // Another manager's field set to another value: a conflict, unless forced (then
            // the field changes hands).
            if !force {
                let conflicts: Vec<String> = owners
                    .iter()
                    .filter(|((m, s), _)| m != manager && s == subresource)
                    .flat_map(|((m, _), paths)| {
                        paths
                            .intersection(&fields)
                            // An item's key is everyone's who applies the item.
                            .filter(|p| !is_item(p) && at(&object, p) != at(&body, p))
                            .map(move |p| format!("{} (owned by {m})", p.replace('\u{1}', ".")))
                    })
                    .collect();
                if !conflicts.is_empty() {
                    return status(
                        409,
                        "Conflict",
                        format!(
                            "Apply failed with {} conflicts: {}",
                            conflicts.len(),
                            conflicts.join(", ")
                        ),
                    );
                }
            }
            let mine = (manager.to_owned(), subresource.to_owned());
            let before_mine = owners.get(&mine).cloned().unwrap_or_default();
            let others: BTreeSet<String> = owners
                .iter()
                .filter(|(k, _)| **k != mine)
                .flat_map(|(_, p)| p.iter().cloned())
                .collect();
            for path in before_mine.difference(&fields) {
                // An item goes only when nobody else applies any of it.
                let held = others.contains(path)
                    || (is_item(path)
                        && others
                            .iter()
                            .any(|o| o.starts_with(&format!("{path}\u{1}"))));
                if !held {
                    remove(&mut object, path);
                }
            }
            for (k, paths) in owners.iter_mut() {
                if *k != mine {
                    paths.retain(|p| !fields.contains(p));
                }
            }
            owners.insert(mine, fields);
            let mut applied = body;
            if let Some(map) = applied.as_object_mut() {
                if target.status {
                    map.retain(|k, _| k == "status");
                } else {
                    if kind.status {
                        map.remove("status");
                    }
                    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.retain(|k, _| {
                            matches!(
                                k.as_str(),
                                "labels" | "annotations" | "ownerReferences" | "finalizers"
                            )
                        });
                    }
                }
            }
            apply_merge(&mut object, &applied);
            if !created {
                bump_generation(&mut object, &before);
            }
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            ok(code, &db.store(&kind, key, object, created))
        }
        _ => status(405, "MethodNotAllowed", format!("{verb} is not supported")),
    }
}

fn conflict(kind: &Kind, name: &str) -> Response {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.plural, kind.group
        ),
    )
}

/// What a write cannot change: name, namespace, uid, creation time.
fn keep_identity(object: &mut Value, old: &Value) {
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        object["metadata"][field] = old["metadata"][field].clone();
    }
    object["apiVersion"] = old["apiVersion"].clone();
    object["kind"] = old["kind"].clone();
}

/// A write to the object keeps its status; a write to `/status` changes only the status.
fn scope(object: &mut Value, old: &Value, kind: &Kind, status: bool) {
    if status {
        let new_status = object["status"].clone();
        *object = old.clone();
        object["status"] = new_status;
    } else if kind.status {
        object["status"] = old["status"].clone();
        if object["status"].is_null()
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, extra_label: bool) -> Value {
        let mut labels = json!({"app": "a"});
        if extra_label {
            labels["extra"] = json!("yes");
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "ns", "labels": labels},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "a", "image": image, "env": [{"name": "X", "value": "1"}]}]}}}})
    }

    async fn send(
        server: &ApiServer,
        method: Method,
        uri: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Value) {
        crate::install_crypto_provider();
        let response = reqwest::Client::new()
            .request(method, format!("{}{uri}", server.url()))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or(Value::Null))
    }

    const APPLY: &str = "application/apply-patch+yaml";
    const DEPLOY: &str = "/apis/apps/v1/namespaces/ns/deployments/a";

    #[tokio::test]
    async fn apply_merges_removes_what_a_manager_stops_applying_and_records_managed_fields() {
        let server = ApiServer::start().await;
        let uri = format!("{DEPLOY}?fieldManager=op&force=true");
        let (code, first) =
            send(&server, Method::PATCH, &uri, APPLY, &deployment("v1", true)).await;
        assert_eq!(code, 201);
        assert_eq!(first["metadata"]["generation"], 1);
        assert_eq!(first["metadata"]["managedFields"][0]["manager"], "op");
        assert!(
            first["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"].is_object()
        );

        // Another manager adds a label and an env entry; the first stops applying its label.
        server.edit("apps/v1", "Deployment", "ns", "a", |d| {
            d["status"] = json!({"readyReplicas": 1});
        });
        let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "ns", "labels": {"theirs": "1"}}});
        other["spec"] = json!({"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}});
        let (code, _) = send(
            &server,
            Method::PATCH,
            &format!("{DEPLOY}?fieldManager=hpa"),
            APPLY,
            &other,
        )
        .await;
        assert_eq!(code, 200);
        let (code, second) = send(
            &server,
            Method::PATCH,
            &uri,
            APPLY,
            &deployment("v2", false),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(
            second["metadata"]["labels"],
            json!({"app": "a", "theirs": "1"}),
            "the dropped label went, theirs stayed"
        );
        let container = &second["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "v2");
        assert_eq!(
            container["env"].as_array().unwrap().len(),
            2,
            "env merged by name: {container}"
        );
        assert_eq!(
            second["status"]["readyReplicas"], 1,
            "an apply of the object keeps its status"
        );
        assert_eq!(
            second["metadata"]["generation"], 3,
            "each spec change is a generation"
        );

        // Not forced, changing another manager's field: 409.
        let mut grab = deployment("v2", false);
        grab["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "Y", "value": "3"}]);
        let (code, body) = send(
            &server,
            Method::PATCH,
            &format!("{DEPLOY}?fieldManager=op"),
            APPLY,
            &grab,
        )
        .await;
        assert_eq!(code, 409, "{body}");
    }

    #[tokio::test]
    async fn lists_page_watches_resume_and_deletion_waits_for_finalizers_then_collects_garbage() {
        crate::install_crypto_provider();
        let server = ApiServer::start().await;
        let owner = server.create(json!({"apiVersion": "tienda.dev/v1alpha1", "kind": "Shop",
            "metadata": {"name": "s", "namespace": "ns", "finalizers": ["x"]}, "spec": {}}));
        for i in 0..3 {
            server.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": format!("sa{i}"), "namespace": "ns", "labels": {"n": i.to_string()},
                             "ownerReferences": [{"uid": owner["metadata"]["uid"], "name": "s"}]}}));
        }
        let (_, page) = send(
            &server,
            Method::GET,
            "/api/v1/serviceaccounts?limit=2",
            "application/json",
            &Value::Null,
        )
        .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        let next = page["metadata"]["continue"].as_str().unwrap().to_owned();
        let (_, rest) = send(
            &server,
            Method::GET,
            &format!("/api/v1/serviceaccounts?limit=2&continue={next}"),
            "application/json",
            &Value::Null,
        )
        .await;
        assert_eq!(rest["items"][0]["metadata"]["name"], "sa2");
        let (_, selected) = send(
            &server,
            Method::GET,
            "/api/v1/namespaces/ns/serviceaccounts?labelSelector=n%3D1",
            "application/json",
            &Value::Null,
        )
        .await;
        assert_eq!(selected["items"].as_array().unwrap().len(), 1);

        let rv = page["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        server.delete("tienda.dev/v1alpha1", "Shop", "ns", "s");
        assert!(
            server
                .get("tienda.dev/v1alpha1", "Shop", "ns", "s")
                .unwrap()["metadata"]["deletionTimestamp"]
                .is_string()
        );
        assert_eq!(
            server.list("v1", "ServiceAccount").len(),
            3,
            "nothing collected while the owner waits"
        );
        let (code, _) = send(
            &server,
            Method::PATCH,
            "/apis/tienda.dev/v1alpha1/namespaces/ns/shops/s",
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": [], "resourceVersion": "1"}}),
        )
        .await;
        assert_eq!(
            code, 409,
            "a stale resourceVersion is a precondition that fails"
        );
        server.edit("tienda.dev/v1alpha1", "Shop", "ns", "s", |s| {
            s["metadata"]["finalizers"] = json!([])
        });
        assert!(
            server
                .get("tienda.dev/v1alpha1", "Shop", "ns", "s")
                .is_none()
        );
        assert!(
            server.list("v1", "ServiceAccount").is_empty(),
            "owned objects collected"
        );

        let response = reqwest::get(format!(
            "{}/api/v1/serviceaccounts?watch=true&resourceVersion={rv}&timeoutSeconds=1",
            server.url()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        let types: Vec<String> = response
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(types, ["DELETED", "DELETED", "DELETED"]);
        assert_eq!(server.requests()["watch serviceaccounts"], 1);
    }
}
