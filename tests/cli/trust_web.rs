//! Whom the server and the command line believe, and what their messages give away, through the
//! binary and the real server, on SQLite and PostgreSQL where the database is involved:
//! another site cannot write through the web UI's cookie (the API takes bearer tokens and the
//! trusted proxy only), the proxy's identity headers are believed once and read as UTF-8,
//! look-alike names are one person and mixed-script names are refused, a database password
//! never appears in a message or log line, and echoed input is bounded.

use crate::backends::postgres_server;
use crate::review::request;
use crate::support::{Hypod, SAMPLE};
use crate::test_app::TestApp;
use serde_json::Value;
use std::io::{Read, Write};

/// All-Cyrillic `ѕсоре`: one script, the same TR 39 skeleton as the Latin `scope`.
const CYRILLIC_SCOPE: &str = "\u{0455}\u{0441}\u{043E}\u{0440}\u{0435}";
/// `rob` with a Cyrillic `о`.
const ROB_CYRILLIC_O: &str = "r\u{043E}b";
/// `rob` with a Greek `ο`.
const ROB_GREEK_O: &str = "r\u{03BF}b";

/// Runs `check` on a SQLite folder.
fn on_sqlite(check: fn(&Hypod)) {
    check(&Hypod::new());
}

/// Runs `check` on a folder whose database is a fresh PostgreSQL database (dropped after,
/// also when the check fails); skipped without PostgreSQL unless `CI` is set.
fn on_postgres(check: fn(&Hypod)) {
    crate::backends::on_fresh_postgres(|url| check(&Hypod::with_database(url)));
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// One HTTP/1.1 request written byte for byte (repeated headers and non-ASCII bytes as
/// given, which an HTTP client library would refuse or merge): (status, body).
fn raw_request(addr: &str, method: &str, path: &str, headers: &[(&str, &[u8])]) -> (u16, String) {
    raw_request_with(addr, method, path, headers, "")
}

/// [`raw_request`] with a JSON body (none when empty).
fn raw_request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    json_body: &str,
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let length = json_body.len();
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {length}\r\n"
    )
    .into_bytes();
    if !json_body.is_empty() {
        bytes.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(json_body.as_bytes());
    stream.write_all(&bytes).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn proxy_daemon(hypod: &Hypod) -> TestApp {
    TestApp::spawn_with(
        hypod,
        &[
            ("HYPOD_SERVER__AUTH", "proxy"),
            ("HYPOD_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ],
    )
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

// ---------------------------------------------------------------------------------------------
// 1. The API does not take the web UI's cookie.

fn the_ui_cookie_is_no_credential_on_the_api(hypod: &Hypod) {
    hypod.ok(&["import", SAMPLE]);
    let admin = hypod.token("ada", "admin");
    let daemon = TestApp::spawn(hypod);
    let addr = daemon.addr.clone();
    let auth = bearer(&admin);
    let as_admin = [("Authorization", auth.as_str())];
    let experiment_before = request(
        &addr,
        "GET",
        "/api/v1/experiments/exp-2024-0001",
        &as_admin,
        None,
    );
    assert_eq!(experiment_before.status, 200, "{}", experiment_before.body);
    let head_before = request(&addr, "GET", "/api/v1/audit/head", &as_admin, None);
    assert_eq!(head_before.status, 200, "{}", head_before.body);

    // Another site's page (another port of the same host: the same site for SameSite) posts a
    // `text/plain` body — no preflight — and the browser attaches the signed-in admin's cookie.
    let forged = std::fs::read_to_string(SAMPLE)
        .expect("the sample")
        .lines()
        .next()
        .expect("a first line")
        .replace(
            "\"conversions\":296,\"orders\":296",
            "\"conversions\":3000,\"orders\":3000",
        );
    assert!(forged.contains("3000"), "the forged record differs");
    let cookie = format!("hypod_token={admin}");
    let cross_site = [
        ("Cookie", cookie.as_str()),
        ("Origin", "http://127.0.0.1:1"),
    ];
    let import = request(
        &addr,
        "POST",
        "/api/v1/experiments",
        &cross_site,
        Some(("text/plain", &forged)),
    );
    assert_eq!(import.status, 401, "{}", import.body);
    assert_eq!(import.json()["code"], "unauthenticated");
    assert!(
        import.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("cookie") && m.contains("/ui")),
        "{}",
        import.body
    );
    // A body-less POST that would start a run.
    let run = request(&addr, "POST", "/api/v1/runs", &cross_site, None);
    assert_eq!(run.status, 401, "{}", run.body);
    // The cookie alone reads nothing from the API either.
    let read = request(
        &addr,
        "GET",
        "/api/v1/proposals",
        &[("Cookie", cookie.as_str())],
        None,
    );
    assert_eq!(read.status, 401, "{}", read.body);

    // Nothing was imported, no run was started, nothing was logged.
    let experiment_after = request(
        &addr,
        "GET",
        "/api/v1/experiments/exp-2024-0001",
        &as_admin,
        None,
    );
    assert_eq!(experiment_after.body, experiment_before.body);
    let runs = request(&addr, "GET", "/api/v1/runs", &as_admin, None);
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert_eq!(
        runs.json()["items"].as_array().map(Vec::len),
        Some(0),
        "{}",
        runs.body
    );
    let head_after = request(&addr, "GET", "/api/v1/audit/head", &as_admin, None);
    assert_eq!(head_after.body, head_before.body);

    // The web UI itself still signs in and works with its cookie, scoped to /ui.
    let login = request(
        &addr,
        "POST",
        "/ui/login",
        &[("Origin", &format!("http://{addr}"))],
        Some((
            "application/x-www-form-urlencoded",
            &format!("token={admin}"),
        )),
    );
    assert_eq!(login.status, 303, "{}", login.body);
    let set_cookie = login.header("set-cookie").expect("a session cookie");
    assert!(
        set_cookie.contains("Path=/ui;") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    let queue = request(
        &addr,
        "GET",
        "/ui/queue",
        &[("Cookie", cookie.as_str())],
        None,
    );
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert!(queue.body.contains("ada"), "signed in as ada");
    // The bearer token still works on the API: the same import is the admin's own.
    let own = request(
        &addr,
        "POST",
        "/api/v1/experiments",
        &as_admin,
        Some(("application/x-ndjson", &forged)),
    );
    assert_eq!(own.status, 200, "{}", own.body);
}

#[test]
fn the_ui_cookie_is_no_credential_on_the_api_on_sqlite() {
    on_sqlite(the_ui_cookie_is_no_credential_on_the_api);
}

#[test]
fn the_ui_cookie_is_no_credential_on_the_api_on_postgresql() {
    on_postgres(the_ui_cookie_is_no_credential_on_the_api);
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. The proxy's identity headers: once each, UTF-8.

#[test]
fn repeated_identity_headers_from_the_proxy_are_refused() {
    let hypod = Hypod::new();
    hypod.ok(&["import", SAMPLE]);
    let daemon = proxy_daemon(&hypod);
    let addr = daemon.addr.clone();
    // The client's own header first, then the proxy's: neither is believed.
    for headers in [
        vec![
            ("X-Forwarded-User", b"ada".as_slice()),
            ("X-Forwarded-User", b"mallory".as_slice()),
            ("X-Forwarded-Groups", b"hypod-governance".as_slice()),
        ],
        vec![
            ("X-Forwarded-User", b"mallory".as_slice()),
            ("X-Forwarded-Groups", b"hypod-admins".as_slice()),
            ("X-Forwarded-Groups", b"hypod-viewers".as_slice()),
        ],
    ] {
        let (status, body) = raw_request(&addr, "GET", "/api/v1/me", &headers);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("more than once"), "{body}");
        // A run is not started by such a request.
        let (status, body) = raw_request(&addr, "POST", "/api/v1/runs", &headers);
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = raw_request(
        &addr,
        "GET",
        "/api/v1/runs",
        &[
            ("X-Forwarded-User", b"ada".as_slice()),
            ("X-Forwarded-Groups", b"hypod-viewers".as_slice()),
        ],
    );
    assert_eq!(
        (status, json(&body)["items"].clone()),
        (200, Value::Array(Vec::new())),
        "{body}"
    );
}

#[test]
fn behind_the_proxy_another_sites_page_cannot_write_through_the_api() {
    // Behind an authenticating proxy the browser's session with the proxy is the credential:
    // the proxy adds the headers to whatever the browser sends, also for another site's page.
    let hypod = Hypod::new();
    hypod.ok(&["import", SAMPLE]);
    let daemon = proxy_daemon(&hypod);
    let addr = daemon.addr.clone();
    let governance = [
        ("X-Forwarded-User", b"gus".as_slice()),
        ("X-Forwarded-Groups", b"hypod-governance".as_slice()),
    ];
    for foreign in [
        ("Origin", b"https://evil.example".as_slice()),
        ("Origin", b"null".as_slice()),
        ("Sec-Fetch-Site", b"same-site".as_slice()),
    ] {
        let mut headers = governance.to_vec();
        headers.push(foreign);
        let (status, body) = raw_request(&addr, "POST", "/api/v1/runs", &headers);
        assert_eq!(status, 403, "{foreign:?}: {body}");
        assert!(body.contains("another site"), "{body}");
        // Reads stay open (a page cannot read the answer without CORS).
        let (status, body) = raw_request(&addr, "GET", "/api/v1/me", &headers);
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = raw_request(&addr, "GET", "/api/v1/runs", &governance);
    assert_eq!(
        (status, json(&body)["items"].clone()),
        (200, Value::Array(Vec::new())),
        "{body}"
    );
}

#[test]
fn utf8_names_from_the_proxy_are_read_and_invalid_ones_refused_clearly() {
    let hypod = Hypod::new();
    let daemon = proxy_daemon(&hypod);
    let addr = daemon.addr.clone();
    let groups = ("X-Forwarded-Groups", b"hypod-reviewers".as_slice());
    let (status, body) = raw_request(
        &addr,
        "GET",
        "/api/v1/me",
        &[("X-Forwarded-User", "Jürgen".as_bytes()), groups],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["user"], "jürgen");
    assert_eq!(json(&body)["role"], "reviewer");
    // Latin-1 bytes, not UTF-8: refused, saying so.
    let (status, body) = raw_request(
        &addr,
        "GET",
        "/api/v1/me",
        &[("X-Forwarded-User", b"J\xfcrgen".as_slice()), groups],
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        json(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("X-Forwarded-User is not UTF-8")),
        "{body}"
    );
    // Control characters (a tab, a C1 NEL) are refused by name.
    for user in ["j\u{fc}r\tgen", "j\u{fc}r\u{85}gen"] {
        let (status, body) = raw_request(
            &addr,
            "GET",
            "/api/v1/me",
            &[("X-Forwarded-User", user.as_bytes()), groups],
        );
        assert_eq!(status, 401, "{user:?}: {body}");
        assert!(body.contains("control or invisible character"), "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Look-alike identities.

/// The sample imported and one run made; the approvals a plain proposal needs raised to 2.
fn reviewed_with_two_approvals(hypod: &Hypod) {
    let path = hypod.path().join("hypod.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        config.replace("[governance]\n", "[governance]\napprovals_required = 2\n"),
    )
    .expect("config");
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
}

/// (id, escalated?) of the pending proposals.
fn pending(hypod: &Hypod) -> Vec<(String, bool)> {
    hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            let escalated = p["failed_rules"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["effect"] == "escalate"));
            (p["id"].as_str().expect("id").to_string(), escalated)
        })
        .collect()
}

fn status_and_reviewers(hypod: &Hypod, id: &str) -> (String, Vec<String>) {
    let shown = hypod.ok(&["queue", "show", id, "--json"]).json();
    let reviewers = shown["reviews"]
        .as_array()
        .expect("reviews")
        .iter()
        .map(|r| r["actor"].as_str().expect("actor").to_string())
        .collect();
    (
        shown["proposal"]["status"]
            .as_str()
            .expect("status")
            .to_string(),
        reviewers,
    )
}

fn look_alikes_are_one_person_through_the_proxy(hypod: &Hypod) {
    reviewed_with_two_approvals(hypod);
    let pending = pending(hypod);
    let escalated = pending
        .iter()
        .find(|(_, e)| *e)
        .map(|(id, _)| id.clone())
        .expect("the sample run escalates a proposal");
    let plain = pending
        .iter()
        .find(|(_, e)| !*e)
        .map(|(id, _)| id.clone())
        .expect("a plain proposal");
    let daemon = proxy_daemon(hypod);
    let addr = daemon.addr.clone();
    let approve = |id: &str, user: &str, group: &str| {
        raw_request_with(
            &addr,
            "POST",
            &format!("/api/v1/proposals/{id}/approve"),
            &[
                ("X-Forwarded-User", user.as_bytes()),
                ("X-Forwarded-Groups", group.as_bytes()),
            ],
            "{}",
        )
    };
    // rob (reviewer) approves the escalated proposal; rоb and rοb (governance) cannot be the
    // second person: their names mix scripts.
    let (status, body) = approve(&escalated, "rob", "hypod-reviewers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "pending_review");
    for (look_alike, script) in [(ROB_CYRILLIC_O, "Cyrillic"), (ROB_GREEK_O, "Greek")] {
        let (status, body) = approve(&escalated, look_alike, "hypod-governance");
        assert_eq!(status, 401, "{look_alike:?}: {body}");
        let message = json(&body)["message"].as_str().unwrap_or("").to_string();
        assert!(
            message.contains("mixes scripts") && message.contains(script),
            "{message}"
        );
    }
    assert_eq!(
        status_and_reviewers(hypod, &escalated),
        ("pending_review".to_string(), vec!["rob".to_string()])
    );
    // A name of one script that looks like another person's is that person: ѕсоре (all
    // Cyrillic) is scope, who has approved already.
    let (status, body) = approve(&plain, "scope", "hypod-reviewers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "pending_review");
    let (status, body) = approve(&plain, CYRILLIC_SCOPE, "hypod-governance");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("has already approved"), "{body}");
    assert_eq!(
        status_and_reviewers(hypod, &plain),
        ("pending_review".to_string(), vec!["scope".to_string()])
    );
    // A second, different person still approves.
    let (status, body) = approve(&escalated, "gus", "hypod-governance");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "approved");
}

#[test]
fn look_alikes_are_one_person_through_the_proxy_on_sqlite() {
    on_sqlite(look_alikes_are_one_person_through_the_proxy);
}

#[test]
fn look_alikes_are_one_person_through_the_proxy_on_postgresql() {
    on_postgres(look_alikes_are_one_person_through_the_proxy);
}

fn mixed_script_names_are_refused_on_the_command_line(hypod: &Hypod) {
    reviewed_with_two_approvals(hypod);
    let escalated = pending(hypod)
        .into_iter()
        .find(|(_, e)| *e)
        .map(|(id, _)| id)
        .expect("an escalated proposal");
    hypod.token("rob", "reviewer");
    hypod.token("scope", "reviewer");
    hypod.ok(&["queue", "approve", &escalated, "--as", "rob"]);
    // No governance token for rоb / rοb.
    for look_alike in [ROB_CYRILLIC_O, ROB_GREEK_O] {
        let ran = hypod.run(&[
            "token",
            "create",
            "--user",
            look_alike,
            "--role",
            "governance",
        ]);
        assert_eq!(ran.code, Some(2), "{}", ran.stdout);
        assert!(
            ran.stderr.contains("mixes scripts")
                && ran.stderr.contains("write the name in one script"),
            "{}",
            ran.stderr
        );
        let ran = hypod.run(&["queue", "approve", &escalated, "--as", look_alike]);
        assert_eq!(ran.code, Some(2), "{}", ran.stdout);
        assert!(ran.stderr.contains("mixes scripts"), "{}", ran.stderr);
    }
    // No second spelling of a person who holds a token.
    let ran = hypod.run(&[
        "token",
        "create",
        "--user",
        CYRILLIC_SCOPE,
        "--role",
        "governance",
    ]);
    assert_eq!(ran.code, Some(2), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("looks the same as \"scope\""),
        "{}",
        ran.stderr
    );
    // `--as ѕсоре` is scope, recorded under scope's spelling, in scope's role.
    let plain = pending(hypod)
        .into_iter()
        .find(|(_, e)| !*e)
        .map(|(id, _)| id)
        .expect("a plain proposal");
    hypod.ok(&["queue", "approve", &plain, "--as", CYRILLIC_SCOPE]);
    let twice = hypod.run(&["queue", "approve", &plain, "--as", "scope"]);
    assert_eq!(twice.code, Some(2), "{}", twice.stdout);
    assert!(
        twice.stderr.contains("scope has already approved"),
        "{}",
        twice.stderr
    );
    assert_eq!(
        status_and_reviewers(hypod, &plain),
        ("pending_review".to_string(), vec!["scope".to_string()])
    );
    // Nothing was written for the refused names: two tokens, one review on the escalated one.
    let tokens = hypod.ok(&["token", "list", "--json"]).json();
    let users: Vec<&str> = tokens
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["user"].as_str())
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert_eq!(
        status_and_reviewers(hypod, &escalated),
        ("pending_review".to_string(), vec!["rob".to_string()])
    );
}

#[test]
fn mixed_script_names_are_refused_on_the_command_line_on_sqlite() {
    on_sqlite(mixed_script_names_are_refused_on_the_command_line);
}

#[test]
fn mixed_script_names_are_refused_on_the_command_line_on_postgresql() {
    on_postgres(mixed_script_names_are_refused_on_the_command_line);
}

// ---------------------------------------------------------------------------------------------
// 5. The database password in messages and logs.

const PASSWORD: &str = "S3cr3tPassw0rd";

fn says_no_password(what: &str, stderr: &str, names: &[&str]) {
    assert!(
        !stderr.contains(PASSWORD),
        "{what} shows the password:\n{stderr}"
    );
    for name in names {
        assert!(
            stderr.contains(name),
            "{what} does not name {name}:\n{stderr}"
        );
    }
}

#[test]
fn an_unreachable_postgresql_is_named_without_its_password() {
    // Nothing listens on port 1: the daemon cannot open its database (after the pool's 30 s
    // of retries), and says so with the URL, also in its trace log. (The commands' other paths
    // are checked against a real server below.)
    let hypod = Hypod::with_database(&format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/hypod"));
    let ran = hypod
        .command(&["serve"])
        .env("HYPOD_LOG", "trace")
        .env("HYPOD_SERVER__LISTEN", "127.0.0.1:0")
        .output()
        .expect("run hypod");
    assert_eq!(ran.status.code(), Some(1));
    says_no_password(
        "serve",
        &String::from_utf8_lossy(&ran.stderr),
        &[
            "cannot open the database",
            "postgres://postgres:***@127.0.0.1:1/hypod",
        ],
    );
}

#[test]
fn a_missing_postgresql_database_is_named_without_its_password() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(postgres_server()) else {
        return;
    };
    // The test server trusts local connections: the password is sent but never checked.
    let url = crate::backends::with_database(&server, "hypod_no_such_database").replacen(
        "postgres@",
        &format!("postgres:{PASSWORD}@"),
        1,
    );
    assert!(url.contains(PASSWORD), "{url}");
    let hypod = Hypod::with_database(&url);
    for args in [vec!["queue", "list"], vec!["migrate"], vec!["run"]] {
        let ran = hypod
            .command(&args)
            .env("HYPOD_LOG", "trace")
            .output()
            .expect("run hypod");
        assert_eq!(ran.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&ran.stderr);
        says_no_password(
            &format!("{args:?}"),
            &stderr,
            &["hypod_no_such_database", ":***@"],
        );
    }
    // A URL the configuration refuses is quoted without its password too.
    let hypod = Hypod::with_database(&format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:notaport/db"
    ));
    let ran = hypod.run(&["queue", "list"]);
    assert_eq!(ran.code, Some(2), "{}", ran.stdout);
    says_no_password(
        "a bad port",
        &ran.stderr,
        &["database.url", "127.0.0.1:notaport"],
    );
    // And so is `?password=`.
    let hypod = Hypod::with_database(&format!(
        "postgres://postgres@127.0.0.1:1/hypod?password={PASSWORD}"
    ));
    let ran = hypod.run(&["queue", "list"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    says_no_password("?password=", &ran.stderr, &["password=***"]);
}

// ---------------------------------------------------------------------------------------------
// 6. Echoed input is bounded.

#[test]
fn a_huge_identity_is_not_echoed_whole() {
    let hypod = Hypod::new();
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
    let id = pending(&hypod)[0].0.clone();
    let huge = "x".repeat(100_000);
    for args in [
        vec!["queue", "approve", id.as_str(), "--as", huge.as_str()],
        vec![
            "token",
            "create",
            "--user",
            huge.as_str(),
            "--role",
            "viewer",
        ],
        vec!["token", "revoke", huge.as_str()],
    ] {
        let ran = hypod.run(&args);
        assert_eq!(ran.code, Some(2), "{}", &args[..2].join(" "));
        assert!(
            ran.stderr.len() < 1_000,
            "{}: {} bytes on stderr",
            &args[..2].join(" "),
            ran.stderr.len()
        );
        assert!(
            ran.stderr.contains("… (100000 characters)"),
            "{}",
            ran.stderr
        );
    }
    // Nor is a huge proposal id.
    hypod.token("rita", "reviewer");
    for args in [
        vec!["queue", "show", huge.as_str()],
        vec!["queue", "approve", huge.as_str(), "--as", "rita"],
        vec!["policy", "explain", huge.as_str()],
    ] {
        let ran = hypod.run(&args);
        assert_ne!(ran.code, Some(0), "{}", &args[..2].join(" "));
        assert!(
            ran.stderr.len() < 1_000 && ran.stderr.contains("… (100000 characters)"),
            "{}: {} bytes on stderr",
            &args[..2].join(" "),
            ran.stderr.len()
        );
    }
    // A huge header from the proxy is refused without being sent back.
    let daemon = proxy_daemon(&hypod);
    let long = "y".repeat(20_000);
    let (status, body) = raw_request(
        &daemon.addr,
        "GET",
        "/api/v1/me",
        &[
            ("X-Forwarded-User", long.as_bytes()),
            ("X-Forwarded-Groups", b"hypod-viewers".as_slice()),
        ],
    );
    assert_eq!(status, 401, "{}", &body[..body.len().min(300)]);
    assert!(body.len() < 1_000, "{} bytes", body.len());
}
