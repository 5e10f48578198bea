//! Following an order's timeline as a storefront does: server-sent events from
//! `GET /v1/orders/{id}/timeline` with `Accept: text/event-stream`.

use std::time::Duration;

/// Reads the order's event stream at `url` until an entry leaves the order `confirmed` or
/// `cancelled`; returns that status and the entry types seen, in order. Fails on a refused
/// stream, a stream that ends first, or after `within`.
pub async fn until_settled(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    within: Duration,
) -> Result<(String, Vec<String>), String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut response = http
            .get(url)
            .bearer_auth(token)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| format!("no stream: {e}"))?;
        if response.status() != 200 {
            return Err(format!("stream refused: {}", response.status()));
        }
        let mut buffer = String::new();
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue; // a keep-alive comment
                };
                let entry: serde_json::Value =
                    serde_json::from_str(data.trim()).map_err(|e| format!("bad entry: {e}"))?;
                seen.push(entry["type"].as_str().unwrap_or_default().to_owned());
                if let Some(status @ ("confirmed" | "cancelled")) = entry["status"].as_str() {
                    return Ok(status.to_owned());
                }
            }
            match response.chunk().await {
                Ok(Some(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) => return Err(format!("the stream ended after {seen:?}")),
                Err(e) => return Err(format!("the stream broke after {seen:?}: {e}")),
            }
        }
    })
    .await;
    match read {
        Ok(Ok(status)) => Ok((status, seen)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("not settled within {within:?} (saw {seen:?})")),
    }
}
