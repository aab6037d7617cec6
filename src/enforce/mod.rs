//! The daemon's opt-in `remediate:` mode: after each poll, whether to write the target
//! back to its expectation (see [`guard`]), and doing so.

pub mod guard;
