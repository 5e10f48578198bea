//! A provider answered but the command's transaction never committed (process killed,
//! database error at commit): the redelivered command arrives past its deadline and must learn
//! what the provider did instead of answering "expired, nothing was done".

use std::time::Duration;

use chrono::Utc;
use pretty_assertions::assert_eq;
use tienda_events::Envelope;

use crate::helpers::{authorize, capture, eur, refund, spawn_app};

/// Waits until `deadline` has passed, so the next delivery is judged late.
async fn until_past(deadline: chrono::DateTime<Utc>) {
    while Utc::now() <= deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_authorization_whose_commit_was_lost_is_voided_when_redelivered_after_its_deadline() {
    let mut app = spawn_app().await;
    let mut command = authorize("pm_card_visa", eur(3100));
    command.deadline = Utc::now() + chrono::Duration::seconds(2);
    app.lose_commits().await;

    let sent = app.send(command.clone()).await;
    app.wait_for_started_attempt(
        command.payment_id,
        &format!("authorize-{}", command.payment_id),
    )
    .await;
    until_past(command.deadline).await;
    app.restore_commits().await;
    let reply = app.reply().await;

    assert_eq!(reply.envelope.causation_id, Some(sent.id));
    assert_eq!(reply.name(), "failed", "{:?}", reply.data());
    assert_eq!(reply.data()["operation"], "authorize");
    assert_eq!(reply.data()["expired"], true);
    assert_eq!(reply.data()["retryable"], false);
    assert!(
        reply.data()["detail"].as_str().unwrap().contains("voided"),
        "{}",
        reply.data()
    );
    let payment = app.payment(command.payment_id).await;
    assert_eq!(
        payment["status"], "voided",
        "nothing is held at the provider"
    );
    let attempts: Vec<(String, String)> = payment["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["operation"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("authorize".to_owned(), "succeeded".to_owned()),
            ("void".to_owned(), "succeeded".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_refund_whose_commit_was_lost_is_recorded_once_when_redelivered_after_its_deadline() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 1000).await;
    app.ask(capture(&auth, None)).await;
    let mut command = refund(&auth, eur(250));
    command.deadline = Utc::now() + chrono::Duration::seconds(2);
    app.lose_commits().await;

    let sent: Envelope<_> = app.send(command.clone()).await;
    app.wait_for_started_attempt(auth.payment_id, &format!("refund-{}", command.refund_id))
        .await;
    until_past(command.deadline).await;
    app.restore_commits().await;
    let reply = app.reply().await;

    assert_eq!(reply.envelope.causation_id, Some(sent.id));
    assert_eq!(reply.name(), "refunded", "{:?}", reply.data());
    assert_eq!(reply.data()["amount"]["amount"], 250);
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["refunded"]["amount"], 250);
    assert_eq!(payment["refunds"].as_array().unwrap().len(), 1);
    let refunds: Vec<&str> = payment["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["operation"] == "refund")
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(refunds, ["succeeded"], "one call's record, answered");
}

#[tokio::test]
async fn a_command_past_its_deadline_with_no_call_started_still_does_nothing() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 1000).await;
    let mut late = refund(&auth, eur(100));
    late.deadline = Utc::now() - chrono::Duration::seconds(1);
    app.ask(capture(&auth, None)).await;

    let reply = app.ask(late).await;

    assert_eq!(reply.name(), "failed");
    assert_eq!(reply.data()["expired"], true);
    assert_eq!(app.payment(auth.payment_id).await["refunded"]["amount"], 0);
}
