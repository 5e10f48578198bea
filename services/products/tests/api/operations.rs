//! Operator-only endpoints live on the admin listener; the public one answers 404 for them.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn metrics_and_dead_letters_answer_only_on_the_admin_listener() {
    let app = spawn_app().await;
    for path in ["/metrics", "/admin/dead-letters"] {
        let public = app
            .http
            .get(app.url(path))
            .bearer_auth(&app.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "{path} in public");
    }

    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("outbox"));

    let anonymous = app
        .http
        .get(format!("{}/admin/dead-letters", app.admin_base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "the admin port still wants an admin"
    );
    let letters: Value = app
        .http
        .get(format!("{}/admin/dead-letters", app.admin_base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(letters["items"].is_array(), "{letters}");
}
