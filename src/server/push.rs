//! The push worker of `hypod serve`: with `[export.growthbook]` configured, it posts the push
//! outbox (approved proposals queued by their approval when `push_on_approval = true`, or by
//! `hypod export --push`) to GrowthBook once a second through [`crate::app::App::push_due`], until
//! shutdown. Holds, retries and the once-only rule are the outbox's (`src/app/push.rs`); this
//! loop never blocks a run or a request.

use super::ServerState;
use crate::app::push::PushClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Who the audit log names for the daemon's pushes.
const ACTOR: &str = "serve";

/// The loop, until `stop`.
pub async fn run(state: Arc<ServerState>, client: PushClient, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        // A pass that did something is followed at once by the next (a backlog drains).
        let busy = match state.app.push_due(&client, ACTOR).await {
            Ok(done) => !done.is_empty(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the push outbox");
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}
