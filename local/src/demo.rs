//! `tienda up --demo`: a shop worth a first look. Once the shop is ready, the demo catalog of
//! `local/demo/catalog.yaml` (categories, products with variants, image URLs and stock, in
//! Spanish and English) and a demo customer are loaded through the public API, the way an
//! admin and a customer would: the admin signs in, creates what is missing and sets stock;
//! the customer registers. Nothing is written to a database directly.
//!
//! Once: after a complete load a marker (`<data>/demo-loaded`) makes later starts skip it.
//! A load that was interrupted is finished by the next one without duplicates: categories are
//! known by slug, products by their first SKU, stock is only set where none is, and a customer
//! who exists is kept.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// The demo data, as shipped.
const CATALOG: &str = include_str!("../demo/catalog.yaml");

/// The file in the data directory that says the demo data was loaded.
pub const MARKER: &str = "demo-loaded";

/// The demo data: what `local/demo/catalog.yaml` holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// ISO 4217 code of every price.
    pub currency: String,
    /// The demo customer.
    pub customer: Customer,
    /// The category tree, parents before their children.
    pub categories: Vec<Category>,
    /// The products.
    pub products: Vec<Product>,
}

/// The demo customer, registered like any customer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// Email (the login).
    pub email: String,
    /// Display name.
    pub name: String,
    /// A documented demo password, not a secret.
    pub password: String,
}

/// A category of the tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// Its slug: how a second load recognizes it.
    pub slug: String,
    /// The parent's slug; `None`: a root.
    #[serde(default)]
    pub parent: Option<String>,
    /// Spanish name.
    pub es: String,
    /// English name.
    pub en: String,
}

/// Text in both languages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// Spanish.
    pub es: String,
    /// English.
    pub en: String,
}

/// A product.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Its name.
    pub name: Text,
    /// Its description.
    pub description: Text,
    /// The slugs of its categories.
    pub categories: Vec<String>,
    /// Image URLs (stored, not fetched).
    pub images: Vec<String>,
    /// Its variants; the first SKU identifies the product across loads.
    pub variants: Vec<Variant>,
}

/// A variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// SKU.
    pub sku: String,
    /// Attributes such as size and colour.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Unit price in minor units of the catalog's currency.
    pub price: i64,
    /// Units on hand.
    pub stock: i64,
}

impl Catalog {
    /// The demo data shipped in this binary, checked.
    pub fn embedded() -> anyhow::Result<Self> {
        let catalog: Self =
            serde_saphyr::from_str(CATALOG).context("reading the embedded demo catalog")?;
        catalog.check()?;
        Ok(catalog)
    }

    /// What products would refuse, found before anything is sent: unknown or later parents
    /// and categories, repeated slugs or SKUs, products without variants.
    fn check(&self) -> anyhow::Result<()> {
        let mut slugs = BTreeSet::new();
        for category in &self.categories {
            if let Some(parent) = &category.parent
                && !slugs.contains(parent.as_str())
            {
                bail!(
                    "demo category {}: parent {parent} is not listed before it",
                    category.slug
                );
            }
            if !slugs.insert(category.slug.as_str()) {
                bail!("demo category {} is listed twice", category.slug);
            }
        }
        let mut skus = BTreeSet::new();
        for product in &self.products {
            if product.variants.is_empty() {
                bail!("demo product {} has no variants", product.name.es);
            }
            if let Some(unknown) = product
                .categories
                .iter()
                .find(|c| !slugs.contains(c.as_str()))
            {
                bail!("demo product {}: no category {unknown}", product.name.es);
            }
            for variant in &product.variants {
                if !skus.insert(variant.sku.as_str()) {
                    bail!("demo SKU {} is listed twice", variant.sku);
                }
            }
        }
        Ok(())
    }
}

impl Category {
    /// The name it gets: categories have no description, so both languages are in the name.
    pub fn name(&self) -> String {
        format!("{} / {}", self.es, self.en)
    }
}

impl Product {
    /// The SKU that identifies it across loads.
    pub fn key(&self) -> &str {
        &self.variants[0].sku
    }

    /// The product's description: the Spanish text, then the English name and text (the
    /// catalog has one language per field; search covers descriptions too).
    pub fn full_description(&self) -> String {
        format!(
            "{}\n\nEN · {}: {}",
            self.description.es, self.name.en, self.description.en
        )
    }

    /// The body of `POST /v1/products`: active, so customers see it.
    fn request(&self, currency: &str, category_ids: &BTreeMap<String, String>) -> Value {
        json!({
            "name": self.name.es,
            "description": self.full_description(),
            "status": "active",
            "category_ids": self.categories.iter().map(|slug| &category_ids[slug]).collect::<Vec<_>>(),
            "images": self.images,
            "variants": self.variants.iter().map(|v| json!({
                "sku": v.sku,
                "attributes": v.attributes,
                "price": {"amount": v.price, "currency": currency},
            })).collect::<Vec<_>>(),
        })
    }
}

/// Where the demo's requests go: the gateway's address for both when it runs.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Base URL for `/v1/auth`.
    pub auth: String,
    /// Base URL for `/v1/categories`, `/v1/products` and `/v1/inventory`.
    pub products: String,
}

/// The first admin, who loads the catalog.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
    /// Where the password comes from, for the message when it is refused.
    pub source: String,
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The marker says an earlier start loaded it; nothing was sent.
    AlreadyLoaded {
        /// The marker.
        marker: PathBuf,
    },
    /// Loaded now (what was missing).
    Loaded {
        /// Categories created.
        categories: usize,
        /// Products created.
        products: usize,
        /// Products of the demo that already existed.
        existing: usize,
        /// Variants whose stock was set.
        stocked: usize,
        /// Whether the demo customer was registered now (`false`: it existed).
        customer_registered: bool,
    },
}

/// The demo customer of the shipped catalog: email and password.
pub fn customer() -> anyhow::Result<Customer> {
    Ok(Catalog::embedded()?.customer)
}

/// Loads the shipped demo data through the public API at `endpoints`, signed in as `admin`,
/// unless `data_dir` holds the marker of an earlier load; writes the marker when done.
pub async fn load(endpoints: &Endpoints, admin: &Admin, data_dir: &Path) -> anyhow::Result<Report> {
    let marker = data_dir.join(MARKER);
    if marker.exists() {
        return Ok(Report::AlreadyLoaded { marker });
    }
    let catalog = Catalog::embedded()?;
    eprintln!(
        "tienda: loading the demo data through {}",
        endpoints.products
    );
    let mut api = Api::new()?;
    api.token = Some(sign_in_admin(&api, endpoints, admin).await?);

    let category_ids = ensure_categories(&api, endpoints, &catalog).await?;
    let created_categories = category_ids.created;
    let (mut products, mut existing, mut stocked) = (0, 0, 0);
    for product in &catalog.products {
        let key = product.key();
        let exists = match api
            .call(
                Method::GET,
                &format!("{}/v1/inventory/{key}", endpoints.products),
                None,
            )
            .await?
        {
            (StatusCode::OK, _) => true,
            (StatusCode::NOT_FOUND, _) => false,
            (status, body) => {
                return Err(unexpected(
                    &format!("reading the stock of {key}"),
                    status,
                    &body,
                ));
            }
        };
        if exists {
            existing += 1;
        } else {
            let body = product.request(&catalog.currency, &category_ids.ids);
            match api
                .call(
                    Method::POST,
                    &format!("{}/v1/products", endpoints.products),
                    Some(&body),
                )
                .await?
            {
                (StatusCode::CREATED, _) => products += 1,
                (StatusCode::CONFLICT, body) => bail!(
                    "the demo product {:?} was not created: one of its SKUs ({}) belongs to \
                     another product in this shop ({}); the demo data is meant for a new shop",
                    product.name.es,
                    product
                        .variants
                        .iter()
                        .map(|v| v.sku.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    problem_text(&body)
                ),
                (status, body) => {
                    return Err(unexpected(
                        &format!("creating the demo product {:?}", product.name.es),
                        status,
                        &body,
                    ));
                }
            }
        }
        for variant in product.variants.iter().filter(|v| v.stock > 0) {
            if exists && !stockless(&api, endpoints, &variant.sku).await? {
                continue;
            }
            let url = format!("{}/v1/inventory/{}", endpoints.products, variant.sku);
            let body = json!({"on_hand": variant.stock, "reason": "demo data (tienda up --demo)"});
            match api.call(Method::PUT, &url, Some(&body)).await? {
                (StatusCode::OK, _) => stocked += 1,
                (status, body) => {
                    return Err(unexpected(
                        &format!("setting the stock of {}", variant.sku),
                        status,
                        &body,
                    ));
                }
            }
        }
    }
    let customer_registered = ensure_customer(&api, endpoints, &catalog.customer).await?;
    std::fs::write(
        &marker,
        format!(
            "The demo data of `tienda up --demo` is loaded; remove this file to load what is \
             missing again.\n{} products, {} categories, customer {}\n",
            catalog.products.len(),
            catalog.categories.len(),
            catalog.customer.email
        ),
    )
    .with_context(|| format!("writing {}", marker.display()))?;
    Ok(Report::Loaded {
        categories: created_categories,
        products,
        existing,
        stocked,
        customer_registered,
    })
}

/// The admin's access token; a refused password says where it came from.
async fn sign_in_admin(api: &Api, endpoints: &Endpoints, admin: &Admin) -> anyhow::Result<String> {
    let url = format!("{}/v1/auth/login", endpoints.auth);
    let body = json!({"email": admin.email, "password": admin.password});
    match api.call(Method::POST, &url, Some(&body)).await? {
        (StatusCode::OK, body) if body["mfa_required"] == true => bail!(
            "the admin {} has two-factor sign-in on, which the demo loader cannot answer; \
             start without --demo, or turn it off for the load",
            admin.email
        ),
        (StatusCode::OK, body) => body["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the login answer has no access_token: {body}")),
        (StatusCode::UNAUTHORIZED, _) => bail!(
            "the admin {} could not sign in with the password {}: it is not the admin's \
             password now (changed since the first start?). Set TIENDA_ADMIN_PASSWORD to the \
             current one, or start without --demo",
            admin.email,
            admin.source
        ),
        (StatusCode::TOO_MANY_REQUESTS, body) => bail!(
            "the admin {} is locked out after failed sign-ins ({}); wait and start again",
            admin.email,
            problem_text(&body)
        ),
        (status, body) => Err(unexpected(
            &format!("signing in as {}", admin.email),
            status,
            &body,
        )),
    }
}

/// Category ids by slug, and how many were created.
struct CategoryIds {
    ids: BTreeMap<String, String>,
    created: usize,
}

async fn ensure_categories(
    api: &Api,
    endpoints: &Endpoints,
    catalog: &Catalog,
) -> anyhow::Result<CategoryIds> {
    let url = format!("{}/v1/categories", endpoints.products);
    let mut ids: BTreeMap<String, String> = match api.call(Method::GET, &url, None).await? {
        (StatusCode::OK, body) => body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["slug"].as_str()?.to_owned(), c["id"].as_str()?.to_owned())))
            .collect(),
        (status, body) => return Err(unexpected("listing categories", status, &body)),
    };
    let mut created = 0;
    for category in &catalog.categories {
        if ids.contains_key(&category.slug) {
            continue;
        }
        let parent_id = category.parent.as_ref().map(|p| ids[p].clone());
        let body = json!({"name": category.name(), "slug": category.slug, "parent_id": parent_id});
        match api.call(Method::POST, &url, Some(&body)).await? {
            (StatusCode::CREATED, body) => {
                let id = body["id"]
                    .as_str()
                    .context("a created category has an id")?;
                ids.insert(category.slug.clone(), id.to_owned());
                created += 1;
            }
            (status, body) => {
                return Err(unexpected(
                    &format!("creating the category {}", category.slug),
                    status,
                    &body,
                ));
            }
        }
    }
    Ok(CategoryIds { ids, created })
}

/// Whether `sku` has no stock and none reserved: a product an interrupted load created but
/// did not stock (stock a user set is kept).
async fn stockless(api: &Api, endpoints: &Endpoints, sku: &str) -> anyhow::Result<bool> {
    let url = format!("{}/v1/inventory/{sku}", endpoints.products);
    match api.call(Method::GET, &url, None).await? {
        (StatusCode::OK, body) => Ok(body["on_hand"] == 0 && body["reserved"] == 0),
        // A variant a user removed from the product.
        (StatusCode::NOT_FOUND, _) => Ok(false),
        (status, body) => Err(unexpected(
            &format!("reading the stock of {sku}"),
            status,
            &body,
        )),
    }
}

/// Registers the demo customer unless it signs in already; whether it was registered now.
/// (Registration answers the same for a taken address, so signing in is how to tell.) One that
/// exists but no longer takes the documented password is said, not fatal.
async fn ensure_customer(
    api: &Api,
    endpoints: &Endpoints,
    customer: &Customer,
) -> anyhow::Result<bool> {
    let login_url = format!("{}/v1/auth/login", endpoints.auth);
    let login = json!({"email": customer.email, "password": customer.password});
    if api.call(Method::POST, &login_url, Some(&login)).await?.0 == StatusCode::OK {
        return Ok(false);
    }
    let body =
        json!({"email": customer.email, "password": customer.password, "name": customer.name});
    let url = format!("{}/v1/auth/register", endpoints.auth);
    match api.call(Method::POST, &url, Some(&body)).await? {
        (StatusCode::ACCEPTED, _) => {}
        (status, body) => {
            return Err(unexpected(
                &format!("registering the demo customer {}", customer.email),
                status,
                &body,
            ));
        }
    }
    let (status, _) = api.call(Method::POST, &login_url, Some(&login)).await?;
    if status == StatusCode::OK {
        return Ok(true);
    }
    eprintln!(
        "tienda: the demo customer {} exists but does not sign in with the documented \
         password (answer {status}); it was changed — kept as it is",
        customer.email
    );
    Ok(false)
}

/// The HTTP client: JSON in and out, a bearer token once signed in, and patience with a
/// rate limit or a shop still settling (429 and 503 are retried a few times).
struct Api {
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            token: None,
        })
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.http.request(method.clone(), url);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url} got no answer"))?;
            let status = response.status();
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1)
                .min(10);
            let body = response.json().await.unwrap_or(Value::Null);
            let busy = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            // Sign-in lockouts are 429 too, and are not waited out.
            if busy && attempt < 5 && !url.ends_with("/v1/auth/login") {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            return Ok((status, body));
        }
    }
}

/// A problem document's title, detail and field errors on one line.
fn problem_text(body: &Value) -> String {
    let mut text = [&body["title"], &body["detail"]]
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(errors) = body.get("errors").filter(|e| !e.is_null()) {
        text.push_str(&format!(" {errors}"));
    }
    if text.is_empty() {
        body.to_string()
    } else {
        text
    }
}

fn unexpected(what: &str, status: StatusCode, body: &Value) -> anyhow::Error {
    anyhow::anyhow!("{what}: the shop answered {status}: {}", problem_text(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_demo_catalog_reads_and_is_consistent() {
        let catalog = Catalog::embedded().unwrap();

        assert!((20..=30).contains(&catalog.products.len()));
        assert!(
            catalog
                .products
                .iter()
                .all(|p| (1..=4).contains(&p.variants.len()))
        );
        assert_eq!(catalog.currency, "EUR");
        assert!(catalog.categories.iter().any(|c| c.parent.is_none()));
        assert!(catalog.categories.iter().any(|c| c.parent.is_some()));
    }

    #[test]
    fn demo_products_pass_the_catalogs_rules() {
        let catalog = Catalog::embedded().unwrap();

        for product in &catalog.products {
            let name = &product.name.es;
            assert!((1..=200).contains(&name.chars().count()), "{name}");
            assert!(
                product.full_description().chars().count() <= 10_000,
                "{name}"
            );
            assert!(
                !product.images.is_empty() && product.images.len() <= 20,
                "{name}"
            );
            assert!(
                product.images.iter().all(|u| u.starts_with("https://")),
                "{name}"
            );
            for v in &product.variants {
                let sku_ok = (1..=64).contains(&v.sku.len())
                    && v.sku
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                assert!(sku_ok, "{}", v.sku);
                assert!(v.price > 0 && v.stock >= 0, "{}", v.sku);
                assert!(v.attributes.len() <= 20, "{}", v.sku);
                assert!(
                    v.attributes.keys().all(|k| {
                        (1..=40).contains(&k.len())
                            && k.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    }),
                    "{}",
                    v.sku
                );
            }
        }
    }

    #[test]
    fn a_product_is_sent_active_with_both_languages_and_its_category_ids() {
        let catalog = Catalog::embedded().unwrap();
        let product = &catalog.products[0];
        let ids = catalog
            .categories
            .iter()
            .map(|c| (c.slug.clone(), format!("id-of-{}", c.slug)))
            .collect();

        let body = product.request("EUR", &ids);

        assert_eq!(body["name"], product.name.es);
        assert_eq!(body["status"], "active");
        let description = body["description"].as_str().unwrap();
        assert!(description.contains(&product.description.es));
        assert!(description.contains(&product.name.en));
        assert!(description.contains(&product.description.en));
        assert_eq!(
            body["category_ids"][0],
            format!("id-of-{}", product.categories[0])
        );
        assert_eq!(
            body["variants"][0]["price"],
            json!({"amount": product.variants[0].price, "currency": "EUR"})
        );
    }

    #[test]
    fn a_category_out_of_order_is_refused_before_anything_is_sent() {
        let mut catalog = Catalog::embedded().unwrap();
        catalog.categories.reverse();

        let error = catalog.check().unwrap_err().to_string();

        assert!(error.contains("is not listed before it"), "{error}");
    }

    #[tokio::test]
    async fn a_marker_from_an_earlier_load_means_nothing_is_sent() {
        let dir = std::env::temp_dir().join(format!("tienda-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MARKER), "loaded").unwrap();
        // Nothing listens there: any request would fail the load.
        let nowhere = Endpoints {
            auth: "http://127.0.0.1:9".into(),
            products: "http://127.0.0.1:9".into(),
        };
        let admin = Admin {
            email: "admin@tienda.local".into(),
            password: "unused".into(),
            source: "given".into(),
        };

        let report = load(&nowhere, &admin, &dir).await.unwrap();

        assert_eq!(
            report,
            Report::AlreadyLoaded {
                marker: dir.join(MARKER)
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
