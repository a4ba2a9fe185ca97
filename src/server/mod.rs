//! `hypod serve`: the daemon. It runs the scheduler and an HTTP server — `/healthz`,
//! `/readyz`, `/metrics`, the review API under `/api/v1` ([`api`]), the web UI under `/ui`
//! ([`ui`]) and the MCP server for agents at `/mcp` ([`crate::mcp`], behind the API's
//! bearer-token and Origin checks) — until SIGTERM or SIGINT, then shuts down gracefully: it stops claiming slots,
//! gives a run in flight [`GRACE`] to finish, releases its lease otherwise, and closes the
//! server.

pub mod api;
pub mod auth;
mod calibration;
pub mod charts;
pub mod health_view;
pub mod metrics;
pub mod notify;
pub mod push;
pub mod scheduler;
pub mod ui;

use crate::app::{App, AppError, AppResult};
use crate::schedule::Schedule;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a run in flight may go on after a shutdown signal before its lease is released.
pub const GRACE: Duration = Duration::from_secs(10);

/// What the HTTP handlers read: the use cases, the scheduler's heartbeat and the metrics.
pub struct ServerState {
    pub app: App,
    pub scheduler: watch::Receiver<scheduler::Status>,
    pub metrics: Arc<metrics::Metrics>,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
}

impl AsRef<App> for ServerState {
    fn as_ref(&self) -> &App {
        &self.app
    }
}

/// Every route of the server, on `state`.
pub fn router(state: Arc<ServerState>) -> Router {
    let (api, _) = api::router();
    let handle: crate::mcp::AppHandle = state.clone();
    let mcp = Router::new()
        .route_service("/mcp", crate::mcp::http_service(handle))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::mcp_caller,
        ));
    Router::new()
        .merge(mcp)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/openapi.json", get(api::openapi))
        .merge(api)
        .merge(ui::router())
        // The router's own 404 and 405 answer the API's JSON error, like every other error.
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn(api::close_after_unread_body))
        .layer(axum::extract::DefaultBodyLimit::max(auth::BODY_LIMIT))
        // Outermost: every answer counted by route template and status, refusals included.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// The daemon, built and listening, not yet serving: the scheduler, the notifier and the HTTP
/// server over one [`App`]. A test builds it on port 0 and runs it in-process.
pub struct Server {
    state: Arc<ServerState>,
    status: watch::Sender<scheduler::Status>,
    schedule: Schedule,
    listener: tokio::net::TcpListener,
    address: std::net::SocketAddr,
}

impl Server {
    /// Checks what a daemon needs before its first slot — the schedule, the database, the audit
    /// key and the policies — so that it fails at start, not at night.
    pub async fn build(app: App, listener: tokio::net::TcpListener) -> AppResult<Server> {
        let config = app.config();
        let schedule = Schedule::parse(&config.schedule.cron, &config.schedule.timezone)
            .map_err(|e| AppError::config(e.to_string()))?;
        app.store().await?;
        app.audit_key()?;
        app.governance()?;
        // Pushing on approval needs GrowthBook's key: missing, the daemon does not start.
        if config
            .export
            .growthbook
            .as_ref()
            .is_some_and(|g| g.push_on_approval)
        {
            app.push_client()?;
        }
        let address = listener.local_addr().map_err(AppError::from)?;
        let openapi = api::router()
            .1
            .to_json()
            .map_err(|e| AppError::runtime(format!("the OpenAPI document: {e}")))?;
        let (status, status_rx) = watch::channel(scheduler::Status::default());
        let state = Arc::new(ServerState {
            app,
            scheduler: status_rx,
            metrics: Arc::new(metrics::Metrics::default()),
            openapi,
        });
        Ok(Server {
            state,
            status,
            schedule,
            listener,
            address,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: no new slots, the run in
    /// flight gets [`GRACE`] to finish (its lease is released otherwise), the server closes.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> AppResult<()> {
        let Server {
            state,
            status,
            schedule,
            listener,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let scheduler = tokio::spawn(scheduler::run(
            state.clone(),
            schedule,
            stop_rx.clone(),
            status,
        ));
        // Notifications go out from their own task: a slow webhook never holds up a run.
        let config = state.app.config();
        let notifier = if config.notify.webhook_url.is_empty() {
            None
        } else {
            let store = state.app.store().await?.clone();
            Some(tokio::spawn(notify::run(
                config.clone(),
                store,
                stop_rx.clone(),
            )))
        };
        // Pushes to GrowthBook from their own task too, when it is configured with its key.
        let pusher = match config
            .export
            .growthbook
            .as_ref()
            .map(|_| state.app.push_client())
        {
            Some(Ok(client)) => Some(tokio::spawn(push::run(
                state.clone(),
                client,
                stop_rx.clone(),
            ))),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pushes to GrowthBook are off");
                None
            }
            None => None,
        };
        let mut server_stop = stop_rx.clone();
        // The peer address reaches the handlers: proxy authentication trusts listed proxies only.
        let service = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        });
        let signals = async {
            shutdown.await;
            tracing::info!("shutdown signal: no new slots; finishing the run in flight");
            eprintln!("hypod serve: shutting down");
            let _ = stop_tx.send(true);
        };
        let (served, ()) = tokio::join!(server, signals);
        served.map_err(AppError::from)?;
        if let Some(notifier) = notifier {
            let _ = notifier.await;
        }
        if let Some(pusher) = pusher {
            let _ = pusher.await;
        }
        match scheduler.await {
            Ok(result) => result,
            Err(join) => Err(AppError::runtime(format!("the scheduler stopped: {join}"))),
        }
    }
}

/// `hypod serve`: listens on `server.listen` and serves until SIGTERM or SIGINT.
pub async fn serve(app: App) -> AppResult<()> {
    let listen = app.config().server.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
        AppError::runtime(format!(
            "server.listen = {listen:?}: cannot listen there: {e}"
        ))
    })?;
    let server = Server::build(app, listener).await?;
    let address = server.address();
    tracing::info!(%address, "listening");
    // The address on stderr, also without logging: tests and operators using port 0 read it.
    eprintln!("hypod serve: listening on http://{address}");
    server.run_until(shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn metrics_text(
    State(state): State<Arc<ServerState>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let next_slot = state.scheduler.borrow().next_slot;
            match state.app.store().await {
                Ok(store) => {
                    let reads = state.app.read_stats();
                    state.metrics.render(store.as_ref(), next_slot, reads).await
                }
                Err(e) => format!("# the database cannot be opened: {e}\n"),
            }
        },
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    database: Check,
    policies: Check,
    scheduler: Check,
    next_slot: Option<String>,
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn of<T, E: std::fmt::Display>(result: Result<T, E>) -> Check {
        match result {
            Ok(_) => Check {
                ok: true,
                error: None,
            },
            Err(e) => Check {
                ok: false,
                error: Some(e.to_string()),
            },
        }
    }
}

/// Ready when the database answers (and, on SQLite, its file is still the one opened and
/// writable), the policies load and the scheduler loop is alive.
async fn readyz(State(state): State<Arc<ServerState>>) -> (StatusCode, Json<Readiness>) {
    let database = match state.app.store().await {
        Ok(store) => match store.check_ready().await {
            Ok(()) => Check::of(store.list_slots(1).await),
            Err(e) => Check::of(Err::<(), _>(e)),
        },
        Err(e) => Check::of(Err::<(), _>(e)),
    };
    let policies = Check::of(state.app.governance());
    let status = state.scheduler.borrow().clone();
    let scheduler = Check::of(status.alive());
    let ready = database.ok && policies.ok && scheduler.ok;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            database,
            policies,
            scheduler,
            next_slot: status.next_slot.map(|t| t.to_rfc3339()),
        }),
    )
}
