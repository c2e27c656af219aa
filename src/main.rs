//! The `kd` command line.
mod cli;

// Training allocates and frees large activation buffers every step; glibc returns them to the
// kernel and page-faults them back in, which showed up as ~5% of a CPU profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h); libmimalloc-sys names
/// no constant for it. The test below checks the number against the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory mimalloc has freed for reuse instead of handing it back to the kernel a second
/// later (its default). A training step frees and reallocates the same activation sizes every
/// step; purged pages come back zeroed by the kernel on first touch, and that zeroing
/// (`clear_page_erms`) was 24% of a CPU training profile. The peak resident memory is the same
/// either way; memory is simply not returned between steps.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return; // the user's own setting wins
    }
    // SAFETY: sets a process-wide allocator option; no pointers involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use kd::commands::{self, bench, compare};

fn main() {
    keep_freed_memory();
    kd::set_version(cli::VERSION);
    // Under mpirun/srun: this process's rank (MPI is finalised when `session` drops).
    let session = kd::distributed::init().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let world = kd::distributed::world();
    // The ranks after 0 of a data-parallel run log errors only: rank 0 speaks for the run (and
    // would otherwise see every warning N times).
    let default_filter = if world.leads() { "kd=info" } else { "kd=error" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if world.size() > 1 && !matches!(cli.command, Command::Teach(_) | Command::Distill(_)) {
        let command = std::env::args().nth(1).unwrap_or_default();
        let e = kd::distributed::DistributedError::NotParallel { command };
        eprintln!("error: {}{e}", kd::distributed::rank_prefix());
        world.abort(2);
    }
    // Training commands: Ctrl-C / SIGTERM finish the current step, write a checkpoint and exit
    // 130; a second one stops at once (the last checkpoint still resumes). Other commands keep
    // the default: stop at once.
    if matches!(
        cli.command,
        Command::Teach(_) | Command::Distill(_) | Command::Sweep(_) | Command::Cache(_)
    ) {
        let _ = ctrlc::set_handler(on_stop_signal);
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {}{e:#}", kd::distributed::rank_prefix());
        let interrupted = e
            .downcast_ref::<kd::KdError>()
            .is_some_and(|k| matches!(k, kd::KdError::Interrupted { .. }));
        // Every rank stops at the same step when interrupted (the stop request travels with
        // the step's all-reduce) and may finish MPI; any other error may be this rank's
        // alone, with the others waiting on it: end them all.
        if interrupted {
            session.finish();
            std::process::exit(130);
        }
        world.abort(1);
    }
    session.finish();
}

/// SIGINT/SIGTERM: stop after the current step; a second one stops at once. A rank waiting on
/// the others says so: when mpirun stops a job because a rank died, that is what it sees.
fn on_stop_signal() {
    if kd::interrupt::stop_requested() {
        std::process::exit(130);
    }
    let rank = kd::distributed::rank_prefix();
    match kd::distributed::watchdog::current() {
        Some((what, waited)) => eprintln!(
            "{rank}stopped while {what} had waited {:.1} s for the other ranks: if no one pressed Ctrl-C, a rank has died (see the launcher's message); the run folder is unchanged",
            waited.as_secs_f64()
        ),
        None => eprintln!("{rank}stopping after the current step (again to stop now)…"),
    }
    kd::interrupt::request_stop();
}

/// Prints what `kd sweep` made: the table and sweep.json, or what one shard trained.
fn print_sweep(req: &commands::sweep::SweepRequest, done: &commands::sweep::SweepDone) {
    use commands::sweep::SweepDone;
    match done {
        SweepDone::Written(s) => {
            print!("{}", commands::sweep::render(s));
            let runs: usize = s.points.iter().map(|p| p.runs.len()).sum();
            let json = req.out.join("sweep.json");
            println!(
                "trained {} of {runs} runs; wrote {}",
                s.trained,
                json.display()
            );
        }
        SweepDone::Shard {
            shard,
            trained,
            owned,
            total,
        } => println!(
            "shard {shard}: trained {trained} of its {owned} runs (of {total}) in {}; once every shard has finished, kd sweep --merge (same flags) writes sweep.json",
            req.out.display()
        ),
    }
}

/// Runs one command and prints what it made.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Teach(args) => {
            let cfg = args.teacher_config()?;
            print_summary(&cfg.out, &commands::teach::run(&cfg)?);
        }
        Command::Distill(args) => {
            let cfg = args.into_config()?;
            print_summary(&cfg.out, &commands::distill::run(&cfg)?);
        }
        Command::Sweep(args) => {
            let req = args.into_request()?;
            print_sweep(&req, &commands::sweep::run(&req)?);
        }
        Command::Cache(args) => println!("{}", commands::cache::run(&args.into_request()?)?),
        Command::Augment(args) => println!("{}", commands::augment::run(&args.into_request())?),
        Command::Compare(args) => {
            let c = compare::run(&args.to_request()?)?;
            print!("{}", compare::render_table(&c));
            compare::save_json(&c, &args.json)?;
            println!("wrote {}", args.json.display());
        }
        Command::Report(args) => {
            let path = commands::report::run(&args.into_request()?)?;
            println!("wrote {}", path.display());
        }
        Command::Export(args) => {
            commands::export::run(&args.source.into_source()?, &args.out)?;
            let out = args.out.display();
            println!("wrote {out}: AutoModelForSequenceClassification.from_pretrained loads it");
        }
        Command::Predict(args) => {
            let req = args.into_request()?;
            let n = commands::predict::run(&req)?;
            println!("wrote {n} predictions to {}", req.output.display());
        }
        Command::Serve(args) => {
            commands::serve::run(args.into_request()?, |addr| {
                // One parseable line on stdout: scripts and tests read the port from it.
                println!("listening on http://{addr}");
            })?;
        }
        Command::ParityDump {
            model,
            adapter,
            data,
            rows,
            out,
            device,
        } => {
            let (dev, dtype) = device.select()?;
            let (b, l) =
                commands::parity_dump::run(&model, &adapter, &data, rows, &out, &dev, dtype)?;
            println!("wrote {} ({b} rows × {l} tokens)", out.display());
        }
        Command::Selftest { device } => {
            let (dev, dtype) = device.select()?;
            let r = commands::selftest::run(&dev, dtype)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            anyhow::ensure!(
                r.passed,
                "{dev:?} in {dtype:?} disagrees with the CPU reference"
            );
        }
        Command::Bench(args) => {
            let r = bench::run(&args.to_request()?)?;
            print_bench(&r);
            let json = serde_json::to_string(&r)?;
            println!("RESULT {json}");
            if let Some(path) = args.json {
                std::fs::write(&path, json).with_context(|| path.display().to_string())?;
            }
        }
    }
    Ok(())
}

fn print_bench(r: &bench::BenchReport) {
    println!(
        "train: {:.1} samples/s, {:.0} tokens/s, {:.3} TFLOP/s (MFU {:.2}%)",
        r.train_samples_per_s,
        r.train_tokens_per_s,
        r.train_tflops,
        100.0 * r.train_mfu
    );
    println!(
        "cache: {:.1} samples/s, {:.0} tokens/s, {:.3} TFLOP/s (MFU {:.2}%)",
        r.cache_samples_per_s,
        r.cache_tokens_per_s,
        r.cache_tflops,
        100.0 * r.cache_mfu
    );
    if let Some(p) = r.peak_mem_bytes {
        println!("peak memory: {:.1} MiB", p as f64 / (1 << 20) as f64);
    }
}

/// Prints a training run's summary line (rank 0's alone in a data-parallel run).
fn print_summary(out: &std::path::Path, s: &commands::Summary) {
    if !kd::distributed::world().leads() {
        return;
    }
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |a| format!("{:.2}%", 100.0 * a));
    println!(
        "{}: {} trainable parameters, kept epoch {}, val {}, test {}, {:.1} train samples/s",
        out.display(),
        s.trainable_params,
        s.kept_epoch,
        pct(s.val_accuracy),
        pct(s.test_accuracy),
        s.train_samples_per_s
    );
    if let Some(d) = &s.selection {
        println!("  kept epoch {}: {}", d.epoch, d.reason);
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn purge_delay_option_number_is_mimallocs() {
        // SAFETY: reads and sets an allocator option.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                // mimalloc v3 sets mi_option_purge_delay to 1000 (ms) in options.c; a wrong
                // option number would read some other option's default.
                assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
                keep_freed_memory();
                assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), -1);
            }
        }
    }
}
