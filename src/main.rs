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
use cli::{base_config, Cli, Command, DEFAULT_STUDENT, DEFAULT_TEACHER};
use kd::commands::{self, bench, compare, predict};
use kd::device;

fn main() {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kd=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Training commands: Ctrl-C / SIGTERM finish the current step, write a checkpoint and exit
    // 130; a second one stops at once (the last checkpoint still resumes). Other commands keep
    // the default: stop at once.
    if matches!(
        cli.command,
        Command::Teach(_) | Command::Distill(_) | Command::Sweep(_)
    ) {
        let _ = ctrlc::set_handler(|| {
            if kd::training::state::stop_requested() {
                std::process::exit(130);
            }
            eprintln!("stopping after the current step (again to stop now)…");
            kd::training::state::request_stop();
        });
    }
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        let interrupted = e
            .downcast_ref::<kd::KdError>()
            .is_some_and(|k| matches!(k, kd::KdError::Interrupted { .. }));
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Teach(args) => {
            let mut cfg = base_config(args.config.as_ref(), "teacher", DEFAULT_TEACHER)?;
            args.apply(&mut cfg);
            cfg.distill = None;
            let s = commands::teach::run(&cfg)?;
            print_summary(&cfg.out, &s);
        }
        Command::Distill(args) => {
            let mut cfg = base_config(args.train.config.as_ref(), "student", DEFAULT_STUDENT)?;
            args.train.apply(&mut cfg);
            let d = distill_settings(&mut cfg, &args.teacher, args.budget)?;
            if let Some(t) = args.temperature {
                d.temperature = t;
            }
            if let Some(a) = args.alpha {
                d.alpha = a;
            }
            anyhow::ensure!(
                !(args.temperature.is_some() && d.alpha == 0.0),
                "--temperature has no effect with --alpha 0 (labels alone)"
            );
            let s = commands::distill::run(&cfg)?;
            print_summary(&cfg.out, &s);
        }
        Command::Sweep(args) => {
            let mut cfg = base_config(args.train.config.as_ref(), "student", DEFAULT_STUDENT)?;
            args.train.apply(&mut cfg);
            distill_settings(&mut cfg, &args.teacher, args.budget)?;
            let out = args.train.out.clone().unwrap_or_else(|| "sweep".into());
            let req = commands::sweep::SweepRequest {
                base: cfg,
                temperatures: args.temperature,
                alphas: args.alpha,
                seeds: args.seeds,
                out: out.clone(),
            };
            let s = commands::sweep::run(&req)?;
            print!("{}", commands::sweep::render(&s));
            println!(
                "trained {} of {} runs; wrote {}",
                s.trained,
                s.points.iter().map(|p| p.runs.len()).sum::<usize>(),
                out.join("sweep.json").display()
            );
        }
        Command::Cache(args) => {
            let (dev, dtype) = device::select_with_dtype(&args.device, &args.dtype)?;
            let req = commands::cache::CacheRequest {
                teacher: args.teacher,
                unlabelled: args.unlabelled,
                shard: args.shard,
                merge: args.merge,
                chunk_rows: args.chunk_rows,
                batch_size: args.batch_size,
                device: dev,
                dtype,
            };
            println!("{}", commands::cache::run(&req)?);
        }
        Command::Compare(args) => {
            let (dev, dtype) = device::select_with_dtype(&args.eval.device, &args.eval.dtype)?;
            let req = compare::CompareRequest {
                runs: args.runs,
                adapters: args.adapter,
                model: args.model,
                data: args.eval.data,
                device: dev,
                dtype,
                max_len: args.eval.max_len,
            };
            let c = compare::run(&req)?;
            print!("{}", compare::render_table(&c));
            compare::save_json(&c, &args.json)?;
            println!("wrote {}", args.json.display());
        }
        Command::Report(args) => {
            let (dev, dtype) = device::select_with_dtype(&args.eval.device, &args.eval.dtype)?;
            let path = commands::report::run(&commands::report::ReportRequest {
                folders: args.folders,
                data: args.eval.data,
                out: args.out,
                device: dev,
                dtype,
                max_len: args.eval.max_len,
            })?;
            println!("wrote {}", path.display());
        }
        Command::Export(args) => {
            let (dev, dtype) = (candle_core::Device::Cpu, candle_core::DType::F32);
            let loaded = load_model(&args.run, &args.adapter, &args.model, &dev, dtype, 128)?;
            commands::export::run(&loaded, &args.out)?;
            println!(
                "wrote {}: AutoModelForSequenceClassification.from_pretrained loads it",
                args.out.display()
            );
        }
        Command::Predict(args) => {
            let (dev, dtype) = device::select_with_dtype(&args.device, &args.dtype)?;
            let max_len = args.max_len.unwrap_or(128);
            let mut loaded =
                load_model(&args.run, &args.adapter, &args.model, &dev, dtype, max_len)?;
            if let Some(max_len) = args.max_len {
                loaded.set_max_len(max_len)?;
            }
            let n = predict::run(&loaded, &args.input, &args.output, args.batch_size)?;
            println!("wrote {n} predictions to {}", args.output.display());
        }
        Command::ParityDump {
            model,
            adapter,
            data,
            rows,
            out,
            device,
            dtype,
        } => {
            let (dev, dtype) = device::select_with_dtype(&device, &dtype)?;
            let (b, l) =
                commands::parity_dump::run(&model, &adapter, &data, rows, &out, &dev, dtype)?;
            println!("wrote {} ({b} rows × {l} tokens)", out.display());
        }
        Command::Selftest { device, dtype } => {
            let (dev, dtype) = device::select_with_dtype(&device, &dtype)?;
            let r = kd::commands::selftest::run(&dev, dtype)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            anyhow::ensure!(
                r.passed,
                "{:?} in {:?} disagrees with the CPU reference",
                dev,
                dtype
            );
        }
        Command::Bench(args) => {
            let (dev, dtype) = device::select_with_dtype(&args.device, &args.dtype)?;
            let req = bench::BenchRequest {
                model: args.model,
                shape: args.shape,
                tokenizer: args.tokenizer,
                data: args.data,
                lora: kd::model::LoraSpec::query_value(args.lora_r, args.lora_alpha),
                batch_size: args.batch_size,
                max_len: args.max_len,
                warmup_steps: args.warmup_steps,
                steps: args.steps,
                cache_rows: args.cache_rows,
                cache_batch_size: args.cache_batch_size,
                device: dev,
                dtype,
                peak_tflops: args.peak_tflops,
            };
            let r = bench::run(&req)?;
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
            let json = serde_json::to_string(&r)?;
            println!("RESULT {json}");
            if let Some(path) = args.json {
                std::fs::write(&path, json).with_context(|| path.display().to_string())?;
            }
        }
    }
    Ok(())
}

/// A run folder, or a PEFT adapter folder on `model` (truncating to `max_len`).
fn load_model(
    run: &Option<std::path::PathBuf>,
    adapter: &Option<std::path::PathBuf>,
    model: &Option<String>,
    dev: &candle_core::Device,
    dtype: candle_core::DType,
    max_len: usize,
) -> anyhow::Result<kd::run::LoadedModel> {
    Ok(match (run, adapter) {
        (Some(run), None) => kd::run::load_run(run, dev, dtype)?,
        (None, Some(a)) => kd::run::load_adapter(a, model.as_deref(), dev, dtype, max_len)?,
        _ => anyhow::bail!("name a run folder, or --adapter DIR (with --model)"),
    })
}

/// The student config's [distill] table with --teacher and --budget applied.
fn distill_settings<'a>(
    cfg: &'a mut kd::run::RunConfig,
    teacher: &[std::path::PathBuf],
    budget: Option<usize>,
) -> anyhow::Result<&'a mut kd::run::DistillSettings> {
    let d = cfg
        .distill
        .as_mut()
        .context("the student config has no [distill] table")?;
    if !teacher.is_empty() {
        d.teacher = teacher.to_vec();
    }
    if let Some(b) = budget {
        d.budget = b;
    }
    Ok(d)
}

fn print_summary(out: &std::path::Path, s: &commands::Summary) {
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
