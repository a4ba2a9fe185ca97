//! The domain: the types every stage, the use cases and (later) the server share, with the rules
//! that belong to the types themselves (a review's state machine, how verdicts decide a status).
//! It imports nothing else from the crate; every other module may import it.

pub mod audit;
pub mod catalog;
pub mod draft;
pub mod experiment;
pub mod identity;
pub mod proposal;
pub mod review;
pub mod run;
pub mod slot;
pub mod units;
pub mod verdict;

pub use audit::{AuditAction, AuditHead};
pub use catalog::Catalog;
pub use draft::{
    EvidenceRef, LlmUsage, ProposalDraft, ProposedDraft, RejectedDraft, Rendering, Risk, Strategy,
};
pub use experiment::{
    is_commercial_kpi, Decision, Experiment, ExperimentStatus, Moment, TestKey, Variant,
    COMMERCIAL_KPIS,
};
pub use identity::{bounded, echo, escape_for_terminal, Identity, TextError};
pub use proposal::{
    Closing, CursorKey, DuplicateKind, DuplicateRef, Enrichment, PageCursor, Proposal,
    ProposalFilter, ProposalStatus, Provenance, QueueOrder, StatusChange,
};
pub use review::{
    apply_review, ApprovalProgress, Approver, Review, ReviewAction, ReviewError, Role, TokenKind,
};
pub use run::{RunRecord, RunStatus, RunSummary, Trigger};
pub use slot::{Claim, Fence, SlotRecord, SlotStatus};
pub use verdict::{
    decide, denies, escalates, ApprovalSettings, Effect, GovernanceDecision, RuleSource, Verdict,
};
