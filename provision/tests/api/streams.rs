use async_nats::jetstream;
use serde_json::json;
use tienda_crds::ServiceSpec;
use tienda_provision::{
    Outcome, ProvisionError,
    streams::{consumer_config, ensure_consumer, ensure_stream, provision_service, stream_config},
};

async fn js() -> jetstream::Context {
    let url = std::env::var("NATS_URL").expect("NATS_URL is not set: run the tests with tests/run");
    jetstream::new(
        async_nats::connect(url)
            .await
            .expect("connecting to the test NATS"),
    )
}

/// A Service spec with unique stream and consumer names, so tests share one server.
fn service(tag: &str) -> ServiceSpec {
    serde_json::from_value(json!({
        "shop": "demo", "component": "orders", "image": "x",
        "streams": [{"name": format!("ORDERS_{tag}"), "subjects": [format!("t{tag}.orders.>")], "maxAge": "1h"}],
        "consumers": [{"name": format!("orders-self-{tag}"), "stream": format!("ORDERS_{tag}"),
                       "filterSubjects": [format!("t{tag}.orders.placed")], "maxDeliver": 3}]
    }))
    .unwrap()
}

fn tag() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

#[tokio::test]
async fn a_service_is_provisioned_once_and_a_second_run_changes_nothing() {
    let js = js().await;
    let spec = service(&tag());
    let first = provision_service(&js, &spec, 1, None).await;
    assert_eq!(
        first.len(),
        3,
        "stream, dead-letter stream, consumer: {first:?}"
    );
    for item in &first {
        assert!(
            matches!(item.result, Ok(Outcome::Created) | Ok(Outcome::Unchanged)),
            "{item:?}"
        );
    }
    assert!(matches!(first[0].result, Ok(Outcome::Created)));
    assert!(matches!(first[2].result, Ok(Outcome::Created)));

    let second = provision_service(&js, &spec, 1, None).await;
    for item in &second {
        assert!(matches!(item.result, Ok(Outcome::Unchanged)), "{item:?}");
    }

    let mut stream = js.get_stream(&spec.streams[0].name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.subjects, spec.streams[0].subjects);
    let consumer = stream.consumer_info(&spec.consumers[0].name).await.unwrap();
    assert_eq!(consumer.config.max_deliver, 3);
}

#[tokio::test]
async fn a_stream_deleted_out_of_band_is_recreated() {
    let js = js().await;
    let spec = service(&tag());
    provision_service(&js, &spec, 1, None).await;
    js.delete_stream(&spec.streams[0].name).await.unwrap();

    let again = provision_service(&js, &spec, 1, None).await;
    assert!(matches!(again[0].result, Ok(Outcome::Created)), "{again:?}");
    assert!(
        matches!(again[2].result, Ok(Outcome::Created)),
        "the consumer went with its stream: {again:?}"
    );
    js.get_stream(&spec.streams[0].name)
        .await
        .expect("the stream exists again");
}

#[tokio::test]
async fn an_immutable_stream_change_is_reported_and_a_mutable_one_applied() {
    let js = js().await;
    let spec = service(&tag());
    provision_service(&js, &spec, 1, None).await;

    let mut memory = spec.streams[0].clone();
    memory.storage = tienda_crds::service::Storage::Memory;
    let err = ensure_stream(&js, stream_config(&memory, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProvisionError::Immutable {
                field: "storage",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("storage cannot change"), "{err}");
    assert_eq!(err.reason(), "ImmutableFieldChanged");

    let mut longer = spec.streams[0].clone();
    longer.max_age = Some("2h".parse().unwrap());
    let outcome = ensure_stream(&js, stream_config(&longer, 1)).await.unwrap();
    assert_eq!(outcome, Outcome::Updated(vec!["maxAge".into()]));
    let mut stream = js.get_stream(&longer.name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.max_age.as_secs(), 7200);
}

#[tokio::test]
async fn a_consumer_change_is_applied_and_a_missing_stream_is_named() {
    let js = js().await;
    let spec = service(&tag());
    provision_service(&js, &spec, 1, None).await;

    let mut consumer = spec.consumers[0].clone();
    consumer.max_deliver = 7;
    let outcome = ensure_consumer(&js, &consumer.stream, consumer_config(&consumer))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Updated(vec!["maxDeliver".into()]));

    consumer.stream = "NO_SUCH_STREAM".into();
    let err = ensure_consumer(&js, &consumer.stream, consumer_config(&consumer))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::MissingStream { .. }), "{err}");
}
