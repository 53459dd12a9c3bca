//! EPIC-RS eBPF programs.
//!
//! `epic_count`: a TC classifier that counts the packets and bytes it sees in
//! a per-CPU array of `epic_gue::maps::CounterValue` (the one definition the
//! userspace loader reads too) and lets every packet pass. It proves the toolchain (build,
//! embed, load, attach through TCX, read maps) end to end; the GUE data path
//! grows from here.

#![no_std]
#![no_main]

use aya_ebpf::bindings::TC_ACT_OK;
use aya_ebpf::macros::{classifier, map};
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::programs::TcContext;
use epic_gue::maps::CounterValue;

/// Per-CPU packet and byte counters in slot 0; userspace sums the CPUs.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<CounterValue> = PerCpuArray::with_max_entries(1, 0);

/// Counts the packet and passes it on unchanged.
#[classifier]
pub fn epic_count(ctx: TcContext) -> i32 {
    if let Some(counter) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so
        // it is valid and aligned for a CounterValue, and only this CPU writes
        // its own copy while the program runs (programs are not preempted
        // mid-run).
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(ctx.len());
        }
    }
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any reachable panic path; this only satisfies the
    // no_std requirement for a handler.
    loop {}
}
