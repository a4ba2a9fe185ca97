//! The web UI in a real browser: Debian's Chromium driven over WebDriver (chromedriver, spoken
//! to with plain HTTP), against a real `hypod serve`. A reviewer signs in with a token, filters
//! the queue, sees a model-written title full of markup shown as text with no script run,
//! approves and rejects from a proposal page; a viewer sees no review forms; a form posted from
//! another origin is refused. Skipped loudly without Chromium (a failure when `CI` is set).
//! `UI_SCREENSHOTS=DIR` saves the screenshots of docs/screenshots/ there (the queue's and the
//! proposal pages' are taken by `browser_review`).

use crate::review::{request, Reviewed};
use crate::test_app::TestApp;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
                .map(|p| p.display().to_string())
        })
    })
}

fn skipped(why: &str) {
    let line = "=".repeat(78);
    eprintln!(
        "\n{line}\n  BROWSER TESTS SKIPPED: {why}\n  Install Debian's chromium and chromium-driver (apt install chromium chromium-driver);\n  with CI set, this is a failure.\n{line}\n"
    );
}

/// A chromedriver process and one browser session, both ended when dropped.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Browser {
    pub(crate) fn start() -> Option<Browser> {
        let (Some(driver), Some(chromium)) = (
            find_program(&["chromedriver"]),
            find_program(&["chromium", "chromium-browser", "google-chrome"]),
        ) else {
            if crate::backends::in_ci() {
                panic!("CI is set but chromium or chromedriver is not installed");
            }
            skipped("chromium or chromedriver is not on PATH");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"]
            }
        }}});
        let session = loop {
            let answer = runtime.block_on(async {
                http.post(format!("{base}/session"))
                    .json(&capabilities)
                    .send()
                    .await?
                    .json::<Value>()
                    .await
            });
            match answer {
                Ok(value) if value["value"]["sessionId"].is_string() => {
                    break value["value"]["sessionId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                }
                other if started.elapsed() > Duration::from_secs(30) => {
                    panic!("no browser session within 30 s: {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        Some(Browser {
            driver,
            base,
            session,
            http,
            runtime,
        })
    }

    pub(crate) fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let value: Value = self.runtime.block_on(async {
            let post = method == reqwest::Method::POST;
            let mut request = self.http.request(method, &url);
            // WebDriver wants a JSON body on every POST, `{}` when there is nothing to say.
            match body {
                Some(body) => request = request.json(&body),
                None if post => request = request.json(&json!({})),
                None => {}
            }
            request
                .send()
                .await
                .expect("webdriver answers")
                .json()
                .await
                .expect("webdriver JSON")
        });
        value["value"].clone()
    }

    pub(crate) fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    pub(crate) fn find(&self, css: &str) -> Option<String> {
        let found = self.call(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found[ELEMENT].as_str().map(str::to_string)
    }

    pub(crate) fn element(&self, css: &str) -> String {
        self.find(css)
            .unwrap_or_else(|| panic!("no {css} on {}", self.url()))
    }

    pub(crate) fn all_texts(&self, css: &str) -> Vec<String> {
        let found = self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str())
                    .map(|id| self.text_of(id))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn text_of(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub(crate) fn text(&self, css: &str) -> String {
        self.text_of(&self.element(css))
    }

    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub(crate) fn click(&self, css: &str) {
        let element = self.element(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            None,
        );
    }

    /// Clicks, then waits (up to 10 s) until the page's address contains `part`.
    pub(crate) fn click_to(&self, css: &str, part: &str) {
        self.click(css);
        let started = Instant::now();
        while !self.url().contains(part) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "clicking {css} did not lead to {part}: at {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    pub(crate) fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    pub(crate) fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG of the page when `UI_SCREENSHOTS` names a folder.
    pub(crate) fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("UI_SCREENSHOTS").filter(|d| !d.is_empty()) else {
            return;
        };
        let data = self.call(reqwest::Method::GET, "/screenshot", None);
        let png = base64_decode(data.as_str().unwrap_or_default());
        let path = std::path::Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write a screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self
            .runtime
            .block_on(async { self.http.delete(url).send().await });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot encoding) without a dependency for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

const HOSTILE: &str =
    "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>Free gift over €50";

#[test]
fn reviewers_sign_in_filter_approve_and_reject_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let setup = Reviewed::new();
    // A model-written title full of markup, queued the way a proposer's answer would be.
    let draft = std::fs::read_to_string(crate::support::fixture("draft.json")).expect("draft");
    let mut draft: Value = serde_json::from_str(&draft).expect("JSON");
    draft["title"] = Value::String(HOSTILE.into());
    draft["hypothesis"] = Value::String(format!(
        "{} </td></tr></table><h1>injected</h1>",
        draft["hypothesis"].as_str().unwrap_or_default()
    ));
    crate::review_audit::queue_draft(&setup.hypod, draft);
    let plain_draft =
        std::fs::read_to_string(crate::support::fixture("draft.json")).expect("draft");
    crate::review_audit::queue_draft_as(
        &setup.hypod,
        serde_json::from_str(&plain_draft).expect("JSON"),
        hypod::domain::ProposalStatus::Blocked,
    );
    let daemon = TestApp::spawn(&setup.hypod);
    let site = format!("http://{}", daemon.addr);

    // Unsigned visitors land on the sign-in page; a wrong token is refused there.
    browser.go(&format!("{site}/ui/queue"));
    assert!(browser.url().ends_with("/ui/login"), "{}", browser.url());
    browser.screenshot("login");
    browser.type_into("#token", "hypod_not-a-token");
    browser.click("#sign-in");
    let started = Instant::now();
    while browser.find("#login-error").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no sign-in error shown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(browser.text("#login-error").contains("unknown or revoked"));
    browser.type_into("#token", setup.token("reviewer"));
    browser.click_to("#sign-in", "/ui/queue");
    assert_eq!(browser.text("#who"), "rita · reviewer");

    // The hostile title is text: shown literally, no element made of it, no script run.
    let titles = browser.all_texts("#queue a.title");
    assert!(titles.iter().any(|t| t == HOSTILE), "{titles:?}");
    assert_eq!(browser.script("return typeof window.__pwned"), "undefined");
    assert_eq!(
        browser.script("return document.querySelectorAll('main script, main img').length"),
        0
    );

    // Filters.
    browser.select("#filter-status", "blocked");
    browser.click_to("#filter", "status=blocked");
    let statuses = browser.all_texts("#queue .status");
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| s == "blocked"),
        "{statuses:?}"
    );
    browser.select("#filter-status", "pending_review");
    browser.type_into("#filter-q", "Free gift");
    browser.click_to("#filter", "q=Free+gift");
    assert_eq!(browser.all_texts("#queue a.title"), [HOSTILE]);
    browser.click_to("#queue a.title", "/ui/proposals/");
    assert_eq!(browser.text("#title"), HOSTILE);
    assert!(browser
        .text("#hypothesis")
        .contains("</table><h1>injected</h1>"));
    assert_eq!(
        browser.script("return document.querySelectorAll('h1').length"),
        1
    );
    assert_eq!(browser.script("return typeof window.__pwned"), "undefined");

    // Approve a plain pending proposal from its page.
    let plain = setup
        .hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json()
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["approvals_required"] == 1 && p["title"] != HOSTILE)
        .map(|p| p["id"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    browser.go(&format!("{site}/ui/proposals/{}", plain[0]));
    assert!(browser.find("#evidence").is_some());
    assert!(browser.text("#duration").ends_with("days"));
    // The top proposal's sample takes 1 day: it is sized to a full week, and says so.
    let one_day = setup
        .hypod
        .ok(&["queue", "list", "--json"])
        .json()
        .as_array()
        .expect("list")
        .iter()
        .find(|p| {
            p["title"] == "Try delivery promise in cart and checkout, after it won on product pages"
        })
        .and_then(|p| p["id"].as_str().map(str::to_string))
        .expect("the 1-day proposal of the sample");
    browser.go(&format!("{site}/ui/proposals/{one_day}"));
    assert_eq!(browser.text("#duration"), "7 days");
    assert_eq!(
        browser.text("#asked-duration"),
        "7 days: a full week, although 1 day would reach the sample; 100% of the segment consented"
    );
    browser.go(&format!("{site}/ui/proposals/{}", plain[0]));
    browser.type_into("#approve-note", "strong evidence, small risk");
    browser.click_to("#approve", "done=approve");
    assert_eq!(
        browser.text("#flash"),
        "Your approval is recorded: 1 of 1 approval; the proposal is approved, what happens next is below."
    );
    assert_eq!(browser.text("#status"), "approved");
    assert!(browser
        .all_texts("#history .review")
        .iter()
        .any(|r| r.contains("rita (reviewer) approve")));
    // After approval the page says what happens next, and no expiry any more.
    assert!(
        browser
            .text("#next")
            .starts_with("Approved: export (hypod export) now hands it"),
        "{}",
        browser.text("#next")
    );
    assert!(browser.find("#expiry").is_none());

    // The escalated proposal opens with its unmet rule and who must approve; passing rules
    // are folded away; after rita's approval it waits for governance.
    let (escalated, _) = setup
        .pending()
        .into_iter()
        .find(|(_, escalated)| *escalated)
        .expect("an escalated proposal");
    browser.go(&format!("{site}/ui/proposals/{escalated}"));
    assert!(
        browser.text("#unmet").contains("governance must approve"),
        "{}",
        browser.text("#unmet")
    );
    assert!(browser.text("#passed-rules").contains("rule(s) passed"));
    assert!(browser.text("#expiry").starts_with("Expires on "));
    browser.click_to("#approve", "done=approve");
    assert_eq!(
        browser.text("#progress"),
        "1 of 2 approvals, waiting for governance; approved by rita (reviewer)."
    );

    // Reject another, with a reason.
    browser.go(&format!("{site}/ui/proposals/{}", plain[1]));
    browser.type_into("#reject-reason", "overlaps the Q4 code freeze");
    browser.click_to("#reject", "done=reject");
    assert_eq!(browser.text("#status"), "rejected");
    let stored = setup
        .hypod
        .ok(&["queue", "show", &plain[1], "--json"])
        .json();
    assert_eq!(stored["reviews"][0]["note"], "overlaps the Q4 code freeze");

    browser.go(&format!("{site}/ui/runs"));
    assert!(browser.text("#health").contains("proven rate"));
    browser.screenshot("runs");
    browser.go(&format!("{site}/ui/policies"));
    assert!(!browser.all_texts("#rules .mono").is_empty());

    // A viewer sees the proposal but no review forms.
    browser.click_to("header button", "/ui/login");
    browser.type_into("#token", setup.token("viewer"));
    browser.click_to("#sign-in", "/ui/queue");
    browser.go(&format!("{site}/ui/proposals/{}", plain[2]));
    assert!(browser.find("#title").is_some());
    assert!(browser.find("#review-forms").is_none());

    // A form posted from another origin is refused, even with a valid session cookie.
    let cookie = format!("hypod_token={}", setup.token("admin"));
    let forged = request(
        &daemon.addr,
        "POST",
        &format!("/ui/proposals/{}/approve", plain[2]),
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
        Some(("application/x-www-form-urlencoded", "text=")),
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("not sent from this site"));
    assert!(forged
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
}
