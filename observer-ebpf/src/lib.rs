//! Empty library target: lets observer declare a build-dependency on this crate so cargo rebuilds
//! observer (and re-runs aya-build) when the eBPF sources change.
#![no_std]
