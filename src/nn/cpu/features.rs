//! What the CPU offers kd's kernels: AVX-512 and the native bf16 and int8 instructions, read once. The
//! kernels and their records ([`super::kernels`]) both ask here.

/// CPU features that decide a matmul kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct X86Features {
    pub avx512f: bool,
    pub avx512_bf16: bool,
    pub amx_bf16: bool,
    /// AMX-INT8 (`tdpbssd`): kd's int8 products ([`super::int8_matmul`]).
    pub amx_int8: bool,
    /// AVX-512 VNNI (`vpdpbusd`): the int8 products where AMX is missing.
    pub avx512_vnni: bool,
    /// "AuthenticAMD": AMD's `vdpbf16ps` does twice the multiply-adds of an f32 FMA per cycle,
    /// Intel's only as many (measured: docs/benchmarks.md run 6).
    pub amd: bool,
}

/// Reads the features with CPUID (AVX-512 BF16 and AMX-BF16 have no stable
/// `is_x86_feature_detected!` name); all false off x86-64. Read once: CPUID is slow (a VM exit
/// under virtualisation) and kernels ask per call.
pub fn x86_features() -> X86Features {
    static FEATURES: std::sync::OnceLock<X86Features> = std::sync::OnceLock::new();
    *FEATURES.get_or_init(read_x86_features)
}

fn read_x86_features() -> X86Features {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only when the CPU lists it.
        let (leaf0, leaf7, leaf7_1) = unsafe {
            let leaf0 = __cpuid(0);
            if leaf0.eax < 7 {
                (leaf0, None, None)
            } else {
                (leaf0, Some(__cpuid_count(7, 0)), Some(__cpuid_count(7, 1)))
            }
        };
        // The vendor string is EBX, EDX, ECX of leaf 0.
        let vendor: Vec<u8> = [leaf0.ebx, leaf0.edx, leaf0.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        X86Features {
            avx512f: std::arch::is_x86_feature_detected!("avx512f"),
            // CPUID.(EAX=7,ECX=1):EAX bit 5; CPUID.(EAX=7,ECX=0):EDX bit 22.
            avx512_bf16: leaf7_1.is_some_and(|r| r.eax & (1 << 5) != 0),
            amx_bf16: leaf7.is_some_and(|r| r.edx & (1 << 22) != 0),
            // CPUID.(EAX=7,ECX=0):EDX bit 25.
            amx_int8: leaf7.is_some_and(|r| r.edx & (1 << 25) != 0),
            avx512_vnni: std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw"),
            amd: vendor == b"AuthenticAMD",
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    X86Features::default()
}
