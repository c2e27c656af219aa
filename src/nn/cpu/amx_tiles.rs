//! What both AMX kernels (bf16: [`super::bf16_matmul`], int8: [`super::int8_matmul`]) need
//! before their first tile instruction: the process's permission to use tile data, and one
//! thread's tile configuration (eight tiles of 16 rows × 64 bytes), released when done.
use std::arch::asm;
use std::sync::OnceLock;

/// Linux refuses AMX tile data to a process until it asks (arch_prctl ARCH_REQ_XCOMP_PERM with
/// XFEATURE_XTILEDATA); the permission is the process's, asked once.
pub(crate) fn permitted() -> bool {
    static PERMITTED: OnceLock<bool> = OnceLock::new();
    *PERMITTED.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain system call with integer arguments.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            if rc != 0 {
                tracing::warn!(
                    "the kernel refused AMX tile data (arch_prctl: {rc}); AMX stays off"
                );
            }
            rc == 0
        }
        #[cfg(not(target_os = "linux"))]
        false
    })
}

/// The tile configuration (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// tmm0–7, each 16 rows × 64 bytes: what both kernels use.
const TILES: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// This thread's tiles, configured while the guard lives and released when it drops.
pub(crate) struct Tiles(());

impl Tiles {
    /// Configures tmm0–7 as 16 × 64-byte tiles on this thread.
    ///
    /// # Safety
    /// The CPU has AMX and the process its permission ([`permitted`]).
    pub(crate) unsafe fn configure() -> Self {
        // SAFETY: a valid palette-1 configuration (the caller vouches for AMX).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &TILES, options(nostack, readonly)) };
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: only a configured guard exists, so this thread has tile state to release.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
