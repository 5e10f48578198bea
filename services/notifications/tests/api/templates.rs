//! Editable, versioned templates: checked at save with the line at fault, previewed against
//! a sample event, used for the next message, recorded on its delivery.

use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::order::OrderShipped;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let admin = app.issuer.token(&Uuid::now_v7().to_string(), &["admin"]);
    let response = app.send(method, path, Some(&admin), body).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

const SHIPPED_EN: &str = "/v1/notifications/templates/order_shipped/en";

fn edit(subject: &str, html: &str) -> Value {
    json!({
        "subject": subject,
        "body_text": "Parcel {{ tracking_number }} is with {{ carrier }}.\n",
        "body_html": html,
        "note": "Shorter"
    })
}

#[tokio::test]
async fn an_admin_edits_a_template_and_the_next_message_uses_the_new_version() {
    let app = spawn_app().await;

    let (status, list) = call(&app, Method::GET, "/v1/notifications/templates", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 26, "thirteen kinds in two locales");
    assert!(items.iter().all(|i| i["version"] == 1));
    let customer = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let refused = app
        .send(
            Method::GET,
            "/v1/notifications/templates",
            Some(&customer),
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // A broken part is refused with its line, and nothing is saved.
    let (status, problem) = call(
        &app,
        Method::POST,
        SHIPPED_EN,
        Some(edit(
            "Shipped",
            "<p>Tracking:</p>\n<p>{{ tracking_number }</p>\n",
        )),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let text = problem.to_string();
    assert!(
        text.contains("body_html") && text.contains("line 2"),
        "{problem}"
    );
    let (status, problem) = call(
        &app,
        Method::POST,
        SHIPPED_EN,
        Some(edit("Shipped {{ parcel_colour }}", "<p>x</p>")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem.to_string().contains("subject"), "{problem}");
    let (_, detail) = call(&app, Method::GET, SHIPPED_EN, None).await;
    assert_eq!(detail["current"]["version"], 1);

    let (status, saved) = call(
        &app,
        Method::POST,
        SHIPPED_EN,
        Some(edit(
            "On its way: {{ tracking_number }}",
            "<p>Parcel <b>{{ tracking_number }}</b> is with {{ carrier }}.</p>\n",
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{saved}");
    assert_eq!(saved["version"], 2);
    assert_eq!(saved["note"], "Shorter");
    let (_, detail) = call(&app, Method::GET, SHIPPED_EN, None).await;
    assert_eq!(detail["current"]["version"], 2);
    let numbers: Vec<i64> = detail["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);

    let (status, preview) = call(
        &app,
        Method::GET,
        &format!("{SHIPPED_EN}/versions/2/preview"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["subject"], "On its way: PQ4BA20123456");
    assert!(
        preview["html"]
            .as_str()
            .unwrap()
            .contains("<b>PQ4BA20123456</b>")
    );
    assert!(
        preview["html"].as_str().unwrap().contains("Unsubscribe"),
        "in the layout"
    );
    let (status, shipped) = call(
        &app,
        Method::GET,
        &format!("{SHIPPED_EN}/versions/1/preview"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shipped["version"], 1);
    let (status, _) = call(&app, Method::GET, &format!("{SHIPPED_EN}/versions/9"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &app,
        Method::GET,
        "/v1/notifications/templates/spam/en",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &app,
        Method::GET,
        "/v1/notifications/templates/welcome/fr",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let event = app
        .publish(
            "orders",
            OrderShipped {
                order_id: Uuid::now_v7(),
                customer_id: None,
                email: "gus@example.com".into(),
                carrier: "Correos".into(),
                tracking_number: "PK777".into(),
            },
        )
        .await;
    let mail = app.mail_for(event).await;
    assert_eq!(mail.header("Subject").as_deref(), Some("On its way: PK777"));
    assert!(mail.part("text/html").contains("<b>PK777</b>"));
    assert_eq!(app.settled(event).await.template_version, 2);
}

#[tokio::test]
async fn two_edits_at_once_get_two_numbers() {
    let app = spawn_app().await;
    let body = edit("Shipped {{ tracking_number }}", "<p>{{ carrier }}</p>");
    let (a, b) = futures::future::join(
        call(&app, Method::POST, SHIPPED_EN, Some(body.clone())),
        call(&app, Method::POST, SHIPPED_EN, Some(body)),
    )
    .await;
    assert_eq!((a.0, b.0), (StatusCode::CREATED, StatusCode::CREATED));
    let mut numbers = [
        a.1["version"].as_i64().unwrap(),
        b.1["version"].as_i64().unwrap(),
    ];
    numbers.sort_unstable();
    assert_eq!(numbers, [2, 3]);
}
