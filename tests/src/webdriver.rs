//! A small W3C WebDriver client over reqwest, driving a real headless Chromium through
//! chromedriver (Debian's `chromium` and `chromium-driver`, from `tests/tools/install`):
//! enough to load a page, type, click, wait for elements and take a screenshot.
//!
//! Hand-written: the protocol is a handful of JSON requests, and the crates that speak it
//! (fantoccini, thirtyfour) bring a second HTTP stack for what reqwest already does.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn tool(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(fallback))
}

/// chromedriver and one headless browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver (`$CHROMEDRIVER`) on a free port and a headless Chromium
    /// (`$CHROMIUM`) session with a 1400×1000 window.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver_path = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not run ({e}): run tests/run, whose tests/tools/install installs \
                     Debian's chromium and chromium-driver",
                    driver_path.display()
                )
            });
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(answer) = ready
                && let Ok(status) = answer.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let binary = tool("CHROMIUM", "/usr/bin/chromium");
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": binary,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1000",
                             "--no-first-run", "--no-default-browser-check"],
                },
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            http,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    /// Loads `url`.
    pub async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// The elements matching a CSS selector now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
            .collect()
    }

    /// Waits up to `timeout` for an element matching `css`; panics with the page's text.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.all(css).await.into_iter().next() {
                return element;
            }
            if Instant::now() > deadline {
                let body = self.all("body").await;
                let text = match body.first() {
                    Some(b) => self.text(b).await,
                    None => String::new(),
                };
                panic!("no {css} within {timeout:?}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits up to `timeout` until nothing matches `css`.
    pub async fn wait_gone(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.all(css).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{css} is still shown after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Types `text` into `element`.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/text", element.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// The value of `element`'s attribute `name`.
    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Opens the operations console at `url` and signs in with `email` and `password`.
    pub async fn sign_in_to_console(&self, url: &str, email: &str, password: &str) {
        self.go(url).await;
        let field = self.wait_for("#email", Duration::from_secs(10)).await;
        self.type_into(&field, email).await;
        let field = self.wait_for("#password", Duration::from_secs(1)).await;
        self.type_into(&field, password).await;
        let submit = self
            .wait_for("#sign-in button[type=submit]", Duration::from_secs(1))
            .await;
        self.click(&submit).await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }
}

impl Browser {
    /// Ends the browser session (closing Chromium), then chromedriver.
    pub async fn close(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session ends with its driver.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
