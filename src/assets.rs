//! Files built into the binary, so that `hypod demo` and `hypod init` work from any directory
//! on a fresh machine: the sample history, the default catalog and policies, the prompts.

pub const SAMPLE_HISTORY: &str = include_str!("../examples/sample-history.ndjson");
pub const CATALOG: &str = include_str!("../policies/catalog.toml");

/// What `hypod init` writes besides `hypod.toml`: (path relative to the folder, contents).
/// The policy files must all be here: a policies folder that exists is used as it is, so one
/// holding only the catalog would run without any policy. (A test checks this list against
/// `governance::sample`, which the built-in policy set is made from.)
pub const DEFAULT_FILES: &[(&str, &str)] = &[
    ("policies/catalog.toml", CATALOG),
    (
        "policies/black-box.toml",
        include_str!("../policies/black-box.toml"),
    ),
    (
        "policies/cart-checkout.toml",
        include_str!("../policies/cart-checkout.toml"),
    ),
    (
        "policies/duplication-tax.toml",
        include_str!("../policies/duplication-tax.toml"),
    ),
    (
        "policies/governance-gap.toml",
        include_str!("../policies/governance-gap.toml"),
    ),
    (
        "policies/kpi-mirage.toml",
        include_str!("../policies/kpi-mirage.toml"),
    ),
    (
        "policies/latency-leak.toml",
        include_str!("../policies/latency-leak.toml"),
    ),
    (
        "policies/stage-gate.toml",
        include_str!("../policies/stage-gate.toml"),
    ),
    (
        "policies/tests/failure-modes.toml",
        include_str!("../policies/tests/failure-modes.toml"),
    ),
    (
        "prompts/system.j2",
        crate::proposer::openai::DEFAULT_SYSTEM_TEMPLATE,
    ),
    (
        "prompts/user.j2",
        crate::proposer::openai::DEFAULT_USER_TEMPLATE,
    ),
];

#[cfg(test)]
mod tests {
    use crate::governance::sample;

    #[test]
    fn init_writes_every_built_in_policy_and_test_file() {
        let written: Vec<&str> = super::DEFAULT_FILES.iter().map(|(p, _)| *p).collect();
        for (name, _) in sample::DEFAULT_POLICY_FILES {
            assert!(
                written.contains(&format!("policies/{name}").as_str()),
                "{name}"
            );
        }
        for (name, _) in sample::DEFAULT_POLICY_TEST_FILES {
            assert!(
                written.contains(&format!("policies/tests/{name}").as_str()),
                "{name}"
            );
        }
    }
}
