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
//! The log also vouches for identity and content. A token's `token.create` entry carries its
//! user, role, the SHA-256 of its secret and its creator, and `token.revoke` ends it: a token
//! row the log does not explain (inserted, un-revoked or raised by hand) is refused at use
//! ([`check_token`], over the token's own entries) and reported by verify. A proposal's
//! creation entry carries the SHA-256 of its draft ([`draft_sha256`]), checked at approval,
//! export and push ([`check_draft`]). An import's entry names its caller and a digest of every
//! record it wrote ([`record_digest`]); verify replays them, last write winning, against the
//! stored experiments.

use super::{AuditEntry, TokenRecord};
use crate::domain::{AuditAction, AuditHead, ProposalDraft, ProposalStatus, Review, ReviewAction};
use crate::history::Experiment;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
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
enum About<'a> {
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

    fn push_about(&mut self, seq: Option<i64>, about: About<'_>, problem: String) {
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

/// A token row as the replay compares it (its times are not replayed).
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub id: String,
    pub user: String,
    pub role: crate::domain::Role,
    pub hash: String,
    pub created_by: String,
    pub revoked: bool,
}

impl StoredToken {
    pub fn of(token: &TokenRecord) -> StoredToken {
        StoredToken {
            id: token.id.clone(),
            user: token.user.clone(),
            role: token.role,
            hash: token.hash.clone(),
            created_by: token.created_by.clone(),
            revoked: token.revoked_at.is_some(),
        }
    }
}

/// The SHA-256 of `value`'s JSON in one canonical form: fields in their declared order (values
/// are read back into their type first, whatever order the database keeps keys in), and each
/// floating-point number written as a string of 12 significant digits, so that a number read
/// back from PostgreSQL's `jsonb` hashes as the one written. Written straight into the hash,
/// without an intermediate document (an import digests every record it writes).
fn canonical_sha256<T: Serialize>(value: &T) -> [u8; 32] {
    struct Canonical;
    impl serde_json::ser::Formatter for Canonical {
        fn write_f64<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            value: f64,
        ) -> std::io::Result<()> {
            write!(writer, "\"{value:.11e}\"")
        }

        fn write_f32<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            value: f32,
        ) -> std::io::Result<()> {
            self.write_f64(writer, f64::from(value))
        }
    }
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = serde_json::Serializer::with_formatter(Hashing(Sha256::new()), Canonical);
    // Drafts and experiments are plain structs with string keys, written into memory:
    // serialising them cannot fail.
    let _ = value.serialize(&mut out);
    out.into_inner().0.finalize().into()
}

/// The SHA-256 (hex) of a draft in its canonical form: what a proposal's creation entry
/// records as `draft_sha256`.
pub fn draft_sha256(draft: &ProposalDraft) -> String {
    hex::encode(canonical_sha256(draft))
}

/// The digest an import logs for each record it wrote: the first 64 bits (16 hex digits) of
/// the SHA-256 of the record's canonical form.
pub fn record_digest(experiment: &Experiment) -> String {
    hex::encode(&canonical_sha256(experiment)[..8])
}

/// Whether an entry, on its own, is one hypod wrote with this key: its hash matches its
/// fields and its MAC matches its hash. (The links between entries are for [`verify`].)
pub fn entry_authentic(key: &AuditKey, entry: &AuditEntry) -> bool {
    let recomputed = super::audit_hash(
        &entry.prev_hash,
        &entry.at,
        &entry.actor,
        &entry.action.to_string(),
        &entry.subject,
        &entry.detail,
    );
    recomputed == entry.hash
        && entry
            .mac
            .as_deref()
            .is_some_and(|mac| constant_time_eq(mac, &key.entry_mac(&entry.hash)))
}

/// What a `token.create` entry records (older entries hold only `user` and `role`).
#[derive(serde::Deserialize)]
struct LoggedToken {
    user: String,
    role: String,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    created_by: Option<String>,
}

/// The detail of a `token.create` entry.
pub fn token_create_detail(token: &TokenRecord) -> String {
    serde_json::json!({
        "user": token.user,
        "role": token.role,
        "hash": token.hash,
        "created_by": token.created_by,
    })
    .to_string()
}

/// What is wrong between a token row and what its creation entry logged, if anything.
fn token_mismatch(token: &StoredToken, logged: &LoggedToken) -> Option<String> {
    if logged.user != token.user {
        return Some(format!(
            "it is stored for {} but the audit log created it for {} (changed by hand?)",
            token.user, logged.user
        ));
    }
    if logged.role != token.role.as_str() {
        return Some(format!(
            "it is stored as {} but the audit log created it as {} (a role changed by hand?)",
            token.role, logged.role
        ));
    }
    if logged.hash.as_deref().is_some_and(|h| h != token.hash) {
        return Some(
            "its secret's hash is not the one the audit log recorded at its creation (replaced by hand?)"
                .into(),
        );
    }
    if logged
        .created_by
        .as_deref()
        .is_some_and(|by| by != token.created_by)
    {
        return Some(format!(
            "it is stored as created by {} but the audit log says {} created it (changed by hand?)",
            token.created_by,
            logged.created_by.as_deref().unwrap_or_default()
        ));
    }
    None
}

/// Checks a live token row against its own audit entries (`entries`: the `token.create` and
/// `token.revoke` entries whose subject is its id, any order): `Err` says why the log does not
/// explain it. Each entry must be authentic on its own; the whole chain is for [`verify`].
pub fn check_token(
    key: &AuditKey,
    token: &TokenRecord,
    entries: &[AuditEntry],
) -> Result<(), String> {
    let mut entries: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| {
            e.subject == token.id
                && matches!(
                    e.action,
                    AuditAction::TokenCreate | AuditAction::TokenRevoke
                )
        })
        .collect();
    entries.sort_by_key(|e| e.seq);
    if let Some(forged) = entries.iter().find(|e| !entry_authentic(key, e)) {
        return Err(format!(
            "its audit entry {} does not verify under this audit key (forged, or this process holds another key than the one that wrote the log)",
            forged.seq
        ));
    }
    let Some(created) = entries
        .iter()
        .find(|e| e.action == AuditAction::TokenCreate)
    else {
        return Err(
            "the audit log never recorded its creation (a token row added by hand?)".into(),
        );
    };
    let logged: LoggedToken = serde_json::from_str(&created.detail).map_err(|_| {
        format!(
            "its creation entry {} does not say its user and role",
            created.seq
        )
    })?;
    if let Some(problem) = token_mismatch(&StoredToken::of(token), &logged) {
        return Err(problem);
    }
    if let Some(revoked) = entries
        .iter()
        .find(|e| e.action == AuditAction::TokenRevoke)
    {
        if token.revoked_at.is_none() {
            return Err(format!(
                "the audit log revoked it at entry {} but it is stored live (un-revoked by hand?)",
                revoked.seq
            ));
        }
    }
    Ok(())
}

/// The draft hash a proposal entry's detail records, if it records one (entries written before
/// drafts were hashed hold the verdicts only).
fn logged_draft_sha256(detail: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(detail)
        .ok()?
        .get("draft_sha256")?
        .as_str()
        .map(str::to_string)
}

/// The detail of a proposal's creation entry: the SHA-256 of its draft and its verdicts.
pub fn proposal_created_detail(
    draft: &ProposalDraft,
    verdicts: &[crate::governance::Verdict],
) -> String {
    serde_json::json!({
        "draft_sha256": draft_sha256(draft),
        "verdicts": verdicts,
    })
    .to_string()
}

/// What the log says of a proposal's stored draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftCheck {
    /// The draft is the one logged at the proposal's creation.
    Vouched,
    /// The proposal was logged before drafts were hashed: the log cannot say.
    Unhashed,
    /// The log does not vouch for this draft: why.
    Refused(String),
}

/// Checks a proposal's stored draft against its creation entry (`entries`: its own
/// `proposal.<status>` entries, any order; the first is its creation).
pub fn check_draft(
    key: &AuditKey,
    id: &str,
    draft: &ProposalDraft,
    entries: &[AuditEntry],
) -> DraftCheck {
    let Some(created) = entries
        .iter()
        .filter(|e| e.subject == id && matches!(e.action, AuditAction::Proposal(_)))
        .min_by_key(|e| e.seq)
    else {
        return DraftCheck::Refused("the audit log never recorded this proposal".into());
    };
    if !entry_authentic(key, created) {
        return DraftCheck::Refused(format!(
            "its creation entry {} does not verify under this audit key (forged, or this process holds another key than the one that wrote the log)",
            created.seq
        ));
    }
    match logged_draft_sha256(&created.detail) {
        None => DraftCheck::Unhashed,
        Some(logged) if logged == draft_sha256(draft) => DraftCheck::Vouched,
        Some(_) => DraftCheck::Refused(format!(
            "its stored draft is not the one logged when it was created (entry {}): it was edited after it was queued",
            created.seq
        )),
    }
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

/// Replays `token.create` and `token.revoke` entries against the token rows.
fn replay_tokens(entries: &[AuditEntry], tokens: &[StoredToken], report: &mut AuditReport) {
    let mut created: HashMap<&str, (i64, Option<LoggedToken>)> = HashMap::new();
    let mut revoked: HashMap<&str, i64> = HashMap::new();
    for e in entries {
        match e.action {
            AuditAction::TokenCreate => {
                created
                    .entry(e.subject.as_str())
                    .or_insert_with(|| (e.seq, serde_json::from_str(&e.detail).ok()));
            }
            AuditAction::TokenRevoke => {
                revoked.entry(e.subject.as_str()).or_insert(e.seq);
            }
            _ => {}
        }
    }
    let mut unhashed = 0usize;
    for token in tokens {
        let about = About::Token(&token.id);
        let Some((seq, logged)) = created.get(token.id.as_str()) else {
            report.push_about(
                None,
                about,
                format!(
                    "stored for {} as {}, but the audit log never recorded its creation (added by hand?); it is refused at use",
                    token.user, token.role
                ),
            );
            continue;
        };
        let Some(logged) = logged else {
            report.push_about(
                Some(*seq),
                about,
                "its creation entry does not say its user and role".into(),
            );
            continue;
        };
        if let Some(problem) = token_mismatch(token, logged) {
            report.push_about(
                Some(*seq),
                about,
                format!("{problem}; it is refused at use"),
            );
        }
        if logged.hash.is_none() {
            unhashed += 1;
        }
        match (revoked.get(token.id.as_str()), token.revoked) {
            (Some(at), false) => report.push_about(
                Some(*at),
                about,
                format!(
                    "the audit log revoked it at entry {at} but it is stored live for {} (un-revoked by hand?); it is refused at use",
                    token.user
                ),
            ),
            (None, true) => report.push_about(
                None,
                about,
                "it is stored revoked but the audit log never recorded its revocation".into(),
            ),
            _ => {}
        }
    }
    let stored: HashSet<&str> = tokens.iter().map(|t| t.id.as_str()).collect();
    for (id, (seq, _)) in &created {
        if !stored.contains(id) {
            report.push_about(
                Some(*seq),
                About::Token(id),
                format!("created at entry {seq} but no longer stored (deleted by hand?)"),
            );
        }
    }
    if unhashed > 0 {
        report.notes.push(format!(
            "{unhashed} token(s) were created before token entries recorded the secret's hash: the log vouches for their user and role only (create new ones and revoke these to have them fully vouched for)"
        ));
    }
}

/// What an `experiments.upsert` entry records of the records it wrote (older entries hold the
/// counts only).
#[derive(serde::Deserialize)]
struct LoggedImport {
    #[serde(default)]
    written: Option<BTreeMap<String, String>>,
}

/// The detail of an import's entry: its counts and the [`record_digest`] of every record it
/// wrote (inserted or updated), by id.
pub fn import_detail(counts: &super::UpsertCounts, written: &BTreeMap<&str, String>) -> String {
    serde_json::json!({
        "inserted": counts.inserted,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "written": written,
    })
    .to_string()
}

/// Replays the imports' entries in order (the last write of an id wins) against the stored
/// experiments' digests.
fn replay_imports(entries: &[AuditEntry], stored: &[(String, String)], report: &mut AuditReport) {
    let mut written: HashMap<String, (i64, String)> = HashMap::new();
    let mut undigested = 0usize;
    for e in entries {
        if e.action != AuditAction::ExperimentsUpsert {
            continue;
        }
        match serde_json::from_str::<LoggedImport>(&e.detail) {
            Ok(LoggedImport {
                written: Some(records),
            }) => {
                for (id, digest) in records {
                    written.insert(id, (e.seq, digest));
                }
            }
            _ => undigested += 1,
        }
    }
    let mut unvouched = 0usize;
    for (id, digest) in stored {
        let about = About::Experiment(id);
        match written.remove(id.as_str()) {
            Some((_, logged)) if logged == *digest => {}
            Some((seq, _)) => report.push_about(
                Some(seq),
                about,
                format!(
                    "its stored record is not the one the import at entry {seq} wrote (edited by hand?); runs learn from it"
                ),
            ),
            None if undigested > 0 => unvouched += 1,
            None => report.push_about(
                None,
                about,
                "it is stored but no import in the audit log wrote it (added by hand?); runs learn from it"
                    .into(),
            ),
        }
    }
    let mut gone: Vec<(String, i64)> = written
        .into_iter()
        .map(|(id, (seq, _))| (id, seq))
        .collect();
    gone.sort();
    for (id, seq) in gone {
        report.push_about(
            Some(seq),
            About::Experiment(&id),
            format!("written by the import at entry {seq} but no longer stored (deleted by hand?)"),
        );
    }
    if unvouched > 0 {
        report.notes.push(format!(
            "{unvouched} experiment(s) were imported before imports logged a digest of each record: the log cannot vouch for them until an import writes them again"
        ));
    }
}

/// Compares two MACs in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
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

    #[test]
    fn a_records_digest_is_the_same_however_the_database_wrote_it() {
        let written: Experiment = serde_json::from_str(
            r#"{"id":"e1","name":"n","moment":"search","primary_kpi":"conversion_rate","status":"concluded","allocation":[1,1],"latency_ms_p75_delta":5.9,
                "variants":[{"name":"control","control":true,"visitors":7443,"conversions":271,"revenue":22816.26},
                            {"name":"treatment","control":false,"visitors":7443,"conversions":296,"revenue":25272.31}]}"#,
        )
        .expect("an experiment");
        // As jsonb gives it back: keys reordered, numbers in another spelling.
        let read_back: Experiment = serde_json::from_str(
            r#"{"variants":[{"revenue":22816.260,"visitors":7443,"conversions":271,"control":true,"name":"control"},
                            {"revenue":2.527231e4,"visitors":7443,"conversions":296,"control":false,"name":"treatment"}],
                "status":"concluded","primary_kpi":"conversion_rate","moment":"search","name":"n","id":"e1","allocation":[1.0,1.0],"latency_ms_p75_delta":5.90}"#,
        )
        .expect("an experiment");
        assert_eq!(record_digest(&written), record_digest(&read_back));
        assert_eq!(record_digest(&written).len(), 16);
        let mut edited = read_back.clone();
        edited.variants[1].conversions += 1;
        assert_ne!(record_digest(&written), record_digest(&edited));
    }
}
