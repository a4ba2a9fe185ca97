//! `hypod serve`: the daemon. It runs the scheduler and an HTTP server — `/healthz`,
//! `/readyz`, `/metrics`, the review API under `/api/v1` ([`api`]) and the web UI under `/ui`
//! ([`ui`]) — until SIGTERM or SIGINT, then shuts down gracefully: it stops claiming slots,
//! gives a run in flight [`GRACE`] to finish, releases its lease otherwise, and closes the
//! server.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod notify;
pub mod scheduler;
pub mod ui;

use crate::app::{self, AppError, AppResult};
use crate::config::Config;
use crate::schedule::Schedule;
use crate::store::Store;
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

/// What the HTTP handlers read: the configuration and the scheduler's heartbeat.
pub struct ServerState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub scheduler: watch::Receiver<scheduler::Status>,
    pub metrics: Arc<metrics::Metrics>,
    /// The key the audit log is verified with.
    pub audit_key: crate::store::AuditKey,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
}

/// Every route of the server, on `state`.
pub fn router(state: Arc<ServerState>) -> Router {
    let (api, _) = api::router();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/openapi.json", get(api::openapi))
        .merge(api)
        .merge(ui::router())
        .layer(axum::extract::DefaultBodyLimit::max(api::BODY_LIMIT))
        .with_state(state)
}

/// Starts the daemon and returns when it has shut down.
pub async fn serve(config: Config) -> AppResult<()> {
    let schedule = Schedule::parse(&config.schedule.cron, &config.schedule.timezone)
        .map_err(|e| AppError::config(e.to_string()))?;
    // Fail at start, not at the first slot: the database, the policies and the port.
    let store: Arc<dyn Store> = Arc::from(app::open_store(&config).await?);
    let audit_key = app::audit_key(&config)?;
    app::load_governance(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| {
            AppError::runtime(format!(
                "server.listen = {:?}: cannot listen there: {e}",
                config.server.listen
            ))
        })?;
    let address = listener.local_addr().map_err(AppError::from)?;
    tracing::info!(%address, "listening");
    // The address on stderr, also without logging: tests and operators using port 0 read it.
    eprintln!("hypod serve: listening on http://{address}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (status_tx, status_rx) = watch::channel(scheduler::Status::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let scheduler = tokio::spawn(scheduler::run(
        config.clone(),
        store.clone(),
        schedule,
        stop_rx.clone(),
        status_tx,
        metrics.clone(),
    ));
    // Notifications go out from their own task: a slow webhook never holds up a run.
    let notifier = (!config.notify.webhook_url.is_empty())
        .then(|| tokio::spawn(notify::run(config.clone(), store.clone(), stop_rx.clone())));
    let openapi = api::router()
        .1
        .to_json()
        .map_err(|e| AppError::runtime(format!("the OpenAPI document: {e}")))?;
    let state = Arc::new(ServerState {
        config,
        store,
        scheduler: status_rx,
        metrics,
        audit_key,
        openapi,
    });
    let router = router(state);
    let mut server_stop = stop_rx.clone();
    // The peer address reaches the handlers: proxy authentication trusts listed proxies only.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    });
    let signals = async {
        shutdown_signal().await;
        tracing::info!("shutdown signal: no new slots; finishing the run in flight");
        eprintln!("hypod serve: shutting down");
        let _ = stop_tx.send(true);
    };
    let (served, ()) = tokio::join!(server, signals);
    served.map_err(AppError::from)?;
    if let Some(notifier) = notifier {
        let _ = notifier.await;
    }
    match scheduler.await {
        Ok(result) => result,
        Err(join) => Err(AppError::runtime(format!("the scheduler stopped: {join}"))),
    }
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
            state.metrics.render(state.store.as_ref(), next_slot).await
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

/// Ready when the database answers, the policies load and the scheduler loop is alive.
async fn readyz(State(state): State<Arc<ServerState>>) -> (StatusCode, Json<Readiness>) {
    let database = Check::of(state.store.list_slots(1).await);
    let policies = Check::of(app::load_governance(&state.config));
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
