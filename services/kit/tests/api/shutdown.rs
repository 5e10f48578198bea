use std::time::Duration;

use crate::example::spawn;

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_stops_accepting() {
    let app = spawn().await;
    let slow = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/v1/slow"));
        async move { http.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.platform.shutdown.trigger();

    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");

    let stopped = tokio::time::timeout(Duration::from_secs(10), app.server).await;
    stopped
        .expect("stops within the deadline")
        .unwrap()
        .expect("stops cleanly");

    let fresh = reqwest::Client::new()
        .get(format!("{}/livez", app.base))
        .send()
        .await;
    assert!(fresh.is_err(), "no new connections after shutdown");
}
