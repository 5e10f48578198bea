//! Delivery over SMTP to a real mail server: aiosmtpd (PyPI, installed by `tests/tools/install`)
//! storing every message it accepts in a Maildir the test reads back.

use pretty_assertions::assert_eq;
use tienda_events::order::OrderShipped;
use uuid::Uuid;

use crate::helpers::{Mail, eventually, spawn_app_with};

/// The kit's aiosmtpd, read back as [`Mail`]s.
struct MailServer(tienda_kit::testing::MailServer);

impl MailServer {
    fn start() -> Self {
        Self(tienda_kit::testing::MailServer::start())
    }

    fn url(&self) -> String {
        self.0.url()
    }

    fn messages(&self) -> Vec<Mail> {
        self.0
            .messages()
            .into_iter()
            .map(|raw| Mail { raw })
            .collect()
    }
}

#[tokio::test]
async fn a_shipped_order_reaches_a_real_smtp_server_with_both_parts_and_one_click_unsubscribe() {
    let server = MailServer::start();
    let smtp_url = format!("--smtp-url={}", server.url());
    let app = spawn_app_with(&[&smtp_url, "--mail-from=Tienda Test <shop@tienda.test>"]).await;
    let order_id = Uuid::now_v7();

    let event = app
        .publish(
            "orders",
            OrderShipped {
                order_id,
                customer_id: Some(Uuid::now_v7()),
                email: "fay@example.com".into(),
                carrier: "Correos".into(),
                tracking_number: "PK0077".into(),
            },
        )
        .await;

    eventually("the mail server has stored the message", || async {
        !server.messages().is_empty()
    })
    .await;
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "one message: {messages:#?}");
    let mail = &messages[0];
    assert_eq!(
        mail.header("X-MailFrom").as_deref(),
        Some("shop@tienda.test")
    );
    assert_eq!(mail.header("X-RcptTo").as_deref(), Some("fay@example.com"));
    let from = mail.header("From").unwrap();
    assert!(
        from.contains("Tienda Test") && from.ends_with("<shop@tienda.test>"),
        "{from}"
    );
    assert_eq!(mail.header("To").as_deref(), Some("fay@example.com"));
    assert_eq!(
        mail.header("Subject"),
        Some(format!("Your order {order_id} is on its way"))
    );
    let unsubscribe = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    assert!(
        unsubscribe.starts_with("<http://shop.test/v1/notifications/unsubscribe?token=")
            && unsubscribe.ends_with('>'),
        "{unsubscribe}"
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let content_type = mail.header("Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    let text = mail.part("text/plain");
    assert!(text.contains("Tracking number: PK0077"), "{text}");
    assert!(
        text.contains(&format!("http://shop.test/orders/{order_id}")),
        "{text}"
    );
    let html = mail.part("text/html");
    assert!(html.contains("<strong>PK0077</strong>"), "{html}");

    let delivery = app.settled(event).await;
    assert_eq!(delivery.status, "sent", "{delivery:?}");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.provider_ref.as_deref(), Some("smtp 250 OK"));
    assert!(app.mails().is_empty(), "nothing went to the .eml outbox");
}

#[tokio::test]
async fn a_mail_server_given_by_its_parts_as_a_shop_gives_it_gets_the_mail() {
    let server = MailServer::start();
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let app = spawn_app_with(&[
        "--smtp-host=127.0.0.1",
        &format!("--smtp-port={port}"),
        "--smtp-tls=none",
    ])
    .await;
    let event = app
        .publish(
            "orders",
            OrderShipped {
                order_id: Uuid::now_v7(),
                customer_id: None,
                email: "ivy@example.com".into(),
                carrier: "Correos".into(),
                tracking_number: "PK55".into(),
            },
        )
        .await;
    assert_eq!(app.settled(event).await.status, "sent");
    eventually("the mail arrived", || async {
        !server.messages().is_empty()
    })
    .await;
    assert_eq!(
        server.messages()[0].header("To").as_deref(),
        Some("ivy@example.com")
    );
}

#[tokio::test]
async fn contradictory_mail_settings_stop_the_start_saying_which() {
    for (flags, words) in [
        (
            vec!["--smtp-url=smtp://127.0.0.1:25", "--smtp-host=127.0.0.1"],
            "both TIENDA_SMTP_URL and TIENDA_SMTP_HOST",
        ),
        (
            vec!["--smtp-host=127.0.0.1", "--smtp-username=u"],
            "go together",
        ),
        (
            vec![
                "--smtp-host=127.0.0.1",
                "--smtp-tls=none",
                "--smtp-username=u",
                "--smtp-password=p",
            ],
            "never sent in the clear",
        ),
    ] {
        let Err(error) = crate::helpers::try_spawn_app_with(&flags).await else {
            panic!("{flags:?} started");
        };
        assert!(format!("{error:#}").contains(words), "{error:#}");
    }
}
