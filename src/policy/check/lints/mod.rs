//! Lint passes over a checked policy. Each file is one pass; each says what it detects, what it
//! deliberately ignores and what it cannot see. Lints only run when the policy has no error.

mod cache;
mod catalog_usage;
mod chains;
mod constant;
mod costs;
mod unreachable;

use super::Options;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::Checked;

/// Runs every pass. `catalog` is false when there is no real catalog (no config given).
pub fn run(checked: &Checked, catalog: bool, opts: Options, out: &mut Vec<Diagnostic>) {
    constant::run(checked, out);
    cache::run(checked, out);
    unreachable::run(checked, out);
    chains::run(checked, catalog, out);
    if catalog {
        catalog_usage::run(checked, out);
        if opts.costs {
            costs::run(checked, out);
        }
    }
}
