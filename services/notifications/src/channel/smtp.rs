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
