//! Invoices on capture and credit notes on refund: their numbers (gap-free under concurrency
//! and lost commits), their amounts, who may read them, and the PDF and HTML.

use std::collections::BTreeSet;

use chrono::{Datelike, Utc};
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::Value;
use tienda_events::payment::{AuthorizePayment, InvoiceDetails, InvoiceLine};
use uuid::Uuid;

use crate::helpers::{TestApp, authorize, capture, eur, refund, spawn_app_with};

const CUSTOMER: &str = "00000000-0000-7000-8000-000000000002";

fn seller_flags() -> [&'static str; 5] {
    [
        "--invoice-tax-rate-bps=2100",
        "--invoice-seller-name=Tienda Demo S.L.",
        "--invoice-seller-address=Calle Mayor 1; 28013 Madrid",
        "--invoice-seller-country=ES",
        "--invoice-seller-tax-id=ESB12345678",
    ]
}

fn details() -> InvoiceDetails {
    InvoiceDetails {
        customer_name: "Ada <script>alert(1)</script> Lovelace".into(),
        address: vec!["Calle Luna 5".into(), "28004 Madrid".into()],
        country: "ES".into(),
        lines: vec![
            InvoiceLine {
                sku: "MUG-1".into(),
                description: "Café mug".into(),
                quantity: 2,
                unit_price: eur(4_000),
            },
            InvoiceLine {
                sku: "APRON-1".into(),
                description: "Linen apron".into(),
                quantity: 1,
                unit_price: eur(4_100),
            },
        ],
    }
}

/// An authorization for `CUSTOMER`, answered.
async fn authorized(app: &mut TestApp, amount: i64) -> AuthorizePayment {
    let mut command = authorize("pm_card_visa", eur(amount));
    command.customer_id = Some(CUSTOMER.parse().unwrap());
    let reply = app.ask(command.clone()).await;
    assert_eq!(reply.name(), "authorized", "{:?}", reply.data());
    command
}

async fn invoices_of(app: &TestApp, order_id: Uuid, token: &str) -> Vec<Value> {
    let response = app
        .get(&format!("/v1/invoices?order_id={order_id}"), Some(token))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_capture_issues_an_invoice_and_a_refund_a_credit_note_against_it() {
    let mut app = spawn_app_with(&seller_flags()).await;
    let auth = authorized(&mut app, 12_100).await;
    let mut command = capture(&auth, None);
    command.invoice = Some(details());
    let reply = app.ask(command).await;
    assert_eq!(reply.name(), "captured", "{:?}", reply.data());
    let returned = refund(&auth, eur(4_100));
    let reply = app.ask(returned.clone()).await;
    assert_eq!(reply.name(), "refunded", "{:?}", reply.data());

    let year = Utc::now().year();
    let items = invoices_of(&app, auth.order_id, &app.customer).await;
    assert_eq!(items.len(), 2, "{items:?}");
    let (note, invoice) = (&items[0], &items[1]);
    assert_eq!(invoice["number"], format!("INV-{year}-000001"));
    assert_eq!(invoice["kind"], "invoice");
    assert_eq!(invoice["total"]["amount"], 12_100);
    // 121.00 with 21 % included: 100.00 net, 21.00 tax, line by line.
    assert_eq!(invoice["net"]["amount"], 10_000);
    assert_eq!(invoice["tax"]["amount"], 2_100);
    assert_eq!(invoice["lines"][0]["sku"], "MUG-1");
    assert_eq!(invoice["lines"][0]["quantity"], 2);
    assert_eq!(invoice["lines"][0]["total"], 8_000);
    assert_eq!(invoice["lines"][0]["net"], 6_612);
    assert_eq!(invoice["lines"][1]["net"], 3_388);
    assert_eq!(invoice["seller"]["name"], "Tienda Demo S.L.");
    assert_eq!(
        invoice["seller"]["address"],
        serde_json::json!(["Calle Mayor 1", "28013 Madrid"])
    );
    assert_eq!(invoice["customer"]["country"], "ES");

    assert_eq!(note["number"], format!("CN-{year}-000001"));
    assert_eq!(note["kind"], "credit_note");
    assert_eq!(note["credits"], format!("INV-{year}-000001"));
    assert_eq!(note["total"]["amount"], 4_100);
    assert_eq!(note["refund_id"], returned.refund_id.to_string());

    // The PDF and the page.
    let id = invoice["id"].as_str().unwrap();
    let pdf = app
        .get(&format!("/v1/invoices/{id}.pdf"), Some(&app.customer))
        .await;
    assert_eq!(pdf.status(), StatusCode::OK);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let bytes = pdf.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-"), "a PDF");
    assert!(bytes.ends_with(b"%%EOF") || bytes.ends_with(b"%%EOF\n"));
    let text = String::from_utf8_lossy(&bytes);
    for printed in [
        format!("Invoice INV-{year}-000001"),
        "Tienda Demo S.L.".into(),
        "121.00 EUR".into(),
        "21.00 EUR".into(),
        "Tax id ESB12345678".into(),
    ] {
        assert!(text.contains(&printed), "the PDF prints {printed}");
    }
    // "Café" in WinAnsi (é = E9), which pdf-writer writes as a hex string.
    assert!(
        text.to_ascii_lowercase().contains("<436166e9"),
        "accents in the standard fonts' encoding"
    );

    let html = app
        .get(&format!("/v1/invoices/{id}.html"), Some(&app.customer))
        .await;
    assert_eq!(html.status(), StatusCode::OK);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = html.text().await.unwrap();
    assert!(page.contains(&format!("INV-{year}-000001")));
    assert!(page.contains("Café mug"));
    assert!(
        !page.contains("<script>alert(1)</script>") && page.contains("&lt;script&gt;"),
        "the customer's name is escaped"
    );
    let note_page = app
        .get(
            &format!("/v1/invoices/{}.html", note["id"].as_str().unwrap()),
            Some(&app.customer),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        note_page.contains("-41.00 EUR"),
        "credit notes print negative"
    );
}

#[tokio::test]
async fn only_the_owner_and_admins_read_an_invoice() {
    let mut app = spawn_app_with(&seller_flags()).await;
    let auth = authorized(&mut app, 5_000).await;
    let reply = app.ask(capture(&auth, None)).await;
    assert_eq!(reply.name(), "captured");
    let items = invoices_of(&app, auth.order_id, &app.admin).await;
    assert_eq!(items.len(), 1, "admins see anyone's");
    let invoice = &items[0];
    assert_eq!(
        invoice["lines"][0]["description"],
        format!("Order {}", auth.order_id),
        "without the order's lines: one line for the amount"
    );
    let id = invoice["id"].as_str().unwrap();

    let stranger = app
        .issuer
        .token("00000000-0000-7000-8000-000000000099", &["customer"]);
    for path in [
        format!("/v1/invoices/{id}"),
        format!("/v1/invoices/{id}.pdf"),
        format!("/v1/invoices/{id}.html"),
    ] {
        assert_eq!(
            app.get(&path, Some(&app.customer)).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            app.get(&path, Some(&app.admin)).await.status(),
            StatusCode::OK
        );
        let response = app.get(&path, Some(&stranger)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(
            app.get(&path, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(invoices_of(&app, auth.order_id, &stranger).await.is_empty());
    for bad in [
        format!("/v1/invoices/{id}.exe"),
        "/v1/invoices/not-an-id.pdf".to_owned(),
    ] {
        assert_eq!(
            app.get(&bad, Some(&app.admin)).await.status(),
            StatusCode::NOT_FOUND,
            "{bad}"
        );
    }
    assert_eq!(
        app.get("/v1/invoices/%00", Some(&app.admin)).await.status(),
        StatusCode::BAD_REQUEST,
        "a NUL in the URL is refused before any handler"
    );
    let response = app
        .get("/v1/invoices?order_id=nope", Some(&app.admin))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// The numbers of every invoice, in issue order.
async fn invoice_numbers(app: &TestApp) -> Vec<i32> {
    sqlx::query_scalar("SELECT seq FROM invoices WHERE kind = 'invoice' ORDER BY seq")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_hundred_concurrent_captures_take_a_hundred_consecutive_numbers() {
    let mut app = spawn_app_with(&["--database-max-connections=20"]).await;
    let commands: Vec<AuthorizePayment> = (0..100)
        .map(|_| authorize("pm_card_visa", eur(2_500)))
        .collect();
    for command in &commands {
        app.send(command.clone()).await;
    }
    for _ in 0..100 {
        assert_eq!(app.reply().await.name(), "authorized");
    }
    // All at once: the consumer takes them concurrently.
    for command in &commands {
        app.send(capture(command, None)).await;
    }
    let mut captured = 0;
    for _ in 0..100 {
        if app.reply().await.name() == "captured" {
            captured += 1;
        }
    }
    assert_eq!(captured, 100);
    assert_eq!(invoice_numbers(&app).await, (1..=100).collect::<Vec<_>>());
    let numbers: BTreeSet<String> = sqlx::query_scalar("SELECT number FROM invoices")
        .fetch_all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(numbers.len(), 100);
}

#[tokio::test]
async fn captures_whose_commits_were_lost_leave_no_gap_in_the_numbers() {
    let mut app = spawn_app_with(&[]).await;
    let first = authorized(&mut app, 1_000).await;
    let second = authorized(&mut app, 2_000).await;

    // The captures reach the provider and take numbers, then their commits are lost, again
    // and again (each redelivery does it once more).
    app.lose_commits().await;
    app.send(capture(&first, None)).await;
    app.send(capture(&second, None)).await;
    for command in [&first, &second] {
        app.wait_for_started_attempt(
            command.payment_id,
            &format!("capture-{}", command.payment_id),
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    app.restore_commits().await;
    for _ in 0..2 {
        assert_eq!(app.reply().await.name(), "captured");
    }

    assert_eq!(invoice_numbers(&app).await, vec![1, 2]);
    let counter: i32 = sqlx::query_scalar("SELECT last FROM invoice_counters WHERE series = 'INV'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        counter, 2,
        "no number was taken by a transaction that did not commit"
    );
}
