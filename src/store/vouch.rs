//! What the audit log vouches for beyond its own chain, and how it is checked: API tokens
//! (their `token.create` entry records user, role, the SHA-256 of the secret and the creator;
//! [`check_token`] at use, [`replay_tokens`] in verify), proposal drafts (the creation entry
//! records [`draft_sha256`]; [`check_draft`] at approval, export and push) and imported records
//! (an import's entry names its caller and the [`record_digest`] of each record written;
//! [`replay_imports`] in verify, the last write of an id winning). Digests are taken over one
//! canonical JSON form, so that both backends give the same digest for the same record.

use super::audit::{constant_time_eq, About, AuditKey, AuditReport};
use super::{AuditEntry, TokenRecord};
use crate::domain::{AuditAction, ProposalDraft};
use crate::history::Experiment;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A token row as the replay compares it (its times are not replayed).
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub id: String,
    pub user: String,
    pub role: crate::domain::Role,
    pub hash: String,
    pub created_by: String,
    pub revoked: bool,
    pub kind: crate::domain::TokenKind,
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
            kind: token.kind,
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
/// fields and its MAC matches its hash. (The links between entries are for [`super::audit::verify`].)
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
    /// Absent in entries made before tokens had a kind: those were people's.
    #[serde(default)]
    kind: crate::domain::TokenKind,
}

/// The detail of a `token.create` entry.
pub fn token_create_detail(token: &TokenRecord) -> String {
    serde_json::json!({
        "user": token.user,
        "role": token.role,
        "hash": token.hash,
        "created_by": token.created_by,
        "kind": token.kind,
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
    if logged.kind != token.kind {
        return Some(format!(
            "it is stored as {}'s token but the audit log created it as {}'s (a kind changed by hand?)",
            token.kind, logged.kind
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
/// explain it. Each entry must be authentic on its own; the whole chain is for [`super::audit::verify`].
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
pub(super) fn logged_draft_sha256(detail: &str) -> Option<String> {
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

/// Replays `token.create` and `token.revoke` entries against the token rows.
pub(super) fn replay_tokens(
    entries: &[AuditEntry],
    tokens: &[StoredToken],
    report: &mut AuditReport,
) {
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

/// What an `experiments.upsert` or `history.sync` entry records of the records it wrote (older entries hold the
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

/// Replays the imports' and the syncs' entries in order (the last write of an id wins) against the stored
/// experiments' digests.
pub(super) fn replay_imports(
    entries: &[AuditEntry],
    stored: &[(String, String)],
    report: &mut AuditReport,
) {
    let mut written: HashMap<String, (i64, String)> = HashMap::new();
    let mut undigested = 0usize;
    // Which entries are syncs of a source (named), for the messages.
    let mut syncs: HashMap<i64, &str> = HashMap::new();
    for e in entries {
        match e.action {
            AuditAction::ExperimentsUpsert => {}
            AuditAction::HistorySync => {
                syncs.insert(e.seq, e.subject.as_str());
            }
            _ => continue,
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
    let writer = |seq: i64| match syncs.get(&seq) {
        Some(source) => format!("the sync of source {source} at entry {seq}"),
        None => format!("the import at entry {seq}"),
    };
    let mut unvouched = 0usize;
    for (id, digest) in stored {
        let about = About::Experiment(id);
        match written.remove(id.as_str()) {
            Some((_, logged)) if logged == *digest => {}
            Some((seq, _)) => report.push_about(
                Some(seq),
                about,
                format!(
                    "its stored record is not the one {} wrote (edited by hand?); runs learn from it",
                    writer(seq)
                ),
            ),
            None if undigested > 0 => unvouched += 1,
            None => report.push_about(
                None,
                about,
                "it is stored but no import or sync in the audit log wrote it (added by hand?); runs learn from it"
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
            format!(
                "written by {} but no longer stored (deleted by hand?)",
                writer(seq)
            ),
        );
    }
    if unvouched > 0 {
        report.notes.push(format!(
            "{unvouched} experiment(s) were imported before imports logged a digest of each record: the log cannot vouch for them until an import writes them again"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        edited.variants[1].conversions = edited.variants[1].conversions.map(|c| c + 1);
        assert_ne!(record_digest(&written), record_digest(&edited));
    }
}
