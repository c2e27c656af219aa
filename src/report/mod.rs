//! Presenting results: the side-by-side comparison (`kd compare`'s table and JSON), a sweep's
//! summary (sweep.json, sweep.md), and `kd report`'s report.md with its charts (SVG + PNG),
//! among them accuracy against rows/s (`pareto`).
pub(crate) mod charts;
pub(crate) mod comparison;
pub(crate) mod page;
pub(crate) mod pareto;
pub(crate) mod sweep;

pub use page::{write, Report, REPORT_MD};
