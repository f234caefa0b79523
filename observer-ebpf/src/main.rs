//! covobs' eBPF programs: they follow the lifecycle and signals of watched processes and keep the
//! set of watched tgids/tids up to date in the kernel, so nothing about unwatched tasks ever reaches
//! userspace.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod cgroups;
#[cfg(target_arch = "bpf")]
mod dumps;
#[cfg(target_arch = "bpf")]
mod kcov;
#[cfg(target_arch = "bpf")]
mod lifecycle;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod ns;
#[cfg(target_arch = "bpf")]
mod ocaml;
#[cfg(target_arch = "bpf")]
mod selftest;
#[cfg(target_arch = "bpf")]
mod signals;
#[cfg(target_arch = "bpf")]
mod snapshot;
#[cfg(target_arch = "bpf")]
mod vfs;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never entered.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
