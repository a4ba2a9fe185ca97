//! The daemon in-process, for the tests of the API and the web UI (processes stay for the
//! tests about processes: `serve`, `notify`, `concurrency`). [`TestApp::spawn`] builds the real
//! server — `Server::build` over an `App` on the test folder's configuration, listening on
//! 127.0.0.1 port 0 — on a runtime of its own, as zero2prod's `spawn_app` does; [`request`]
//! speaks HTTP to it with reqwest and answers a typed [`Answer`].

use crate::support::Hypod;
use serde_json::Value;
use std::sync::OnceLock;

/// One HTTP response: status, headers (lower-case names), body.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `hypod serve` built in this process on `hypod`'s folder; stopped (gracefully) when dropped.
pub(crate) struct TestApp {
    /// `127.0.0.1:PORT` it listens on.
    pub addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestApp {
    /// The server with a schedule that never fires during a test (once a year, missed slots
    /// skipped).
    pub fn spawn(hypod: &Hypod) -> TestApp {
        TestApp::spawn_with(hypod, &[])
    }

    /// The server with these `HYPOD_*` configuration overrides as well.
    pub fn spawn_with(hypod: &Hypod, overrides: &[(&str, &str)]) -> TestApp {
        let mut env: Vec<(String, String)> = [
            ("HYPOD_SCHEDULE__CRON", "0 0 3 1 1 *"),
            ("HYPOD_SCHEDULE__MISSED", "skip"),
        ]
        .iter()
        .chain(overrides)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.retain(|(k, _)| k != "HYPOD_SERVER__LISTEN");
        let config =
            hypod::config::Config::load_with_env(Some(&hypod.path().join("hypod.toml")), &env)
                .expect("the test folder's configuration");
        let key = hypod::store::AuditKey::new(crate::review_audit::TEST_AUDIT_KEY.as_bytes())
            .expect("the test audit key");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a port");
            let app = hypod::app::App::new(config).with_audit_key(key);
            let server = hypod::server::Server::build(app, listener)
                .await
                .unwrap_or_else(|e| panic!("the server does not start: {e}"));
            let addr = server.address().to_string();
            tokio::spawn(server.run_until(async {
                let _ = stopped.await;
            }));
            addr
        });
        TestApp {
            addr,
            stop: Some(stop),
            runtime: Some(runtime),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// The client's runtime and connection pool, shared by every test.
fn client() -> &'static (tokio::runtime::Runtime, reqwest::Client) {
    static CLIENT: OnceLock<(tokio::runtime::Runtime, reqwest::Client)> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the client");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        (runtime, http)
    })
}

/// One request to `addr` (`127.0.0.1:PORT`): `headers` as given, `body` as (content type,
/// text).
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Answer {
    let (runtime, http) = client();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut builder = http.request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder = match body {
        Some((content_type, text)) => builder
            .header("content-type", content_type)
            .body(text.to_string()),
        None => builder.header("content-length", "0"),
    };
    runtime.block_on(async {
        let response = builder.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response.text().await.expect("a body");
        Answer {
            status,
            headers,
            body,
        }
    })
}
