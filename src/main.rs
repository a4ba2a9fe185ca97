//! The `hypod` binary: parses the command line, loads the configuration, calls one command.

use clap::{Parser, Subcommand};
use hypod::cli::{self, CliError};
use hypod::domain::ReviewAction;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hypod",
    version,
    about = "Proposes the next experiments worth running, governs them, and queues them for human approval. It never launches anything."
)]
struct Args {
    /// Configuration file (default: ./hypod.toml if present, else built-in defaults).
    #[arg(long, global = true, env = "HYPOD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
    /// One run now: analyse, propose, validate, govern, queue.
    Run {
        #[arg(long)]
        json: bool,
    },
    /// The proposal queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Proposals (approved by default) as drafts for an experimentation platform.
    Export {
        #[arg(long, default_value = "approved")]
        status: String,
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Governance tooling: lint, test, dry-run, explain and replay the policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        moment: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One proposal with evidence, statistics, verdicts, provenance and history.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a proposal.
    Approve {
        id: String,
        #[arg(long = "as", value_name = "USER")]
        actor: String,
        #[arg(long)]
        note: Option<String>,
        /// Your role: reviewer, governance or admin.
        #[arg(long, default_value = "reviewer")]
        role: String,
        #[arg(long)]
        json: bool,
    },
    /// Reject a proposal, with a reason.
    Reject {
        id: String,
        #[arg(long = "as", value_name = "USER")]
        actor: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "reviewer")]
        role: String,
        #[arg(long)]
        json: bool,
    },
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
    /// Check the hash chain of the audit log.
    Verify,
}

async fn dispatch(args: Args) -> Result<(), CliError> {
    if let Command::Demo { dir } = &args.command {
        return cli::demo(dir.as_deref()).await;
    }
    if let Command::Init { dir } = &args.command {
        let written = cli::init(dir)?;
        for path in &written {
            println!("wrote {}", path.display());
        }
        if written.is_empty() {
            println!(
                "nothing to write: every file already exists in {}",
                dir.display()
            );
        }
        return Ok(());
    }
    let config = cli::load_config(args.config.as_deref())?;
    match args.command {
        Command::Demo { .. } | Command::Init { .. } => Ok(()),
        Command::Import {
            files,
            skip_invalid,
            json,
        } => cli::import(&config, &files, skip_invalid, json).await,
        Command::Analyze { json } => cli::analyze(&config, json).await,
        Command::Run { json } => cli::run_command(&config, json, "cli").await,
        Command::Queue { command } => match command {
            QueueCommand::List {
                status,
                moment,
                json,
            } => cli::queue_list(&config, status.as_deref(), moment.as_deref(), json).await,
            QueueCommand::Show { id, json } => cli::queue_show(&config, &id, json).await,
            QueueCommand::Approve {
                id,
                actor,
                note,
                role,
                json,
            } => {
                cli::queue_review(
                    &config,
                    &id,
                    &actor,
                    &role,
                    ReviewAction::Approve,
                    note,
                    json,
                )
                .await
            }
            QueueCommand::Reject {
                id,
                actor,
                reason,
                role,
                json,
            } => {
                cli::queue_review(
                    &config,
                    &id,
                    &actor,
                    &role,
                    ReviewAction::Reject,
                    Some(reason),
                    json,
                )
                .await
            }
        },
        Command::Export { status, format } => cli::export(&config, &status, &format).await,
        Command::Policy { command } => match command {
            PolicyCommand::Check { json } => cli::policy_check(&config, json),
            PolicyCommand::Test { json } => cli::policy_test(&config, json),
            PolicyCommand::Eval { file, json } => cli::policy_eval(&config, &file, json).await,
            PolicyCommand::Explain { id, json } => cli::policy_explain(&config, &id, json).await,
            PolicyCommand::Replay { since, json } => {
                cli::policy_replay(&config, &since, json).await
            }
        },
        Command::Audit {
            command: AuditCommand::Verify,
        } => cli::audit_verify(&config).await,
        Command::Migrate => cli::migrate(&config).await,
        Command::Prompt {
            command: PromptCommand::Render { json },
        } => cli::prompt_render(&config, json).await,
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYPOD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hypod: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hypod: {}", err.message);
            ExitCode::from(err.code)
        }
    }
}
