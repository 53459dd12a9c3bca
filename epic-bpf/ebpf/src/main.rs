//! EPIC-RS eBPF programs.
//!
//! `epic_count`: a TC classifier that counts the packets and bytes it sees in
//! a per-CPU array and lets every packet pass. It proves the toolchain (build,
//! embed, load, attach through TCX, read maps) end to end; the GUE data path
//! grows from here.

#![no_std]
#![no_main]

use aya_ebpf::bindings::TC_ACT_OK;
use aya_ebpf::macros::{classifier, map};
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::programs::TcContext;

/// Slot of the packet count in [`COUNTERS`] (userspace: `epic_bpf::counter`).
const PACKETS: u32 = 0;
/// Slot of the byte count in [`COUNTERS`] (userspace: `epic_bpf::counter`).
const BYTES: u32 = 1;

/// Per-CPU packet and byte counters; userspace sums the CPUs.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Counts the packet and passes it on unchanged.
#[classifier]
pub fn epic_count(ctx: TcContext) -> i32 {
    add(PACKETS, 1);
    add(BYTES, u64::from(ctx.len()));
    TC_ACT_OK
}

#[inline(always)]
fn add(slot: u32, amount: u64) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so
        // it is valid and aligned for a u64, and only this CPU writes its own
        // copy while the program runs (programs are not preempted mid-run).
        unsafe { *counter += amount };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path; this only satisfies the
    // no_std requirement for a handler.
    loop {}
}
