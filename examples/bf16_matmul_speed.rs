//! GFLOP/s of kd's native CPU bf16 kernels against candle's f32 matmul on the shapes of a MiniLM
//! layer (32 texts × 54 tokens) and of roberta-base: `cargo run --release --example
//! bf16_matmul_speed`. Kernels this CPU lacks are skipped.
use kd::nn::cpu::bf16_matmul::{bf16_bits, bf16_value, matmul, Kernel, PackedMatrix};
use std::time::Instant;

fn seconds_per_call(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() -> candle_core::Result<()> {
    println!("{}", kd::nn::cpu_description());
    let shapes = [
        (1728, 384, 1536),
        (1728, 1536, 384),
        (1728, 384, 384),
        (4096, 768, 3072),
    ];
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| (i * 7919 % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<u16> = (0..n * k)
            .map(|i| bf16_bits((i * 104_729 % 1000) as f32 / 1000.0 - 0.5))
            .collect();
        let packed = PackedMatrix::from_weight_transposed(&w, n, k);
        let flops = 2.0 * (m * k * n) as f64;
        for kernel in [Kernel::Amx, Kernel::Avx512Bf16] {
            if kernel.available() {
                let s = seconds_per_call(20, || drop(matmul(kernel, &a, m, &packed, None)));
                println!(
                    "{m}×{k}×{n} {:<13} {:7.2} ms {:6.0} GFLOP/s",
                    kernel.name(),
                    s * 1e3,
                    flops / s / 1e9
                );
            }
        }
        let dev = candle_core::Device::Cpu;
        let at = candle_core::Tensor::from_vec(a, (m, k), &dev)?;
        let wf: Vec<f32> = w.iter().map(|&b| bf16_value(b)).collect();
        let wt = candle_core::Tensor::from_vec(wf, (n, k), &dev)?.t()?;
        let s = seconds_per_call(10, || drop(at.matmul(&wt)));
        println!(
            "{m}×{k}×{n} {:<13} {:7.2} ms {:6.0} GFLOP/s",
            "candle f32",
            s * 1e3,
            flops / s / 1e9
        );
    }
    Ok(())
}
