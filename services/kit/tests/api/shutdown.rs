use std::time::Duration;

use crate::example::spawn;

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_then_stops_accepting() {
    drains_then_stops(spawn().await).await;
}

#[tokio::test]
async fn served_from_threads_of_its_own_shutdown_drains_the_same_way() {
    tienda_kit::install_crypto_provider();
    let db = tienda_kit::testing::TestDatabase::create().await;
    let app = crate::example::build(tienda_kit::testing::config(Some(&db.url)), false)
        .await
        .unwrap()
        .serve_on_threads(2);
    drains_then_stops(crate::example::spawn_app(app, db)).await;
}

async fn drains_then_stops(app: crate::example::Running) {
    let slow = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/v1/slow"));
        async move { http.get(url).send().await }
    });
    // Shut down once the request is being answered (not after a guessed delay: on a busy
    // machine it might not have arrived yet, and a refused request would fail the test).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while crate::example::SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

/// A shutdown right after start is a clean stop. (The server ends on the same signal; under
/// load `tienda up` once saw its end before the signal and reported "the HTTP server stopped
/// unexpectedly" on a plain SIGTERM. That interleaving is not reproducible on demand here;
/// `run_until_stopped` now looks at the signal first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_right_after_start_is_a_clean_stop() {
    tienda_kit::install_crypto_provider();
    for _ in 0..20 {
        let platform = tienda_kit::Platform::start(
            "shutdown",
            tienda_kit::testing::config(None),
            tienda_kit::Needs::default(),
        )
        .await
        .unwrap();
        let shutdown = platform.shutdown.clone();
        let app = tienda_kit::Application::build(
            platform,
            axum::Router::new(),
            utoipa::openapi::OpenApi::default(),
        )
        .await
        .unwrap();
        let running = tokio::spawn(app.run_until_stopped());
        tokio::task::yield_now().await;
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("stops")
            .unwrap()
            .expect("a clean stop");
    }
}

/// A background task that panics (the outbox relay, a consumer) stops the process with an
/// error, so its supervisor restarts it, instead of leaving it answering without the task.
#[tokio::test]
async fn a_panicking_background_task_stops_the_process_with_an_error() {
    tienda_kit::install_crypto_provider();
    let platform = tienda_kit::Platform::start(
        "panics",
        tienda_kit::testing::config(None),
        tienda_kit::Needs::default(),
    )
    .await
    .unwrap();
    let shutdown = platform.shutdown.clone();
    platform.spawn(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        panic!("a relay bug");
    });
    // A well-behaved task beside it.
    platform.spawn(async move { shutdown.wait().await });
    let app = tienda_kit::Application::build(
        platform,
        axum::Router::new(),
        utoipa::openapi::OpenApi::default(),
    )
    .await
    .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(20), app.run_until_stopped())
        .await
        .expect("stops on its own");
    let error = stopped.expect_err("exits with an error");
    assert!(
        error.to_string().contains("background task panicked"),
        "{error}"
    );
}
