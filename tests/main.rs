//! dsc's integration tests, in one binary (DESIGN.md §7): CLI behaviour, bad inputs, `dsc opt`
//! file tests, IR snapshots after each pass, and precision-policy properties of the examples.

mod artifact;
mod autodiff;
mod bad_inputs;
mod bad_runs;
mod cli;
mod emulate;
mod filetests;
mod gpu;
mod import;
mod precision;
mod rendered_errors;
mod run;
mod session;
mod snapshots;
mod support;
mod train;
mod train_formats;
mod train_moe;
