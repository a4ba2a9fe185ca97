//! The audit log's proof: how an entry is chained and keyed, how the chain's head is sealed, and
//! how a log is verified — every link, every entry's MAC, the sealed head, an earlier head a
//! reader kept, and a replay of the log against the proposals' stored statuses and reviews.
//!
//! Each entry's `hash` is SHA-256 over the previous hash and the entry's fields (anyone can
//! check the links); its `mac` is HMAC-SHA-256 of that hash under the audit key, a secret from
//! the environment that the database does not hold. Someone who can write the database but
//! does not hold the key cannot edit, insert, reorder or forge an entry, nor recompute the
//! hashes after one, without the MACs failing. The head (last sequence number and hash) is
//! stored sealed with its own MAC, so cutting entries off the end is detected too; rolling the
//! whole database back to an earlier copy is detected by anyone who kept a later head
//! (published in run records, the webhook and `hypod audit head`).
//!
//! The replay also covers what the log vouches for beyond its chain (tokens, drafts, imported
//! records): those checks live in [`super::vouch`].

use super::vouch::{logged_draft_sha256, replay_imports, replay_tokens, StoredToken};
use super::AuditEntry;
use crate::domain::{AuditAction, AuditHead, ProposalStatus, Review, ReviewAction};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The shortest audit key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The secret the audit log's MACs are made with.
#[derive(Clone)]
pub struct AuditKey {
    secret: Vec<u8>,
    /// Made by this process just now beside an existing database (a SQLite key file created
    /// because none was found): such a key must never be used on a log that already has
    /// entries.
    minted: bool,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(…)")
    }
}

impl AuditKey {
    /// A key from a secret of at least [`MIN_KEY_BYTES`] bytes.
    pub fn new(secret: &[u8]) -> Result<AuditKey, String> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the audit key is {} bytes long; use at least {MIN_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        Ok(AuditKey {
            secret: secret.to_vec(),
            minted: false,
        })
    }

    /// A key this process has just made beside an existing database (see
    /// [`AuditKey::is_minted`]).
    pub fn minted(secret: &[u8]) -> Result<AuditKey, String> {
        AuditKey::new(secret).map(|key| AuditKey {
            minted: true,
            ..key
        })
    }

    /// Whether this key was made by this process just now, beside an existing database,
    /// because none was found: it cannot be the key of a log that already has entries.
    pub fn is_minted(&self) -> bool {
        self.minted
    }

    /// A random key for a store that appends nothing (the read-only commands): entries are
    /// verified with the configured key, never with this one.
    pub fn unused() -> AuditKey {
        use rand::RngCore as _;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        AuditKey {
            secret: secret.to_vec(),
            minted: false,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The MAC of an entry: over its hash, which chains every earlier entry.
    pub fn entry_mac(&self, hash: &str) -> String {
        self.mac(&[b"entry", hash.as_bytes()])
    }

    /// The MAC of the chain's head.
    pub fn head_mac(&self, seq: i64, hash: &str) -> String {
        self.mac(&[b"head", &seq.to_le_bytes(), hash.as_bytes()])
    }
}

/// The stored, sealed head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHead {
    pub head: AuditHead,
    pub mac: String,
}

/// One thing verification found wrong.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditProblem {
    /// The entry it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The proposal it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal_id: Option<String>,
    /// The API token it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The imported experiment it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    pub problem: String,
}

/// What `audit verify` reports.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditReport {
    pub intact: bool,
    pub entries: usize,
    pub head: Option<AuditHead>,
    /// Proposals whose stored status and reviews the log explains.
    pub proposals_explained: usize,
    pub problems: Vec<AuditProblem>,
    /// What the log cannot vouch for without being wrong: rows written by a hypod older than
    /// the checks (drafts, tokens, imported records logged before they were hashed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What a problem is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum About<'a> {
    Log,
    Proposal(&'a str),
    Token(&'a str),
    Experiment(&'a str),
}

impl AuditReport {
    /// Whether the chain itself holds: every problem found, if any, is about one proposal's,
    /// token's or experiment's stored state, not about the log.
    pub fn chain_intact(&self) -> bool {
        self.problems
            .iter()
            .all(|p| p.proposal_id.is_some() || p.token_id.is_some() || p.experiment_id.is_some())
    }

    /// Whether proposal `id` is explained by a verified log: the chain holds and nothing is
    /// wrong with this proposal's stored status, reviews or draft.
    pub fn explains(&self, id: &str) -> bool {
        self.chain_intact()
            && !self
                .problems
                .iter()
                .any(|p| p.proposal_id.as_deref() == Some(id))
    }

    fn push(&mut self, seq: Option<i64>, proposal_id: Option<&str>, problem: String) {
        let about = match proposal_id {
            Some(id) => About::Proposal(id),
            None => About::Log,
        };
        self.push_about(seq, about, problem);
    }

    pub(super) fn push_about(&mut self, seq: Option<i64>, about: About<'_>, problem: String) {
        let (mut proposal_id, mut token_id, mut experiment_id) = (None, None, None);
        match about {
            About::Log => {}
            About::Proposal(id) => proposal_id = Some(id.to_string()),
            About::Token(id) => token_id = Some(id.to_string()),
            About::Experiment(id) => experiment_id = Some(id.to_string()),
        }
        self.problems.push(AuditProblem {
            seq,
            proposal_id,
            token_id,
            experiment_id,
            problem,
        });
    }
}

/// What the replay compares the log with: every proposal's stored status and draft, every
/// stored review, every token row and every imported experiment.
pub struct StoredState {
    pub statuses: Vec<(String, ProposalStatus)>,
    /// Each proposal's stored draft, as [`draft_sha256`].
    pub drafts: HashMap<String, String>,
    pub reviews: Vec<Review>,
    pub tokens: Vec<StoredToken>,
    /// Each stored experiment's [`record_digest`], by id.
    pub experiments: Vec<(String, String)>,
}

/// Verifies a whole log: the links, each entry's MAC, the sealed head, a head the reader kept
/// (`expected`), then replays the log against the stored state.
pub fn verify(
    key: &AuditKey,
    entries: &[AuditEntry],
    sealed: Option<&SealedHead>,
    expected: Option<&AuditHead>,
    state: &StoredState,
) -> AuditReport {
    let mut report = AuditReport {
        intact: true,
        entries: entries.len(),
        head: None,
        proposals_explained: 0,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut prev = String::new();
    let mut last_seq = 0i64;
    let mut seen: HashMap<i64, &str> = HashMap::with_capacity(entries.len());
    for e in entries {
        let recomputed = super::audit_hash(
            &prev,
            &e.at,
            &e.actor,
            &e.action.to_string(),
            &e.subject,
            &e.detail,
        );
        if e.seq <= last_seq {
            report.push(
                Some(e.seq),
                None,
                format!(
                    "entry {} comes after entry {last_seq}: the log was reordered",
                    e.seq
                ),
            );
        }
        if e.prev_hash != prev {
            report.push(
                Some(e.seq),
                None,
                "its link to the previous entry is broken (an entry before it was deleted, inserted or changed)".into(),
            );
        } else if e.hash != recomputed {
            report.push(
                Some(e.seq),
                None,
                "its hash does not match its content (the entry was edited)".into(),
            );
        }
        match &e.mac {
            None => report.push(
                Some(e.seq),
                None,
                "it has no MAC (written without the audit key, or the MAC was removed)".into(),
            ),
            Some(mac) if !constant_time_eq(mac, &key.entry_mac(&e.hash)) => report.push(
                Some(e.seq),
                None,
                "its MAC does not match under this audit key (forged, or a different key)".into(),
            ),
            Some(_) => {}
        }
        seen.insert(e.seq, e.hash.as_str());
        prev = e.hash.clone();
        last_seq = e.seq;
    }
    let head = entries.last().map(|e| AuditHead {
        seq: e.seq,
        hash: e.hash.clone(),
    });
    match (sealed, &head) {
        (None, None) => {}
        (None, Some(_)) => report.push(
            None,
            None,
            "the sealed head is missing while entries exist".into(),
        ),
        (Some(sealed), _) => {
            if !constant_time_eq(
                &sealed.mac,
                &key.head_mac(sealed.head.seq, &sealed.head.hash),
            ) {
                report.push(
                    None,
                    None,
                    "the sealed head's MAC does not match under this audit key".into(),
                );
            } else if head.as_ref() != Some(&sealed.head) {
                report.push(
                    Some(sealed.head.seq),
                    None,
                    format!(
                        "the sealed head is entry {} but the log ends at {}: entries were cut off the end",
                        sealed.head.seq,
                        head.as_ref().map_or("nothing".to_string(), |h| format!("entry {}", h.seq))
                    ),
                );
            }
        }
    }
    if let Some(expected) = expected {
        match seen.get(&expected.seq) {
            Some(hash) if *hash == expected.hash => {}
            Some(_) => report.push(
                Some(expected.seq),
                None,
                "the entry at the head you kept has a different hash: the log was rewritten".into(),
            ),
            None => report.push(
                Some(expected.seq),
                None,
                "the head you kept is no longer in the log: entries were cut off or the database rolled back".into(),
            ),
        }
    }
    replay(entries, state, &mut report);
    report.intact = report.problems.is_empty();
    report.head = head;
    report
}

/// Replays proposal and review entries and compares with what is stored.
fn replay(entries: &[AuditEntry], state: &StoredState, report: &mut AuditReport) {
    let mut status: HashMap<&str, ProposalStatus> = HashMap::new();
    // (proposal, actor, action) -> how many such reviews the log records.
    let mut logged: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    // proposal -> (its creation entry, the draft hash it logged).
    let mut created: HashMap<&str, (i64, Option<String>)> = HashMap::new();
    for e in entries {
        match e.action {
            AuditAction::Proposal(s) => {
                status.insert(e.subject.as_str(), s);
                created
                    .entry(e.subject.as_str())
                    .or_insert_with(|| (e.seq, logged_draft_sha256(&e.detail)));
            }
            AuditAction::Review(action) => {
                *logged
                    .entry((e.subject.as_str(), e.actor.as_str(), action.as_str()))
                    .or_default() += 1;
                if action != ReviewAction::Comment {
                    let after = serde_json::from_str::<serde_json::Value>(&e.detail)
                        .ok()
                        .and_then(|d| d.get("status")?.as_str().and_then(ProposalStatus::parse));
                    match after {
                        Some(after) => {
                            status.insert(e.subject.as_str(), after);
                        }
                        None => report.push(
                            Some(e.seq),
                            Some(&e.subject),
                            "the review entry does not say the status it left".into(),
                        ),
                    }
                }
            }
            _ => {}
        }
    }
    let mut unexplained: HashSet<&str> = HashSet::new();
    let mut unhashed = 0usize;
    for (id, stored) in &state.drafts {
        match created.get(id.as_str()) {
            Some((seq, Some(logged))) if logged != stored => {
                unexplained.insert(id.as_str());
                report.push(
                    Some(*seq),
                    Some(id),
                    format!(
                        "its stored draft is not the one logged when it was created (entry {seq}): it was edited after it was queued"
                    ),
                );
            }
            Some((_, None)) => unhashed += 1,
            _ => {}
        }
    }
    if unhashed > 0 {
        report.notes.push(format!(
            "{unhashed} proposal(s) were logged before drafts were hashed: the log explains their status and reviews but cannot vouch for their drafts"
        ));
    }
    for review in &state.reviews {
        let key = (
            review.proposal_id.as_str(),
            review.actor.as_str(),
            review.action.as_str(),
        );
        match logged.get_mut(&key) {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                unexplained.insert(review.proposal_id.as_str());
                report.push(
                    None,
                    Some(&review.proposal_id),
                    format!(
                        "a stored {} by {} at {} is not in the audit log",
                        review.action.as_str(),
                        review.actor,
                        super::timestamp(review.at)
                    ),
                );
            }
        }
    }
    for ((proposal, actor, action), n) in &logged {
        if *n > 0 {
            unexplained.insert(proposal);
            report.push(
                None,
                Some(proposal),
                format!("the log records a {action} by {actor} that is not stored (deleted?)"),
            );
        }
    }
    for (id, stored) in &state.statuses {
        match status.get(id.as_str()) {
            Some(logged) if logged == stored => {
                if !unexplained.contains(id.as_str()) {
                    report.proposals_explained += 1;
                }
            }
            Some(logged) => report.push(
                None,
                Some(id),
                format!(
                    "its stored status is {stored} but the audit log leaves it {logged}: a change the log does not explain"
                ),
            ),
            None => report.push(
                None,
                Some(id),
                format!("it is stored as {stored} but the audit log never recorded it"),
            ),
        }
    }
    replay_tokens(entries, &state.tokens, report);
    replay_imports(entries, &state.experiments, report);
}

/// Compares two MACs in time independent of where they differ.
pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of entries keyed with `key`, and its sealed head.
    fn chain(key: &AuditKey, items: &[(AuditAction, &str, &str)]) -> (Vec<AuditEntry>, SealedHead) {
        let mut entries: Vec<AuditEntry> = Vec::new();
        let mut prev = String::new();
        for (i, (action, subject, detail)) in items.iter().enumerate() {
            let at = "2026-01-01T00:00:00.000000Z";
            let hash = super::super::audit_hash(
                &prev,
                at,
                "cli:ops",
                &action.to_string(),
                subject,
                detail,
            );
            entries.push(AuditEntry {
                seq: i as i64 + 1,
                at: at.into(),
                actor: "cli:ops".into(),
                action: *action,
                subject: (*subject).into(),
                detail: (*detail).into(),
                prev_hash: prev.clone(),
                mac: Some(key.entry_mac(&hash)),
                hash: hash.clone(),
            });
            prev = hash;
        }
        let last = entries.last().expect("an entry");
        let head = AuditHead {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        let mac = key.head_mac(head.seq, &head.hash);
        (entries, SealedHead { head, mac })
    }

    fn token(role: crate::domain::Role) -> StoredToken {
        StoredToken {
            id: "t1".into(),
            user: "ada".into(),
            role,
            hash: "h".repeat(64),
            created_by: "cli:ops".into(),
            revoked: false,
            kind: crate::domain::TokenKind::Person,
        }
    }

    #[test]
    fn rows_logged_before_the_checks_are_noted_not_refused() {
        let key = AuditKey::new(b"0123456789abcdef0123").expect("key");
        let (entries, sealed) = chain(
            &key,
            &[
                (
                    AuditAction::ExperimentsUpsert,
                    "experiments",
                    r#"{"inserted":1,"updated":0,"unchanged":0}"#,
                ),
                (
                    AuditAction::Proposal(ProposalStatus::PendingReview),
                    "p1",
                    "[]",
                ),
                (
                    AuditAction::TokenCreate,
                    "t1",
                    r#"{"user":"ada","role":"reviewer"}"#,
                ),
            ],
        );
        let state = StoredState {
            statuses: vec![("p1".into(), ProposalStatus::PendingReview)],
            drafts: HashMap::from([("p1".to_string(), "d".repeat(64))]),
            reviews: Vec::new(),
            tokens: vec![token(crate::domain::Role::Reviewer)],
            experiments: vec![("e1".into(), "0123456789abcdef".into())],
        };
        let report = verify(&key, &entries, Some(&sealed), None, &state);
        assert!(report.intact, "{:?}", report.problems);
        assert_eq!(report.notes.len(), 3, "{:?}", report.notes);
        assert!(report
            .notes
            .iter()
            .any(|n| n.contains("logged before drafts were hashed")));

        // The same old token entry still refuses a raised role.
        let raised = StoredState {
            tokens: vec![token(crate::domain::Role::Admin)],
            ..state
        };
        let report = verify(&key, &entries, Some(&sealed), None, &raised);
        assert!(!report.intact);
        assert!(
            report.chain_intact(),
            "a token's problem is not the chain's"
        );
        assert_eq!(report.problems[0].token_id.as_deref(), Some("t1"));
    }
}
