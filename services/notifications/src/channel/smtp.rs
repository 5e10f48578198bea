//! Mail over SMTP with lettre (rustls on ring): `smtp://host:port` in the clear (local mail
//! catchers), `smtp://host?tls=required` with STARTTLS, `smtps://user:pass@host` with TLS.
//! A 5xx answer is permanent; connection failures and 4xx answers are worth retrying.

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{SendError, Transport};

/// A pooled SMTP client.
#[derive(Debug, Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    /// A client for `url` (the URL is a secret: it may hold credentials).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("TIENDA_SMTP_URL is not a usable SMTP URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        Ok(Self { transport })
    }
}

/// An SMTP server by its parts (a Shop's `notifications.smtp`).
#[derive(Debug, Clone)]
pub struct SmtpParts<'a> {
    /// Host name.
    pub host: &'a str,
    /// Port; `None`: the TLS mode's own.
    pub port: Option<u16>,
    /// `starttls`, `tls` or `none`.
    pub tls: &'a str,
    /// User and password.
    pub credentials: Option<(String, String)>,
}

impl Smtp {
    /// A client for `parts`. Credentials are refused without TLS.
    pub fn from_parts(parts: &SmtpParts<'_>) -> anyhow::Result<Self> {
        let builder = match parts.tls {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(parts.host)?
                .port(parts.port.unwrap_or(465)),
            "none" => {
                if parts.credentials.is_some() {
                    anyhow::bail!(
                        "TIENDA_SMTP_TLS=none with TIENDA_SMTP_USERNAME: credentials are never \
                         sent in the clear; use starttls or tls"
                    );
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(parts.host)
                    .port(parts.port.unwrap_or(25))
            }
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(parts.host)?
                .port(parts.port.unwrap_or(587)),
        };
        let builder = match &parts.credentials {
            Some((user, password)) => {
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    password.clone(),
                ))
            }
            None => builder,
        };
        Ok(Self {
            transport: builder
                .timeout(Some(std::time::Duration::from_secs(30)))
                .build(),
        })
    }
}

impl Transport for Smtp {
    async fn send(&self, message: &Message) -> Result<String, SendError> {
        match self.transport.send(message.clone()).await {
            Ok(response) => Ok(format!(
                "smtp {} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("smtp: {e}"))),
            Err(e) => Err(SendError::Transient(format!("smtp: {e}"))),
        }
    }
}
