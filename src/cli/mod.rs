//! The command layer of the `hypod` binary: parses the command line (clap types every value),
//! calls one use case of [`crate::app`], and presents its view as text or as JSON (`--json`).
//! Errors become the exit codes the design fixes (2 for bad usage, configuration or input; 1
//! for runtime failures); a closed stdout (`| head`) ends the command quietly with 0.

mod backtest;
mod text;

use crate::app::queue::ReviewRequest;
use crate::app::{self, App, AppError, AppResult};
use crate::domain::{Moment, ProposalStatus, ReviewAction, Role, Trigger};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// How `export` writes its drafts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON array.
    Json,
    /// One JSON object a line.
    Ndjson,
    /// A JSON array of the request bodies of GrowthBook's `POST /api/v1/experiments`
    /// (`[export.growthbook]`).
    Growthbook,
}

/// The proposers `backtest --proposer` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BacktestProposer {
    Builtin,
    Openai,
}

fn parse_every(text: &str) -> Result<crate::analysis::backtest::Every, String> {
    crate::analysis::backtest::Every::parse(text).ok_or_else(|| {
        format!("{text:?} is not a cutoff interval; use 1m (monthly) or 1w (weekly)")
    })
}

fn parse_moment(text: &str) -> Result<Moment, String> {
    Moment::parse(text).ok_or_else(|| {
        format!(
            "{text:?} is not a moment; use one of: {}",
            Moment::ALL.map(|m| m.as_str()).join(", ")
        )
    })
}

#[derive(Parser)]
#[command(
    name = "hypod",
    version,
    about = "Proposes the next experiments worth running, governs them, and queues them for human approval. It never launches anything."
)]
pub struct Args {
    /// Configuration file (default: ./hypod.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "HYPOD_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines on stderr as text, or as JSON objects (one a line, with the run's and stage's
    /// spans and, when a span closes, its duration). Levels from HYPOD_LOG (default warn).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a demo folder, import the bundled sample history, run one cycle, print the queue.
    Demo {
        /// Folder to create (default: ./hypod-demo, or -2, -3… if it exists).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write a starter hypod.toml, policies/ and prompts/ (existing files are kept).
    Init {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Import experiments from .ndjson, .json or .csv files (- reads stdin); upserts by id.
    Import {
        #[arg(required = true)]
        files: Vec<String>,
        /// Import the valid records and report the invalid ones instead of importing nothing.
        #[arg(long)]
        skip_invalid: bool,
        #[arg(long)]
        json: bool,
    },
    /// Per-experiment statistics and program health.
    Analyze {
        #[arg(long)]
        json: bool,
    },
    /// The lever knowledge base: each lever's pooled effect (random-effects meta-analysis of
    /// its valid concluded tests), per moment and per segment.
    Levers {
        #[arg(long)]
        json: bool,
    },
    /// One run now: sync the sources (unless --no-sync), analyse, propose, validate, govern,
    /// queue.
    Run {
        #[arg(long)]
        json: bool,
        /// Run on the history as stored, without syncing the [[source]]s first.
        #[arg(long)]
        no_sync: bool,
    },
    /// Had we listened to hypod a year ago? Re-runs the proposer as a nightly run would at each
    /// cutoff on the history as it was known then (nothing is queued) and scores its proposals
    /// against the experiments the program went on to run; keeps the result for the runs page.
    Backtest {
        /// The first cutoff, YYYY-MM-DD (default: 12 months before the history's last date).
        #[arg(long, value_name = "DATE")]
        from: Option<chrono::NaiveDate>,
        /// How far apart the cutoffs are: 1m (monthly) or 1w (weekly).
        #[arg(long, default_value = "1m", value_parser = parse_every)]
        every: crate::analysis::backtest::Every,
        /// The proposer to backtest (default: the configured one).
        #[arg(long, value_enum)]
        proposer: Option<BacktestProposer>,
        /// The model's token budget for an openai backtest (required with it): the backtest
        /// stops before a cutoff would go past it.
        #[arg(long, value_name = "N")]
        max_tokens: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Pull the experiment history from the configured [[source]]s (GrowthBook, a SQL
    /// warehouse, files), validate it as import does, and upsert it; all or nothing per source.
    Sync {
        /// Only the source with this name.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The daemon: runs the schedule (each slot once, across processes and replicas) and the
    /// HTTP server (/healthz, /readyz) until SIGTERM or SIGINT.
    Serve,
    /// The MCP server on stdin/stdout, for an agent (an editor's assistant) acting for USER, who
    /// must hold a live token: it reads the queue and the evidence, suggests drafts and
    /// comments, and never approves or rejects.
    Mcp {
        #[arg(long = "as", value_name = "USER")]
        actor: String,
    },
    /// The proposal queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Proposals (approved by default) as drafts for an experimentation platform.
    Export {
        #[arg(long, value_enum, default_value = "approved")]
        status: ProposalStatus,
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
        /// Push the approved proposals to GrowthBook now (`[export.growthbook]`), each at most
        /// once, through the same outbox as `hypod serve`; prints each one's push.
        #[arg(long, conflicts_with_all = ["status", "format"])]
        push: bool,
        /// With --push: the pushes as JSON.
        #[arg(long, requires = "push")]
        json: bool,
    },
    /// Governance tooling: lint, test, dry-run, explain and replay the policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit log: verify, head, export.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// API tokens: create (printed once, stored hashed), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Apply database migrations (also done on start).
    Migrate,
    /// The prompts of the openai proposer.
    Prompt {
        #[command(subcommand)]
        command: PromptCommand,
    },
}

#[derive(Subcommand)]
enum PromptCommand {
    /// Print the exact messages the next run would send to the model.
    Render {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List proposals, highest priority first.
    List {
        #[arg(long, value_enum)]
        status: Option<ProposalStatus>,
        #[arg(long, value_parser = parse_moment)]
        moment: Option<Moment>,
        #[arg(long)]
        json: bool,
    },
    /// One proposal with evidence, statistics, verdicts, provenance and history.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a proposal, as USER (who must hold a token: their role is the token's).
    Approve {
        id: String,
        #[arg(long = "as", value_name = "USER")]
        actor: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Reject a proposal, with a reason, as USER (who must hold a token).
    Reject {
        id: String,
        #[arg(long = "as", value_name = "USER")]
        actor: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Comment on a proposal (changes no status), as USER (who must hold a token).
    Comment {
        id: String,
        #[arg(long = "as", value_name = "USER")]
        actor: String,
        #[arg(long)]
        text: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for USER in ROLE; the token is printed once and only its hash kept.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, value_enum)]
        role: Role,
        /// An agent's token (an editor assistant, a chat bot: `hypod mcp`, `/mcp`): it reads
        /// and suggests drafts, and never approves or rejects whatever its role.
        #[arg(long)]
        agent: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every token (never its secret), revoked ones included.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Compile every rule and lint it against a sample proposal (unknown fields, duplicate ids).
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Run the cases in policies/tests/*.toml.
    Test {
        #[arg(long)]
        json: bool,
    },
    /// The verdicts a draft (a JSON file) would get, without queueing it.
    Eval {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Why a queued proposal got its verdicts.
    Explain {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-evaluate recent proposals against the policies on disk and list what would change.
    Replay {
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every link and key of the audit log, its sealed head, and that it explains every
    /// proposal's status and reviews. Exit 1 when anything is wrong.
    Verify {
        /// A head kept earlier (SEQ:HASH from `audit head`, a run record or a notification):
        /// also check that the log still holds it.
        #[arg(long)]
        head: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The current head of the chain (SEQ:HASH), to keep somewhere else.
    Head {
        #[arg(long)]
        json: bool,
    },
    /// The log as NDJSON (one entry a line, oldest first), for a SIEM.
    Export {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

/// Where stdout went: a closed pipe is not an error (`hypod analyze --json | head`).
struct Closed;

/// Writes a view as JSON to stdout through a buffer, without building the text in memory
/// (`analyze --json` is computed as it is written): indented on a terminal, compact when piped
/// or redirected (as `gh` does; a third smaller and faster to write and parse).
fn write_json_stdout(view: &impl serde::Serialize) -> AppResult<Result<(), Closed>> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = if terminal {
        serde_json::to_writer_pretty(&mut out, view)
    } else {
        serde_json::to_writer(&mut out, view)
    };
    match written {
        Ok(()) => Ok(out
            .write_all(b"\n")
            .and_then(|()| out.flush())
            .map_err(|_| Closed)),
        // serde_json reports a failed write as an I/O error; anything else is a bug in a view.
        Err(e) if e.is_io() => Ok(Err(Closed)),
        Err(e) => Err(e.into()),
    }
}

/// Text for people: stored text (titles, names, reasons) may hold control characters, so
/// every one but the line feed is shown escaped (`\u{1b}`), never sent to the terminal.
fn write_text_stdout(text: &str) -> Result<(), Closed> {
    write_stdout(&crate::domain::escape_for_terminal(text, true))
}

fn write_stdout(text: &str) -> Result<(), Closed> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(_) => Err(Closed),
    }
}

/// A view as pretty JSON (the stable `--json` form) or as text.
fn present<T: serde::Serialize>(
    view: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> AppResult<()> {
    // A reader that went away (a closed pipe) ends the command quietly.
    if json {
        let _ = write_json_stdout(view)?;
    } else {
        let _ = write_text_stdout(&text(view));
    }
    Ok(())
}

fn eprint(text: &str) {
    let text = crate::domain::escape_for_terminal(text, true);
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// `queue approve`, `queue reject` and `queue comment`: `--as USER` must hold a live token,
/// and acts in that token's role.
async fn review(
    app: &App,
    id: String,
    actor: String,
    action: ReviewAction,
    note: Option<String>,
    json: bool,
) -> AppResult<()> {
    let principal = app.cli_principal(&actor).await?;
    let request = ReviewRequest {
        id,
        principal,
        action,
        note,
    };
    let outcome = app.review(request).await.map_err(|mut err| {
        // The domain names no flag (the API and the UI ask for a reason too); here it is one.
        if err.message == crate::domain::review::ReviewError::ReasonRequired.to_string() {
            err.message.push_str(" (--reason)");
        }
        err
    })?;
    present(&outcome, json, text::review)
}

/// Says on stderr which proposals an export or push withheld, and why.
fn withheld(problems: &[crate::store::AuditProblem]) {
    for problem in problems {
        eprint(&format!(
            "hypod: withheld proposal {}: {}\n",
            problem.proposal_id.as_deref().unwrap_or("?"),
            problem.problem
        ));
    }
}

/// Whether a command only reads: then it opens the database read-only and never migrates it,
/// so it works on a read-only copy.
fn reads_only(command: &Command) -> bool {
    match command {
        Command::Analyze { .. } | Command::Levers { .. } | Command::Prompt { .. } => true,
        Command::Export { push, .. } => !push,
        Command::Queue { command } => {
            matches!(
                command,
                QueueCommand::List { .. } | QueueCommand::Show { .. }
            )
        }
        Command::Audit { command } => {
            matches!(
                command,
                AuditCommand::Verify { .. } | AuditCommand::Head { .. }
            )
        }
        Command::Policy { command } => matches!(
            command,
            PolicyCommand::Eval { .. }
                | PolicyCommand::Explain { .. }
                | PolicyCommand::Replay { .. }
        ),
        _ => false,
    }
}

/// Who a token is created or revoked by, in the audit log: the shell account.
fn shell_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{}", crate::domain::escape_for_terminal(&user, false))
}

async fn dispatch(args: Args) -> AppResult<()> {
    if let Command::Demo { dir } = &args.command {
        let demo = app::setup::demo(dir.as_deref()).await?;
        return present(&demo, false, text::demo);
    }
    if let Command::Init { dir } = &args.command {
        let written = app::setup::init(dir)?;
        return present(&written, false, |w| text::init(w, dir));
    }
    let config = App::load_config(args.config.as_deref())?;
    let app = if reads_only(&args.command) {
        App::read_only(config)
    } else {
        App::new(config)
    };
    match args.command {
        Command::Demo { .. } | Command::Init { .. } => Ok(()),
        Command::Import {
            files,
            skip_invalid,
            json,
        } => {
            let summary = app.import(&files, skip_invalid, &shell_actor()).await?;
            if !json {
                eprint(&text::import_skipped(&summary));
            }
            present(&summary, json, text::import)
        }
        Command::Analyze { json } => present(&*app.analyze().await?, json, text::analysis),
        Command::Levers { json } => present(&app.levers().await?, json, text::levers),
        Command::Serve => crate::server::serve(app).await,
        Command::Mcp { actor } => {
            let principal = app.cli_principal(&actor).await?;
            crate::mcp::serve_stdio(app, principal).await
        }
        Command::Run { json, no_sync } => {
            let sync_as = (!no_sync).then(shell_actor);
            let view = app.run_now_syncing(Trigger::Cli, sync_as).await?;
            present(&view, json, text::run)?;
            view.outcome()
        }
        Command::Backtest {
            from,
            every,
            proposer,
            max_tokens,
            json,
        } => {
            let request = app::backtest::BacktestRequest {
                from,
                every,
                proposer: proposer.map(|p| match p {
                    BacktestProposer::Builtin => crate::config::ProposerKind::Builtin,
                    BacktestProposer::Openai => crate::config::ProposerKind::Openai,
                }),
                max_tokens,
            };
            let progress = backtest::Progress::on_stderr();
            let view = app.backtest(&request, &progress).await;
            progress.clear();
            let view = view?;
            if let Some(stopped) = &view.stopped {
                eprint(&format!("hypod: {stopped}\n"));
            }
            present(&view, json, backtest::summary)
        }
        Command::Sync { source, json } => {
            let progress = text::SyncProgress::on_stderr();
            let report = app
                .sync(source.as_deref(), &shell_actor(), &progress)
                .await?;
            progress.clear();
            present(&report, json, text::sync)?;
            report.outcome()
        }
        Command::Queue { command } => match command {
            QueueCommand::List {
                status,
                moment,
                json,
            } => {
                let currency = app.config().program.currency.clone();
                present(&app.list(status, moment).await?, json, |list| {
                    text::queue_list(list, currency.as_deref())
                })
            }
            QueueCommand::Show { id, json } => present(&app.show(&id).await?, json, text::proposal),
            QueueCommand::Approve {
                id,
                actor,
                note,
                json,
            } => review(&app, id, actor, ReviewAction::Approve, note, json).await,
            QueueCommand::Reject {
                id,
                actor,
                reason,
                json,
            } => review(&app, id, actor, ReviewAction::Reject, Some(reason), json).await,
            QueueCommand::Comment {
                id,
                actor,
                text,
                json,
            } => review(&app, id, actor, ReviewAction::Comment, Some(text), json).await,
        },
        Command::Token { command } => match command {
            TokenCommand::Create {
                user,
                role,
                agent,
                json,
            } => {
                let kind = if agent {
                    crate::domain::TokenKind::Agent
                } else {
                    crate::domain::TokenKind::Person
                };
                let created = app.create_token(&user, role, kind, &shell_actor()).await?;
                present(&created, json, text::token_created)
            }
            TokenCommand::List { json } => present(&app.list_tokens().await?, json, text::tokens),
            TokenCommand::Revoke { id } => {
                app.revoke_token(&id, &shell_actor()).await?;
                let _ = write_text_stdout(&format!("token {id} revoked\n"));
                Ok(())
            }
        },
        Command::Export {
            push: true, json, ..
        } => {
            let report = app.push_approved(&shell_actor()).await?;
            withheld(&report.withheld);
            present(&report, json, text::pushes)?;
            report.outcome()
        }
        Command::Export { status, format, .. } => {
            if format == ExportFormat::Growthbook {
                let export = app.export_growthbook(status).await?;
                withheld(&export.withheld);
                return present(&export.drafts, true, |_| String::new());
            }
            let export = app.export(status).await?;
            withheld(&export.withheld);
            let drafts = export.drafts;
            match format {
                ExportFormat::Ndjson => {
                    let mut out = String::new();
                    for draft in &drafts {
                        out.push_str(&serde_json::to_string(draft)?);
                        out.push('\n');
                    }
                    let _ = write_stdout(&out);
                    Ok(())
                }
                ExportFormat::Json | ExportFormat::Growthbook => {
                    present(&drafts, true, |_| String::new())
                }
            }
        }
        Command::Policy { command } => match command {
            PolicyCommand::Check { json } => {
                let report = app.check_policies()?;
                present(&report, json, text::policy_check)?;
                report.outcome()
            }
            PolicyCommand::Test { json } => {
                let tests = app.test_policies()?;
                present(&tests, json, text::policy_tests)?;
                tests.outcome()
            }
            PolicyCommand::Eval { file, json } => {
                let draft = app::policy::read_draft(&file)?;
                present(&app.evaluate_draft(&draft).await?, json, text::evaluation)
            }
            PolicyCommand::Explain { id, json } => {
                present(&app.explain(&id).await?, json, text::explanation)
            }
            PolicyCommand::Replay { since, json } => {
                let window = app::policy::parse_since(&since)?;
                let report = app.replay(window).await?;
                present(&report, json, |r| text::replay(r, &since))
            }
        },
        Command::Audit { command } => match command {
            AuditCommand::Verify { head, json } => {
                let expected = head.as_deref().map(app::audit::parse_head).transpose()?;
                let report = app.verify_audit(expected.as_ref()).await?;
                present(&report, json, text::audit_report)?;
                if report.intact {
                    Ok(())
                } else {
                    Err(AppError::runtime(""))
                }
            }
            AuditCommand::Head { json } => {
                let head = app.audit_head().await?;
                present(&head, json, |h| match h {
                    Some(h) => format!("{h}\n"),
                    None => "the audit log is empty\n".into(),
                })
            }
            AuditCommand::Export { after } => {
                let mut after = after;
                loop {
                    let page = app.audit_entries(after, 1000).await?;
                    let Some(last) = page.last() else { break };
                    after = last.seq;
                    let mut out = String::new();
                    for entry in &page {
                        out.push_str(&serde_json::to_string(entry)?);
                        out.push('\n');
                    }
                    if write_stdout(&out).is_err() {
                        break;
                    }
                }
                Ok(())
            }
        },
        Command::Migrate => {
            let url = app.migrate().await?;
            let url = crate::config::redact_url_passwords(&url);
            let _ = write_stdout(&format!("database {url} is migrated\n"));
            Ok(())
        }
        Command::Prompt {
            command: PromptCommand::Render { json },
        } => {
            let rendered = app.render_prompt().await?;
            present(&rendered, json, text::prompt)?;
            if !json {
                eprint(&text::prompt_stats(&rendered));
            }
            Ok(())
        }
    }
}

/// The whole binary: parse, run one command, exit with its code.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HYPOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hypod: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(AppError { message, .. }) if message.is_empty() => ExitCode::from(1),
        Err(err) => {
            eprintln!(
                "hypod: {}",
                crate::domain::escape_for_terminal(&err.message, true)
            );
            ExitCode::from(err.exit_code())
        }
    }
}
