//! Presenting results: the side-by-side comparison (`kd compare`'s table and JSON), a sweep's
//! summary (sweep.json, sweep.md), and `kd report`'s report.md with its charts (SVG + PNG).
pub mod charts;
pub mod comparison;
pub mod page;
pub mod sweep;

pub use page::{write, Report, REPORT_MD};
