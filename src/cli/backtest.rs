//! `hypod backtest` on the command line: its progress on stderr and its text summary (the
//! `--json` form is the view itself).

use crate::analysis::backtest::Every;
use crate::analysis::backtest::Figures;
use crate::app::backtest::{BacktestProgress, BacktestView, Step};
use std::fmt::Write as _;
use std::io::IsTerminal as _;

/// Progress on stderr: one line per cutoff (rewritten in place on a terminal).
pub struct Progress {
    terminal: bool,
}

impl Progress {
    pub fn on_stderr() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Ends the line rewritten in place.
    pub fn clear(&self) {
        if self.terminal {
            eprint!("\r\x1b[K");
        }
    }
}

impl BacktestProgress for Progress {
    fn cutoff_done(&self, step: &Step) {
        let tokens = step
            .tokens
            .map(|t| format!(", {t} tokens"))
            .unwrap_or_default();
        let line = format!(
            "backtest: {}/{} cutoffs, {:.1} s, {}{tokens}",
            step.done, step.total, step.elapsed_seconds, step.proposer
        );
        if self.terminal {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

fn pct(value: Option<f64>) -> String {
    value
        .map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "—".into())
}

fn signed(value: Option<f64>) -> String {
    value
        .map(|v| format!("{:+.0}%", v * 100.0))
        .unwrap_or_else(|| "—".into())
}

fn row(out: &mut String, name: &str, f: &Figures) {
    let _ = writeln!(
        out,
        "{name:<22} {:>9} {:>5} {:>7} {:>6} {:>8} {:>7} {:>6} {:>10} {:>9}",
        f.proposals,
        f.ideas,
        f.matched,
        f.tested,
        pct(f.coverage),
        pct(f.proven_rate),
        pct(f.base_rate),
        signed(f.lift_over_base_rate),
        pct(f.foresight),
    );
}

/// The text summary.
pub fn summary(view: &BacktestView) -> String {
    let mut out = String::new();
    let every = match view.every {
        Every::Month => "monthly",
        Every::Week => "weekly",
    };
    let _ = writeln!(
        out,
        "Backtest of the {} proposer: {} {every} cutoff(s) from {} (history to {}), {:.1} s",
        view.proposer,
        view.cutoffs.len(),
        view.from,
        view.history_last_date,
        view.seconds
    );
    if let Some(tokens) = &view.tokens {
        let _ = writeln!(
            out,
            "Model tokens: {} ({} prompt, {} completion) of a budget of {}",
            tokens.total, tokens.prompt, tokens.completion, tokens.budget
        );
    }
    if let Some(stopped) = &view.stopped {
        let _ = writeln!(out, "Incomplete: {stopped}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>5} {:>7} {:>6} {:>8} {:>7} {:>6} {:>10} {:>9}",
        "",
        "proposals",
        "ideas",
        "matched",
        "tested",
        "coverage",
        "proven",
        "base",
        "vs base",
        "foresight"
    );
    row(&mut out, "overall", &view.scores.overall);
    for (name, f) in &view.scores.by_proposer {
        row(&mut out, &format!("proposer {name}"), f);
    }
    for (name, f) in &view.scores.by_strategy {
        row(&mut out, &format!("strategy {name}"), f);
    }
    row(&mut out, "blocked by governance", &view.scores.blocked);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "ideas: distinct moment, lever and segment among the proposals (an idea is proposed again at each cutoff until it is tested)"
    );
    let _ = writeln!(
        out,
        "coverage: tested matches whose measured lift fell inside the 95% predicted interval (calibrated: about 95%)"
    );
    let _ = writeln!(
        out,
        "proven: proven rate of the tested matches; base: the program's proven rate over the same period"
    );
    let _ = writeln!(
        out,
        "foresight: share of the period's proven experiments proposed before they started"
    );
    for (name, reason) in &view.scores.overall.reasons {
        let _ = writeln!(out, "overall {name}: not computable: {reason}");
    }
    for run in view.cutoffs.iter().filter(|r| r.note.is_some()) {
        let _ = writeln!(
            out,
            "cutoff {} ({}): {}",
            run.cutoff,
            run.status,
            run.note.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "{} matched pair(s) in --json; the runs page (/ui/runs) draws them as a calibration chart.",
        view.scores.pairs.len()
    );
    out
}
