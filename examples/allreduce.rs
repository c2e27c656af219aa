//! Times the all-reduce one data-parallel training step makes: N floats averaged over the ranks,
//! K times after a warm-up, with nothing else running, so that its cost is apart from the time a
//! rank waits for slower ones (which the step's `allreduce_ms` in metrics.jsonl includes).
//!
//! ```sh
//! cargo build --release --features mpi --example allreduce
//! mpirun -np 2 target/release/examples/allreduce 186246 500   # MiniLM-L3, LoRA r=8: 745 kB
//! mpirun -np 2 target/release/examples/allreduce 888582 200   # the roberta-base teacher: 3.6 MB
//! ```
use kd::distributed::{init, world};
use std::time::Instant;

fn main() -> kd::Result<()> {
    let session = init()?;
    let w = world();
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (floats, repeats) = (arg(1, 186_246), arg(2, 200).max(1));
    let mut buf = vec![1.0f32; floats];
    for _ in 0..10 {
        w.all_reduce_mean(&mut buf)?;
    }
    w.barrier()?;
    let started = Instant::now();
    for _ in 0..repeats {
        w.all_reduce_mean(&mut buf)?;
    }
    let each = started.elapsed().as_secs_f64() / repeats as f64;
    if w.leads() {
        let (bytes, n) = ((floats * 4) as f64, w.size() as f64);
        // A ring all-reduce moves 2(N−1)/N of the buffer through each rank's link.
        let bus = 2.0 * (n - 1.0) / n * bytes / each;
        println!(
            "{} ranks over {}: {floats} floats ({:.0} kB) in {:.1} µs per all-reduce: {:.2} GB/s of buffer, {:.2} GB/s on the bus (ring)",
            w.size(),
            w.transport(),
            bytes / 1e3,
            each * 1e6,
            bytes / each / 1e9,
            bus / 1e9
        );
    }
    session.finish();
    Ok(())
}
