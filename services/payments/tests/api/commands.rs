use chrono::Utc;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_events::money::Money;

use crate::helpers::{authorize, capture, eur, refund, spawn_app, spawn_app_with, void};

#[tokio::test]
async fn a_visa_card_is_authorized_and_the_attempt_is_recorded_apart() {
    let mut app = spawn_app().await;

    let (command, reply) = app.authorize("pm_card_visa", 1999).await;

    assert_eq!(reply.name(), "authorized");
    assert_eq!(reply.data()["payment_id"], json!(command.payment_id));
    assert_eq!(reply.data()["order_id"], json!(command.order_id));
    assert_eq!(
        reply.data()["amount"],
        json!({"amount": 1999, "currency": "EUR"})
    );
    assert_eq!(reply.data()["provider"], "sandbox");
    let payment = app.payment(command.payment_id).await;
    assert_eq!(payment["status"], "authorized");
    assert_eq!(payment["captured"], json!({"amount": 0, "currency": "EUR"}));
    assert_eq!(payment["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(payment["attempts"][0]["operation"], "authorize");
    assert_eq!(payment["attempts"][0]["outcome"], "succeeded");
    assert_eq!(
        payment["attempts"][0]["idempotency_key"],
        format!("authorize-{}", command.payment_id)
    );
}

#[tokio::test]
async fn a_full_capture_takes_the_whole_authorization() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 5000).await;

    let reply = app.ask(capture(&auth, None)).await;

    assert_eq!(reply.name(), "captured");
    assert_eq!(
        reply.data()["amount"],
        json!({"amount": 5000, "currency": "EUR"})
    );
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["status"], "captured");
    assert_eq!(payment["captured"]["amount"], 5000);
}

#[tokio::test]
async fn partial_refunds_of_a_partial_capture_stop_at_what_was_captured() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 10_000).await;

    let captured = app.ask(capture(&auth, Some(eur(6000)))).await;
    let first = app.ask(refund(&auth, eur(2000))).await;
    let second = app.ask(refund(&auth, eur(3000))).await;
    let third = app.ask(refund(&auth, eur(2000))).await;

    assert_eq!(captured.name(), "captured");
    assert_eq!(captured.data()["amount"]["amount"], 6000);
    assert_eq!(first.name(), "refunded");
    assert_eq!(first.data()["refunded_total"]["amount"], 2000);
    assert_eq!(second.name(), "refunded");
    assert_eq!(second.data()["amount"]["amount"], 3000);
    assert_eq!(second.data()["refunded_total"]["amount"], 5000);
    assert_eq!(third.name(), "failed");
    assert_eq!(third.data()["operation"], "refund");
    assert_eq!(third.data()["retryable"], false);
    assert_eq!(third.data()["expired"], false);
    assert!(
        third.data()["detail"]
            .as_str()
            .unwrap()
            .contains("only 1000"),
        "{}",
        third.data()
    );
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["status"], "partially_refunded");
    assert_eq!(payment["captured"]["amount"], 6000);
    assert_eq!(payment["refunded"]["amount"], 5000);
    let statuses: Vec<&str> = payment["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "refused"]);
}

#[tokio::test]
async fn refunding_the_rest_makes_the_payment_refunded() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 800).await;
    app.ask(capture(&auth, None)).await;

    let reply = app.ask(refund(&auth, eur(800))).await;

    assert_eq!(reply.name(), "refunded");
    assert_eq!(app.payment(auth.payment_id).await["status"], "refunded");
}

#[tokio::test]
async fn a_voided_payment_cannot_be_captured_and_voiding_again_answers_voided() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 3000).await;

    let voided = app.ask(void(&auth)).await;
    let capture_after = app.ask(capture(&auth, None)).await;
    let again = app.ask(void(&auth)).await;

    assert_eq!(voided.name(), "voided");
    assert_eq!(capture_after.name(), "failed");
    assert_eq!(capture_after.data()["operation"], "capture");
    assert_eq!(capture_after.data()["retryable"], false);
    assert_eq!(again.name(), "voided");
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["status"], "voided");
    let voids = payment["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["operation"] == "void")
        .count();
    assert_eq!(voids, 1, "voided once at the provider");
}

#[tokio::test]
async fn a_capture_beyond_the_authorization_or_in_another_currency_is_refused() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 1000).await;

    let too_much = app.ask(capture(&auth, Some(eur(1001)))).await;
    let dollars = Money {
        amount: 500,
        currency: "USD".parse().unwrap(),
    };
    let other_currency = app.ask(capture(&auth, Some(dollars))).await;

    for reply in [&too_much, &other_currency] {
        assert_eq!(reply.name(), "failed");
        assert_eq!(reply.data()["retryable"], false);
    }
    assert_eq!(app.payment(auth.payment_id).await["status"], "authorized");
}

#[tokio::test]
async fn each_decline_card_is_declined_with_its_code() {
    let mut app = spawn_app().await;
    for (card, code) in [
        ("pm_card_chargeDeclined", "card_declined"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
        ),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
    ] {
        let (auth, reply) = app.authorize(card, 2500).await;

        assert_eq!(reply.name(), "declined", "{card}");
        assert_eq!(reply.data()["code"], code);
        assert!(!reply.data()["message"].as_str().unwrap().is_empty());
        let payment = app.payment(auth.payment_id).await;
        assert_eq!(payment["status"], "declined");
        assert_eq!(payment["decline"]["code"], code);
    }
}

#[tokio::test]
async fn a_three_d_secure_card_requires_action_and_completing_the_challenge_authorizes() {
    let mut app = spawn_app().await;
    let (auth, reply) = app.authorize("pm_card_threeDSecure2Required", 4200).await;
    assert_eq!(reply.name(), "requires_action");
    let action_url = reply.data()["action_url"].as_str().unwrap().to_owned();
    assert!(
        action_url.starts_with(&format!("/v1/payments/{}/challenges/", auth.payment_id)),
        "{action_url}"
    );
    assert!(reply.data()["expires_at"].as_str().unwrap() > Utc::now().to_rfc3339().as_str());
    let capture_first = app.ask(capture(&auth, None)).await;
    assert_eq!(
        capture_first.name(),
        "failed",
        "nothing to capture before the challenge"
    );

    let answered = app
        .http
        .post(app.url(&action_url))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();

    assert_eq!(answered.status(), reqwest::StatusCode::OK);
    let body: Value = answered.json().await.unwrap();
    assert_eq!(body["status"], "authorized");
    let event = app.reply().await;
    assert_eq!(event.name(), "authorized");
    assert_eq!(event.data()["payment_id"], json!(auth.payment_id));
    let first = app.payment(auth.payment_id).await;
    assert_eq!(first["status"], "authorized");
    let twice = app
        .http
        .post(app.url(&action_url))
        .json(&json!({"outcome": "abandon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        twice.status(),
        reqwest::StatusCode::CONFLICT,
        "already answered"
    );
    assert_eq!(twice.headers()["content-type"], "application/problem+json");
    assert_eq!(
        app.payment(auth.payment_id).await["status"],
        "authorized",
        "the second answer changed nothing"
    );
    assert_eq!(app.ask(capture(&auth, None)).await.name(), "captured");
}

#[tokio::test]
async fn an_abandoned_challenge_declines_and_bad_answers_are_problems() {
    let mut app = spawn_app().await;
    let (auth, reply) = app.authorize("pm_card_threeDSecure2Required", 4200).await;
    let action_url = reply.data()["action_url"].as_str().unwrap().to_owned();

    let wrong_token = app
        .http
        .post(app.url(&format!(
            "/v1/payments/{}/challenges/guess",
            auth.payment_id
        )))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();
    let bad_body = app
        .http
        .post(app.url(&action_url))
        .json(&json!({"outcome": "maybe"}))
        .send()
        .await
        .unwrap();
    let abandoned = app
        .http
        .post(app.url(&action_url))
        .json(&json!({"outcome": "abandon"}))
        .send()
        .await
        .unwrap();

    assert_eq!(wrong_token.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(
        wrong_token.headers()["content-type"],
        "application/problem+json"
    );
    assert!(bad_body.status().is_client_error(), "{}", bad_body.status());
    assert_eq!(abandoned.status(), reqwest::StatusCode::OK);
    let event = app.reply().await;
    assert_eq!(event.name(), "declined");
    assert_eq!(
        event.data()["code"],
        "payment_intent_authentication_failure"
    );
    assert_eq!(app.payment(auth.payment_id).await["status"], "declined");
    // A repeat of the authorize command now answers with the outcome: declined.
    assert_eq!(app.ask(auth.clone()).await.name(), "declined");
}

#[tokio::test]
async fn a_challenge_answered_after_it_lapsed_declines_whatever_the_answer() {
    let mut app = spawn_app_with(&[
        "--challenge-ttl-seconds=0",
        "--challenge-sweep-seconds=3600",
        "--public-url=https://shop.example/",
    ])
    .await;
    let (auth, reply) = app.authorize("pm_card_threeDSecure2Required", 990).await;
    let action_url = reply.data()["action_url"].as_str().unwrap().to_owned();
    let path = action_url
        .strip_prefix("https://shop.example")
        .unwrap_or_else(|| panic!("{action_url} is on the public address"));

    let answered = app
        .http
        .post(app.url(path))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();

    assert_eq!(answered.status(), reqwest::StatusCode::OK);
    assert_eq!(
        answered.json::<Value>().await.unwrap()["status"],
        "declined"
    );
    let event = app.reply().await;
    assert_eq!(event.name(), "declined");
    assert_eq!(
        event.envelope.correlation_id, reply.envelope.correlation_id,
        "the saga's correlation"
    );
    assert_eq!(app.payment(auth.payment_id).await["status"], "declined");
}

#[tokio::test]
async fn a_repeated_command_has_one_effect_and_the_same_reply() {
    let mut app = spawn_app().await;
    let (auth, first) = app.authorize("pm_card_visa", 7000).await;
    let again = app.ask(auth.clone()).await;
    assert_eq!(again.name(), "authorized");
    assert_eq!(again.data(), first.data());

    app.ask(capture(&auth, None)).await;
    let refund_command = refund(&auth, eur(1500));
    let refunded = app.ask(refund_command.clone()).await;
    let refunded_again = app.ask(refund_command.clone()).await;

    assert_eq!(refunded.name(), "refunded");
    assert_eq!(refunded_again.data(), refunded.data());
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["refunded"]["amount"], 1500, "refunded once");
    let operations: Vec<&str> = payment["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["operation"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["authorize", "capture", "refund"]);

    // The same refund id for another amount is refused, and changes nothing.
    let mut reused = refund_command;
    reused.amount = eur(100);
    let refused = app.ask(reused).await;
    assert_eq!(refused.name(), "failed");
    assert_eq!(refused.data()["retryable"], false);
    assert_eq!(
        app.payment(auth.payment_id).await["refunded"]["amount"],
        1500
    );
}

#[tokio::test]
async fn a_redelivered_message_past_the_streams_deduplication_is_applied_once_and_answered_once() {
    let mut app = spawn_app().await;
    let command = tienda_events::Envelope::new("orders", authorize("pm_card_visa", eur(900)));
    app.publish(&command).await;
    let first = app.reply().await;
    // The same envelope again with a fresh Nats-Msg-Id, so the stream's de-duplication lets
    // it through and only payments' inbox (keyed on the envelope id) can stop it.
    app.republish(&command).await;
    let next = app.ask(void(&command.data)).await;

    assert_eq!(first.name(), "authorized");
    assert_eq!(
        next.name(),
        "voided",
        "no second reply to the repeated message"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM payment_attempts WHERE payment_id = $1 AND operation = 'authorize'",
            command.data.payment_id
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_command_past_its_deadline_fails_as_expired_and_does_nothing() {
    let mut app = spawn_app().await;
    let mut late = authorize("pm_card_visa", eur(1000));
    late.deadline = Utc::now() - chrono::Duration::seconds(1);

    let reply = app.ask(late.clone()).await;

    assert_eq!(reply.name(), "failed");
    assert_eq!(reply.data()["expired"], true);
    assert_eq!(reply.data()["retryable"], false);
    assert_eq!(reply.data()["operation"], "authorize");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM payments WHERE id = $1",
            late.payment_id
        )
        .await,
        0
    );

    let (auth, _) = app.authorize("pm_card_visa", 1000).await;
    let mut late_capture = capture(&auth, None);
    late_capture.deadline = Utc::now() - chrono::Duration::seconds(1);
    let reply = app.ask(late_capture).await;
    assert_eq!(reply.data()["expired"], true);
    assert_eq!(app.payment(auth.payment_id).await["status"], "authorized");
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_capture() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 1000).await;
    app.ask(capture(&auth, None)).await;

    let commands: Vec<_> = (0..10).map(|_| refund(&auth, eur(300))).collect();
    futures::future::join_all(commands.iter().cloned().map(|c| app.send(c))).await;
    let mut replies = Vec::new();
    for _ in 0..commands.len() {
        replies.push(app.reply().await);
    }

    let refunded: i64 = replies
        .iter()
        .filter(|r| r.name() == "refunded")
        .map(|r| r.data()["amount"]["amount"].as_i64().unwrap())
        .sum();
    let refused = replies.iter().filter(|r| r.name() == "failed").count();
    assert_eq!(refunded, 900, "three refunds of 300 fit in 1000");
    assert_eq!(refused, 7);
    let totals: Vec<i64> = replies
        .iter()
        .filter(|r| r.name() == "refunded")
        .map(|r| r.data()["refunded_total"]["amount"].as_i64().unwrap())
        .collect();
    let mut sorted = totals.clone();
    sorted.sort();
    assert_eq!(sorted, [300, 600, 900], "each saw the ones before it");
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["refunded"]["amount"], 900);
    let stored: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::bigint FROM refunds WHERE payment_id = $1 AND status = 'succeeded'",
    )
    .bind(auth.payment_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stored, 900);
}

#[tokio::test]
async fn a_card_number_is_refused_and_never_stored() {
    let mut app = spawn_app().await;
    let command = authorize("4242 4242 4242 4242", eur(1000));

    let reply = app.ask(command.clone()).await;

    assert_eq!(reply.name(), "failed");
    assert_eq!(reply.data()["retryable"], false);
    assert!(!reply.data()["detail"].as_str().unwrap().contains("4242"));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn zero_amounts_unknown_currencies_and_unknown_payment_methods_fail_without_retry() {
    let mut app = spawn_app().await;
    let zero = app.ask(authorize("pm_card_visa", eur(0))).await;
    let unknown_currency = app
        .ask(authorize(
            "pm_card_visa",
            Money {
                amount: 100,
                currency: "XYZ".parse().unwrap(),
            },
        ))
        .await;
    let (unknown_card, no_such_method) = app.authorize("pm_card_nope", 100).await;

    for reply in [&zero, &unknown_currency, &no_such_method] {
        assert_eq!(reply.name(), "failed", "{:?}", reply.data());
        assert_eq!(reply.data()["retryable"], false);
    }
    assert!(
        zero.data()["detail"]
            .as_str()
            .unwrap()
            .starts_with("amount")
    );
    assert_eq!(
        app.payment(unknown_card.payment_id).await["status"],
        "failed"
    );
}

#[tokio::test]
async fn zero_and_three_decimal_currencies_are_charged_in_their_own_minor_units() {
    let mut app = spawn_app().await;
    for (amount, currency) in [(1500, "JPY"), (12_345, "KWD")] {
        let money = Money {
            amount,
            currency: currency.parse().unwrap(),
        };
        let auth = authorize("pm_card_visa", money);
        let reply = app.ask(auth.clone()).await;
        assert_eq!(
            reply.data()["amount"],
            json!({"amount": amount, "currency": currency})
        );
        let captured = app.ask(capture(&auth, None)).await;
        assert_eq!(captured.data()["amount"]["amount"], amount);
    }
}

#[tokio::test]
async fn the_slow_card_authorizes_when_the_deadline_allows_and_fails_retryably_when_not() {
    let mut app = spawn_app().await;
    let (_, in_time) = app.authorize("pm_card_sandbox_slow", 100).await;
    let mut hurried = authorize("pm_card_sandbox_slow", eur(100));
    hurried.deadline = Utc::now() + chrono::Duration::milliseconds(50);
    let too_late = app.ask(hurried.clone()).await;

    assert_eq!(in_time.name(), "authorized");
    assert_eq!(too_late.name(), "failed");
    // Either the provider ran out of time (retryable) or the command expired in the queue.
    let data = too_late.data();
    assert!(
        data["retryable"] == true || data["expired"] == true,
        "{data}"
    );
}

#[tokio::test]
async fn a_card_number_with_dots_underscores_or_a_prefix_is_refused_and_never_stored() {
    let mut app = spawn_app().await;
    for method in [
        "4242.4242.4242.4242",
        "tok_4242424242424242",
        "4242_4242_4242_4242",
        "pm_card_5555-5555-5555-4444",
    ] {
        let reply = app.ask(authorize(method, eur(1000))).await;

        assert_eq!(reply.name(), "failed", "{method}");
        assert_eq!(reply.data()["retryable"], false);
        let detail = reply.data()["detail"].as_str().unwrap();
        assert!(
            !detail.contains("4242") && !detail.contains("5555"),
            "{detail}"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn an_unknown_payment_method_is_never_repeated_in_replies_attempts_or_failures() {
    let mut app = spawn_app().await;
    let secret = "pm_secret_card_ref_0042";

    let (command, reply) = app.authorize(secret, 1000).await;

    assert_eq!(reply.name(), "failed");
    assert!(
        !reply.data()["detail"].as_str().unwrap().contains(secret),
        "{}",
        reply.data()
    );
    let payment = app.payment(command.payment_id).await;
    assert_eq!(payment["status"], "failed");
    assert!(!payment["failure"].as_str().unwrap().contains(secret));
    assert!(!payment["attempts"].to_string().contains(secret));
}

#[tokio::test]
async fn repeating_the_authorize_command_of_a_voided_payment_answers_voided() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 2500).await;
    assert_eq!(app.ask(void(&auth)).await.name(), "voided");

    let again = app.ask(auth.clone()).await;

    assert_eq!(again.name(), "voided", "{:?}", again.data());
    assert_eq!(again.data()["payment_id"], json!(auth.payment_id));
}

#[tokio::test]
async fn the_challenge_token_is_stored_only_as_a_digest_and_never_as_an_attempt_key() {
    let mut app = spawn_app().await;
    let (auth, reply) = app.authorize("pm_card_threeDSecure2Required", 4200).await;
    let action_url = reply.data()["action_url"].as_str().unwrap().to_owned();
    let token = action_url.rsplit('/').next().unwrap().to_owned();

    let answered = app
        .http
        .post(app.url(&action_url))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();

    assert_eq!(answered.status(), reqwest::StatusCode::OK);
    let dump: String = sqlx::query_scalar(
        "SELECT (SELECT row_to_json(p)::text FROM payments p WHERE id = $1) || \
                (SELECT json_agg(a)::text FROM payment_attempts a WHERE payment_id = $1)",
    )
    .bind(auth.payment_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(!dump.contains(&token), "the token is stored: {dump}");
    let payment = app.payment(auth.payment_id).await;
    let keys: Vec<&str> = payment["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            format!("authorize-{}", auth.payment_id),
            format!("challenge-{}", auth.payment_id)
        ]
    );
}

#[tokio::test]
async fn a_repeated_authorize_command_during_a_challenge_gets_a_working_action_url() {
    let mut app = spawn_app().await;
    let (auth, first) = app.authorize("pm_card_threeDSecure2Required", 4200).await;

    let again = app.ask(auth.clone()).await;

    assert_eq!(again.name(), "requires_action");
    let action_url = again.data()["action_url"].as_str().unwrap().to_owned();
    assert_eq!(again.data()["expires_at"], first.data()["expires_at"]);
    let answered = app
        .http
        .post(app.url(&action_url))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), reqwest::StatusCode::OK);
    assert_eq!(app.reply().await.name(), "authorized");
}

#[tokio::test]
async fn a_challenge_nobody_answers_is_declined_once_it_lapses() {
    let mut app =
        spawn_app_with(&["--challenge-ttl-seconds=0", "--challenge-sweep-seconds=1"]).await;
    let (auth, reply) = app.authorize("pm_card_threeDSecure2Required", 990).await;
    assert_eq!(reply.name(), "requires_action");

    let event = app.reply().await;

    assert_eq!(event.name(), "declined");
    assert_eq!(event.data()["payment_id"], json!(auth.payment_id));
    assert_eq!(
        event.data()["code"],
        "payment_intent_authentication_failure"
    );
    assert_eq!(
        event.envelope.correlation_id, reply.envelope.correlation_id,
        "the saga's correlation, so orders can compensate"
    );
    assert_eq!(app.payment(auth.payment_id).await["status"], "declined");
    let late_answer = app
        .http
        .post(app.url(reply.data()["action_url"].as_str().unwrap()))
        .json(&json!({"outcome": "complete"}))
        .send()
        .await
        .unwrap();
    assert_eq!(late_answer.status(), reqwest::StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_same_refund_delivered_twice_at_once_refunds_once() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 1000).await;
    app.ask(capture(&auth, None)).await;
    let command = refund(&auth, eur(400));

    // Two envelopes (as orders re-sending after a timeout would), the same refund id.
    futures::future::join(app.send(command.clone()), app.send(command.clone())).await;
    let first = app.reply().await;
    let second = app.reply().await;

    assert_eq!(first.name(), "refunded");
    assert_eq!(second.name(), "refunded");
    assert_eq!(first.data(), second.data(), "the same answer");
    assert_eq!(first.data()["refunded_total"]["amount"], 400);
    assert_eq!(
        app.payment(auth.payment_id).await["refunded"]["amount"],
        400
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM refunds WHERE payment_id = $1",
            auth.payment_id
        )
        .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM payment_attempts WHERE payment_id = $1 AND operation = 'refund'",
            auth.payment_id
        )
        .await,
        1,
        "one call to the provider"
    );
}

#[tokio::test]
async fn two_captures_at_once_never_capture_more_than_the_authorization() {
    let mut app = spawn_app().await;
    let (auth, _) = app.authorize("pm_card_visa", 1000).await;

    futures::future::join(
        app.send(capture(&auth, Some(eur(700)))),
        app.send(capture(&auth, Some(eur(600)))),
    )
    .await;
    let replies = [app.reply().await, app.reply().await];

    for reply in &replies {
        assert_eq!(reply.name(), "captured", "{:?}", reply.data());
    }
    let payment = app.payment(auth.payment_id).await;
    let captured = payment["captured"]["amount"].as_i64().unwrap();
    assert!(captured == 700 || captured == 600, "{captured}");
    for reply in &replies {
        assert_eq!(
            reply.data()["amount"]["amount"],
            captured,
            "both tell the capture made"
        );
    }
    assert_eq!(
        app.count(
            "SELECT count(*) FROM payment_attempts WHERE payment_id = $1 AND operation = 'capture'",
            auth.payment_id
        )
        .await,
        1,
        "captured once at the provider"
    );
}

#[tokio::test]
async fn a_refund_left_pending_holds_its_amount_and_is_answered_when_the_provider_makes_it() {
    let mut app = spawn_app_with(&["--refund-poll-seconds=1"]).await;
    let (auth, _) = app
        .authorize(
            tienda_payments::provider::sandbox::REFUND_PENDING_CARD,
            1000,
        )
        .await;
    app.ask(capture(&auth, None)).await;

    let pending = app.send(refund(&auth, eur(700))).await;
    app.no_reply_for(std::time::Duration::from_millis(500))
        .await;
    let refund_id = pending.data.refund_id;
    assert_eq!(app.refund_status(refund_id).await, "pending");
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["status"], "captured", "nothing moved yet");
    assert_eq!(payment["refunded"]["amount"], 0);
    // The pending 700 counts against what is left: 400 more would pass the capture.
    let over = app.ask(refund(&auth, eur(400))).await;
    assert_eq!(over.name(), "failed");
    assert!(
        over.data()["detail"].as_str().unwrap().contains("only 300"),
        "{:?}",
        over.data()
    );
    // Orders sending the refund again while it is pending gets no second refund, no answer.
    app.send(pending.data.clone()).await;
    app.no_reply_for(std::time::Duration::from_millis(500))
        .await;

    app.refund_due_now(refund_id).await;
    let reply = app.reply().await;
    assert_eq!(reply.name(), "refunded", "{:?}", reply.data());
    assert_eq!(
        reply.envelope.causation_id,
        Some(pending.id),
        "answers the command"
    );
    assert_eq!(reply.envelope.correlation_id, pending.correlation_id);
    assert_eq!(reply.data()["refund_id"], json!(refund_id));
    assert_eq!(reply.data()["refunded_total"]["amount"], 700);
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["status"], "partially_refunded");
    assert_eq!(payment["refunded"]["amount"], 700);
    assert_eq!(app.refund_status(refund_id).await, "succeeded");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM invoices WHERE refund_id = $1",
            refund_id
        )
        .await,
        1,
        "the credit note is issued when the money went back"
    );
    // A repeat now gets the same answer; one provider call in all.
    let again = app.ask(pending.data.clone()).await;
    assert_eq!(again.name(), "refunded");
    assert_eq!(again.data(), reply.data());
    assert_eq!(
        app.count(
            "SELECT count(*) FROM payment_attempts WHERE payment_id = $1 AND operation = 'refund'",
            auth.payment_id
        )
        .await,
        1,
        "one provider call: the refund over the bound never reached it"
    );
}

#[tokio::test]
async fn a_pending_refund_the_provider_gives_up_on_fails_and_the_money_stays_captured() {
    let mut app = spawn_app_with(&["--refund-poll-seconds=1"]).await;
    let (auth, _) = app
        .authorize(tienda_payments::provider::sandbox::REFUND_FAILS_CARD, 1000)
        .await;
    app.ask(capture(&auth, None)).await;

    let pending = app.send(refund(&auth, eur(1000))).await;
    app.no_reply_for(std::time::Duration::from_millis(300))
        .await;
    app.refund_due_now(pending.data.refund_id).await;
    let reply = app.reply().await;

    assert_eq!(reply.name(), "failed", "{:?}", reply.data());
    assert_eq!(reply.envelope.causation_id, Some(pending.id));
    assert_eq!(reply.data()["operation"], "refund");
    assert_eq!(reply.data()["refund_id"], json!(pending.data.refund_id));
    assert_eq!(reply.data()["retryable"], false);
    assert!(
        reply.data()["detail"]
            .as_str()
            .unwrap()
            .contains("expired_or_canceled_card"),
        "{:?}",
        reply.data()
    );
    let payment = app.payment(auth.payment_id).await;
    assert_eq!(payment["status"], "captured");
    assert_eq!(payment["refunded"]["amount"], 0);
    assert_eq!(app.refund_status(pending.data.refund_id).await, "failed");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM invoices WHERE refund_id = $1",
            pending.data.refund_id
        )
        .await,
        0,
        "no credit note for money that never went back"
    );
    // The same refund again: the same failure; a new refund of the whole capture is taken.
    let again = app.ask(pending.data.clone()).await;
    assert_eq!(again.name(), "failed");
    assert_eq!(again.data()["detail"], reply.data()["detail"]);
}
