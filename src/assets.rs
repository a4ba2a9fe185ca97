//! Files built into the binary, so that `hypod demo` and `hypod init` work from any directory
//! on a fresh machine: the sample history, the default catalog and policies, the prompts.

pub const SAMPLE_HISTORY: &str = include_str!("../examples/sample-history.ndjson");
pub const CATALOG: &str = include_str!("../policies/catalog.toml");

/// What `hypod init` writes besides `hypod.toml`: (path relative to the folder, contents).
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    ("policies/catalog.toml", CATALOG),
    (
        "prompts/system.j2",
        crate::proposer::openai::DEFAULT_SYSTEM_TEMPLATE,
    ),
    (
        "prompts/user.j2",
        crate::proposer::openai::DEFAULT_USER_TEMPLATE,
    ),
];
