//! The API as standard tools read it (issue #25): the OpenAPI document's parameters and
//! responses, the router's own 404 and 405 in the JSON error shape, one keyset pagination for
//! runs and the audit log, the audit entry's `detail` as JSON, and an approval's answer saying
//! what is still missing. Through the real server in-process ([`TestApp`]), on SQLite and
//! PostgreSQL where storage is involved. The document's conformance with Schemathesis and a
//! generated client is `tools/conformance` (run by `.ci/run`).

use crate::backends::{postgres_server, PgDatabase};
use crate::review::Reviewed;
use crate::support::Hypod;
use crate::test_app::{request, TestApp};
use serde_json::Value;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// Runs `test` on SQLite, then on a fresh PostgreSQL database (when the PostgreSQL tests run).
fn on_both_backends(test: impl Fn(Hypod)) {
    test(Hypod::new());
    let Some(server) = block_on(postgres_server()) else {
        return;
    };
    let db = block_on(PgDatabase::create(&server));
    test(Hypod::with_database(&db.url));
    block_on(db.drop_now());
}

fn get(app: &TestApp, token: &str, path: &str) -> crate::test_app::Answer {
    request(
        &app.addr,
        "GET",
        path,
        &[("Authorization", &bearer(token))],
        None,
    )
}

#[test]
fn the_document_puts_query_parameters_in_the_query_and_declares_every_path_parameter() {
    let hypod = Hypod::new();
    let app = TestApp::spawn(&hypod);
    let document = request(&app.addr, "GET", "/api/v1/openapi.json", &[], None).json();
    let mut problems = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let what = format!("{method} {path}");
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let in_path: Vec<&str> = parameters
                .iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let templated: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            if in_path != templated {
                problems.push(format!(
                    "{what}: path parameters {in_path:?}, template {templated:?}"
                ));
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if !response["description"].is_string() {
                    problems.push(format!("{what}: response {status} has no description"));
                }
                let schema = &response["content"]["application/json"]["schema"];
                if status.starts_with('2')
                    && schema.get("type") == Some(&"object".into())
                    && schema.get("properties").is_none()
                {
                    problems.push(format!("{what}: response {status} is a bare object"));
                }
            }
            let statuses: Vec<&String> =
                operation["responses"].as_object().unwrap().keys().collect();
            for status in ["400", "401", "403", "500"] {
                if !statuses.iter().any(|s| *s == status) {
                    problems.push(format!("{what}: status {status} is not listed"));
                }
            }
        }
    }
    let list = &document["paths"]["/api/v1/proposals"]["get"]["parameters"];
    let limit = list
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
        .expect("limit");
    assert_eq!(
        (
            &limit["in"],
            &limit["schema"]["minimum"],
            &limit["schema"]["maximum"]
        ),
        (&Value::from("query"), &Value::from(1), &Value::from(200))
    );
    let import = &document["paths"]["/api/v1/experiments"]["post"]["requestBody"]["content"];
    for content_type in ["application/x-ndjson", "text/csv", "application/json"] {
        if import.get(content_type).is_none() {
            problems.push(format!("import does not declare {content_type}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A path the router does not know, and a method a route does not take, answer the same JSON
/// error as every other error (no backend involved: the router answers before any handler).
/// Every `$ref` in the document names a schema the document holds (a parameter type missing
/// from `components` made openapi-spec-validator refuse the whole document).
#[test]
fn every_reference_in_the_document_resolves() {
    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("$ref", Value::String(target)) => found.push(target.clone()),
                        _ => refs(inner, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }
    let hypod = Hypod::new();
    let app = TestApp::spawn(&hypod);
    let document = request(&app.addr, "GET", "/api/v1/openapi.json", &[], None).json();
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(!found.is_empty());
    let dangling: Vec<&String> = found
        .iter()
        .filter(|target| {
            let name = target.strip_prefix("#/components/schemas/");
            name.is_none_or(|name| document["components"]["schemas"].get(name).is_none())
        })
        .collect();
    assert!(dangling.is_empty(), "references to nothing: {dangling:?}");
}

#[test]
fn the_routers_own_404_and_405_answer_the_json_error() {
    let hypod = Hypod::new();
    let app = TestApp::spawn(&hypod);
    let missing = request(&app.addr, "GET", "/api/v1/nothing-here", &[], None);
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.json()["code"], "not_found", "{}", missing.body);
    assert!(missing.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("/api/v1/nothing-here")));
    let wrong = request(&app.addr, "DELETE", "/api/v1/runs", &[], None);
    assert_eq!(wrong.status, 405, "{}", wrong.body);
    assert_eq!(wrong.header("content-type"), Some("application/json"));
    assert_eq!(wrong.json()["code"], "method_not_allowed", "{}", wrong.body);
    assert!(
        wrong.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        wrong.headers
    );
}

/// An error answered before the body was read (a viewer's approval is refused on its role)
/// tells the client the connection closes, so that the client does not send its next request
/// on a connection the server has dropped.
#[test]
fn an_error_before_the_body_is_read_closes_the_connection_openly() {
    let setup = Reviewed::new();
    let app = TestApp::spawn(&setup.hypod);
    let note = format!("{{\"note\":\"{}\"}}", "x".repeat(60_000));
    let refused = request(
        &app.addr,
        "POST",
        "/api/v1/proposals/any/approve",
        &[("Authorization", &bearer(setup.token("viewer")))],
        Some(("application/json", &note)),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        refused.header("connection"),
        Some("close"),
        "{:?}",
        refused.headers
    );
    // A success keeps the connection.
    let me = get(&app, setup.token("viewer"), "/api/v1/me");
    assert_eq!(me.status, 200);
    assert_eq!(me.header("connection"), None, "{:?}", me.headers);
}

/// `GET /api/v1/runs` pages like the proposals: `items` and a `next_cursor` that fetches the
/// next page, newest first, no run twice.
fn runs_page_with_a_cursor(hypod: Hypod) {
    let setup = Reviewed::on(hypod);
    setup.hypod.ok(&["run"]);
    setup.hypod.ok(&["run"]);
    let viewer = setup.token("viewer");
    let app = TestApp::spawn(&setup.hypod);
    let first = get(&app, viewer, "/api/v1/runs?limit=2");
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = get(
        &app,
        viewer,
        &format!("/api/v1/runs?limit=2&cursor={cursor}"),
    )
    .json();
    let rest = second["items"].as_array().expect("items");
    assert_eq!(rest.len(), 1, "{second}");
    assert!(second["next_cursor"].is_null(), "{second}");
    let ids: Vec<&str> = items
        .iter()
        .chain(rest)
        .filter_map(|r| r["id"].as_str())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(ids, sorted, "three runs, newest first, none twice");
}

/// The history pages the same way: `cursor` in, `next_cursor` out (it took `after` and
/// answered `next_after` before).
#[test]
fn experiments_page_with_a_cursor() {
    let setup = Reviewed::new();
    let viewer = setup.token("viewer");
    let app = TestApp::spawn(&setup.hypod);
    let first = get(&app, viewer, "/api/v1/experiments?limit=2").json();
    let cursor = first["next_cursor"].as_str().expect("a next page");
    assert_eq!(Some(cursor), first["items"][1]["id"].as_str(), "{first}");
    let second = get(
        &app,
        viewer,
        &format!("/api/v1/experiments?limit=2&cursor={cursor}"),
    );
    assert_eq!(second.status, 200, "{}", second.body);
    let second = second.json();
    assert!(second["items"][0]["id"].as_str() > Some(cursor), "{second}");
    let old = get(&app, viewer, "/api/v1/experiments?after=exp-2024-0001");
    assert_eq!(old.status, 400, "{}", old.body);
}

#[test]
fn runs_page_with_a_cursor_on_sqlite_and_postgresql() {
    on_both_backends(runs_page_with_a_cursor);
}

/// The audit log pages the same way, and an entry's `detail` is JSON, not JSON in a string.
fn audit_entries_page_with_json_details(hypod: Hypod) {
    let setup = Reviewed::on(hypod);
    let admin = setup.token("admin");
    let app = TestApp::spawn(&setup.hypod);
    let first = get(&app, admin, "/api/v1/audit?limit=2");
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{first}");
    assert!(items.iter().all(|e| e["detail"].is_object()), "{first}");
    assert_eq!(first["next_cursor"], "2");
    let second = get(&app, admin, "/api/v1/audit?limit=2&cursor=2").json();
    assert_eq!(second["items"][0]["seq"], 3, "{second}");
    let refused = get(&app, admin, "/api/v1/audit?cursor=abc");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["code"], "invalid_input");
}

#[test]
fn audit_entries_page_with_json_details_on_sqlite_and_postgresql() {
    on_both_backends(audit_entries_page_with_json_details);
}

/// Approving an escalated proposal as a reviewer says one approval, from governance, is still
/// missing; governance's approval then says none is.
fn approving_says_which_approvals_are_missing(hypod: Hypod) {
    let setup = Reviewed::on(hypod);
    let (escalated, _) = setup
        .pending()
        .into_iter()
        .find(|(_, escalated)| *escalated)
        .expect("the sample run queues an escalated proposal");
    let app = TestApp::spawn(&setup.hypod);
    let approve = |role: &str| {
        request(
            &app.addr,
            "POST",
            &format!("/api/v1/proposals/{escalated}/approve"),
            &[("Authorization", &bearer(setup.token(role)))],
            Some(("application/json", "{}")),
        )
    };
    let first = approve("reviewer");
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(first["status"], "pending_review");
    assert_eq!(first["approvals"]["given"], 1, "{first}");
    assert!(first["approvals"]["missing"].as_u64() >= Some(1), "{first}");
    assert_eq!(
        first["approvals"]["missing_roles"],
        serde_json::json!(["governance"])
    );
    let second = approve("governance").json();
    assert_eq!(second["status"], "approved", "{second}");
    assert_eq!(second["approvals"]["missing"], 0, "{second}");
    assert_eq!(second["approvals"]["missing_roles"], serde_json::json!([]));
}

#[test]
fn approving_says_which_approvals_are_missing_on_sqlite_and_postgresql() {
    on_both_backends(approving_says_which_approvals_are_missing);
}
