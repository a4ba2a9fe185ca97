//! The MCP server as agents meet it, through rmcp's own client: over stdio (`hypod mcp --as
//! USER` spawned as a child process, as an editor's assistant starts it) and over streamable
//! HTTP at `/mcp` on a served hypod with a bearer token (as a chat bot connects). The tool list
//! and schemas; each tool's answer on the sample history, compared with what the command line
//! says; `submit_draft` of a good draft (queued, verdicts answered, `mcp:<user>` provenance in
//! `queue show`), of a draft citing an unknown experiment (refused, nothing queued), of one that
//! repeats an open proposal (recorded as blocked); the caps; and agent tokens, which never
//! approve or reject (the REST API answers 403 and the audit log records the refusal).

use crate::review::{request, serve};
use crate::support::{fixture, Hypod, SAMPLE};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ReadResourceRequestParams,
};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

/// The client's name, as an MCP client announces it in its initialize.
const CLIENT: &str = "hypod-test-agent";

type Client = RunningService<RoleClient, ClientConfig>;

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new(CLIENT, "0.1.0"),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// `hypod mcp --as USER` in `hypod`'s folder, connected; `env` adds configuration overrides.
async fn stdio(hypod: &Hypod, user: &str, env: &[(&str, &str)]) -> Client {
    let mut command = hypod.command(&["mcp", "--as", user]);
    for (key, value) in env {
        command.env(key, value);
    }
    let transport = TokioChildProcess::builder(tokio::process::Command::from(command))
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("hypod mcp starts")
        .0;
    client_config()
        .serve(transport)
        .await
        .expect("the MCP handshake over stdio")
}

/// The MCP client over streamable HTTP at `http://ADDR/mcp` with `token`.
async fn http(addr: &str, token: &str) -> Result<Client, String> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
            .auth_header(token.to_string()),
    );
    client_config()
        .serve(transport)
        .await
        .map_err(|e| e.to_string())
}

/// One tool call: the result (its structured content checked by the caller).
async fn call(client: &Client, tool: &'static str, arguments: Value) -> CallToolResult {
    let arguments = match arguments {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => panic!("arguments must be an object, not {other}"),
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// A successful call's structured content.
async fn ok(client: &Client, tool: &'static str, arguments: Value) -> Value {
    let result = call(client, tool, arguments).await;
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} failed: {:?}",
        result.content
    );
    assert!(
        !text_of(&result).is_empty(),
        "{tool} answers a short text too"
    );
    result
        .structured_content
        .unwrap_or_else(|| panic!("{tool} answers structured content"))
}

/// A failed call's `{code, message}`.
async fn refused(client: &Client, tool: &'static str, arguments: Value) -> Value {
    let result = call(client, tool, arguments).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} should fail: {:?}",
        result.structured_content
    );
    result
        .structured_content
        .expect("the failure's code and message")
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn draft() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("draft.json")).expect("draft"))
        .expect("the draft fixture is JSON")
}

/// The fixture's draft rendered within the client's latency budget: one the shipped policies
/// let through to review.
fn good_draft() -> Value {
    let mut draft = draft();
    draft["expected_latency_ms"] = json!(20.0);
    draft
}

/// Every proposal in the queue, whatever its status.
fn all_proposals(hypod: &Hypod) -> Vec<Value> {
    crate::support::STATUSES
        .iter()
        .flat_map(|status| {
            hypod
                .ok(&["queue", "list", "--status", status, "--json"])
                .json()
                .as_array()
                .expect("a list")
                .clone()
        })
        .collect()
}

/// The sample history imported, a token for `rita` (reviewer); with `run`, one builtin run.
fn sample(run: bool) -> Hypod {
    let hypod = Hypod::new();
    hypod.ok(&["import", SAMPLE]);
    if run {
        hypod.ok(&["run", "--no-sync"]);
    }
    hypod.token("rita", "reviewer");
    hypod
}

const TOOLS: [&str; 8] = [
    "comment",
    "explain_policy",
    "get_experiment",
    "get_proposal",
    "list_levers",
    "list_proposals",
    "program_health",
    "submit_draft",
];

#[test]
fn the_tools_are_listed_with_their_json_schemas_and_no_approve_or_reject() {
    let hypod = sample(false);
    runtime().block_on(async {
        let client = stdio(&hypod, "rita", &[]).await;
        let server = client.peer_info().expect("the server's initialize answer");
        assert_eq!(
            server.server_info.as_ref().map(|i| i.name.as_str()),
            Some("hypod")
        );
        let tools = client.list_all_tools().await.expect("tools/list");
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(names, TOOLS);
        let schema = |name: &str| -> Value {
            let tool = tools.iter().find(|t| t.name == name).expect("the tool");
            assert!(
                tool.description.as_deref().is_some_and(|d| d.len() > 40),
                "{name} is described"
            );
            Value::Object((*tool.input_schema).clone())
        };
        // submit_draft takes the proposer's schema: the draft's properties, strictly.
        let submit = schema("submit_draft");
        assert_eq!(submit["required"], json!(["draft"]));
        let text = submit.to_string();
        for field in [
            "evidence",
            "experiment_id",
            "hypothesis",
            "rollback_plan",
            "expected_relative_lift",
            "consent_purposes",
        ] {
            assert!(
                text.contains(field),
                "the draft schema names {field}: {text}"
            );
        }
        // list_proposals has the API's filters, with the statuses and orders as enums.
        let list = schema("list_proposals").to_string();
        for word in [
            "pending_review",
            "blocked",
            "cursor",
            "expiry",
            "cart_checkout",
        ] {
            assert!(
                list.contains(word),
                "list_proposals' schema names {word}: {list}"
            );
        }
        assert_eq!(schema("explain_policy")["required"], json!(["proposal_id"]));
        assert_eq!(
            schema("comment")["required"],
            json!(["proposal_id", "text"])
        );
        // The proposal resource template.
        let templates = client
            .list_resource_templates(None)
            .await
            .expect("resources/templates/list");
        assert_eq!(
            templates.resource_templates[0].uri_template,
            "hypod://proposals/{id}"
        );
        client.cancel().await.expect("close");
    });
}

#[test]
fn each_tool_answers_on_the_sample_history_as_the_command_line_does() {
    let hypod = sample(true);
    let pending = hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json();
    let first = pending[0]["id"]
        .as_str()
        .expect("a pending proposal")
        .to_string();
    let analysis = hypod.ok(&["analyze", "--json"]).json();
    let levers = hypod.ok(&["levers", "--json"]).json();
    let shown = hypod.ok(&["queue", "show", &first, "--json"]).json();
    let explained = hypod.ok(&["policy", "explain", &first, "--json"]).json();
    runtime().block_on(async {
        let client = stdio(&hypod, "rita", &[]).await;

        // list_proposals: the queue's filters and cursor pagination.
        let page = ok(
            &client,
            "list_proposals",
            json!({"status": "pending_review", "limit": 2}),
        )
        .await;
        let items = page["items"].as_array().expect("items");
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0]["id"],
            first.as_str(),
            "highest value first, as queue list"
        );
        let cursor = page["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_string();
        let next = ok(
            &client,
            "list_proposals",
            json!({"status": "pending_review", "limit": 2, "cursor": cursor}),
        )
        .await;
        assert_eq!(next["items"][0]["id"], pending[2]["id"]);
        let none = ok(&client, "list_proposals", json!({"status": "approved"})).await;
        assert_eq!(none["items"], json!([]));

        // get_proposal: the view `queue show --json` prints, evidence statistics included.
        let view = ok(&client, "get_proposal", json!({"id": first})).await;
        assert_eq!(view["proposal"], shown["proposal"]);
        assert_eq!(view["evidence"], shown["evidence"]);
        assert!(view["evidence"][0]["statistics"]["primary"].is_object());
        assert!(!view["proposal"]["verdicts"]
            .as_array()
            .expect("verdicts")
            .is_empty());
        let unknown = refused(&client, "get_proposal", json!({"id": "no-such-id"})).await;
        assert_eq!(unknown["code"], "not_found");

        // get_experiment: the experiment's analysis, as `analyze --json` has it.
        let cited = shown["proposal"]["draft"]["evidence"][0]["experiment_id"]
            .as_str()
            .expect("a cited experiment");
        let experiment = ok(&client, "get_experiment", json!({"id": cited})).await;
        let expected = analysis["experiments"]
            .as_array()
            .expect("experiments")
            .iter()
            .find(|e| e["id"] == cited)
            .expect("the experiment in analyze --json");
        assert_eq!(&experiment, expected);

        // program_health and list_levers: the analysis' program and lever base.
        let health = ok(&client, "program_health", Value::Null).await;
        assert_eq!(health, analysis["program"]);
        assert_eq!(health["ready_for_proposals"], true);
        assert_eq!(ok(&client, "list_levers", Value::Null).await, levers);

        // explain_policy: every rule, or one rule's outcome.
        let explanation = ok(&client, "explain_policy", json!({"proposal_id": first})).await;
        assert_eq!(explanation, explained);
        let rule = explained["verdicts"][0]["rule_id"]
            .as_str()
            .expect("a rule");
        let one = ok(
            &client,
            "explain_policy",
            json!({"proposal_id": first, "rule_id": rule}),
        )
        .await;
        assert_eq!(one["verdicts"], json!([explained["verdicts"][0]]));
        let no_rule = refused(
            &client,
            "explain_policy",
            json!({"proposal_id": first, "rule_id": "no-such-rule"}),
        )
        .await;
        assert_eq!(no_rule["code"], "not_found");

        // The proposal as a resource.
        let read = client
            .read_resource(ReadResourceRequestParams::new(format!(
                "hypod://proposals/{first}"
            )))
            .await
            .expect("resources/read");
        let text = match &read.contents[0] {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
            other => panic!("a text resource, not {other:?}"),
        };
        let resource: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(resource["proposal"]["id"], first.as_str());

        // comment: on the record, as rita.
        let commented = ok(
            &client,
            "comment",
            json!({"proposal_id": first, "text": "the cited test ran in winter only"}),
        )
        .await;
        assert_eq!(commented["id"], first.as_str());
        assert_eq!(commented["status"], "pending_review");
        client.cancel().await.expect("close");
    });
    let after = hypod.ok(&["queue", "show", &first, "--json"]).json();
    let reviews = after["reviews"].as_array().expect("reviews");
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["actor"], "rita");
    assert_eq!(reviews[0]["action"], "comment");
    assert_eq!(reviews[0]["note"], "the cited test ran in winter only");
}

#[test]
fn a_good_draft_is_queued_with_its_verdicts_and_mcp_provenance() {
    let hypod = sample(false);
    let mut slow = draft();
    slow["segment"] = json!("vip_loyalty");
    let (submitted, denied) = runtime().block_on(async {
        let client = stdio(&hypod, "rita", &[]).await;
        let result = call(&client, "submit_draft", json!({"draft": good_draft()})).await;
        assert_ne!(result.is_error, Some(true), "{:?}", result.content);
        let text = text_of(&result);
        assert!(text.starts_with("queued as pending_review"), "{text}");
        // A draft a policy denies is recorded as blocked, with the rule's reason.
        let denied = call(&client, "submit_draft", json!({"draft": slow})).await;
        let text = text_of(&denied);
        assert!(text.starts_with("recorded as blocked"), "{text}");
        assert!(text.contains("latency-leak"), "{text}");
        client.cancel().await.expect("close");
        (
            result.structured_content.expect("the submission"),
            denied.structured_content.expect("the submission"),
        )
    });
    assert_eq!(denied["proposal"]["status"], "blocked");
    assert!(denied["proposal"]["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .any(|v| v["rule_id"] == "latency-leak" && v["passed"] == false));
    let blocked = hypod
        .ok(&["queue", "list", "--status", "blocked", "--json"])
        .json();
    assert_eq!(blocked[0]["id"], denied["proposal"]["id"]);
    let proposal = &submitted["proposal"];
    assert_eq!(proposal["status"], "pending_review");
    let verdicts = proposal["verdicts"].as_array().expect("verdicts");
    assert!(verdicts.iter().any(|v| v["source"] == "consent"));
    assert!(verdicts.iter().any(|v| v["source"] == "policy"));
    // Enriched as a run's drafts are.
    assert!(proposal["enrichment"]["required_visitors_per_arm"]
        .as_u64()
        .is_some_and(|n| n > 0));
    assert!(proposal["enrichment"]["expected_duration_days"]
        .as_f64()
        .is_some_and(|d| d >= 7.0));
    let id = proposal["id"].as_str().expect("id");
    let shown = hypod.ok(&["queue", "show", id, "--json"]).json();
    assert_eq!(shown["proposal"]["status"], "pending_review");
    assert_eq!(shown["proposal"]["provenance"]["proposer"], "mcp:rita");
    assert_eq!(
        shown["proposal"]["provenance"]["client"],
        format!("{CLIENT} 0.1.0")
    );
    assert_eq!(shown["proposal"]["verdicts"], proposal["verdicts"]);
    let text = hypod.ok(&["queue", "show", id]).stdout;
    assert!(text.contains("mcp:rita"), "{text}");
    // One audit entry for the proposal (by the agent's user), and the log still verifies.
    let entries = hypod.ok(&["audit", "export"]).json_lines();
    let about: Vec<&Value> = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["subject"] == id)
        .collect();
    assert_eq!(about.len(), 1);
    assert_eq!(about[0]["actor"], "proposer:mcp:rita");
    assert_eq!(about[0]["action"], "proposal.pending_review");
    hypod.ok(&["audit", "verify"]);
}

#[test]
fn a_draft_citing_an_unknown_experiment_is_refused_and_nothing_is_queued() {
    let hypod = sample(true);
    let before = all_proposals(&hypod).len();
    let mut bad = draft();
    bad["evidence"][0]["experiment_id"] = json!("exp-does-not-exist");
    let mut long = draft();
    long["title"] = json!("x".repeat(5_000));
    runtime().block_on(async {
        let client = stdio(&hypod, "rita", &[]).await;
        let answer = refused(&client, "submit_draft", json!({"draft": bad})).await;
        assert_eq!(answer["code"], "invalid_input");
        let message = answer["message"].as_str().expect("message");
        assert!(message.contains("nothing was queued"), "{message}");
        assert!(message.contains("exp-does-not-exist"), "{message}");
        // The attempt is not forgotten: a run of its own, in the audit log, names the agent.
        let run_id = message
            .split("(run ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .expect("the run that records it")
            .to_string();
        let entries = hypod.ok(&["audit", "export"]).json_lines();
        let recorded: Vec<&Value> = entries
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["subject"] == run_id.as_str())
            .collect();
        assert_eq!(recorded.len(), 1, "{entries:#}");
        assert_eq!(recorded[0]["action"], "run.succeeded");
        assert_eq!(recorded[0]["actor"], "mcp:rita", "{:#}", recorded[0]);
        // Oversized text: refused with the limit named.
        let answer = refused(&client, "submit_draft", json!({"draft": long})).await;
        let message = answer["message"].as_str().expect("message");
        assert!(message.contains("title"), "{message}");
        assert!(message.contains("limit"), "{message}");
        // Not the proposer's schema at all: refused by the schema, before anything runs.
        let wrong = client
            .call_tool(
                CallToolRequestParams::new("submit_draft").with_arguments(
                    json!({"draft": {"title": "hi"}})
                        .as_object()
                        .cloned()
                        .expect("object"),
                ),
            )
            .await;
        assert!(
            wrong.is_err() || wrong.as_ref().is_ok_and(|r| r.is_error == Some(true)),
            "{wrong:?}"
        );
        client.cancel().await.expect("close");
        // Refused drafts count toward the day's cap: after two, a cap of 2 refuses a good one.
        let client = stdio(&hypod, "rita", &[("HYPOD_MCP__SUBMISSIONS_PER_DAY", "2")]).await;
        let capped = refused(&client, "submit_draft", json!({"draft": draft()})).await;
        assert_eq!(capped["code"], "too_many_requests", "{capped}");
        client.cancel().await.expect("close");
    });
    assert_eq!(all_proposals(&hypod).len(), before, "nothing was queued");
}

#[test]
fn a_draft_repeating_an_open_proposal_is_recorded_as_blocked_over_http() {
    let hypod = sample(false);
    let bot = hypod
        .ok(&[
            "token", "create", "--user", "chatbot", "--role", "reviewer", "--agent", "--json",
        ])
        .json();
    assert_eq!(bot["kind"], "agent");
    let token = bot["token"].as_str().expect("a token").to_string();
    let daemon = serve(&hypod);
    let (first, second) = runtime().block_on(async {
        assert!(
            http(&daemon.addr, "hypod_not_a_token").await.is_err(),
            "an unknown token cannot connect"
        );
        let client = http(&daemon.addr, &token)
            .await
            .expect("connects with the token");
        let first = ok(&client, "submit_draft", json!({"draft": good_draft()})).await;
        let result = call(&client, "submit_draft", json!({"draft": good_draft()})).await;
        assert_ne!(result.is_error, Some(true), "{:?}", result.content);
        let text = text_of(&result);
        assert!(text.starts_with("recorded as blocked"), "{text}");
        client.cancel().await.expect("close");
        (first, result.structured_content.expect("the submission"))
    });
    let first_id = first["proposal"]["id"].as_str().expect("id");
    assert_eq!(first["proposal"]["status"], "pending_review");
    assert_eq!(first["proposal"]["provenance"]["proposer"], "mcp:chatbot");
    let blocked = &second["proposal"];
    assert_eq!(blocked["status"], "blocked");
    let reason = &blocked["verdicts"][0];
    assert_eq!(reason["rule_id"], "duplicate-of-open-proposal");
    assert_eq!(reason["effect"], "deny");
    assert!(
        reason["message"]
            .as_str()
            .is_some_and(|m| m.contains(first_id)),
        "{reason}"
    );
    let listed = hypod
        .ok(&["queue", "list", "--status", "blocked", "--json"])
        .json();
    assert!(listed
        .as_array()
        .expect("list")
        .iter()
        .any(|p| p["id"] == blocked["id"]));
}

#[test]
fn submissions_are_capped_per_minute_and_per_day() {
    let hypod = sample(false);
    let mut other = draft();
    other["segment"] = json!("new_visitors");
    other["title"] = json!("Social proof for new visitors on the product page");
    runtime().block_on(async {
        let client = stdio(
            &hypod,
            "rita",
            &[("HYPOD_MCP__SUBMISSIONS_PER_MINUTE", "1")],
        )
        .await;
        ok(&client, "submit_draft", json!({"draft": draft()})).await;
        let capped = refused(&client, "submit_draft", json!({"draft": other})).await;
        assert_eq!(capped["code"], "too_many_requests");
        assert!(
            capped["message"]
                .as_str()
                .is_some_and(|m| m.contains("mcp.submissions_per_minute")),
            "{capped}"
        );
        client.cancel().await.expect("close");
        // The day's count is the database's: a new process, with a day cap of 1, is refused.
        let client = stdio(&hypod, "rita", &[("HYPOD_MCP__SUBMISSIONS_PER_DAY", "1")]).await;
        let capped = refused(&client, "submit_draft", json!({"draft": other})).await;
        assert_eq!(capped["code"], "too_many_requests");
        assert!(
            capped["message"]
                .as_str()
                .is_some_and(|m| m.contains("mcp.submissions_per_day")),
            "{capped}"
        );
        client.cancel().await.expect("close");
    });
    assert_eq!(all_proposals(&hypod).len(), 1, "only the first was queued");
}

#[test]
fn agent_tokens_never_approve_or_reject_and_each_refusal_is_audited() {
    let hypod = sample(true);
    let bot = hypod
        .ok(&[
            "token",
            "create",
            "--user",
            "bot",
            "--role",
            "governance",
            "--agent",
            "--json",
        ])
        .json();
    let token = bot["token"].as_str().expect("a token").to_string();
    let listed = hypod.ok(&["token", "list"]).stdout;
    assert!(listed.contains("live (agent)"), "{listed}");
    let pending = hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json();
    let id = pending[0]["id"]
        .as_str()
        .expect("a pending proposal")
        .to_string();
    let daemon = serve(&hypod);
    let auth = format!("Bearer {token}");
    let approve = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{id}/approve"),
        &[("Authorization", &auth)],
        Some(("application/json", "{}")),
    );
    assert_eq!(approve.status, 403, "{}", approve.body);
    assert!(approve.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("agent")));
    let reject = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{id}/reject"),
        &[("Authorization", &auth)],
        Some(("application/json", r#"{"reason": "not worth it"}"#)),
    );
    assert_eq!(reject.status, 403, "{}", reject.body);
    // A comment is what an agent may add.
    let comment = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{id}/comments"),
        &[("Authorization", &auth)],
        Some((
            "application/json",
            r#"{"text": "a similar test is running"}"#,
        )),
    );
    assert_eq!(comment.status, 200, "{}", comment.body);
    drop(daemon);
    // On the command line too, whatever role the agent's token holds.
    let cli = hypod.run(&["queue", "approve", &id, "--as", "bot"]);
    assert_eq!(cli.code, Some(2), "{}", cli.stderr);
    assert!(cli.stderr.contains("agent"), "{}", cli.stderr);
    let shown = hypod.ok(&["queue", "show", &id, "--json"]).json();
    assert_eq!(shown["proposal"]["status"], "pending_review");
    let entries = hypod.ok(&["audit", "export"]).json_lines();
    let refusals: Vec<&Value> = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "review.refused" && e["subject"] == id.as_str())
        .collect();
    assert_eq!(refusals.len(), 3, "approve, reject, and the CLI approve");
    assert!(refusals.iter().all(|e| e["actor"] == "bot"));
    let created = entries
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "token.create" && e["subject"] == bot["id"])
        .expect("the token's creation entry");
    assert!(
        created["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"kind\":\"agent\"")),
        "{created}"
    );
    hypod.ok(&["audit", "verify"]);
}

#[test]
fn an_agent_token_turned_into_a_person_by_sql_is_refused() {
    let hypod = sample(false);
    let token = hypod
        .ok(&[
            "token", "create", "--user", "bot", "--role", "reviewer", "--agent", "--json",
        ])
        .json()["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let url = format!("sqlite://{}", hypod.path().join("hypod.db").display());
    runtime().block_on(async {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query("UPDATE tokens SET kind = 'person' WHERE user_name = 'bot'")
            .execute(&mut conn)
            .await
            .expect("update");
    });
    let daemon = serve(&hypod);
    let me = request(
        &daemon.addr,
        "GET",
        "/api/v1/me",
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(me.status, 401, "{}", me.body);
    assert!(me.body.contains("kind changed by hand"), "{}", me.body);
    drop(daemon);
    let verify = hypod.run(&["audit", "verify"]);
    assert_eq!(verify.code, Some(1), "{}", verify.stdout);
}

#[test]
fn the_http_endpoint_checks_the_token_and_the_origin_as_the_api_does() {
    let hypod = sample(false);
    let token = hypod.token("bot", "viewer");
    let daemon = serve(&hypod);
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;
    let accept = ("Accept", "application/json, text/event-stream");
    let body = Some(("application/json", initialize));
    let anonymous = request(&daemon.addr, "POST", "/mcp", &[accept], body);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(anonymous.json()["code"], "unauthenticated");
    assert!(anonymous
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    let auth = format!("Bearer {token}");
    let foreign = request(
        &daemon.addr,
        "POST",
        "/mcp",
        &[
            accept,
            ("Authorization", &auth),
            ("Origin", "https://evil.example.com"),
        ],
        body,
    );
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    let fine = request(
        &daemon.addr,
        "POST",
        "/mcp",
        &[accept, ("Authorization", &auth)],
        body,
    );
    assert_eq!(fine.status, 200, "{}", fine.body);
    assert!(fine.body.contains("\"name\":\"hypod\""), "{}", fine.body);
}
