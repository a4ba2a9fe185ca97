//! The review surface through a real `hypod serve`: every API route for every role (401
//! without credentials, 403 below the route's role, checked before the body is read), the
//! separation of duties (distinct normalised people, governance for escalated proposals, nobody
//! for blocked ones), hostile text kept out of terminals, and the proxy mode that believes
//! identity headers from trusted addresses only.

use crate::support::{fixture, Hypod, SAMPLE};
pub(crate) use crate::test_app::request;
use crate::test_app::TestApp;
use serde_json::Value;
use std::collections::BTreeSet;

/// A hypod folder with the sample history, one builtin run, and a token per role.
pub(crate) struct Reviewed {
    pub hypod: Hypod,
    pub tokens: Vec<(&'static str, String)>,
}

impl Reviewed {
    pub fn new() -> Reviewed {
        Reviewed::on(Hypod::new())
    }

    pub fn on(hypod: Hypod) -> Reviewed {
        hypod.ok(&["import", SAMPLE]);
        hypod.ok(&["run"]);
        let mut tokens = Vec::new();
        for (user, role) in [
            ("vera", "viewer"),
            ("rita", "reviewer"),
            ("gus", "governance"),
            ("ada", "admin"),
        ] {
            tokens.push((role, hypod.token(user, role)));
        }
        Reviewed { hypod, tokens }
    }

    pub fn token(&self, role: &str) -> &str {
        &self
            .tokens
            .iter()
            .find(|(r, _)| *r == role)
            .expect("a token for the role")
            .1
    }

    /// Pending proposals from `queue list --json`: (id, escalated?).
    pub fn pending(&self) -> Vec<(String, bool)> {
        let list = self
            .hypod
            .ok(&["queue", "list", "--status", "pending_review", "--json"])
            .json();
        list.as_array()
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

    pub fn with_status(&self, status: &str) -> Vec<String> {
        self.hypod
            .ok(&["queue", "list", "--status", status, "--json"])
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .map(|p| p["id"].as_str().expect("id").to_string())
            .collect()
    }
}

impl Hypod {
    /// `token create` for `user` in `role`: the secret.
    pub fn token(&self, user: &str, role: &str) -> String {
        let created = self
            .ok(&["token", "create", "--user", user, "--role", role, "--json"])
            .json();
        created["token"].as_str().expect("a token").to_string()
    }
}

/// The server in-process on `hypod`'s folder (no scheduled run during a test).
pub(crate) fn serve(hypod: &Hypod) -> TestApp {
    TestApp::spawn(hypod)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// (method, path template, concrete path, body (content type, text), least role).
type Route<'a> = (&'a str, &'a str, String, Option<(&'a str, String)>, &'a str);

const ROLES: [&str; 4] = ["viewer", "reviewer", "governance", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("a role")
}

#[test]
fn every_route_answers_401_without_credentials_and_403_below_its_role() {
    let setup = Reviewed::new();
    let daemon = serve(&setup.hypod);
    let addr = daemon.addr.clone();
    let (pending, _) = setup.pending()[0].clone();
    let runs = request(
        &addr,
        "GET",
        "/api/v1/runs",
        &[("Authorization", &bearer(setup.token("viewer")))],
        None,
    )
    .json();
    let run_id = runs["items"][0]["id"].as_str().expect("a run").to_string();
    let draft = std::fs::read_to_string(fixture("draft.json")).expect("draft fixture");
    // (method, path template, concrete path, body, least role). Mutations use ids or bodies
    // that fail after authorisation (an unknown proposal, an empty import), so that running
    // the matrix changes nothing but the two runs it starts.
    let routes: Vec<Route> = vec![
        ("GET", "/api/v1/me", "/api/v1/me".into(), None, "viewer"),
        (
            "GET",
            "/api/v1/proposals",
            "/api/v1/proposals?limit=5".into(),
            None,
            "viewer",
        ),
        (
            "GET",
            "/api/v1/proposals/{id}",
            format!("/api/v1/proposals/{pending}"),
            None,
            "viewer",
        ),
        (
            "POST",
            "/api/v1/proposals/{id}/approve",
            "/api/v1/proposals/nope/approve".into(),
            Some(("application/json", "{}".into())),
            "reviewer",
        ),
        (
            "POST",
            "/api/v1/proposals/{id}/reject",
            "/api/v1/proposals/nope/reject".into(),
            Some(("application/json", r#"{"reason":"no"}"#.into())),
            "reviewer",
        ),
        (
            "POST",
            "/api/v1/proposals/{id}/comments",
            "/api/v1/proposals/nope/comments".into(),
            Some(("application/json", r#"{"text":"why?"}"#.into())),
            "reviewer",
        ),
        ("GET", "/api/v1/runs", "/api/v1/runs".into(), None, "viewer"),
        (
            "POST",
            "/api/v1/runs",
            "/api/v1/runs".into(),
            None,
            "governance",
        ),
        (
            "GET",
            "/api/v1/runs/{id}",
            format!("/api/v1/runs/{run_id}"),
            None,
            "viewer",
        ),
        (
            "GET",
            "/api/v1/experiments",
            "/api/v1/experiments?limit=3".into(),
            None,
            "viewer",
        ),
        (
            "POST",
            "/api/v1/experiments",
            "/api/v1/experiments".into(),
            Some(("application/x-ndjson", "\n".into())),
            "admin",
        ),
        (
            "GET",
            "/api/v1/experiments/{id}",
            "/api/v1/experiments/EXP-0001".into(),
            None,
            "viewer",
        ),
        (
            "GET",
            "/api/v1/health",
            "/api/v1/health".into(),
            None,
            "viewer",
        ),
        (
            "GET",
            "/api/v1/policies",
            "/api/v1/policies".into(),
            None,
            "viewer",
        ),
        (
            "POST",
            "/api/v1/policies/evaluate",
            "/api/v1/policies/evaluate".into(),
            Some(("application/json", draft.clone())),
            "viewer",
        ),
        (
            "GET",
            "/api/v1/audit",
            "/api/v1/audit?limit=5".into(),
            None,
            "governance",
        ),
        (
            "GET",
            "/api/v1/audit/verify",
            "/api/v1/audit/verify".into(),
            None,
            "governance",
        ),
        (
            "GET",
            "/api/v1/audit/head",
            "/api/v1/audit/head".into(),
            None,
            "viewer",
        ),
        (
            "GET",
            "/api/v1/export",
            "/api/v1/export".into(),
            None,
            "reviewer",
        ),
    ];
    // The matrix covers every route of the OpenAPI document, and nothing else.
    let document = request(&addr, "GET", "/api/v1/openapi.json", &[], None).json();
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    let tested: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, template, ..)| (m.to_string(), template.to_string()))
        .collect();
    assert_eq!(documented, tested, "routes without a row in the matrix");

    let mut failures = Vec::new();
    for (method, template, path, body, least) in &routes {
        let body = body.as_ref().map(|(t, b)| (*t, b.as_str()));
        let anonymous = request(&addr, method, path, &[], body);
        if anonymous.status != 401 || anonymous.json()["code"] != "unauthenticated" {
            failures.push(format!(
                "{method} {template} without credentials: {} {}",
                anonymous.status, anonymous.body
            ));
        }
        let forged = request(
            &addr,
            method,
            path,
            &[("Authorization", "Bearer hypod_0000")],
            body,
        );
        if forged.status != 401 {
            failures.push(format!(
                "{method} {template} with an unknown token: {}",
                forged.status
            ));
        }
        for role in ROLES {
            let answer = request(
                &addr,
                method,
                path,
                &[("Authorization", &bearer(setup.token(role)))],
                body,
            );
            let allowed = rank(role) >= rank(least);
            let ok = if allowed {
                answer.status != 401 && answer.status != 403 && answer.status < 500
            } else {
                answer.status == 403 && answer.json()["code"] == "forbidden"
            };
            if !ok {
                failures.push(format!(
                    "{method} {template} as {role}: {} {}",
                    answer.status, answer.body
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn api_errors_are_json_with_a_stable_code_and_bodies_are_strict_and_bounded() {
    let setup = Reviewed::new();
    let daemon = serve(&setup.hypod);
    let addr = daemon.addr.clone();
    let reviewer = bearer(setup.token("reviewer"));
    let auth = [("Authorization", reviewer.as_str())];
    let (pending, _) = setup.pending()[0].clone();
    let approve = format!("/api/v1/proposals/{pending}/approve");
    let unknown_field = request(
        &addr,
        "POST",
        &approve,
        &auth,
        Some(("application/json", r#"{"note":"ok","role":"admin"}"#)),
    );
    assert_eq!(unknown_field.status, 400, "{}", unknown_field.body);
    assert_eq!(unknown_field.json()["code"], "invalid_input");
    assert!(
        unknown_field.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `role`"),
        "{}",
        unknown_field.body
    );
    let big = format!(r#"{{"note":"{}"}}"#, "x".repeat(100_000));
    let too_large = request(
        &addr,
        "POST",
        &approve,
        &auth,
        Some(("application/json", &big)),
    );
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    assert_eq!(too_large.json()["code"], "too_large");
    let not_json = request(
        &addr,
        "POST",
        &approve,
        &auth,
        Some(("text/plain", "approve!")),
    );
    assert_eq!(not_json.status, 400);
    let missing = request(&addr, "GET", "/api/v1/proposals/nope", &auth, None);
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    let bad_query = request(
        &addr,
        "GET",
        "/api/v1/proposals?stauts=approved",
        &auth,
        None,
    );
    assert_eq!(bad_query.status, 400, "{}", bad_query.body);
    let bad_limit = request(&addr, "GET", "/api/v1/proposals?limit=100000", &auth, None);
    assert_eq!(bad_limit.status, 400);
    // Nothing of the above changed the proposal.
    assert!(setup.pending().iter().any(|(id, _)| *id == pending));
}

#[test]
fn keyset_pages_walk_the_whole_queue_once_in_priority_order() {
    let setup = Reviewed::new();
    let daemon = serve(&setup.hypod);
    let viewer = bearer(setup.token("viewer"));
    let auth = [("Authorization", viewer.as_str())];
    let all = request(
        &daemon.addr,
        "GET",
        "/api/v1/proposals?limit=200",
        &auth,
        None,
    )
    .json();
    let all: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        all.len() >= 4,
        "the sample run queues several proposals: {all:?}"
    );
    let mut walked = Vec::new();
    let mut path = "/api/v1/proposals?limit=3".to_string();
    loop {
        let page = request(&daemon.addr, "GET", &path, &auth, None).json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        walked.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/proposals?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(walked, all);
    let filtered = request(
        &daemon.addr,
        "GET",
        "/api/v1/proposals?status=blocked&limit=200",
        &auth,
        None,
    )
    .json();
    assert!(filtered["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "blocked"));
}

#[test]
fn one_person_cannot_approve_twice_under_another_spelling_or_another_token() {
    let setup = Reviewed::new();
    let hypod = &setup.hypod;
    let (escalated, _) = setup
        .pending()
        .into_iter()
        .find(|(_, escalated)| *escalated)
        .expect("the sample run escalates a proposal");
    hypod.token("alice", "reviewer");
    hypod.token("bob", "reviewer");
    let first = hypod.run(&["queue", "approve", &escalated, "--as", "alice"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    // An admin then (mistakenly) gives "Alice " a governance token: still one person.
    hypod.token("Alice ", "governance");
    for again in ["Alice", "alice ", "ＡＬＩＣＥ"] {
        let twice = hypod.run(&["queue", "approve", &escalated, "--as", again]);
        assert_eq!(twice.code, Some(2), "{again:?}: {}", twice.stdout);
        assert!(
            twice.stderr.contains("alice has already approved"),
            "{}",
            twice.stderr
        );
    }
    // Two distinct reviewers are not enough for an escalated proposal: governance must approve.
    let bob = hypod
        .ok(&["queue", "approve", &escalated, "--as", "bob", "--json"])
        .json();
    assert_eq!(bob["status"], "pending_review");
    let gus = hypod.token("gus", "governance");
    let daemon = serve(hypod);
    let approved = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{escalated}/approve"),
        &[("Authorization", &bearer(&gus))],
        Some((
            "application/json",
            r#"{"note":"governance: consent checked"}"#,
        )),
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.json()["status"], "approved");
    let show = hypod.ok(&["queue", "show", &escalated, "--json"]).json();
    let reviews: Vec<(String, String)> = show["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().into(),
                r["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        reviews,
        [
            ("alice".to_string(), "reviewer".to_string()),
            ("bob".to_string(), "reviewer".to_string()),
            ("gus".to_string(), "governance".to_string())
        ],
        "each person once, in the role they held"
    );
}

#[test]
fn blocked_proposals_are_approved_by_nobody_and_rejections_need_a_visible_reason() {
    let setup = Reviewed::new();
    let draft = std::fs::read_to_string(fixture("draft.json")).expect("draft");
    crate::review_audit::queue_draft_as(
        &setup.hypod,
        serde_json::from_str(&draft).expect("JSON"),
        hypod::domain::ProposalStatus::Blocked,
    );
    // Checked at every request (no token cache): the revocation below is refused at once.
    let daemon = TestApp::spawn_with(&setup.hypod, &[("HYPOD_SERVER__TOKEN_CACHE_SECONDS", "0")]);
    let blocked = setup.with_status("blocked");
    let blocked = blocked.first().expect("a blocked proposal");
    let admin = bearer(setup.token("admin"));
    let refused = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{blocked}/approve"),
        &[("Authorization", &admin)],
        Some(("application/json", "{}")),
    );
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("nobody may approve it, admin included"));
    let (pending, _) = setup.pending()[0].clone();
    let reviewer = bearer(setup.token("reviewer"));
    for (reason, expected) in [
        ("\u{200B}", "no visible character"),
        ("   ", "needs a reason"),
        (
            "APPROVED BY CFO\r\u{1b}[2J",
            "control or invisible character U+000D",
        ),
    ] {
        let body = serde_json::json!({ "reason": reason }).to_string();
        let answer = request(
            &daemon.addr,
            "POST",
            &format!("/api/v1/proposals/{pending}/reject"),
            &[("Authorization", &reviewer)],
            Some(("application/json", &body)),
        );
        assert_eq!(answer.status, 400, "{reason:?}: {}", answer.body);
        assert!(
            answer.json()["message"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{reason:?}: {}",
            answer.body
        );
    }
    let long_name = setup.hypod.run(&[
        "token",
        "create",
        "--user",
        &"a".repeat(100_000),
        "--role",
        "reviewer",
    ]);
    assert_eq!(long_name.code, Some(2));
    assert!(
        long_name.stderr.contains("at most 64 are allowed"),
        "{}",
        long_name.stderr
    );
    let rejected = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{pending}/reject"),
        &[("Authorization", &reviewer)],
        Some(("application/json", r#"{"reason":"overlaps the Q4 freeze"}"#)),
    );
    assert_eq!(rejected.json()["status"], "rejected");
    // The shell cannot declare a role any more, and a name without a token reviews nothing.
    let declared = setup.hypod.run(&[
        "queue", "approve", &pending, "--as", "mallory", "--role", "admin",
    ]);
    assert_eq!(declared.code, Some(2));
    let stranger = setup.hypod.run(&[
        "queue", "comment", &pending, "--as", "mallory", "--text", "hi",
    ]);
    assert_eq!(stranger.code, Some(2));
    assert!(
        stranger.stderr.contains("mallory holds no live token"),
        "{}",
        stranger.stderr
    );
    // A revoked token identifies nobody.
    let list = setup.hypod.ok(&["token", "list", "--json"]).json();
    let rita = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "rita")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    setup.hypod.ok(&["token", "revoke", &rita]);
    let after = request(
        &daemon.addr,
        "GET",
        "/api/v1/me",
        &[("Authorization", &reviewer)],
        None,
    );
    assert_eq!(after.status, 401);
    assert!(
        !setup.hypod.ok(&["token", "list"]).stdout.contains("hypod_"),
        "token list never shows a secret"
    );
}

#[test]
fn hostile_titles_and_names_reach_the_terminal_escaped() {
    let hypod = Hypod::new();
    hypod.ok(&["import", SAMPLE]);
    let draft = std::fs::read_to_string(fixture("draft.json")).expect("draft");
    let mut draft: Value = serde_json::from_str(&draft).unwrap();
    draft["title"] = Value::String("Free shipping\r\u{1b}[2J\u{1b}[1mAPPROVED BY CFO".into());
    // Queued through the library (the way a model's answer would be), then listed by the CLI.
    crate::review_audit::queue_draft(&hypod, draft);
    for args in [vec!["queue", "list"], vec!["policy", "explain", "LAST"]] {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "LAST" {
                    crate::review_audit::last_proposal(&hypod)
                } else {
                    a.to_string()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = hypod.run(&args);
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stdout.contains('\r'),
            "{args:?} printed raw control characters"
        );
        if args[0] == "queue" {
            assert!(out.stdout.contains("\\u{001b}[2J"), "{}", out.stdout);
        }
    }
    let id = crate::review_audit::last_proposal(&hypod);
    let show = hypod.ok(&["queue", "show", &id]);
    assert!(!show.stdout.contains('\u{1b}'));
    // JSON keeps the text exactly, escaped by JSON itself.
    let json = hypod.ok(&["queue", "show", &id, "--json"]).json();
    assert_eq!(
        json["proposal"]["draft"]["title"],
        "Free shipping\r\u{1b}[2J\u{1b}[1mAPPROVED BY CFO"
    );
}

#[test]
fn proxy_mode_believes_identity_headers_from_trusted_proxies_only() {
    let setup = Reviewed::new();
    let daemon = TestApp::spawn_with(
        &setup.hypod,
        &[
            ("HYPOD_SERVER__AUTH", "proxy"),
            ("HYPOD_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ],
    );
    let me = request(
        &daemon.addr,
        "GET",
        "/api/v1/me",
        &[
            ("X-Forwarded-User", "Ada.Lovelace@example.com"),
            ("X-Forwarded-Groups", "staff,hypod-governance"),
        ],
        None,
    );
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["user"], "ada.lovelace@example.com");
    assert_eq!(me.json()["role"], "governance");
    let none = request(
        &daemon.addr,
        "GET",
        "/api/v1/me",
        &[("X-Forwarded-User", "ada"), ("X-Forwarded-Groups", "staff")],
        None,
    );
    assert_eq!(none.status, 403);
    let no_user = request(
        &daemon.addr,
        "GET",
        "/api/v1/me",
        &[("Authorization", &bearer(setup.token("admin")))],
        None,
    );
    assert_eq!(no_user.status, 401, "tokens do not count in proxy mode");
    drop(daemon);
    // The same headers from an address that is not a trusted proxy are not believed.
    let untrusted = TestApp::spawn_with(
        &setup.hypod,
        &[
            ("HYPOD_SERVER__AUTH", "proxy"),
            ("HYPOD_SERVER__TRUSTED_PROXIES", "[\"10.0.0.7\"]"),
        ],
    );
    let forged = request(
        &untrusted.addr,
        "GET",
        "/api/v1/me",
        &[
            ("X-Forwarded-User", "ada"),
            ("X-Forwarded-Groups", "hypod-admins"),
        ],
        None,
    );
    assert_eq!(forged.status, 401, "{}", forged.body);
}
