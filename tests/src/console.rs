//! The web console in a test: served in this process for a [`TestStack`], and looked at
//! through a real browser, Debian's Chromium driven over WebDriver by its own ChromeDriver,
//! each on a free loopback port and stopped with the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use shoal_common::config::QueueTarget;
use shoal_producer::console::{serve, ConsoleConfig};
use shoal_producer::Producer;
use tokio_util::sync::CancellationToken;

use crate::{free_port, TestStack};

/// A console serving a test stack, until dropped.
pub struct RunningConsole {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl RunningConsole {
    /// The console for `t`'s queue and ledger: verbs on, no token, refreshing every 2 s.
    pub async fn start(t: &TestStack) -> RunningConsole {
        Self::with(t, |_| {}).await
    }

    /// The console for `t`, its settings changed by `edit` first.
    pub async fn with(t: &TestStack, edit: impl FnOnce(&mut ConsoleConfig)) -> RunningConsole {
        let table = t.stack.ledger_table.as_deref().expect("a ledger");
        let producer = Producer::new(t.clients.sqs.clone(), QueueTarget::new(&t.stack.queue_url))
            .with_ledger(t.ledger_named(&t.sdk, table));
        let mut config = ConsoleConfig {
            producer,
            clients: t.clients.clone(),
            dlq_url: None,
            read_only: false,
            auth_token: None,
            refresh: Duration::from_secs(2),
            by: "console-test".into(),
        };
        edit(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the console");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            serve(config, listener, async move { stop.cancelled().await })
                .await
                .expect("the console serves");
        });
        RunningConsole { addr, shutdown }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for RunningConsole {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Headless Chromium under its ChromeDriver, until dropped.
pub struct Browser {
    pub client: Client,
    _driver: tokio::process::Child,
    _profile: TempDir,
    shots: PathBuf,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the Debian packages put them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    /// Starts ChromeDriver on a free port and a fresh headless Chromium through it; its
    /// screenshots go to `shots`.
    pub async fn start(shots: &Path) -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: scripts/test installs Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = std::env::temp_dir().join(crate::unique("shoal-chromium"));
        std::fs::create_dir_all(&profile).expect("a profile directory");
        // The flags that keep Chromium from reaching out (this machine's network is closed,
        // and a test must not depend on any host but loopback) and that root needs.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1400".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut client = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        std::fs::create_dir_all(shots).expect("a screenshot directory");
        Browser {
            client: client.expect("a WebDriver session within 10 s"),
            _driver: driver,
            _profile: TempDir(profile),
            shots: shots.to_owned(),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("load the page");
    }

    /// The visible text of the page's body.
    pub async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("a body")
            .text()
            .await
            .expect("its text")
    }

    /// Clicks the first button whose text is `label` inside the element `scope` selects.
    pub async fn click_button(&self, scope: &str, label: &str) {
        let buttons = self
            .client
            .find_all(Locator::Css(&format!("{scope} button")))
            .await
            .expect("look for buttons");
        for button in buttons {
            if button.text().await.unwrap_or_default().trim() == label {
                let before = self
                    .client
                    .find(Locator::Css("body"))
                    .await
                    .expect("a body");
                button.click().await.expect("click");
                self.wait_for_next_page(before).await;
                return;
            }
        }
        panic!("no button `{label}` in `{scope}`: {}", self.text().await);
    }

    /// Waits until the page whose body was `before` has gone (a form's answer is a new page)
    /// and the new one has loaded.
    async fn wait_for_next_page(&self, before: fantoccini::elements::Element) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while before.text().await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "no new page within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("body"))
            .await
            .expect("the new page");
    }

    /// Reloads the page until its text contains `wanted`, or `timeout` passes.
    pub async fn reload_until(&self, url: &str, wanted: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.goto(url).await;
            if self.text().await.contains(wanted) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A screenshot of the page as it is, for a person to look at: `<shots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
