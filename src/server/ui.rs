//! The web UI under `/ui`: server-rendered pages (minijinja templates compiled into the
//! binary, every value HTML-escaped by the template engine, no JavaScript build step and no
//! script at all) over the same use cases as the API — the queue with filters, a proposal with
//! its evidence, statistics, verdicts, provenance and history and the review forms for those
//! allowed, the runs with program health and small charts, the policies. Sign-in takes a token
//! into an HttpOnly, SameSite=Strict cookie scoped to `/ui` (with `auth = "token"`), which only
//! these routes accept — the API never does; forms are refused when they come from another
//! origin.

use super::auth::{identify, Surface, SESSION_COOKIE};
use super::ServerState;
use crate::app::access::{Permission, Principal};
use crate::app::queue::{PageRequest, ReviewRequest};
use crate::app::{AppError, ErrorKind};
use crate::config::AuthMode;
use crate::domain::{echo, units, Moment, ProposalStatus, QueueOrder, ReviewAction};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{context, Environment};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

const PAGE: usize = 50;

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` names turn on HTML auto-escaping for every `{{ }}`.
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("queue.html", include_str!("templates/queue.html")),
            ("proposal.html", include_str!("templates/proposal.html")),
            ("runs.html", include_str!("templates/runs.html")),
            (
                "runs_calibration.html",
                include_str!("templates/runs_calibration.html"),
            ),
            ("policies.html", include_str!("templates/policies.html")),
            ("error.html", include_str!("templates/error.html")),
        ] {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a built-in template does not compile");
            }
        }
        env.add_filter("pct", |v: Option<f64>| {
            v.map(|v| format!("{:+.1}%", v * 100.0))
                .unwrap_or_else(|| "—".into())
        });
        env.add_filter("rate", |v: Option<f64>| {
            v.map(units::rate).unwrap_or_else(|| "—".into())
        });
        env.add_filter("pvalue", |v: Option<f64>| {
            v.map(units::p_value).unwrap_or_else(|| "—".into())
        });
        env.add_filter("chance", |v: Option<f64>| {
            v.map(crate::analysis::engines::chance_text)
                .unwrap_or_else(|| "—".into())
        });
        env.add_filter("money", |v: Option<f64>, currency: Option<String>| {
            v.map(|v| units::money(v, currency.as_deref()))
                .unwrap_or_else(|| "—".into())
        });
        env.add_filter("num", |v: Option<f64>, digits: Option<usize>| {
            v.map(|v| format!("{v:.*}", digits.unwrap_or(2)))
                .unwrap_or_else(|| "—".into())
        });
        env
    })
}

/// A rendered page, or an error page with the right status.
fn render(name: &str, ctx: minijinja::Value) -> Response {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => {
            let mut response = Html(html).into_response();
            let headers = response.headers_mut();
            // No script runs on these pages, whatever a stored text holds.
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(
                    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::REFERRER_POLICY,
                header::HeaderValue::from_static("same-origin"),
            );
            response
        }
        Err(e) => {
            tracing::error!(template = name, error = %e, "cannot render a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render this page").into_response()
        }
    }
}

fn error_page(err: AppError, who: Option<&Principal>) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = render(
        "error.html",
        context! { title => "Error", status => status.as_u16(), message => err.message, me => who.map(me_value) },
    );
    *response.status_mut() = status;
    response
}

fn me_value(p: &Principal) -> minijinja::Value {
    minijinja::Value::from_serialize(serde_json::json!({
        "user": p.user.as_str(),
        "role": p.role,
        "may_review": p.may(Permission::Review),
        "may_audit": p.may(Permission::Audit),
    }))
}

/// The signed-in person; pages without one send the browser to the sign-in page.
struct Viewer(Principal);

impl FromRequestParts<Arc<ServerState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ServerState>,
    ) -> Result<Viewer, Response> {
        match identify(parts, state, Surface::Ui).await {
            Ok(p) => Ok(Viewer(p)),
            Err(e)
                if e.kind == ErrorKind::Unauthenticated
                    && state.app.config().server.auth == AuthMode::Token =>
            {
                Err(Redirect::to("/ui/login").into_response())
            }
            Err(e) => Err(error_page(e, None)),
        }
    }
}

/// Refuses a form posted from another site: the `Origin` (or, without one, the `Referer`)
/// must name this server's host. With the SameSite=Strict cookie this stops cross-site forms.
fn same_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let matches = source.is_some_and(|s| {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or("");
        rest.split('/').next() == Some(host)
    });
    if matches && !host.is_empty() {
        Ok(())
    } else {
        Err(AppError::new(
            ErrorKind::Forbidden,
            "this form was not sent from this site's own pages",
        ))
    }
}

pub fn router() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/queue") }))
        .route("/ui", get(|| async { Redirect::to("/ui/queue") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/queue", get(queue))
        .route("/ui/proposals/{id}", get(proposal))
        .route("/ui/proposals/{id}/{action}", post(review))
        .route("/ui/runs", get(runs))
        .route("/ui/policies", get(policies))
}

async fn login_page(State(state): State<Arc<ServerState>>) -> Response {
    render(
        "login.html",
        context! { title => "Sign in", proxy => state.app.config().server.auth == AuthMode::Proxy, failed => false },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return error_page(e, None);
    }
    let token = form.token.trim();
    match state.app.principal_for_token(token).await {
        Ok(_) => {
            let secure = if state.app.config().server.public_url.starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{SESSION_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200{secure}"
            );
            let mut response = Redirect::to("/ui/queue").into_response();
            if let Ok(value) = header::HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(_) => {
            let mut response = render(
                "login.html",
                context! { title => "Sign in", proxy => false, failed => true },
            );
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

async fn logout(headers: HeaderMap) -> Response {
    if let Err(e) = same_origin(&headers) {
        return error_page(e, None);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    // The cookie lives under /ui (so a browser does not even attach it to the API); one set
    // under / by an older version is cleared too.
    for path in ["/ui", "/"] {
        let cleared =
            format!("{SESSION_COOKIE}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0");
        if let Ok(value) = header::HeaderValue::from_str(&cleared) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueQuery {
    status: Option<String>,
    sort: Option<String>,
    moment: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

async fn queue(
    State(state): State<Arc<ServerState>>,
    Viewer(me): Viewer,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error_page(AppError::input("unknown filter in the address"), Some(&me));
    };
    let status = nonempty(query.status);
    let moment = nonempty(query.moment);
    let text = nonempty(query.q).map(|q| q.chars().take(200).collect::<String>());
    let order = match nonempty(query.sort).as_deref() {
        None => QueueOrder::Value,
        Some(s) => match QueueOrder::parse(s) {
            Some(o) => o,
            None => {
                return error_page(
                    AppError::input(format!(
                        "unknown sort {}: sort by value, age or expiry",
                        echo(s)
                    )),
                    Some(&me),
                )
            }
        },
    };
    let request = PageRequest {
        order,
        status: match status.as_deref() {
            // The queue opens on what waits for a reviewer; "all" shows every status.
            None => Some(ProposalStatus::PendingReview),
            Some("all") => None,
            Some(s) => match ProposalStatus::parse(s) {
                Some(s) => Some(s),
                None => {
                    return error_page(
                        AppError::input(format!("unknown status {}", echo(s))),
                        Some(&me),
                    )
                }
            },
        },
        moment: match moment.as_deref() {
            None => None,
            Some(m) => match Moment::parse(m) {
                Some(m) => Some(m),
                None => {
                    return error_page(
                        AppError::input(format!("unknown moment {}", echo(m))),
                        Some(&me),
                    )
                }
            },
        },
        text: text.clone(),
        cursor: nonempty(query.cursor),
        limit: Some(PAGE),
        ..PageRequest::default()
    };
    let page = match state.app.queue_page(request).await {
        Ok(page) => page,
        Err(e) => return error_page(e, Some(&me)),
    };
    let counts = match state.app.queue_counts().await {
        Ok(counts) => counts,
        Err(e) => return error_page(e, Some(&me)),
    };
    let config = state.app.config();
    let expire_days = config.proposer.expire_pending_after_days;
    let now = crate::now();
    // Each row with its age and, while pending, the day a run expires it.
    let items: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|p| {
            let expires =
                (p.status == ProposalStatus::PendingReview && expire_days > 0).then(|| {
                    (p.created_at + chrono::Duration::days(i64::from(expire_days)))
                        .format("%Y-%m-%d")
                        .to_string()
                });
            let mut row = serde_json::to_value(p).unwrap_or_default();
            if let Some(fields) = row.as_object_mut() {
                fields.insert("age".into(), units::age(p.created_at, now).into());
                fields.insert("expires".into(), expires.into());
            }
            row
        })
        .collect();
    let counts: Vec<serde_json::Value> = counts
        .iter()
        .map(|(s, n)| serde_json::json!({ "status": s.as_str(), "count": n }))
        .collect();
    let total: u64 = counts.iter().filter_map(|c| c["count"].as_u64()).sum();
    render(
        "queue.html",
        context! {
            title => "Queue",
            me => me_value(&me),
            items => minijinja::Value::from_serialize(&items),
            counts => minijinja::Value::from_serialize(&counts),
            total => total,
            currency => config.program.currency.clone(),
            statuses => ProposalStatus::ALL.map(|s| s.as_str()),
            moments => Moment::ALL.map(|m| m.as_str()),
            sorts => QueueOrder::ALL.map(|o| o.as_str()),
            sort => order.as_str(),
            status => status.unwrap_or_else(|| ProposalStatus::PendingReview.as_str().to_string()),
            moment => moment,
            q => text,
            next => page.next_cursor,
        },
    )
}

async fn proposal(
    State(state): State<Arc<ServerState>>,
    Viewer(me): Viewer,
    Path(id): Path<String>,
    Query(flash): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let view = match state.app.show(&id).await {
        Ok(view) => view,
        Err(e) => return error_page(e, Some(&me)),
    };
    let pending = view.proposal.status == ProposalStatus::PendingReview;
    let escalated = crate::domain::escalates(&view.proposal.verdicts);
    render(
        "proposal.html",
        context! {
            title => view.proposal.draft.title.clone(),
            me => me_value(&me),
            view => minijinja::Value::from_serialize(&view),
            pending => pending,
            escalated => escalated,
            may_review => me.may(Permission::Review),
            done => flash.get("done").cloned(),
            currency => state.app.config().program.currency.clone(),
            bayesian => state.app.config().analysis.engine == crate::analysis::engines::Engine::Bayesian,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewForm {
    text: Option<String>,
}

async fn review(
    State(state): State<Arc<ServerState>>,
    Viewer(me): Viewer,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ReviewForm>,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return error_page(e, Some(&me));
    }
    let action = match action.as_str() {
        "approve" => ReviewAction::Approve,
        "reject" => ReviewAction::Reject,
        "comment" => ReviewAction::Comment,
        _ => {
            return error_page(
                AppError::new(ErrorKind::NotFound, "no such action"),
                Some(&me),
            )
        }
    };
    let request = ReviewRequest {
        id: id.clone(),
        principal: me.clone(),
        action,
        note: form.text,
    };
    match state.app.review(request).await {
        Ok(_) => Redirect::to(&format!(
            "/ui/proposals/{}?done={}",
            urlencode(&id),
            action.as_str()
        ))
        .into_response(),
        Err(e) => error_page(e, Some(&me)),
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn runs(State(state): State<Arc<ServerState>>, Viewer(me): Viewer) -> Response {
    let runs = match state.app.runs(Some(30)).await {
        Ok(runs) => runs,
        Err(e) => return error_page(e, Some(&me)),
    };
    let analysis = match state.app.analyze().await {
        Ok(a) => a,
        Err(e) => return error_page(e, Some(&me)),
    };
    let program = &analysis.program;
    // Small charts, drawn as bars in the template: queued per run, coverage per moment.
    let max_queued = runs
        .iter()
        .map(|r| r.summary.queued)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<serde_json::Value> = runs
        .iter()
        .rev()
        .map(|r| {
            serde_json::json!({
                "id": r.id, "queued": r.summary.queued, "blocked": r.summary.blocked,
                "height": (r.summary.queued as f64 / max_queued as f64 * 60.0).round() + 2.0,
            })
        })
        .collect();
    let max_cov = program
        .moment_coverage_12m
        .values()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let coverage: Vec<serde_json::Value> = program
        .moment_coverage_12m
        .iter()
        .map(|(m, n)| {
            serde_json::json!({
                "moment": m, "count": n,
                "width": (*n as f64 / max_cov as f64 * 200.0).round() + 2.0,
            })
        })
        .collect();
    // The health charts are SVG built (and escaped) by `charts`: safe markup for the template.
    let health =
        super::health_view::health_view(program, state.app.config().program.currency.as_deref());
    let charts: Vec<minijinja::Value> = health
        .charts
        .iter()
        .map(|svg| minijinja::Value::from_safe_string(svg.clone()))
        .collect();
    let calibration = match state.app.last_backtest().await {
        Ok(kept) => kept.map(|b| super::calibration::view(&b)),
        Err(e) => return error_page(e, Some(&me)),
    };
    render(
        "runs.html",
        context! {
            title => "Runs",
            calibration => calibration,
            me => me_value(&me),
            runs => minijinja::Value::from_serialize(&runs),
            program => minijinja::Value::from_serialize(program),
            health => minijinja::Value::from_serialize(&health),
            charts => charts,
            bars => minijinja::Value::from_serialize(&bars),
            coverage => minijinja::Value::from_serialize(&coverage),
        },
    )
}

async fn policies(State(state): State<Arc<ServerState>>, Viewer(me): Viewer) -> Response {
    match state.app.policy_set() {
        Ok(set) => render(
            "policies.html",
            context! {
                title => "Policies",
                me => me_value(&me),
                set => minijinja::Value::from_serialize(&set),
            },
        ),
        Err(e) => error_page(e, Some(&me)),
    }
}
