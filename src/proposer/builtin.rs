//! The builtin proposer (placeholder until implemented).
