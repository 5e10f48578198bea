//! Delivery over SMTP to a real mail server: aiosmtpd (PyPI, installed by `tests/tools/install`)
//! storing every message it accepts in a Maildir the test reads back.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use pretty_assertions::assert_eq;
use tienda_events::order::OrderShipped;
use uuid::Uuid;

use crate::helpers::{Mail, eventually, spawn_app_with};

/// An aiosmtpd process listening on a free loopback port; killed when dropped.
struct MailServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl MailServer {
    fn start() -> Self {
        let python = std::env::var("AIOSMTPD_PYTHON").unwrap_or_else(|_| {
            panic!(
                "AIOSMTPD_PYTHON is not set: run the tests with tests/run, or run \
                 tests/tools/install and export the AIOSMTPD_PYTHON it prints"
            )
        });
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("tienda-notifications-smtp-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("aiosmtpd.log")).unwrap();
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.join("maildir"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {python} -m aiosmtpd: {e}"));
        let mut server = Self { child, port, dir };
        server.wait_until_listening();
        server
    }

    /// Waits until the port accepts connections (the deadline only guards against a hang).
    fn wait_until_listening(&mut self) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("aiosmtpd exited with {status}:\n{}", self.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "aiosmtpd did not listen on {address}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("aiosmtpd.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages in the Maildir (`new/`: each file is renamed there whole), with CRLF line
    /// endings as they went over the wire (Python's mailbox writes `\n`).
    fn messages(&self) -> Vec<Mail> {
        match std::fs::read_dir(self.dir.join("maildir/new")) {
            Ok(entries) => entries
                .map(|entry| {
                    let raw = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                    Mail {
                        raw: raw.replace("\r\n", "\n").replace('\n', "\r\n"),
                    }
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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
