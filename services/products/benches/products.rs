//! `GET /v1/products/{id}` throughput and latency, and search latency (with and without facet
//! counts) on a 100,000-product
//! catalog, over real HTTP against real PostgreSQL and NATS, on this machine.
//!
//!     tests/bench products
//!
//! The service runs on its own 2-thread runtime; the load generator on another (the same
//! cores, as in the budget: everything on one box). Reads: closed loop with 32 connections
//! for throughput; open loop at a fixed rate, latency measured from each request's scheduled
//! start (so a stall counts against every request it delays). A benchmark, not a test: it
//! prints numbers and asserts nothing about time.
//!
//! Environment: `BENCH_TRACING` = `off` (default), `1` or `100` — spans exported over OTLP to a
//! receiver inside the bench, sampling 1 % or 100 % of requests (the tracing overhead);
//! `BENCH_READS_ONLY=1` skips the searches; `BENCH_PRODUCTS` sizes the catalog (100,000).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::json;
use tienda_kit::testing::{NatsServer, TestDatabase};
use tienda_products::{Application, config::Config};
use uuid::Uuid;

fn products() -> usize {
    std::env::var("BENCH_PRODUCTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const ADJECTIVES: [&str; 16] = [
    "Classic", "Modern", "Rustic", "Vintage", "Compact", "Deluxe", "Light", "Heavy", "Soft",
    "Sturdy", "Elegant", "Sporty", "Cozy", "Bold", "Slim", "Grand",
];
const MATERIALS: [&str; 12] = [
    "Leather", "Cotton", "Wool", "Canvas", "Steel", "Oak", "Bamboo", "Ceramic", "Glass", "Linen",
    "Suede", "Copper",
];
const NOUNS: [&str; 24] = [
    "Boots", "Jacket", "Mug", "Lamp", "Chair", "Table", "Backpack", "Wallet", "Scarf", "Hat",
    "Sneakers", "Blanket", "Bottle", "Watch", "Belt", "Gloves", "Vase", "Kettle", "Desk", "Shelf",
    "Pillow", "Rug", "Basket", "Apron",
];
const COLORS: [&str; 6] = ["red", "blue", "green", "black", "white", "brown"];

/// Which catalog to seed (`BENCH_CATALOG`): `realistic` (default) or `small`, the worst case
/// where 52 words make every name, so each query word matches 4-8 % of the catalog.
fn small_catalog() -> bool {
    std::env::var("BENCH_CATALOG").is_ok_and(|c| c == "small")
}

/// splitmix64: a seeded, dependency-free generator, so every run seeds the same catalog.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf-distributed picks from `n` ranks (rank 0 the most frequent), as words are in text.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Self(cumulative.into_iter().map(|c| c / total).collect())
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// `n` distinct made-up words of two or three syllables: brand names and the long tail of a
/// catalog's vocabulary.
fn invented_words(rng: &mut Rng, n: usize) -> Vec<String> {
    const ONSETS: [&str; 20] = [
        "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st",
        "tr", "gl",
    ];
    const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ai"];
    let mut seen = std::collections::BTreeSet::new();
    let mut words = Vec::with_capacity(n);
    while words.len() < n {
        let syllables = 2 + rng.below(2);
        let word: String = (0..syllables)
            .map(|_| format!("{}{}", ONSETS[rng.below(20)], VOWELS[rng.below(6)]))
            .collect::<String>()
            + ["", "n", "r", "x", "l"][rng.below(5)];
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Real product words, most common first (their Zipf rank).
const REAL_NOUNS: [&str; 120] = [
    "shirt",
    "dress",
    "shoes",
    "jacket",
    "bag",
    "lamp",
    "chair",
    "mug",
    "boots",
    "table",
    "sweater",
    "jeans",
    "watch",
    "backpack",
    "sofa",
    "pillow",
    "blanket",
    "hat",
    "scarf",
    "sneakers",
    "wallet",
    "belt",
    "gloves",
    "socks",
    "towel",
    "rug",
    "vase",
    "bottle",
    "kettle",
    "desk",
    "shelf",
    "mirror",
    "candle",
    "basket",
    "apron",
    "skirt",
    "shorts",
    "coat",
    "hoodie",
    "blouse",
    "sandals",
    "slippers",
    "cardigan",
    "vest",
    "leggings",
    "pajamas",
    "robe",
    "tie",
    "umbrella",
    "sunglasses",
    "necklace",
    "bracelet",
    "earrings",
    "ring",
    "headphones",
    "speaker",
    "keyboard",
    "mouse",
    "monitor",
    "charger",
    "cable",
    "tripod",
    "camera",
    "lens",
    "tent",
    "sleeping",
    "stove",
    "lantern",
    "compass",
    "helmet",
    "bicycle",
    "skateboard",
    "racket",
    "ball",
    "dumbbell",
    "mat",
    "jar",
    "plate",
    "bowl",
    "cup",
    "teapot",
    "pan",
    "pot",
    "knife",
    "spoon",
    "fork",
    "cutting",
    "grater",
    "whisk",
    "colander",
    "clock",
    "frame",
    "poster",
    "cushion",
    "curtain",
    "duvet",
    "sheet",
    "quilt",
    "stool",
    "bench",
    "cabinet",
    "dresser",
    "wardrobe",
    "bed",
    "crib",
    "stroller",
    "toy",
    "puzzle",
    "notebook",
    "pen",
    "pencil",
    "planner",
    "journal",
    "organizer",
    "tray",
    "hanger",
    "hook",
    "planter",
    "trowel",
    "ladder",
];
const REAL_ADJECTIVES: [&str; 40] = [
    "classic",
    "modern",
    "vintage",
    "compact",
    "deluxe",
    "lightweight",
    "heavy",
    "soft",
    "sturdy",
    "elegant",
    "sporty",
    "cozy",
    "bold",
    "slim",
    "grand",
    "premium",
    "essential",
    "everyday",
    "waterproof",
    "organic",
    "handmade",
    "minimalist",
    "rustic",
    "portable",
    "foldable",
    "oversized",
    "fitted",
    "relaxed",
    "insulated",
    "breathable",
    "stretch",
    "quilted",
    "padded",
    "woven",
    "knitted",
    "printed",
    "striped",
    "plaid",
    "floral",
    "matte",
];
const REAL_MATERIALS: [&str; 24] = [
    "cotton",
    "leather",
    "wool",
    "linen",
    "denim",
    "silk",
    "canvas",
    "suede",
    "polyester",
    "nylon",
    "cashmere",
    "fleece",
    "bamboo",
    "oak",
    "walnut",
    "pine",
    "steel",
    "aluminium",
    "copper",
    "brass",
    "ceramic",
    "glass",
    "stoneware",
    "porcelain",
];
const REAL_COLORS: [&str; 12] = [
    "black", "white", "navy", "grey", "blue", "red", "green", "beige", "brown", "pink", "olive",
    "burgundy",
];

/// One seeded product.
struct Seeded {
    name: String,
    description: String,
    category: usize,
    price: i64,
    variants: Vec<serde_json::Value>,
}

/// The words the realistic catalog is made of, for the bench's queries too.
struct Vocabulary {
    brands: Vec<String>,
    filler: Vec<String>,
}

impl Vocabulary {
    fn new() -> Self {
        let mut rng = Rng(7);
        Self {
            brands: invented_words(&mut rng, 2_000),
            filler: invented_words(&mut rng, 4_000),
        }
    }
}

/// A catalog as shops have: a brand from 2,000, an adjective, often a material, a noun from
/// 120 (Zipf: the commonest in ~17 % of names, the rarest in ~0.1 %), a model code; a
/// description of 12-24 words from the product's own words and a 4,000-word long tail; 1-4
/// sizes of one colour. About 6,000 distinct words in all.
fn realistic(vocabulary: &Vocabulary, n: usize, rng: &mut Rng) -> Seeded {
    thread_local! {
        static NOUNS: Zipf = Zipf::new(REAL_NOUNS.len(), 1.0);
        static ADJECTIVES: Zipf = Zipf::new(REAL_ADJECTIVES.len(), 0.8);
        static BRANDS: Zipf = Zipf::new(2_000, 0.7);
        // The head of a text's Zipf curve is stop words ("the", "and"), which search drops:
        // the filler starts at rank 20, so its commonest word is in ~6 % of descriptions.
        static FILLER: Zipf = Zipf::new(4_020, 1.0);
        static COLOR: Zipf = Zipf::new(REAL_COLORS.len(), 0.9);
    }
    let noun = NOUNS.with(|z| z.pick(rng));
    let adjective = REAL_ADJECTIVES[ADJECTIVES.with(|z| z.pick(rng))];
    let brand = &vocabulary.brands[BRANDS.with(|z| z.pick(rng))];
    let material = (rng.below(10) < 6).then(|| REAL_MATERIALS[rng.below(REAL_MATERIALS.len())]);
    let mut name = format!("{}{} {adjective}", brand[..1].to_uppercase(), &brand[1..]);
    if let Some(m) = material {
        name.push(' ');
        name.push_str(m);
    }
    name.push_str(&format!(
        " {} {}-{}",
        REAL_NOUNS[noun],
        &brand[..2].to_uppercase(),
        n
    ));
    let mut words = vec!["a", adjective, REAL_NOUNS[noun]];
    if let Some(m) = material {
        words.extend(["made", "of", m]);
    }
    let length = 12 + rng.below(13);
    let filler: Vec<&str> = (words.len()..length)
        .map(|_| {
            loop {
                let rank = FILLER.with(|z| z.pick(rng));
                if rank >= 20 {
                    break vocabulary.filler[rank - 20].as_str();
                }
            }
        })
        .collect();
    words.extend(filler);
    let description = words.join(" ") + ".";
    let color = REAL_COLORS[COLOR.with(|z| z.pick(rng))];
    let price = 500 + rng.below(60_000) as i64;
    let variants = (0..1 + rng.below(4))
        .map(|i| json!({"color": color, "size": (["S", "M", "L", "XL"][i])}))
        .collect();
    Seeded {
        name,
        description,
        category: noun % 24,
        price,
        variants,
    }
}

/// The small-vocabulary catalog: every name from 16 adjectives, 12 materials and 24 nouns.
fn small(n: usize) -> Seeded {
    let (a, m, o) = (
        ADJECTIVES[n % 16],
        MATERIALS[(n / 16) % 12],
        (n * 7 + n / 192) % 24,
    );
    Seeded {
        name: format!("{a} {m} {} {n}", NOUNS[o]),
        description: format!(
            "A {} {} made of {} for everyday use. Model {n}.",
            a.to_lowercase(),
            NOUNS[o].to_lowercase(),
            m.to_lowercase()
        ),
        category: o,
        price: 500 + ((n * 7919) % 60_000) as i64,
        variants: vec![json!({"color": COLORS[n % 6], "size": (["S", "M", "L"][n % 3])})],
    }
}

async fn seed(db: &sqlx::PgPool) -> anyhow::Result<(Vec<Uuid>, Vec<Uuid>)> {
    let mut categories = Vec::new();
    for (i, noun) in NOUNS.iter().enumerate() {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO categories (id, name, slug) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(*noun)
            .bind(format!("{}-{i}", noun.to_lowercase()))
            .execute(db)
            .await?;
        categories.push(id);
    }
    let vocabulary = Vocabulary::new();
    let mut rng = Rng(42);
    let mut ids = Vec::with_capacity(products());
    for batch in 0..products().div_ceil(10_000) {
        let mut id = Vec::new();
        let mut name = Vec::new();
        let mut description = Vec::new();
        let mut price = Vec::new();
        let mut category = Vec::new();
        // As the service writes a new product: its variants' `key=value`s, byte order.
        let mut summary = Vec::new();
        let (mut sku, mut sku_product, mut position, mut attrs, mut sku_price) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for j in 0..10_000 {
            let n = batch * 10_000 + j;
            let product = if small_catalog() {
                small(n)
            } else {
                realistic(&vocabulary, n, &mut rng)
            };
            let product_id = Uuid::now_v7();
            id.push(product_id);
            name.push(product.name);
            description.push(product.description);
            price.push(product.price);
            category.push(categories[product.category]);
            let values: std::collections::BTreeSet<String> = product
                .variants
                .iter()
                .flat_map(|v| v.as_object().unwrap().iter())
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect();
            summary.push(values.into_iter().collect::<Vec<_>>().join(","));
            for (v, attributes) in product.variants.into_iter().enumerate() {
                sku.push(format!("SKU-{n:06}-{v}"));
                sku_product.push(product_id);
                position.push(v as i32);
                attrs.push(attributes);
                sku_price.push(product.price + 200 * v as i64);
            }
        }
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO products (id, name, description, status, min_price, currency, \
                 category_ids, attribute_summary) \
             SELECT i, n, d, 'active', p, 'EUR', ARRAY[c], string_to_array(a, ',') \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::uuid[], \
                 $6::text[]) AS r(i, n, d, p, c, a)",
        )
        .bind(&id)
        .bind(&name)
        .bind(&description)
        .bind(&price)
        .bind(&category)
        .bind(&summary)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO product_categories (product_id, category_id) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[])",
        )
        .bind(&id)
        .bind(&category)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO variants (sku, product_id, position, attributes, price_amount, currency) \
             SELECT s, p, o, a, m, 'EUR' \
             FROM unnest($1::text[], $2::uuid[], $3::int[], $4::jsonb[], $5::bigint[]) \
                  AS w(s, p, o, a, m)",
        )
        .bind(&sku)
        .bind(&sku_product)
        .bind(&position)
        .bind(&attrs)
        .bind(&sku_price)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO inventory (sku, on_hand) SELECT s, (row_number() OVER () % 50) \
             FROM unnest($1::text[]) AS s",
        )
        .bind(&sku)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        ids.extend(id);
    }
    // As autovacuum leaves a catalog that has been live a while.
    sqlx::query("VACUUM ANALYZE").execute(db).await?;
    Ok((ids, categories))
}

/// The searches the bench loops over. Realistic: common, middling and rare words, a brand, two
/// words, typos, a colour with in-stock, a category, price sorts and ranges. Small: the same
/// shapes over its 52 words.
fn search_urls(base: &str, categories: &[Uuid]) -> Vec<String> {
    let mut urls = Vec::new();
    let (queries, colors): (Vec<String>, &[&str]) = if small_catalog() {
        let words = [
            "leather",
            "boots",
            "lether bots",
            "wool scarf",
            "ceramic",
            "oak table",
            "cozy",
        ];
        (words.map(str::to_owned).to_vec(), &COLORS)
    } else {
        let v = Vocabulary::new();
        let typo = |w: &str| format!("{}{}", &w[..2], &w[3..]);
        (
            vec![
                REAL_NOUNS[0].to_owned(),                                  // ~17 % of names
                REAL_NOUNS[3].to_owned(),                                  // ~4 %
                REAL_NOUNS[40].to_owned(),                                 // ~0.5 %
                REAL_NOUNS[119].to_owned(),                                // ~0.15 %
                v.brands[0].clone(),                                       // a big brand
                v.brands[1_500].clone(),                                   // a small one
                format!("{} {}", REAL_ADJECTIVES[0], REAL_NOUNS[1]),       // "classic dress"
                format!("{} {}", REAL_MATERIALS[1], REAL_NOUNS[2]),        // "leather shoes"
                format!("{} {}", v.filler[0], REAL_NOUNS[5]),              // a description word
                v.filler[2].clone(), // in ~5 % of descriptions
                typo(REAL_NOUNS[6]), // "chir"
                format!("{} {}", typo(REAL_MATERIALS[0]), REAL_NOUNS[13]), // "coton backpack"
                typo(&v.brands[10]),
            ],
            &REAL_COLORS,
        )
    };
    for (i, q) in queries.iter().enumerate() {
        let q = q.replace(' ', "%20");
        urls.push(format!("{base}/v1/products?q={q}"));
        urls.push(format!("{base}/v1/products?q={q}&sort=price_asc&limit=20"));
        urls.push(format!(
            "{base}/v1/products?q={q}&attr.color={}&in_stock=true",
            colors[i % colors.len()]
        ));
    }
    urls.push(format!(
        "{base}/v1/products?min_price=1000&max_price=5000&sort=price_asc"
    ));
    urls.push(format!(
        "{base}/v1/products?attr.color={}&sort=newest",
        colors[0]
    ));
    urls.push(format!("{base}/v1/products?in_stock=true&sort=price_desc"));
    urls.push(format!("{base}/v1/products?category={}", categories[0]));
    urls.push(format!(
        "{base}/v1/products?q={}&category={}&sort=price_asc",
        queries[0].replace(' ', "%20"),
        categories[0]
    ));
    urls
}

struct Report {
    /// Per URL index: its latencies, for the slowest-queries list.
    by_url: Vec<(usize, Duration)>,
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Report {
    /// The `n` URLs with the highest worst latency, with their median and worst.
    fn slowest(&self, urls: &[String], n: usize) {
        let mut per: std::collections::BTreeMap<usize, Vec<Duration>> = Default::default();
        for (i, d) in &self.by_url {
            per.entry(*i).or_default().push(*d);
        }
        let mut rows: Vec<(Duration, Duration, usize)> = per
            .into_iter()
            .map(|(i, mut l)| {
                l.sort();
                (*l.last().unwrap(), percentile(&l, 0.5), i)
            })
            .collect();
        rows.sort_by(|a, b| b.cmp(a));
        for (worst, median, i) in rows.into_iter().take(n) {
            let path = urls[i]
                .split_once("/v1/")
                .map_or(urls[i].as_str(), |(_, p)| p);
            eprintln!(
                "  slowest: max {:.1} ms, p50 {:.1} ms: /v1/{path}",
                ms(worst),
                ms(median)
            );
        }
    }

    fn row(&mut self, what: &str) {
        self.latencies.sort();
        let l = &self.latencies;
        println!(
            "| {what} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            self.requests as f64 / self.seconds,
            ms(percentile(l, 0.5)),
            ms(percentile(l, 0.95)),
            ms(percentile(l, 0.99)),
            ms(*l.last().unwrap()),
            self.errors
        );
        println!(
            "{}",
            json!({"bench": what, "rps": self.requests as f64 / self.seconds,
                   "p50_ms": ms(percentile(l, 0.5)), "p95_ms": ms(percentile(l, 0.95)),
                   "p99_ms": ms(percentile(l, 0.99)), "errors": self.errors})
        );
    }
}

/// `connections` clients, each sending the next request when the last answered.
async fn closed_loop(
    http: &reqwest::Client,
    urls: Arc<Vec<String>>,
    connections: usize,
    length: Duration,
) -> Report {
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|w| {
            let (http, urls) = (http.clone(), urls.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut i) = (Vec::new(), 0, w * 7919);
                while Instant::now() < deadline {
                    let index = i % urls.len();
                    let url = &urls[index];
                    i += 1;
                    let t = Instant::now();
                    match http.get(url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                        }
                        _ => errors += 1,
                    }
                    latencies.push((index, t.elapsed()));
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut report = Report {
        by_url: Vec::new(),
        requests: 0,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::new(),
    };
    for w in workers {
        let (l, e) = w.await.unwrap();
        report.requests += l.len();
        report.errors += e;
        report.latencies.extend(l.iter().map(|(_, d)| *d));
        report.by_url.extend(l);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Requests at a fixed rate, each timed from when it was due.
async fn open_loop(
    http: &reqwest::Client,
    urls: Arc<Vec<String>>,
    rate: u64,
    length: Duration,
) -> Report {
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let total = (length.as_secs_f64() * rate as f64) as usize;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (http, url) = (http.clone(), urls[(i * 7919) % urls.len()].clone());
        tasks.push(tokio::spawn(async move {
            let ok = matches!(http.get(&url).send().await, Ok(r) if r.status().is_success());
            (due.elapsed(), ok)
        }));
    }
    let mut report = Report {
        by_url: Vec::new(),
        requests: total,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (latency, ok) = t.await.unwrap();
        report.latencies.push(latency);
        report.errors += usize::from(!ok);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let nats = NatsServer::start_with(true);
    let tracing = std::env::var("BENCH_TRACING").unwrap_or_else(|_| "off".into());
    let receiver = match tracing.as_str() {
        "off" => None,
        percent => {
            let ratio: f64 = percent
                .parse::<f64>()
                .map_err(|_| anyhow::anyhow!("BENCH_TRACING is off, 1 or 100"))?
                / 100.0;
            // The receiver (a collector's stand-in) on a runtime of its own.
            let collector = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let receiver = collector.block_on(tienda_kit::testing::otlp::Receiver::start());
            std::mem::forget(collector);
            server.block_on(async {
                tienda_kit::telemetry::init_with_traces(
                    "products",
                    tienda_kit::config::LogFormat::Json,
                    "error",
                    Ok(Some(tienda_kit::telemetry::TraceExport {
                        endpoint: format!("{}/v1/traces", receiver.http_endpoint()),
                        protocol: "http/protobuf".into(),
                        sample_ratio: Some(ratio),
                    })),
                )
            });
            Some(receiver)
        }
    };
    eprintln!("tracing: {tracing}");
    let (database, base, db) = server.block_on(async {
        let client = async_nats::connect(nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        for item in tienda_provision::topology::provision_all(&js).await {
            item.result?;
        }
        let database = TestDatabase::create().await;
        let config = Config::parse_from([
            "tienda-products".to_owned(),
            "--listen-addr=127.0.0.1:0".into(),
            "--admin-addr=127.0.0.1:0".into(),
            format!("--database-url={}", database.url),
            format!("--nats-url={}", nats.url()),
            "--log-filter=error".into(),
            "--database-max-connections=16".into(),
        ]);
        let app = Application::build(config).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let db = app.platform().db().clone();
        tokio::spawn(app.run_until_stopped());
        anyhow::Ok((database, base, db))
    })?;
    let seeding = Instant::now();
    let (ids, categories) = server.block_on(seed(&db))?;
    eprintln!(
        "seeded {} products in {:.1} s",
        products(),
        seeding.elapsed().as_secs_f64()
    );

    client.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let reads = Arc::new(
            ids.iter()
                .step_by(97)
                .map(|id| format!("{base}/v1/products/{id}"))
                .collect::<Vec<_>>(),
        );
        println!("| what | rps | p50 ms | p95 ms | p99 ms | max ms | errors |");
        println!("|---|---|---|---|---|---|---|");
        // Warm the cache and the connections.
        closed_loop(&http, reads.clone(), 32, Duration::from_secs(3)).await;
        closed_loop(&http, reads.clone(), 32, Duration::from_secs(10))
            .await
            .row("GET /v1/products/{id}, 32 connections, closed loop");
        open_loop(&http, reads.clone(), 1000, Duration::from_secs(10))
            .await
            .row("GET /v1/products/{id}, open loop 1000 rps");
        if std::env::var_os("BENCH_READS_ONLY").is_some() {
            return anyhow::Ok(());
        }

        let searches = Arc::new(search_urls(&base, &categories));
        closed_loop(&http, searches.clone(), 1, Duration::from_secs(3)).await;
        let mut single = closed_loop(&http, searches.clone(), 1, Duration::from_secs(15)).await;
        single.row("search (q, filters), 1 connection");
        single.slowest(&searches, 8);
        closed_loop(&http, searches.clone(), 4, Duration::from_secs(15))
            .await
            .row("search (q, filters), 4 connections");
        // Facets computed every time: each request has filters no earlier one had (no cache hit).
        let facet_words = if small_catalog() {
            vec!["leather".to_owned(), "wool".into(), "oak".into()]
        } else {
            let v = Vocabulary::new();
            // A common word, a middling one and a brand.
            vec![
                REAL_NOUNS[0].to_owned(),
                REAL_NOUNS[20].into(),
                v.brands[3].clone(),
            ]
        };
        let cold_facets = Arc::new(
            (0..2000)
                .map(|i| {
                    format!(
                        "{base}/v1/products?q={}&facets=true&min_price={i}",
                        facet_words[i % 3]
                    )
                })
                .collect::<Vec<_>>(),
        );
        let mut facets = closed_loop(&http, cold_facets.clone(), 1, Duration::from_secs(10)).await;
        facets.row("search with facets=true, uncached, 1 connection");
        facets.slowest(&cold_facets, 3);
        anyhow::Ok(())
    })?;
    if let Some(receiver) = &receiver {
        server
            .block_on(async { tokio::task::spawn_blocking(tienda_kit::telemetry::flush).await })?;
        eprintln!("spans exported: {}", receiver.spans().len());
    }
    if std::env::var_os("TIENDA_BENCH_KEEP_DB").is_some() {
        eprintln!("kept the database: {}", database.url);
        std::mem::forget(database);
    }
    Ok(())
}
